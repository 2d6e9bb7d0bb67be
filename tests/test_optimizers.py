"""optimizers.py against torch.optim, number for number: the same float64 parameters and the
same random gradients go through the NumPy and the torch implementation side by side, and
after every step the parameters (and the lr, momentum, beta1 the schedules set) agree to
1e-12 relative.

Bit-for-bit agreement is out of reach: torch's CPU kernels fuse a * x + y into one FMA (one
rounding, where NumPy rounds twice), so the two differ by about an ulp per operation. An
element that passes near 0 (the difference of two larger numbers) keeps that absolute error
of ~1e-16 and can then be 1e-12 off relative to itself; the parameters are therefore compared
to 1e-12 relative to each element or, for such elements, to the largest one of the array."""

import warnings

import numpy as np
import pytest
import torch

import optimizers

SHAPES = [(7, 5), (5,)]  # a weight matrix and a bias
RTOL = 1e-12


def make_pairs(seed=0):
    """NumPy (param, grad) pairs and torch parameters holding copies of the same values."""
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s) for s in SHAPES]
    pairs = [(p, np.zeros_like(p)) for p in params]
    tensors = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
    return pairs, tensors


def run_side_by_side(
    np_opt, torch_opt, pairs, tensors, np_sched=None, torch_sched=None, steps=50, seed=1
):
    """Feed both the same gradients for `steps` steps and compare after each one."""
    rng = np.random.default_rng(seed)
    group = torch_opt.param_groups[0]
    for step in range(steps):
        for (_, g), t in zip(pairs, tensors):
            g[...] = rng.normal(size=g.shape)  # as backward refills the grad buffers
            t.grad = torch.tensor(g)
        grads_before = [g.copy() for _, g in pairs]
        np_opt.step()
        torch_opt.step()
        if np_sched is not None:
            np_sched.step()
            torch_sched.step()
        for (p, g), t, g0 in zip(pairs, tensors, grads_before):
            expected = t.detach().numpy()
            np.testing.assert_allclose(
                p,
                expected,
                rtol=RTOL,
                atol=RTOL * np.abs(expected).max(),
                err_msg=f'param after step {step}',
            )
            np.testing.assert_array_equal(g, g0, err_msg='the optimizer wrote into a grad')
        np.testing.assert_allclose(np_opt.lr, group['lr'], rtol=RTOL, err_msg=f'lr {step}')
        if 'betas' in group:
            np.testing.assert_allclose(np_opt.betas, group['betas'], rtol=RTOL)
        else:
            np.testing.assert_allclose(np_opt.momentum, group['momentum'], rtol=RTOL)


OPTIMIZERS = {
    'sgd': (optimizers.SGD, torch.optim.SGD, dict(lr=0.1)),
    'sgd_momentum': (optimizers.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    'sgd_nesterov_wd': (
        optimizers.SGD,
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
    ),
    'adam_l2': (
        optimizers.Adam,
        torch.optim.Adam,
        dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2),
    ),
    'adamw': (optimizers.AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
}


@pytest.mark.parametrize('name', OPTIMIZERS)
def test_optimizer_matches_torch(name):
    np_cls, torch_cls, kwargs = OPTIMIZERS[name]
    pairs, tensors = make_pairs()
    run_side_by_side(np_cls(pairs, **kwargs), torch_cls(tensors, **kwargs), pairs, tensors)


def test_cosine_annealing_matches_torch():
    pairs, tensors = make_pairs()
    np_opt = optimizers.SGD(pairs, lr=0.1, momentum=0.9)
    torch_opt = torch.optim.SGD(tensors, lr=0.1, momentum=0.9)
    np_sched = optimizers.CosineAnnealingLR(np_opt, T_max=50, eta_min=1e-3)
    torch_sched = torch.optim.lr_scheduler.CosineAnnealingLR(torch_opt, T_max=50, eta_min=1e-3)
    assert np_opt.lr == torch_opt.param_groups[0]['lr'] == 0.1
    run_side_by_side(np_opt, torch_opt, pairs, tensors, np_sched, torch_sched, steps=50)


def test_cosine_annealing_lr_over_thousands_of_steps():
    """torch computes the lr recursively; the closed form drifts from it by ~1e-11 over
    20000 steps. Past T_max the schedule climbs back (the restart branch): run through it."""
    param = torch.zeros(1, requires_grad=True)
    param.grad = torch.zeros(1)
    torch_opt = torch.optim.SGD([param], lr=0.1)
    torch_sched = torch.optim.lr_scheduler.CosineAnnealingLR(torch_opt, T_max=20000, eta_min=1e-4)
    np_opt = optimizers.SGD([(np.zeros(1), np.zeros(1))], lr=0.1)
    np_sched = optimizers.CosineAnnealingLR(np_opt, T_max=20000, eta_min=1e-4)
    ours, theirs = [], []
    for _ in range(40010):
        torch_opt.step()
        torch_sched.step()
        np_sched.step()
        ours.append(np_opt.lr)
        theirs.append(torch_opt.param_groups[0]['lr'])
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0)


@pytest.mark.parametrize('kind', ['sgd', 'adamw'])
def test_one_cycle_matches_torch(kind):
    pairs, tensors = make_pairs()
    if kind == 'sgd':
        np_opt = optimizers.SGD(pairs, lr=0.1, momentum=0.9, weight_decay=5e-4)
        torch_opt = torch.optim.SGD(tensors, lr=0.1, momentum=0.9, weight_decay=5e-4)
    else:
        np_opt = optimizers.AdamW(pairs, lr=1e-3)
        torch_opt = torch.optim.AdamW(tensors, lr=1e-3)
    np_sched = optimizers.OneCycleLR(np_opt, max_lr=0.05, total_steps=50)
    torch_sched = torch.optim.lr_scheduler.OneCycleLR(torch_opt, max_lr=0.05, total_steps=50)
    np.testing.assert_allclose(np_opt.lr, torch_opt.param_groups[0]['lr'], rtol=RTOL)
    run_side_by_side(np_opt, torch_opt, pairs, tensors, np_sched, torch_sched, steps=50)
    with pytest.raises(ValueError, match='past total_steps'):
        np_sched.step()


def test_one_cycle_cycles_momentum_of_plain_sgd():
    """torch cycles SGD's momentum even when it started at 0: the buffer starts then."""
    pairs, tensors = make_pairs()
    np_opt, torch_opt = optimizers.SGD(pairs, lr=0.1), torch.optim.SGD(tensors, lr=0.1)
    np_sched = optimizers.OneCycleLR(np_opt, max_lr=0.1, total_steps=30, pct_start=0.25)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch_sched = torch.optim.lr_scheduler.OneCycleLR(
            torch_opt, max_lr=0.1, total_steps=30, pct_start=0.25
        )
    run_side_by_side(np_opt, torch_opt, pairs, tensors, np_sched, torch_sched, steps=30)


def test_float32_state_and_update_stay_float32():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(4, 3)).astype(np.float32)
    g = rng.normal(size=(4, 3)).astype(np.float32)
    for opt in (
        optimizers.SGD([(p, g)], lr=0.1, momentum=0.9, weight_decay=1e-4),
        optimizers.Adam([(p, g)], weight_decay=1e-4),
        optimizers.AdamW([(p, g)]),
    ):
        opt.step()
        opt.step()
        state = [getattr(opt, name) for name in ('buffers', 'm', 'v') if hasattr(opt, name)]
        assert all(a.dtype == np.float32 for arrays in state for a in arrays)
    assert p.dtype == np.float32 and np.isfinite(p).all()


def sgd(**kwargs):
    return optimizers.SGD([(np.zeros(2), np.zeros(2))], **{'lr': 0.1, **kwargs})


def adam(**kwargs):
    return optimizers.Adam([(np.zeros(2), np.zeros(2))], **kwargs)


def one_cycle(**kwargs):
    return optimizers.OneCycleLR(sgd(), **{'max_lr': 0.1, 'total_steps': 10, **kwargs})


@pytest.mark.parametrize(
    'build, message',
    [
        (lambda: sgd(lr=0), 'lr must be positive'),
        (lambda: sgd(momentum=-0.1), 'momentum must be non-negative'),
        (lambda: sgd(nesterov=True), 'nesterov=True needs a positive momentum'),
        (lambda: sgd(weight_decay=-1), 'weight_decay must be non-negative'),
        (lambda: adam(lr=-1e-3), 'lr must be positive'),
        (lambda: adam(betas=(0.9, 1.0)), r'betas must lie in \[0, 1\)'),
        (lambda: adam(betas=(-0.1, 0.9)), r'betas must lie in \[0, 1\)'),
        (lambda: adam(eps=-1), 'eps must be non-negative'),
        (
            lambda: optimizers.AdamW([(np.zeros(2), np.zeros(2))], weight_decay=-1),
            'weight_decay must be non-negative',
        ),
        (lambda: optimizers.CosineAnnealingLR(sgd(), T_max=0), 'T_max must be a positive'),
        (lambda: optimizers.CosineAnnealingLR(sgd(), 10, eta_min=-1), 'eta_min must be'),
        (lambda: one_cycle(max_lr=0), 'max_lr, div_factor and final_div_factor must be positive'),
        (lambda: one_cycle(div_factor=0), 'max_lr, div_factor and final_div_factor must be'),
        (lambda: one_cycle(total_steps=0), 'total_steps must be a positive integer'),
        (lambda: one_cycle(total_steps=10.0), 'total_steps must be a positive integer'),
        (lambda: one_cycle(pct_start=1.0), r'pct_start must lie in \[0, 1\)'),
        (lambda: one_cycle(pct_start=0.1), 'not making a phase 0 steps long'),  # 0.1 * 10 == 1
        (lambda: one_cycle(base_momentum=0.99), 'base_momentum <= max_momentum'),
    ],
)
def test_bad_arguments_raise_value_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize('decoupled', [False, True], ids=['Adam', 'AdamW'])
def test_adam_step_is_its_docstring_formula(decoupled):
    """Adam.step runs in place through a scratch array; its result is the textbook update,
    m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, p -= lr m_hat / (sqrt(v_hat) + eps),
    computed here line by line over 5 steps in float64."""
    rng = np.random.default_rng(0)
    p, grad = rng.standard_normal((2, 3, 4))
    adam = (optimizers.AdamW if decoupled else optimizers.Adam)(
        [(p, grad)], lr=0.1, weight_decay=0.01
    )
    q, m, v, (b1, b2), eps, lr, wd = p.copy(), 0.0, 0.0, adam.betas, adam.eps, 0.1, 0.01
    for t in range(1, 6):
        grad[...] = rng.standard_normal(grad.shape)
        adam.step()
        g = grad if decoupled else grad + wd * q
        q = q * (1 - lr * wd) if decoupled else q
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        q = q - lr * m_hat / (np.sqrt(v_hat) + eps)
        np.testing.assert_allclose(p, q, rtol=1e-13, atol=1e-15)

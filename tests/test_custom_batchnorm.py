"""Tests for custom_batchnorm.py: the three batch-norm variants against
torch.nn.BatchNorm1d, the hand-derived backward pass against finite differences,
and each variant training a tiny network."""

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from custom_batchnorm import (
    CustomBatchNormAutograd,
    CustomBatchNormManualFunction,
    CustomBatchNormManualModule,
)

MODULES = [CustomBatchNormAutograd, CustomBatchNormManualModule]
DEVICES = [
    'cpu',
    pytest.param(
        'cuda',
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA is not available'),
    ),
]
TOL64 = 1e-8


pytestmark = pytest.mark.usefixtures('torch_single_thread')


def _paired(module_cls, n_neurons, dtype=torch.float64, device='cpu', seed=0, **kwargs):
    """A custom module and an nn.BatchNorm1d with the same random gamma/beta."""
    gen = torch.Generator().manual_seed(seed)
    gamma = torch.randn(n_neurons, generator=gen, dtype=dtype)
    beta = torch.randn(n_neurons, generator=gen, dtype=dtype)
    custom = module_cls(n_neurons, **kwargs).to(device=device, dtype=dtype)
    reference = nn.BatchNorm1d(n_neurons, **kwargs).to(device=device, dtype=dtype)
    with torch.no_grad():
        custom.gamma.copy_(gamma)
        custom.beta.copy_(beta)
        reference.weight.copy_(gamma)
        reference.bias.copy_(beta)
    return custom, reference


def _batch(batch_size, n_neurons, dtype=torch.float64, device='cpu', seed=0, scale=3.0, shift=2.0):
    """A batch whose features have non-zero mean and non-unit variance."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, n_neurons, generator=gen, dtype=dtype) * scale + shift
    return x.to(device)


def _max_err(a, b):
    return (a - b).abs().max().item()


# ---------------------------------------------------------------- gradcheck


def _function_inputs(requires, batch_size=6, n_neurons=4, seed=1):
    """float64 (x, gamma, beta); requires[i] says whether the i-th requires grad."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, n_neurons, generator=gen, dtype=torch.float64) * 2 + 1
    gamma = torch.randn(n_neurons, generator=gen, dtype=torch.float64)
    beta = torch.randn(n_neurons, generator=gen, dtype=torch.float64)
    return tuple(t.requires_grad_(r) for t, r in zip((x, gamma, beta), requires))


@pytest.mark.parametrize(
    'requires',
    [
        (True, True, True),
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (False, True, True),
        (True, False, True),
    ],
    ids=lambda r: ''.join(name if flag else '-' for name, flag in zip('xgb', r)),
)
def test_manual_function_gradcheck(requires):
    x, gamma, beta = _function_inputs(requires)
    assert torch.autograd.gradcheck(
        CustomBatchNormManualFunction.apply, (x, gamma, beta, 1e-5), eps=1e-6, atol=1e-6
    )


def test_manual_function_gradcheck_default_eps():
    # The course calls apply(x, gamma, beta) without eps.
    x, gamma, beta = _function_inputs((True, True, True))
    assert torch.autograd.gradcheck(CustomBatchNormManualFunction.apply, (x, gamma, beta))


def test_manual_function_matches_autograd_of_the_formula():
    x, gamma, beta = _function_inputs((True, True, True), batch_size=9, n_neurons=5)
    dy = torch.randn(9, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = CustomBatchNormManualFunction.apply(x, gamma, beta, 1e-3)
    grads = torch.autograd.grad(out, (x, gamma, beta), dy)

    mean = x.mean(0)
    var = x.var(0, unbiased=False)
    expected = gamma * (x - mean) / torch.sqrt(var + 1e-3) + beta
    expected_grads = torch.autograd.grad(expected, (x, gamma, beta), dy)
    assert _max_err(out, expected) < TOL64
    for got, want in zip(grads, expected_grads):
        assert _max_err(got, want) < TOL64


# ------------------------------------------------- needs_input_grad handling


@pytest.fixture
def backward_spy(monkeypatch):
    """Record what CustomBatchNormManualFunction.backward returns."""
    returned = []
    original = CustomBatchNormManualFunction.backward

    def spy(ctx, grad_output):
        result = original(ctx, grad_output)
        returned.append(result)
        return result

    monkeypatch.setattr(CustomBatchNormManualFunction, 'backward', staticmethod(spy))
    return returned


def test_backward_returns_none_for_x_when_only_gamma_requires_grad(backward_spy):
    x, gamma, beta = _function_inputs((False, True, False))
    out = CustomBatchNormManualFunction.apply(x, gamma, beta, 1e-5)
    out.pow(2).sum().backward()

    assert len(backward_spy) == 1
    grad_x, grad_gamma, grad_beta, grad_eps = backward_spy[0]
    assert grad_x is None and grad_beta is None and grad_eps is None
    assert grad_gamma is not None
    assert x.grad is None and beta.grad is None
    x_hat = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    assert _max_err(gamma.grad, (2 * out.detach() * x_hat).sum(0)) < TOL64


def test_backward_returns_none_for_gamma_and_beta_when_only_x_requires_grad(backward_spy):
    x, gamma, beta = _function_inputs((True, False, False))
    CustomBatchNormManualFunction.apply(x, gamma, beta, 1e-5).pow(2).sum().backward()

    assert len(backward_spy) == 1
    grad_x, grad_gamma, grad_beta, grad_eps = backward_spy[0]
    assert grad_x is not None and grad_x.shape == x.shape
    assert grad_gamma is None and grad_beta is None and grad_eps is None
    assert gamma.grad is None and beta.grad is None


class _FakeCtx:
    """Stands in for the autograd context so forward/backward can be called directly."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved_tensors = None

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


class _OpRecorder(TorchFunctionMode):
    """Names of the tensor operations run inside the mode."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, '__name__', str(func))
        # Grad-mode switches and attribute reads are bookkeeping, not arithmetic.
        if name not in ('_set_grad_enabled', '__get__'):
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def _run_backward_directly(needs_input_grad):
    x, gamma, beta = _function_inputs((False, False, False))
    ctx = _FakeCtx(needs_input_grad + (False,))
    out = CustomBatchNormManualFunction.forward(ctx, x, gamma, beta, 1e-5)
    grad_output = torch.ones_like(out)
    with _OpRecorder() as recorder:
        grads = CustomBatchNormManualFunction.backward(ctx, grad_output)
    return ctx.saved_tensors, grads, recorder.ops


def test_backward_does_not_compute_dx_when_x_needs_no_grad():
    _, _, all_ops = _run_backward_directly((True, True, True))
    saved, grads, gamma_ops = _run_backward_directly((False, True, False))

    x_hat, inv_std, gamma = saved
    # Without inv_std and gamma the dx expression cannot even be formed.
    assert x_hat is not None and inv_std is None and gamma is None
    assert grads[0] is None and grads[1] is not None and grads[2] is None and grads[3] is None
    # dgamma = sum_b(dy * x_hat): one product and one reduction, nothing of dx.
    assert sorted(gamma_ops) == ['mul', 'sum'], gamma_ops
    assert len(all_ops) > len(gamma_ops) + 3, 'the recorder should see the dx work'


def test_backward_for_beta_only_saves_nothing():
    saved, grads, ops = _run_backward_directly((False, False, True))
    assert all(t is None for t in saved)
    assert grads[0] is None and grads[1] is None and grads[2] is not None
    assert ops == ['sum']


# ------------------------------------------- modules vs torch.nn.BatchNorm1d


@pytest.mark.parametrize('module_cls', MODULES)
def test_training_forward_and_gradients_match_batchnorm1d(module_cls):
    custom, reference = _paired(module_cls, 7, eps=1e-3)
    x = _batch(16, 7)
    x_custom = x.clone().requires_grad_()
    x_ref = x.clone().requires_grad_()
    dy = _batch(16, 7, seed=5, scale=1.0, shift=0.0)

    out_custom = custom(x_custom)
    out_ref = reference(x_ref)
    out_custom.backward(dy)
    out_ref.backward(dy)

    assert out_custom.shape == x.shape and out_custom.dtype == torch.float64
    assert _max_err(out_custom, out_ref) < TOL64
    assert _max_err(x_custom.grad, x_ref.grad) < TOL64
    assert _max_err(custom.gamma.grad, reference.weight.grad) < TOL64
    assert _max_err(custom.beta.grad, reference.bias.grad) < TOL64


@pytest.mark.parametrize('module_cls', MODULES)
def test_running_stats_match_batchnorm1d_over_several_steps(module_cls):
    custom, reference = _paired(module_cls, 5, momentum=0.3)
    # Different sizes and distributions, so a wrong bias correction or momentum shows.
    for step, batch_size in enumerate([4, 16, 9, 2, 32]):
        x = _batch(batch_size, 5, seed=10 + step, scale=1.0 + step, shift=-2.0 + step)
        custom(x)
        reference(x)
        assert _max_err(custom.running_mean, reference.running_mean) < TOL64
        assert _max_err(custom.running_var, reference.running_var) < TOL64
    # Guard against comparing two untouched buffers.
    assert _max_err(reference.running_var, torch.ones(5, dtype=torch.float64)) > 0.5


@pytest.mark.parametrize('module_cls', MODULES)
def test_eval_outputs_match_batchnorm1d(module_cls):
    custom, reference = _paired(module_cls, 6)
    for step in range(3):
        x = _batch(12, 6, seed=step, shift=float(step))
        custom(x)
        reference(x)
    custom.eval()
    reference.eval()

    x = _batch(10, 6, seed=99)
    out_custom = custom(x)
    assert _max_err(out_custom, reference(x)) < TOL64
    # Eval mode must not touch the running statistics.
    running_mean = custom.running_mean.clone()
    custom(x)
    assert torch.equal(custom.running_mean, running_mean)


@pytest.mark.parametrize('module_cls', MODULES)
def test_single_sample_classifies_in_eval_mode(module_cls):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6), module_cls(6), nn.ReLU(), nn.Linear(6, 3)).double()
    x = _batch(20, 8)
    net(x)  # one training step to move the running statistics
    net.eval()

    batch_logits = net(x)
    single_logits = net(x[:1])
    assert single_logits.shape == (1, 3)
    assert _max_err(single_logits[0], batch_logits[0]) < TOL64
    assert single_logits.argmax(1).item() == batch_logits[0].argmax().item()


@pytest.mark.parametrize('module_cls', MODULES)
@pytest.mark.parametrize('device', DEVICES)
def test_float32_matches_batchnorm1d(module_cls, device):
    custom, reference = _paired(module_cls, 7, dtype=torch.float32, device=device)
    x = _batch(32, 7, dtype=torch.float32, device=device)
    x_custom = x.clone().requires_grad_()
    x_ref = x.clone().requires_grad_()

    out_custom = custom(x_custom)
    out_ref = reference(x_ref)
    out_custom.pow(2).sum().backward()
    out_ref.pow(2).sum().backward()

    assert out_custom.dtype == torch.float32 and out_custom.device == x.device
    assert _max_err(out_custom, out_ref) < 1e-5
    assert _max_err(x_custom.grad, x_ref.grad) < 1e-4
    assert _max_err(custom.gamma.grad, reference.weight.grad) < 1e-4
    assert _max_err(custom.running_var, reference.running_var) < 1e-5
    custom.eval()
    reference.eval()
    assert _max_err(custom(x), reference(x)) < 1e-5


# ----------------------------------------------------------- bad input


@pytest.mark.parametrize('module_cls', MODULES)
@pytest.mark.parametrize('shape', [(7,), (4, 7, 2), (4, 6), (4, 8)], ids=str)
def test_wrong_shape_raises_value_error(module_cls, shape):
    module = module_cls(7)
    with pytest.raises(ValueError, match=r'Expected input of shape \(batch, 7\)'):
        module(torch.randn(*shape))


@pytest.mark.parametrize('module_cls', MODULES)
def test_single_sample_in_training_mode_raises_value_error(module_cls):
    module = module_cls(7)
    with pytest.raises(ValueError, match=r'more than 1 sample.*training mode'):
        module(torch.randn(1, 7))
    module.eval()
    assert module(torch.randn(1, 7)).shape == (1, 7)


@pytest.mark.parametrize('module_cls', MODULES)
def test_non_tensor_input_raises_type_error(module_cls):
    with pytest.raises(TypeError, match=r'torch\.Tensor of shape \(batch, 3\)'):
        module_cls(3)([[1.0, 2.0, 3.0]])


# ----------------------------------------------------------- training


def _toy_problem(n_samples=256, n_features=20, n_classes=3, seed=0):
    """Linearly separable labels: argmax of a fixed random linear map."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, n_features, generator=gen)
    labels = (x @ torch.randn(n_features, n_classes, generator=gen)).argmax(1)
    return x, labels


@pytest.mark.parametrize(
    'bn_cls',
    [CustomBatchNormAutograd, CustomBatchNormManualModule, nn.BatchNorm1d],
    ids=lambda cls: cls.__name__,
)
def test_each_variant_trains_a_tiny_network(bn_cls):
    x, labels = _toy_problem()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 32), bn_cls(32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()

    losses = []
    for _ in range(100):
        optimizer.zero_grad()
        loss = loss_fn(net(x), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    net.eval()
    with torch.no_grad():
        accuracy = (net(x).argmax(1) == labels).float().mean().item()
    assert losses[-1] < losses[0] / 50, (losses[0], losses[-1])
    assert accuracy > 0.9, accuracy

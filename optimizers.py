"""Optimizers and learning-rate schedules in NumPy, following torch.optim's update rules so
that the two compare number for number (tests/test_optimizers.py does, step by step).

An optimizer holds (param, grad) array pairs; step() updates each param in place and only
reads its grad (backward refills it every step). A schedule sets optimizer.lr (OneCycleLR
also SGD's momentum or Adam's beta1) when built and at each step(), which is called after
optimizer.step() as in torch. p is a param, wd the weight decay, mu the momentum.
"""

import math

import numpy as np


def _check(ok, message):
    if not ok:
        raise ValueError(message)


def _decays(pairs, weight_decay, decay_1d):
    """The weight decay of each parameter: decay_1d=False spares the 1-D ones (biases, batch
    norm's gamma and beta), as the parameter groups of train_convnet_pytorch.py do."""
    return [float(weight_decay) if decay_1d or p.ndim > 1 else 0.0 for p, _ in pairs]


def _copy_of(array, like):
    """array as a new array of like's shape and dtype; ValueError if the shapes differ."""
    _check(
        np.shape(array) == like.shape,
        f'a saved state of shape {np.shape(array)} does not fit a parameter of shape {like.shape}.',
    )
    return np.array(array, dtype=like.dtype)


class SGD:
    """torch.optim.SGD with dampening 0. With g = grad + wd p (L2 weight decay):

    b = g at the first step, then b = mu b + g      (the momentum buffer)
    d = b, or with Nesterov d = g + mu b            (d = g without momentum)
    p -= lr d
    """

    def __init__(self, pairs, lr, momentum=0.0, nesterov=False, weight_decay=0.0, decay_1d=True):
        _check(lr > 0, f'lr must be positive, got {lr}.')
        _check(momentum >= 0, f'momentum must be non-negative, got {momentum}.')
        _check(not nesterov or momentum > 0, 'nesterov=True needs a positive momentum.')
        _check(weight_decay >= 0, f'weight_decay must be non-negative, got {weight_decay}.')
        self.pairs, self.lr, self.momentum = list(pairs), float(lr), float(momentum)
        self.nesterov, self.weight_decay = nesterov, float(weight_decay)
        self.decays = _decays(self.pairs, weight_decay, decay_1d)
        self.buffers = [None] * len(self.pairs)  # momentum buffers b, made at the first step

    def step(self):
        mu = self.momentum
        for i, ((p, grad), wd) in enumerate(zip(self.pairs, self.decays)):
            g = grad + wd * p if wd else grad
            d = g
            if mu:  # read at every step: OneCycleLR may set a momentum later
                b = self.buffers[i]
                # torch starts the buffer at the first gradient (a copy: backward refills
                # grad), not at 0
                b = g.copy() if b is None else mu * b + g
                self.buffers[i] = b
                d = g + mu * b if self.nesterov else b
            p -= self.lr * d

    def state_dict(self):
        """What step() goes on from, as arrays and plain values (for checkpoints)."""
        buffers = {f'buffer/{i}': b for i, b in enumerate(self.buffers) if b is not None}
        return {'lr': self.lr, 'momentum': self.momentum, **buffers}

    def load_state_dict(self, state):
        self.lr, self.momentum = state['lr'], state['momentum']
        for i, (p, _) in enumerate(self.pairs):
            b = state.get(f'buffer/{i}')
            self.buffers[i] = None if b is None else _copy_of(b, p)


class Adam:
    """torch.optim.Adam (amsgrad off). With g = grad + wd p (L2 weight decay), at step t:

    m = b1 m + (1 - b1) g             (first moment)
    v = b2 v + (1 - b2) g^2           (second moment)
    m_hat = m / (1 - b1^t)            (bias corrections: m and v start at 0)
    v_hat = v / (1 - b2^t)
    p -= lr m_hat / (sqrt(v_hat) + eps)
    """

    decoupled = False  # True in AdamW: p *= 1 - lr wd instead of g = grad + wd p

    def __init__(
        self, pairs, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decay_1d=True
    ):
        _check(lr > 0, f'lr must be positive, got {lr}.')
        _check(all(0 <= b < 1 for b in betas), f'betas must lie in [0, 1), got {betas}.')
        _check(eps >= 0, f'eps must be non-negative, got {eps}.')
        _check(weight_decay >= 0, f'weight_decay must be non-negative, got {weight_decay}.')
        self.pairs, self.lr, self.betas = list(pairs), float(lr), tuple(map(float, betas))
        self.eps, self.weight_decay, self.t = float(eps), float(weight_decay), 0
        self.decays = _decays(self.pairs, weight_decay, decay_1d)
        self.m = [np.zeros_like(p) for p, _ in self.pairs]
        self.v = [np.zeros_like(p) for p, _ in self.pairs]
        self.tmp = [np.empty_like(p) for p, _ in self.pairs]  # one scratch array each

    def step(self):
        """The docstring's update, each line in place through one scratch array: new arrays
        of the size of the parameters would be allocated a dozen times a step (benchmark.py's
        AdamW and ConvNet rows; tests/test_optimizers.py checks it against the formulas)."""
        self.t += 1
        t, lr, eps, (b1, b2) = self.t, self.lr, self.eps, self.betas
        for i, ((p, grad), wd) in enumerate(zip(self.pairs, self.decays)):
            m, v, tmp, g = self.m[i], self.v[i], self.tmp[i], grad
            if wd and self.decoupled:
                p *= 1 - lr * wd  # AdamW: the weights decay, not through the gradient
            elif wd:
                g = grad + wd * p
            # m = b1 m + (1 - b1) g
            m *= b1
            np.multiply(g, 1 - b1, out=tmp)
            m += tmp
            # v = b2 v + (1 - b2) g^2
            v *= b2
            np.multiply(g, g, out=tmp)
            tmp *= 1 - b2
            v += tmp
            # p -= lr m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)
            np.divide(v, 1 - b2**t, out=tmp)
            np.sqrt(tmp, out=tmp)
            tmp += eps
            np.divide(m, tmp, out=tmp)
            tmp *= lr / (1 - b1**t)
            p -= tmp

    def state_dict(self):
        """What step() goes on from, as arrays and plain values (for checkpoints)."""
        moments = {
            f'{name}/{i}': a
            for name, arrays in (('m', self.m), ('v', self.v))
            for i, a in enumerate(arrays)
        }
        return {'lr': self.lr, 'betas': list(self.betas), 't': self.t, **moments}

    def load_state_dict(self, state):
        self.lr, self.betas, self.t = state['lr'], tuple(state['betas']), state['t']
        for i, (p, _) in enumerate(self.pairs):
            self.m[i][...] = _copy_of(state[f'm/{i}'], p)
            self.v[i][...] = _copy_of(state[f'v/{i}'], p)


class AdamW(Adam):
    """torch.optim.AdamW: decoupled weight decay, p *= 1 - lr wd, then the Adam step with
    g = grad."""

    decoupled = True

    def __init__(
        self, pairs, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, decay_1d=True
    ):
        super().__init__(pairs, lr, betas, eps, weight_decay, decay_1d)


class CosineAnnealingLR:
    """lr_t = eta_min + (lr_0 - eta_min) (1 + cos(pi t / T_max)) / 2, computed as torch does,
    from the optimizer's current lr (the closed form drifts 1e-11 from it in 20000 steps):
    lr_t = eta_min + (lr_{t-1} - eta_min) (1 + cos(pi t / T_max)) / (1 + cos(pi (t-1) / T_max))"""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        _check(T_max >= 1, f'T_max must be a positive number of steps, got {T_max}.')
        _check(eta_min >= 0, f'eta_min must be non-negative, got {eta_min}.')
        self.optimizer, self.T_max, self.eta_min = optimizer, T_max, eta_min
        self.base_lr, self.t = optimizer.lr, 0  # step 0 keeps the optimizer's lr

    def step(self):
        self.t += 1
        opt, t, T, eta_min = self.optimizer, self.t, self.T_max, self.eta_min
        if (t - 1 - T) % (2 * T) == 0:  # past a minimum, where the ratio below would be x / 0
            opt.lr = opt.lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
        else:
            ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
            opt.lr = ratio * (opt.lr - eta_min) + eta_min

    def state_dict(self):
        """The step count; the lr (and momentum) it set are in the optimizer's state."""
        return {'t': self.t}

    def load_state_dict(self, state):
        self.t = state['t']


class OneCycleLR:
    """torch's OneCycleLR (cosine, two phases, cycle_momentum=True). Over the first
    pct_start of the steps the lr rises from max_lr / div_factor to max_lr and the momentum
    (SGD's momentum, Adam's beta1) falls from max_momentum to base_momentum; then the lr falls
    to max_lr / div_factor / final_div_factor and the momentum rises back. Each phase goes
    from a to b as b + (a - b) / 2 (cos(pi pct) + 1), pct from 0 to 1."""

    def __init__(
        self,
        optimizer,
        max_lr,
        total_steps,
        pct_start=0.3,
        div_factor=25.0,
        final_div_factor=1e4,
        base_momentum=0.85,
        max_momentum=0.95,
    ):
        _check(
            max_lr > 0 and div_factor > 0 and final_div_factor > 0,
            'max_lr, div_factor and final_div_factor must be positive.',
        )
        _check(
            isinstance(total_steps, int) and total_steps > 0,
            f'total_steps must be a positive integer, got {total_steps}.',
        )
        _check(
            0 <= pct_start < 1 and pct_start * total_steps != 1,
            f'pct_start must lie in [0, 1), not making a phase 0 steps long, got {pct_start}.',
        )
        _check(
            0 <= base_momentum <= max_momentum < 1,
            'base_momentum <= max_momentum must lie in [0, 1).',
        )
        self.optimizer, self.total_steps = optimizer, total_steps
        initial_lr = max_lr / div_factor
        self.lrs = (initial_lr, max_lr, initial_lr / final_div_factor)
        self.momentums = (max_momentum, base_momentum, max_momentum)
        self.warmup_end = float(pct_start * total_steps) - 1  # the step the lr peaks at
        self.t = -1
        self.step()  # as torch: step 0 sets the initial lr and momentum

    def step(self):
        self.t += 1
        t, end, last = self.t, self.warmup_end, self.total_steps - 1
        _check(t <= self.total_steps, f'OneCycleLR stepped {t} times, past total_steps.')
        phase, pct = (0, t / end) if t <= end else (1, (t - end) / (last - end))
        cos_out = math.cos(math.pi * pct) + 1
        (lr_a, lr_b), (mom_a, mom_b) = (
            self.lrs[phase : phase + 2],
            self.momentums[phase : phase + 2],
        )
        self.optimizer.lr = lr_b + (lr_a - lr_b) / 2.0 * cos_out
        momentum = mom_b + (mom_a - mom_b) / 2.0 * cos_out
        if hasattr(self.optimizer, 'betas'):
            self.optimizer.betas = (momentum, self.optimizer.betas[1])
        else:
            self.optimizer.momentum = momentum

    def state_dict(self):
        """The step count; the lr (and momentum) it set are in the optimizer's state."""
        return {'t': self.t}

    def load_state_dict(self, state):
        self.t = state['t']

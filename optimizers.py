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


def _decayed_gradient(p, grad, wd, out):
    """out = grad + wd p (L2 weight decay): grad itself stays as backward wrote it."""
    np.multiply(p, wd, out=out)
    out += grad
    return out


def _decays(pairs, weight_decay, decay_1d):
    """The weight decay of each parameter: decay_1d=False spares the 1-D ones (biases, batch
    norm's gamma and beta), as the parameter groups of train_convnet_pytorch.py do."""
    return [float(weight_decay) if decay_1d or p.ndim > 1 else 0.0 for p, _ in pairs]


def _copy_of(array, like):
    """array as a new array of like's shape and dtype; ValueError if the shapes differ."""
    _check(np.shape(array) == like.shape,
           f'a saved state of shape {np.shape(array)} does not fit a parameter of shape '
           f'{like.shape}.')
    return np.array(array, dtype=like.dtype)


class SGD:
    """torch.optim.SGD, dampening 0: g = grad + wd p;  b = g at first, then b = mu b + g;
    p -= lr b, or with Nesterov p -= lr (g + mu b)."""

    def __init__(self, pairs, lr, momentum=0.0, nesterov=False, weight_decay=0.0,
                 decay_1d=True):
        _check(lr > 0, f'lr must be positive, got {lr}.')
        _check(momentum >= 0, f'momentum must be non-negative, got {momentum}.')
        _check(not nesterov or momentum > 0, 'nesterov=True needs a positive momentum.')
        _check(weight_decay >= 0, f'weight_decay must be non-negative, got {weight_decay}.')
        self.pairs, self.lr, self.momentum = list(pairs), float(lr), float(momentum)
        self.nesterov, self.weight_decay = nesterov, float(weight_decay)
        self.decays = _decays(self.pairs, weight_decay, decay_1d)
        self.buffers = [None] * len(self.pairs)  # momentum buffers, made on first use
        self.scratch = [np.empty_like(p) for p, _ in self.pairs]  # allocated once
        self.decayed = [np.empty_like(p) for p, _ in self.pairs] if weight_decay else None

    def step(self):
        mu = self.momentum
        for i, (p, grad) in enumerate(self.pairs):
            wd = self.decays[i]
            d = g = _decayed_gradient(p, grad, wd, self.decayed[i]) if wd else grad
            tmp = self.scratch[i]
            if mu:  # torch checks at each step: OneCycleLR may set a momentum later
                b = self.buffers[i]
                if b is None:  # torch starts the buffer at the first gradient, not at 0
                    b = self.buffers[i] = g.astype(p.dtype)
                else:  # b = mu b + g
                    b *= mu
                    b += g
                d = b
                if self.nesterov:  # d = g + mu b
                    d = np.multiply(b, mu, out=tmp)
                    d += g
            np.multiply(d, self.lr, out=tmp)  # p -= lr d
            p -= tmp

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
    """torch.optim.Adam (amsgrad off), L2 weight decay g = grad + wd p; at step t
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), m and v as below."""

    decoupled = False

    def __init__(self, pairs, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decay_1d=True):
        _check(lr > 0, f'lr must be positive, got {lr}.')
        _check(all(0 <= b < 1 for b in betas), f'betas must lie in [0, 1), got {betas}.')
        _check(eps >= 0, f'eps must be non-negative, got {eps}.')
        _check(weight_decay >= 0, f'weight_decay must be non-negative, got {weight_decay}.')
        self.lr, self.betas = float(lr), tuple(map(float, betas))
        self.eps, self.weight_decay, self.t = float(eps), float(weight_decay), 0
        # Per parameter: param, grad, first moment m, second moment v, scratch, and for L2
        # decay a buffer for grad + wd p (grad itself stays as backward wrote it).
        pairs = list(pairs)
        l2 = weight_decay and not self.decoupled
        self.decays = _decays(pairs, weight_decay, decay_1d)
        self.state = [(p, grad, np.zeros_like(p), np.zeros_like(p), np.empty_like(p),
                       np.empty_like(p) if l2 else None) for p, grad in pairs]

    def step(self):
        self.t += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1 ** self.t)  # lr / bias correction 1
        bc2_sqrt = (1 - b2 ** self.t) ** 0.5  # sqrt(bias correction 2)
        for (p, g, m, v, tmp, decayed), wd in zip(self.state, self.decays):
            if wd and self.decoupled:  # AdamW: p *= 1 - lr wd
                p *= 1 - self.lr * wd
            elif wd:  # Adam: g = grad + wd p
                g = _decayed_gradient(p, g, wd, decayed)
            np.subtract(g, m, out=tmp)  # m = b1 m + (1-b1) g, as torch: m += (1-b1)(g - m)
            tmp *= 1 - b1
            m += tmp
            np.multiply(g, g, out=tmp)  # v = b2 v + (1-b2) g^2
            tmp *= 1 - b2
            v *= b2
            v += tmp
            # p -= step_size m / (sqrt(v) / sqrt(1 - b2^t) + eps), with step_size moved into
            # the denominator (as torch's capturable Adam does) to save a pass
            denom = np.sqrt(v, out=tmp)
            denom /= bc2_sqrt * step_size
            denom += self.eps / step_size
            p -= np.divide(m, denom, out=tmp)

    def state_dict(self):
        """What step() goes on from, as arrays and plain values (for checkpoints)."""
        moments = {f'{name}/{i}': a for i, (_, _, m, v, _, _) in enumerate(self.state)
                   for name, a in (('m', m), ('v', v))}
        return {'lr': self.lr, 'betas': list(self.betas), 't': self.t, **moments}

    def load_state_dict(self, state):
        self.lr, self.betas, self.t = state['lr'], tuple(state['betas']), state['t']
        for i, (p, _, m, v, _, _) in enumerate(self.state):
            m[...] = _copy_of(state[f'm/{i}'], p)
            v[...] = _copy_of(state[f'v/{i}'], p)


class AdamW(Adam):
    """torch.optim.AdamW: decoupled weight decay, p *= 1 - lr wd before the Adam step."""

    decoupled = True

    def __init__(self, pairs, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 decay_1d=True):
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

    def __init__(self, optimizer, max_lr, total_steps, pct_start=0.3, div_factor=25.0,
                 final_div_factor=1e4, base_momentum=0.85, max_momentum=0.95):
        _check(max_lr > 0 and div_factor > 0 and final_div_factor > 0,
               'max_lr, div_factor and final_div_factor must be positive.')
        _check(isinstance(total_steps, int) and total_steps > 0,
               f'total_steps must be a positive integer, got {total_steps}.')
        _check(0 <= pct_start < 1 and pct_start * total_steps != 1,
               f'pct_start must lie in [0, 1), not making a phase 0 steps long, got {pct_start}.')
        _check(0 <= base_momentum <= max_momentum < 1,
               'base_momentum <= max_momentum must lie in [0, 1).')
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
        (lr_a, lr_b), (mom_a, mom_b) = self.lrs[phase:phase + 2], self.momentums[phase:phase + 2]
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

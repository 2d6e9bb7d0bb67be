"""Batch normalization for fully connected layers, written three ways.

The three variants compute the same function as ``torch.nn.BatchNorm1d`` on 2-D
inputs and differ only in how the gradient is obtained:

- ``CustomBatchNormAutograd``: an ``nn.Module`` built from plain tensor ops;
  autograd derives the backward pass.
- ``CustomBatchNormManualFunction``: a ``torch.autograd.Function`` with a
  hand-derived backward pass (no autograd inside it).
- ``CustomBatchNormManualModule``: an ``nn.Module`` that wraps the manual
  function and owns the parameters and running statistics.

All variants take an input of shape (B, D) -- B samples, D neurons (features) --
in float32 or float64 on any device; the output has the same shape, dtype and
device. In training mode the input is normalised with the batch mean and the
biased batch variance, and the running statistics are updated exactly as
``torch.nn.BatchNorm1d`` updates them:

    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var_unbiased

In eval mode the running statistics are used instead, so any batch size
(including 1) works.

Names and signatures follow the 2018 UvA Deep Learning course assignment 1.
"""

import torch
from torch import nn
from torch.autograd.function import once_differentiable


class _BatchNormBase(nn.Module):
    """Parameters, buffers, input check and running-statistics update shared by
    the two batch-norm modules.

    Attributes:
    - gamma: nn.Parameter of shape (D,), initialised to ones (scale).
    - beta: nn.Parameter of shape (D,), initialised to zeros (shift).
    - running_mean: buffer of shape (D,), initialised to zeros.
    - running_var: buffer of shape (D,), initialised to ones.
    """

    def __init__(self, n_neurons, eps=1e-5, momentum=0.1):
        """
        Inputs:
        - n_neurons: int D, number of neurons (features) of the input.
        - eps: float added to the variance for numerical stability.
        - momentum: float in [0, 1], weight of the current batch in the
          running statistics (same convention as torch.nn.BatchNorm1d).
        """
        super().__init__()
        if int(n_neurons) != n_neurons or n_neurons < 1:
            raise ValueError(f'n_neurons must be a positive integer, got {n_neurons!r}.')
        self.n_neurons = int(n_neurons)
        self.eps = eps
        self.momentum = momentum
        self.gamma = nn.Parameter(torch.ones(self.n_neurons))
        self.beta = nn.Parameter(torch.zeros(self.n_neurons))
        self.register_buffer('running_mean', torch.zeros(self.n_neurons))
        self.register_buffer('running_var', torch.ones(self.n_neurons))

    def extra_repr(self):
        return f'{self.n_neurons}, eps={self.eps}, momentum={self.momentum}'

    def _check_input(self, input):
        """Raise TypeError unless input is a tensor, and ValueError unless it has
        shape (B, n_neurons) with B > 1 in training mode."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(
                f'Expected a torch.Tensor of shape (batch, {self.n_neurons}), '
                f'got {type(input).__name__}.'
            )
        if input.dim() != 2 or input.shape[1] != self.n_neurons:
            raise ValueError(
                f'Expected input of shape (batch, {self.n_neurons}), got shape '
                f'{tuple(input.shape)}; reshape it to (batch, n_neurons) first.'
            )
        # With one sample the batch variance is zero (and its unbiased
        # estimate undefined), so the output would be just beta; torch refuses too.
        if self.training and input.shape[0] < 2:
            raise ValueError(
                f'Expected more than 1 sample per batch in training mode, got input '
                f'of shape {tuple(input.shape)}; use a larger batch or call .eval().'
            )

    @torch.no_grad()
    def _update_running_stats(self, mean, var, batch_size):
        """Momentum update of the running statistics, as torch.nn.BatchNorm1d.

        Inputs:
        - mean: tensor of shape (D,), batch mean.
        - var: tensor of shape (D,), biased batch variance (divided by B).
        - batch_size: int B > 1.
        """
        # torch tracks the unbiased variance, the estimate to use at test time.
        var_unbiased = var * (batch_size / (batch_size - 1))
        self.running_mean.mul_(1 - self.momentum).add_(mean, alpha=self.momentum)
        self.running_var.mul_(1 - self.momentum).add_(var_unbiased, alpha=self.momentum)

    def _eval_forward(self, input):
        """Normalise with the running statistics; output of shape (B, D)."""
        inv_std = torch.rsqrt(self.running_var + self.eps)
        return (input - self.running_mean) * (inv_std * self.gamma) + self.beta


class CustomBatchNormAutograd(_BatchNormBase):
    """Batch normalization whose backward pass autograd derives.

    Inputs to forward:
    - input: tensor of shape (B, D), float32 or float64, on the same device and
      of the same dtype as the module's parameters. B > 1 in training mode.

    Returns:
    - out: tensor of shape (B, D), same dtype and device as input:
      gamma * (input - mean) / sqrt(var + eps) + beta, with the batch mean and
      biased batch variance in training mode and the running statistics in eval
      mode.

    Raises ValueError for an input that is not of shape (B, D), or B == 1 in
    training mode.
    """

    def forward(self, input):
        self._check_input(input)
        if not self.training:
            return self._eval_forward(input)
        mean = input.mean(dim=0)
        centered = input - mean
        var = (centered * centered).mean(dim=0)
        x_hat = centered / torch.sqrt(var + self.eps)
        self._update_running_stats(mean.detach(), var.detach(), input.shape[0])
        return self.gamma * x_hat + self.beta


class CustomBatchNormManualFunction(torch.autograd.Function):
    """Training-mode batch normalization with a hand-derived backward pass.

    Usage: ``out = CustomBatchNormManualFunction.apply(input, gamma, beta, eps)``.

    Forward inputs:
    - input: tensor x of shape (B, D), float32 or float64, B > 1.
    - gamma: tensor of shape (D,), same dtype and device as input.
    - beta: tensor of shape (D,), same dtype and device as input.
    - eps: float added to the variance (default 1e-5); gets no gradient.

    Returns:
    - out: tensor y of shape (B, D), y = gamma * x_hat + beta, where
      mu = mean_b x, var = mean_b (x - mu)^2 (biased), inv_std = 1 / sqrt(var + eps)
      and x_hat = (x - mu) * inv_std.

    Backward, per feature (all sums over the batch index b, dy = dL/dy):

      dL/dbeta  = sum_b dy
      dL/dgamma = sum_b dy * x_hat
      dL/dx_hat = gamma * dy

    x_hat depends on x directly and through mu and var:

      d mu / dx_b    = 1 / B
      d var / dx_b   = 2 (x_b - mu) / B                (the term through mu sums to 0)
      dx_hat_i / dx_b = inv_std * ([i == b] - 1/B) - (x_i - mu) * inv_std^3 * (x_b - mu) / B
                      = (inv_std / B) * (B [i == b] - 1 - x_hat_i * x_hat_b)

    Chaining with g = dL/dx_hat = gamma * dy:

      dL/dx_b = sum_i g_i dx_hat_i / dx_b
              = (inv_std / B) * (B g_b - sum_i g_i - x_hat_b * sum_i g_i x_hat_i)

    and since gamma is constant over the batch it factors out:

      dL/dx = (gamma * inv_std / B) * (B * dy - sum_b dy - x_hat * sum_b (dy * x_hat))

    Memory: only x_hat (B, D), inv_std (D,) and gamma (D,) are saved, and each only
    when a requested gradient needs it: x_hat for dx or dgamma, inv_std and gamma
    for dx only. dbeta needs nothing saved.
    """

    @staticmethod
    def forward(ctx, input, gamma, beta, eps=1e-5):
        needs_x, needs_gamma = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        mean = input.mean(dim=0)
        centered = input - mean
        var = (centered * centered).mean(dim=0)
        inv_std = torch.rsqrt(var + eps)
        x_hat = centered * inv_std
        ctx.save_for_backward(
            x_hat if (needs_x or needs_gamma) else None,
            inv_std if needs_x else None,
            gamma if needs_x else None,
        )
        return gamma * x_hat + beta

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        """
        Inputs:
        - grad_output: tensor dy of shape (B, D), dL/dout.

        Returns a tuple (dx, dgamma, dbeta, None) of shapes (B, D), (D,), (D,);
        an entry is None when that input does not require a gradient.
        """
        needs_x, needs_gamma, needs_beta = ctx.needs_input_grad[:3]
        x_hat, inv_std, gamma = ctx.saved_tensors
        grad_input = grad_gamma = grad_beta = None

        if needs_x or needs_beta:
            sum_dy = grad_output.sum(dim=0)
            if needs_beta:
                grad_beta = sum_dy
        if needs_x or needs_gamma:
            sum_dy_xhat = (grad_output * x_hat).sum(dim=0)
            if needs_gamma:
                grad_gamma = sum_dy_xhat
        if needs_x:
            batch_size = grad_output.shape[0]
            grad_input = (gamma * inv_std / batch_size) * (
                batch_size * grad_output - sum_dy - x_hat * sum_dy_xhat
            )
        return grad_input, grad_gamma, grad_beta, None


class CustomBatchNormManualModule(_BatchNormBase):
    """Batch normalization module around CustomBatchNormManualFunction.

    Inputs to forward:
    - input: tensor of shape (B, D), float32 or float64, on the same device and
      of the same dtype as the module's parameters. B > 1 in training mode.

    Returns:
    - out: tensor of shape (B, D), same dtype and device as input. Training mode
      uses the manual function (batch statistics); eval mode uses the running
      statistics with plain tensor ops.

    Raises ValueError for an input that is not of shape (B, D), or B == 1 in
    training mode.
    """

    def forward(self, input):
        self._check_input(input)
        if not self.training:
            return self._eval_forward(input)
        with torch.no_grad():
            var, mean = torch.var_mean(input, dim=0, correction=0)
        self._update_running_stats(mean, var, input.shape[0])
        return CustomBatchNormManualFunction.apply(input, self.gamma, self.beta, self.eps)

"""NumPy modules with hand-written forward and backward passes.

Every module works on a whole batch at once with matrix operations. forward caches what
backward needs; backward takes the gradient of the loss with respect to the module's output
and returns it with respect to the input. Modules with parameters keep them in
``params`` and fill ``grads`` (same keys, same shapes) in backward.

The derivations (B is the batch size, y the output, x the input, L the loss):

    Linear       y = x W^T + b        dL/dx = dL/dy W,  dL/dW = (dL/dy)^T x,  dL/db = sum_b dL/dy
    ReLU         y = max(0, x)        dL/dx = dL/dy * [x > 0]          (the derivative is 1, not x)
    Softmax      y_i = e^{x_i} / sum_j e^{x_j}
                 dy_i/dx_j = y_i (delta_ij - y_j)
                 dL/dx = y * (dL/dy - sum_j dL/dy_j y_j)           (row by row)
    CrossEntropy L = -1/B sum_b sum_i t_bi log x_bi
                 dL/dx = -t / (B x)
    BatchNorm    x_hat = (x - mu) / sigma,  sigma = sqrt(var + eps),  y = gamma x_hat + beta
                 (mu, var: per-feature batch mean and biased variance in training)
                 dL/dgamma = sum_b dL/dy x_hat,  dL/dbeta = sum_b dL/dy
                 dL/dx = gamma / (B sigma) (B dL/dy - sum_b dL/dy - x_hat sum_b dL/dy x_hat)
                 (in evaluation mu and sigma are constants: dL/dx = gamma / sigma dL/dy)
    Dropout      y = x m / (1 - p),  m ~ Bernoulli(1 - p) per unit
                 dL/dx = dL/dy m / (1 - p)                      (the same mask m)

unittests.py checks each of them against central differences in float64.
"""
import numpy as np


class LinearModule:
    """Affine layer y = x W^T + b.

    params['weight']: (out_features, in_features), drawn from N(0, 0.0001^2) as in the course.
    params['bias']: (out_features,), zeros.
    """

    def __init__(self, in_features, out_features, dtype=np.float64, rng=None):
        rng = np.random.default_rng() if rng is None else rng
        weight = rng.normal(0.0, 1e-4, size=(out_features, in_features)).astype(dtype)
        self.params = {'weight': weight, 'bias': np.zeros(out_features, dtype=dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.x = None

    def forward(self, x):
        """x: (B, in_features) -> (B, out_features)."""
        self.x = x
        # x @ W.T lets BLAS read W transposed in place (no copy of the weight matrix); adding
        # the bias in place saves a second (B, out_features) array.
        out = x @ self.params['weight'].T
        out += self.params['bias']
        return out

    def backward(self, dout, input_grad=True):
        """dout: (B, out_features) -> dx: (B, in_features); fills grads.

        input_grad=False skips dx (returns None): the first layer's dx is a third of its
        backward work and nothing uses it in training.
        """
        # out= writes into the existing gradient buffers instead of allocating new ones.
        np.matmul(dout.T, self.x, out=self.grads['weight'])
        np.sum(dout, axis=0, out=self.grads['bias'])
        return dout @ self.params['weight'] if input_grad else None


class ReLUModule:
    """Elementwise y = max(0, x), any shape."""

    def forward(self, x):
        # One pass; backward reads the mask off the output (y > 0 exactly where x > 0).
        self.out = np.maximum(x, 0)
        return self.out

    def backward(self, dout):
        return dout * (self.out > 0)


class SoftMaxModule:
    """Row-wise softmax, (B, C) -> (B, C), stable for large inputs (the row maximum is
    subtracted first, so exp never overflows)."""

    def forward(self, x):
        z = np.exp(x - x.max(axis=1, keepdims=True))
        z /= z.sum(axis=1, keepdims=True)
        self.out = z
        return z

    def backward(self, dout):
        y = self.out
        return y * (dout - np.sum(dout * y, axis=1, keepdims=True))


class CrossEntropyModule:
    """Mean over the batch of -sum_i t_i log x_i, for probabilities x and targets t (B, C).

    A probability of exactly 0 is raised to the smallest positive float of its dtype, so the
    loss stays finite where a class is certain to be wrong.
    """

    @staticmethod
    def _safe(x):
        return np.maximum(x, np.finfo(x.dtype).tiny)

    def forward(self, x, y):
        return -np.sum(y * np.log(self._safe(x))) / x.shape[0]

    def backward(self, x, y):
        return -y / (self._safe(x) * x.shape[0])


class BatchNormModule:
    """Batch normalization over the batch axis, (B, D) -> (B, D), as torch.nn.BatchNorm1d.

    Training (``training = True``, the default): each feature is normalised with the batch
    mean mu and the biased batch variance var (divided by B), then scaled and shifted:

        x_hat = (x - mu) / sigma,   sigma = sqrt(var + eps),   y = gamma * x_hat + beta

    and the running statistics move towards the batch's, with the unbiased variance
    (divided by B - 1) because that is the estimate to use on new data:

        running_mean = (1 - momentum) * running_mean + momentum * mu
        running_var  = (1 - momentum) * running_var  + momentum * var * B / (B - 1)

    Evaluation (``training = False``): running_mean and running_var take the place of mu and
    var, so the output of a sample no longer depends on the rest of its batch (any B works).

    params['gamma']: (D,), ones; params['beta']: (D,), zeros. running_mean: (D,), zeros;
    running_var: (D,), ones. All in ``dtype``, which the input should share.

    Backward in training. With dy = dL/dy, dL/dbeta = sum_b dy and dL/dgamma = sum_b dy x_hat.
    x_hat_i depends on every x_b of its feature, directly and through mu and sigma:
    d mu / dx_b = 1/B and d sigma / dx_b = (x_b - mu) / (B sigma) = x_hat_b / B, so

        d x_hat_i / d x_b = ([i == b] - 1/B) / sigma - x_hat_i x_hat_b / (B sigma)
                          = (B [i == b] - 1 - x_hat_i x_hat_b) / (B sigma).

    Summing gamma dy_i d x_hat_i / d x_b over i (gamma is the same for all i):

        dL/dx = gamma / (B sigma) * (B dy - sum_b dy - x_hat * sum_b (dy x_hat)).

    The two sums are dL/dbeta and dL/dgamma, so backward reuses them. In evaluation mu and
    sigma are constants and dL/dx = gamma / sigma * dy.
    """

    def __init__(self, n_neurons, eps=1e-5, momentum=0.1, dtype=np.float64):
        self.n_neurons, self.eps, self.momentum = n_neurons, eps, momentum
        self.params = {'gamma': np.ones(n_neurons, dtype=dtype),
                       'beta': np.zeros(n_neurons, dtype=dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.running_mean = np.zeros(n_neurons, dtype=dtype)
        self.running_var = np.ones(n_neurons, dtype=dtype)
        self.training = True
        self.x_hat = self.inv_std = None
        self.used_batch_stats = True

    def forward(self, x):
        """x: (B, D) -> (B, D). In training B must be at least 2 (one sample has no variance)."""
        if self.training:
            B = x.shape[0]
            if B < 2:
                raise ValueError(f'Batch norm needs at least 2 samples per batch in training '
                                 f'mode, got input of shape {x.shape}; set training = False '
                                 f'to use the running statistics.')
            mean = x.mean(axis=0)
            x_hat = x - mean  # centred here, normalised in place below
            # einsum sums the squares without a (B, D) array of them (several times faster).
            var = np.einsum('bd,bd->d', x_hat, x_hat) / B
            inv_std = 1 / np.sqrt(var + self.eps)
            m = self.momentum
            self.running_mean *= 1 - m
            self.running_mean += m * mean
            self.running_var *= 1 - m
            self.running_var += (m * B / (B - 1)) * var  # the unbiased variance
        else:
            inv_std = 1 / np.sqrt(self.running_var + self.eps)
            x_hat = x - self.running_mean
        x_hat *= inv_std
        # backward follows the statistics forward used, even if training changes in between.
        self.x_hat, self.inv_std, self.used_batch_stats = x_hat, inv_std, self.training
        out = x_hat * self.params['gamma']
        out += self.params['beta']
        return out

    def backward(self, dout):
        """dout: (B, D) -> dx: (B, D); fills grads."""
        x_hat, gamma = self.x_hat, self.params['gamma']
        dbeta = np.sum(dout, axis=0, out=self.grads['beta'])
        dgamma = np.einsum('bd,bd->d', dout, x_hat, out=self.grads['gamma'])
        if not self.used_batch_stats:
            return dout * (gamma * self.inv_std)
        # dx = gamma / (B sigma) * (B dy - dbeta - x_hat dgamma), divided through by B so that
        # it is built in one (B, D) array: gamma / sigma * (dy - (x_hat dgamma + dbeta) / B).
        B = dout.shape[0]
        dx = x_hat * (dgamma / B)
        dx += dbeta / B
        np.subtract(dout, dx, out=dx)
        dx *= gamma * self.inv_std
        return dx


class DropoutModule:
    """Inverted dropout, any shape.

    Training (``training = True``, the default): each unit is kept with probability 1 - p and
    dropped (set to 0) otherwise, and kept units are scaled by 1 / (1 - p), so every unit's
    expected output equals its input and evaluation needs no rescaling. Evaluation
    (``training = False``) and p = 0 return the input itself.

    ``mask`` (boolean, True where kept) is drawn from ``rng``, a numpy Generator: pass a
    seeded one for a reproducible run. backward multiplies by the mask of the last forward.
    """

    def __init__(self, p, rng=None):
        if not 0 <= p < 1:
            raise ValueError(f'Dropout probability p must be in [0, 1), got {p!r}.')
        self.p = p
        self.rng = np.random.default_rng() if rng is None else rng
        self.training = True
        self.mask = None

    def forward(self, x):
        if not self.training or self.p == 0:
            self.mask = None
            return x
        # float32 uniforms are half the random bits of float64 ones, and p needs no more.
        self.mask = self.rng.random(x.shape, dtype=np.float32) >= self.p
        # Two passes over a boolean mask beat one over a float mask built from it.
        out = x * self.mask
        out *= 1 / (1 - self.p)
        return out

    def backward(self, dout):
        if self.mask is None:
            return dout
        dx = dout * self.mask
        dx *= 1 / (1 - self.p)
        return dx

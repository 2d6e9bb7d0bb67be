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

"""NumPy modules with hand-written forward and backward passes.

Every module works on a whole batch at once with matrix operations. forward caches what
backward needs; backward takes the gradient of the loss with respect to the module's output
and returns it with respect to the input. Modules with parameters keep them in
``params`` and fill ``grads`` (same keys, same shapes) in backward.

The derivations (B is the batch size, y the output, x the input, L the loss):

    Linear       y = x W^T + b        dL/dx = dL/dy W,  dL/dW = (dL/dy)^T x,  dL/db = sum_b dL/dy
    ReLU         y = max(0, x)        dL/dx = dL/dy * [x > 0]          (the derivative: 1 or 0)
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

The layers of the ConvNet, on (B, C, H, W) maps (x_pad: x with its zero padding, s the stride):

    Conv2d       y[b,o,i,j] = bias_o + sum_{c,u,v} weight[o,c,u,v] x_pad[b, c, s i + u, s j + v]
                 = Linear on every window: y = cols W^T + b, with each window of x_pad a row
                 of cols (im2col) and W the weight flattened to (O, k k C), so that
                 dL/dW = (dL/dy)^T cols,  dL/db = sum_{b,i,j} dL/dy,  dL/dx = fold(dL/dy W):
                 each window's row added back to the pixels it was read from (col2im).
    MaxPool2d    y[b,c,i,j] = max_{u,v} x_pad[b, c, s i + u, s j + v]   (padding is -inf)
                 dL/dx = sum over the windows of dL/dy at the window's maximum, 0 elsewhere
                 (the first maximum where there are ties, as torch)
    BatchNorm2d  BatchNorm with every pixel of the B x H x W pixels of a channel as a sample:
                 the maps as rows (B H W, C), then BatchNorm's formulas as they stand

unittests.py checks each of them against central differences in float64.
"""

import numpy as np

from im2col import fold, offsets, pad, unpad, windows


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
        """x: (B, in_features) -> (B, out_features).  y = x W^T + b"""
        self.x = x
        return x @ self.params['weight'].T + self.params['bias']

    def backward(self, dout, input_grad=True):
        """dout: (B, out_features) -> dx: (B, in_features); fills grads.
        dL/dW = dout^T x,  dL/db = sum_b dout,  dL/dx = dout W

        input_grad=False skips dx (returns None): the first layer's dx is a third of its
        backward work and nothing uses it in training.
        """
        self.grads['weight'][...] = dout.T @ self.x  # [...]: the optimizer holds these arrays
        self.grads['bias'][...] = dout.sum(axis=0)
        return dout @ self.params['weight'] if input_grad else None


class ReLUModule:
    """Elementwise y = max(0, x), any shape."""

    def forward(self, x):
        """x: any shape -> the same shape.  y = max(0, x)"""
        self.out = np.maximum(x, 0)
        return self.out

    def backward(self, dout):
        """dout: the output's shape -> dx: the same.  dL/dx = dout [x > 0]"""
        return dout * (self.out > 0)  # y > 0 exactly where x > 0


class SoftMaxModule:
    """Row-wise softmax, (B, C) -> (B, C), stable for large inputs: the row maximum is
    subtracted first, so exp never overflows.

    A probability that would underflow (below tiny, the smallest normal float of its dtype)
    is raised to tiny. Followed by CrossEntropy, whose gradient is g = -t / (B y) for targets t
    that sum to 1, backward gives dL/dx = y * (g - sum_j g_j y_j) = (y - t) / B through the
    products y_j g_j = -t_j / B. Those hold only while every y_j >= tiny, where CrossEntropy
    divides by y_j itself (and 1 / (B tiny) is still finite): at y_j = 0 a sample's gradient
    would be lost (tests/test_train_mlp_numpy.py builds that case). A row's sum moves by at
    most C tiny, far below rounding.
    """

    def forward(self, x):
        """x: (B, C) -> (B, C).  y_i = max(exp(x_i - m) / sum_k exp(x_k - m), tiny), with
        m = max_j x_j"""
        z = np.exp(x - x.max(axis=1, keepdims=True))
        self.out = np.maximum(z / z.sum(axis=1, keepdims=True), np.finfo(z.dtype).tiny)
        return self.out

    def backward(self, dout):
        """dout: (B, C) -> dx: (B, C).  dL/dx = y * (dout - sum_j dout_j y_j), row by row"""
        y = self.out
        return y * (dout - np.sum(dout * y, axis=1, keepdims=True))


class CrossEntropyModule:
    """Mean over the batch of -sum_i t_i log x_i, for probabilities x and targets t (B, C).

    A probability below tiny (the smallest normal float of its dtype; 0 included) is raised
    to tiny, so the loss stays finite where a class is certain to be wrong.
    """

    @staticmethod
    def _safe(x):
        return np.maximum(x, np.finfo(x.dtype).tiny)

    def forward(self, x, y):
        """x, y: (B, C) probabilities and targets -> the loss, a scalar.
        L = -1/B sum_b sum_i y_bi log x_bi"""
        return -np.sum(y * np.log(self._safe(x))) / x.shape[0]

    def backward(self, x, y):
        """x, y: (B, C) -> dL/dx: (B, C).  dL/dx = -y / (B x)"""
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
        self.params = {'gamma': np.ones(n_neurons, dtype), 'beta': np.zeros(n_neurons, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.running_mean = np.zeros(n_neurons, dtype=dtype)
        self.running_var = np.ones(n_neurons, dtype=dtype)
        self.training = True
        self.x_hat = self.inv_std = None
        self.used_batch_stats = True

    def forward(self, x):
        """x: (B, D) -> (B, D).  y = gamma (x - mu) / sqrt(var + eps) + beta
        In training B must be at least 2 (one sample has no variance)."""
        if self.training:
            B = x.shape[0]
            if B < 2:
                raise ValueError(
                    f'Batch norm needs at least 2 samples per batch in training, '
                    f'got {x.shape}; set training = False for running statistics.'
                )
            mu = x.mean(axis=0)
            x_mu = x - mu
            # var = mean_b (x - mu)^2 (biased), one dot product per feature: no array of squares
            var = np.einsum('bd,bd->d', x_mu, x_mu) / B
            m = self.momentum
            # [...]: checkpoints (train_convnet_numpy.model_arrays) hold these arrays
            self.running_mean[...] = (1 - m) * self.running_mean + m * mu
            self.running_var[...] = (1 - m) * self.running_var + m * var * B / (B - 1)
        else:
            x_mu, var = x - self.running_mean, self.running_var
        inv_std = 1 / np.sqrt(var + self.eps)
        # x_hat = (x - mu) / sigma;  y = gamma x_hat + beta   (in place: see benchmark.py's
        # batch-norm rows; tests/test_modules.py checks these lines against the formulas)
        x_hat = x_mu
        x_hat *= inv_std
        y = x_hat * self.params['gamma']
        y += self.params['beta']
        # backward follows the statistics forward used, even if training changes in between.
        self.x_hat, self.inv_std, self.used_batch_stats = x_hat, inv_std, self.training
        return y

    def backward(self, dout):
        """dout: (B, D) -> dx: (B, D); fills grads.
        dL/dbeta = sum_b dout,  dL/dgamma = sum_b dout x_hat,
        dL/dx = gamma / (B sigma) (B dout - dL/dbeta - x_hat dL/dgamma)"""
        x_hat, gamma, inv_std = self.x_hat, self.params['gamma'], self.inv_std
        dbeta = dout.sum(axis=0)
        dgamma = np.einsum('bd,bd->d', dout, x_hat)  # sum_b dout x_hat, with no (B, D) array
        self.grads['beta'][...] = dbeta
        self.grads['gamma'][...] = dgamma
        if not self.used_batch_stats:
            return gamma * inv_std * dout
        B = dout.shape[0]
        # dx = gamma / (B sigma) (B dout - dbeta - x_hat dgamma)
        #    = gamma / sigma (dout - (x_hat dgamma + dbeta) / B), built in one (B, D) array
        dx = x_hat * (dgamma / B)
        dx += dbeta / B
        np.subtract(dout, dx, out=dx)
        dx *= gamma * inv_std
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
        self.p = float(p)  # a Python float keeps float32 arrays float32
        self.rng = np.random.default_rng() if rng is None else rng
        self.training = True
        self.mask = None

    def forward(self, x):
        """x: any shape -> the same shape.  y = x m / (1 - p), m ~ Bernoulli(1 - p)"""
        if not self.training or self.p == 0:
            self.mask = None
            return x
        # float32 uniforms are half the random bits of float64 ones, and p needs no more.
        self.mask = self.rng.random(x.shape, dtype=np.float32) >= self.p
        return x * self.mask / (1 - self.p)

    def backward(self, dout):
        """dout: the output's shape -> dx: the same.  dL/dx = dout m / (1 - p)"""
        if self.mask is None:
            return dout
        return dout * self.mask / (1 - self.p)


def torch_default_init(rng, shape, fan_in, dtype):
    """PyTorch's default initialisation of nn.Linear and nn.Conv2d, weights and biases alike
    (kaiming_uniform_ with a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Conv2dModule:
    """2-D convolution with a square kernel and zero padding, as torch.nn.Conv2d.

    x: (B, C, H, W) -> y: (B, O, H', W'), H' = (H + 2 padding - k) // stride + 1 (W' alike),
    by the module table's formulas: Linear on every window (im2col), the windows of x_pad
    unfolded into the rows of cols (B H' W', k k C), the weight flattened to W (O, k k C).

    params['weight']: (O, C, k, k); params['bias']: (O,); both PyTorch's default
    initialisation, U(-1/sqrt(C k k), 1/sqrt(C k k)).

    Layout: the arrays have torch's shapes, but forward and backward return channels-last
    arrays (torch.channels_last: transposed views of (B, H, W, C) ones), and the weight and its
    gradient are views of (O, k, k, C) arrays. A window's row is then k k runs of C adjacent
    numbers, and the matrices of the products are free reshapes, not copies (benchmark.py's
    ConvNet rows); any other layout gives the same results, through copies.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size=3,
        stride=1,
        padding=1,
        dtype=np.float64,
        rng=None,
    ):
        rng = np.random.default_rng() if rng is None else rng
        self.k, self.stride, self.padding = kernel_size, stride, padding
        fan_in = in_channels * kernel_size**2
        weight_shape = (out_channels, in_channels, kernel_size, kernel_size)
        # (O, k, k, C) in memory, seen as (O, C, k, k): see Layout above
        weight = np.empty((out_channels, kernel_size, kernel_size, in_channels), dtype)
        weight = weight.transpose(0, 3, 1, 2)
        weight[...] = torch_default_init(rng, weight_shape, fan_in, dtype)
        bias = torch_default_init(rng, (out_channels,), fan_in, dtype)
        self.params = {'weight': weight, 'bias': bias}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}  # the same layouts

    def forward(self, x):
        """x: (B, C, H, W) -> (B, O, H', W'), channels-last in memory.  y = cols W^T + b"""
        x_pad = pad(x.transpose(0, 2, 3, 1), self.padding)  # (B, Hp, Wp, C)
        win = windows(x_pad, self.k, self.stride)  # (B, H', W', C, k, k), a view
        B, h_out, w_out = win.shape[:3]
        # -> rows (B H' W', k k C), each window's pixels in row-major order: im2col's copy
        self.cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(B * h_out * w_out, -1)
        weight = self.params['weight']  # (O, C, k, k) -> W (O, k k C), in the order of a row
        self.W = weight.transpose(0, 2, 3, 1).reshape(len(weight), -1)  # free: see Layout
        self.x_pad_shape = x_pad.shape
        y = self.cols @ self.W.T + self.params['bias']  # (B H' W', O)
        return y.reshape(B, h_out, w_out, -1).transpose(0, 3, 1, 2)

    def backward(self, dout, input_grad=True):
        """dout: (B, O, H', W') -> dx: (B, C, H, W); fills grads.
        dL/dW = dy^T cols,  dL/db = sum_{b, i, j} dy,  dL/dx = fold(dy W)
        input_grad=False skips dx (returns None): the first layer's dx is not needed in
        training."""
        B, n_out, h_out, w_out = dout.shape
        dy = dout.transpose(0, 2, 3, 1).reshape(-1, n_out)  # (B H' W', O): free if channels-last
        dW = dy.T @ self.cols  # (O, k k C)
        self.grads['weight'][...] = dW.reshape(n_out, self.k, self.k, -1).transpose(0, 3, 1, 2)
        self.grads['bias'][...] = dy.sum(axis=0)
        if not input_grad:
            return None
        d_cols = (dy @ self.W).reshape(B, h_out, w_out, self.k, self.k, -1)
        dx_pad = fold(d_cols, self.x_pad_shape, self.stride)
        return unpad(dx_pad, self.padding).transpose(0, 3, 1, 2)


class MaxPool2dModule:
    """Max-pooling over k x k windows, as torch.nn.MaxPool2d (no dilation, no ceil mode).

    x: (B, C, H, W) -> y: (B, C, H', W'), H' = (H + 2 padding - k) // stride + 1 (W' alike),
    with x_pad padded by -inf, so that padding never wins a window. Backward routes each
    dL/dy[b, c, i, j] to the pixel that won its window (the first maximum in row-major order
    where there are ties, as torch) and nowhere else; where windows overlap (stride < k) a
    pixel that wins several collects the sum of their gradients.
    Layout as Conv2dModule: returns channels-last arrays.
    """

    def __init__(self, kernel_size=3, stride=2, padding=1):
        if padding > kernel_size // 2:  # else a window could hold only padding
            raise ValueError(f'padding {padding} is more than half of kernel_size {kernel_size}.')
        self.k, self.stride, self.padding = kernel_size, stride, padding
        self.training = True  # False: forward keeps no winners, and backward is not available

    def forward(self, x):
        """x: (B, C, H, W) -> (B, C, H', W'), channels-last in memory.
        y[b, c, i, j] = max_{u, v} x_pad[b, c, s i + u, s j + v]"""
        x_pad = pad(x.transpose(0, 2, 3, 1), self.padding, -np.inf)  # (B, Hp, Wp, C)
        h_out, w_out = windows(x_pad, self.k, self.stride).shape[1:3]
        # y = windows(x_pad, k, s).max(axis=(-2, -1)) and the winner its argmax, as a running
        # maximum over the k k strided slices, which copies no window (benchmark.py --profile;
        # tests/test_convnet_numpy.py checks the two agree)
        y = winner = None
        for (u, v), pixels in offsets(self.k, self.stride, h_out, w_out):
            offset, candidate = u * self.k + v, x_pad[pixels]
            if y is None:
                y = candidate.copy()
                winner = np.zeros(y.shape, dtype=np.uint8) if self.training else None
                continue
            if winner is not None:  # only backward needs the winners
                rose = candidate > y  # strictly: on a tie the first maximum keeps it, as torch
                # winner[rose] = offset, as a maximum (the offsets rise, so the winner is the
                # last one where y rose): a masked assignment runs far slower
                np.maximum(winner, rose * np.uint8(offset), out=winner)
            np.maximum(y, candidate, out=y)
        self.winner, self.x_pad_shape = winner, x_pad.shape
        return y.transpose(0, 3, 1, 2)

    def backward(self, dout):
        """dout: (B, C, H', W') -> dx: (B, C, H, W), after a forward in training mode.
        dL/dx at a pixel = the sum of dout over the windows it won"""
        if self.winner is None:
            raise RuntimeError('MaxPool2dModule.backward needs a forward in training mode.')
        dy = dout.transpose(0, 2, 3, 1)  # (B, H', W', C)
        dx_pad = np.zeros(self.x_pad_shape, dtype=dy.dtype)
        for (u, v), pixels in offsets(self.k, self.stride, *dy.shape[1:3]):  # as fold()
            dx_pad[pixels] += dy * (self.winner == u * self.k + v)
        return unpad(dx_pad, self.padding).transpose(0, 3, 1, 2)


class BatchNorm2dModule(BatchNormModule):
    """Spatial batch normalization, (B, C, H, W) -> (B, C, H, W), as torch.nn.BatchNorm2d.

    A channel's statistics are taken over its B x H x W pixels: every pixel is a sample of
    its channel. So the maps become rows (B H W, C), BatchNormModule normalises them (its
    forward, backward and running statistics, with B H W as the number of samples), and the
    rows become maps again. Returns channels-last arrays; from channels-last input the
    rows are a view, not a copy.
    """

    def __init__(self, n_channels, eps=1e-5, momentum=0.1, dtype=np.float64):
        super().__init__(n_channels, eps, momentum, dtype)

    @staticmethod
    def _rows(x):
        """(B, C, H, W) -> (B H W, C)."""
        return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])

    @staticmethod
    def _maps(rows, shape):
        """(B H W, C) -> (B, C, H, W), channels-last."""
        B, C, H, W = shape
        return rows.reshape(B, H, W, C).transpose(0, 3, 1, 2)

    def forward(self, x):
        return self._maps(super().forward(self._rows(x)), x.shape)

    def backward(self, dout):
        return self._maps(super().backward(self._rows(dout)), dout.shape)


class FlattenModule:
    """(B, C, H, W) -> (B, C H W), and backward the gradient back to the input's shape."""

    def forward(self, x):
        self.shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, dout):
        return dout.reshape(self.shape)


class Sequential:
    """Modules applied one after the other: the networks of mlp_numpy.py and convnet_numpy.py
    are lists of modules in ``layers``."""

    def __init__(self, layers):
        self.layers = layers

    def parameters(self):
        """[(param, grad), ...] of every layer, for an optimizer (optimizers.py)."""
        pairs = []
        for layer in self.layers:
            for name in getattr(layer, 'params', {}):
                pairs.append((layer.params[name], layer.grads[name]))
        return pairs

    def train(self, mode=True):
        """Training mode (batch statistics, dropout on) or, with mode=False, evaluation."""
        for layer in self.layers:
            if hasattr(layer, 'training'):
                layer.training = mode

    def eval(self):
        self.train(False)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout, input_grad=True):
        """dout: dL/d(output) -> dL/d(input); fills every layer's grads. input_grad=False
        returns None instead: training needs no dL/d(input), and the first layer (Linear or
        Conv2d) skips a third of its backward work."""
        for layer in reversed(self.layers[1:]):
            dout = layer.backward(dout)
        return self.layers[0].backward(dout, input_grad=input_grad)

"""The unfolding behind the NumPy ConvNet's layers (modules.py): the k x k windows of a padded
channels-last batch as a view (im2col), the strided offsets of those windows, and fold, the
adjoint that adds a gradient for every window pixel back onto the image (col2im). Maps are
(B, H, W, C); Hp, Wp are the padded sizes and H', W' the number of windows down and across.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def windows(x_pad, k, stride):
    """x_pad: (B, Hp, Wp, C) -> its k x k windows (B, H', W', C, k, k), a view (no copy);
    H' = (Hp - k) // stride + 1, W' alike."""
    return sliding_window_view(x_pad, (k, k), axis=(1, 2))[:, ::stride, ::stride]


def offsets(k, stride, h_out, w_out):
    """For each offset (u, v) in a k x k window: (u, v) and the index of the pixels at that
    offset in all the windows, x_pad[:, s i + u, s j + v] for every (i, j), a strided slice."""
    for u in range(k):
        for v in range(k):
            rows = slice(u, u + stride * h_out, stride)
            cols = slice(v, v + stride * w_out, stride)
            yield (u, v), (slice(None), rows, cols)


def fold(d_windows, padded_shape, stride):
    """The adjoint of im2col's rows (col2im): d_windows (B, H', W', k, k, C), a gradient for
    every pixel of every window -> (B, Hp, Wp, C), each added back at the pixel it was read
    from. k x k strided adds, one per offset (u, v) in the window; overlapping windows sum."""
    _, h_out, w_out, k, _, _ = d_windows.shape
    dx_pad = np.zeros(padded_shape, dtype=d_windows.dtype)
    for (u, v), pixels in offsets(k, stride, h_out, w_out):
        dx_pad[pixels] += d_windows[:, :, :, u, v]
    return dx_pad


def pad(x, p, value=0.0):
    """(B, H, W, C) -> (B, H + 2p, W + 2p, C), the border filled with value."""
    return np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=value)


def unpad(x_pad, p):
    """The inverse of pad: (B, Hp, Wp, C) -> (B, Hp - 2p, Wp - 2p, C), a view."""
    return x_pad[:, p : x_pad.shape[1] - p, p : x_pad.shape[2] - p]

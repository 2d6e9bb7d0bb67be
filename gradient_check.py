"""Numerical gradients by central differences, to check hand-written backward passes.

Use float64 inputs: with h = 1e-5 the truncation error is O(h^2) ~ 1e-10 and the rounding
error O(eps / h) ~ 1e-11, both far below the 1e-5 tolerance of the checks.
"""

import numpy as np


def eval_numerical_gradient(f, x, h=1e-5):
    """Gradient of the scalar function f at x (an array changed in place and restored).

    Returns an array of x's shape.
    """
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):  # multi-indices: writes reach x whatever its memory layout
        old = x[i]
        x[i] = old + h
        plus = f(x)
        x[i] = old - h
        minus = f(x)
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Gradient of sum(f(x) * df) at x: the vector-Jacobian product backward should return for
    the upstream gradient df. f returns an array of df's shape; x is changed in place and
    restored."""
    return eval_numerical_gradient(lambda v: np.sum(f(v) * df), x, h)


def rel_error(x, y, floor=1e-8):
    """Largest elementwise relative error |x - y| / (|x| + |y|), the denominator floored at
    `floor` so that two tiny values close in absolute terms count as equal. A network with
    many gradients that are exactly 0 (a ReLU's zeros, a max-pool's losers) needs a higher
    floor: there the numerical gradient is rounding noise of about eps L / h ~ 1e-10."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(floor, np.abs(x) + np.abs(y))))


def eval_numerical_gradient_at(f, x, indices, h=1e-5):
    """As eval_numerical_gradient, at the flat positions `indices` of x only (for arrays too
    large to check whole): returns the gradient at those positions, shape (len(indices),)."""
    grad = np.zeros(len(indices))
    for n, flat_index in enumerate(indices):
        i = np.unravel_index(flat_index, x.shape)  # writes reach x whatever its layout
        old = x[i]
        x[i] = old + h
        plus = f(x)
        x[i] = old - h
        minus = f(x)
        x[i] = old
        grad[n] = (plus - minus) / (2 * h)
    return grad

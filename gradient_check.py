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
    flat, gflat = x.reshape(-1), grad.reshape(-1)  # views: writes reach x and grad
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = f(x)
        flat[i] = old - h
        minus = f(x)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Gradient of sum(f(x) * df) at x: the vector-Jacobian product backward should return for
    the upstream gradient df. f returns an array of df's shape; x is changed in place and
    restored."""
    return eval_numerical_gradient(lambda v: np.sum(f(v) * df), x, h)


def rel_error(x, y):
    """Largest elementwise relative error |x - y| / (|x| + |y|), the denominator floored at
    1e-8 so that two tiny values close in absolute terms count as equal."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))

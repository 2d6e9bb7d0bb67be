"""Tests for the NumPy BatchNormModule and DropoutModule in modules.py: batch norm against
torch.nn.BatchNorm1d step by step, dropout's statistics, scaling, modes and argument check.
(Their gradient checks against central differences are in unittests.py.)"""

import numpy as np
import pytest
import torch
from torch import nn

from modules import BatchNormModule, DropoutModule


def assert_close(got, want, rtol, what):
    """max |got - want| <= rtol * max |want|: relative to the array's scale, because single
    elements (a normalised value, a gradient that sums to zero) can be ~0 up to rounding."""
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape, what
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err <= rtol, f'{what}: relative error {err:.2e} > {rtol:.0e}'


# ----------------------------------------------------------------------------- batch norm


def paired_batchnorm(d, momentum, seed=0):
    """A BatchNormModule and an nn.BatchNorm1d (float64) with the same random gamma and beta."""
    rng = np.random.default_rng(seed)
    bn = BatchNormModule(d, momentum=momentum)
    bn.params['gamma'][...] = rng.standard_normal(d)
    bn.params['beta'][...] = rng.standard_normal(d)
    ref = nn.BatchNorm1d(d, momentum=momentum).double()
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(bn.params['gamma']))
        ref.bias.copy_(torch.from_numpy(bn.params['beta']))
    return bn, ref


def compare_step(bn, ref, x, dout):
    """One forward and backward through both; outputs, running statistics and gradients."""
    out = bn.forward(x)
    dx = bn.backward(dout)
    x_ref = torch.from_numpy(x).requires_grad_()
    ref.zero_grad()
    out_ref = ref(x_ref)
    out_ref.backward(torch.from_numpy(dout))
    assert_close(out, out_ref, 1e-12, 'output')
    assert_close(bn.running_mean, ref.running_mean, 1e-12, 'running_mean')
    assert_close(bn.running_var, ref.running_var, 1e-12, 'running_var')
    assert_close(dx, x_ref.grad, 1e-12, 'dx')
    assert_close(bn.grads['gamma'], ref.weight.grad, 1e-12, 'dgamma')
    assert_close(bn.grads['beta'], ref.bias.grad, 1e-12, 'dbeta')


@pytest.mark.parametrize('momentum', [0.1, 0.35])
def test_batchnorm_matches_torch(momentum):
    """Several training steps (batches of different sizes, means and scales), then evaluation
    on a batch of one: every output, running statistic and gradient agrees with torch."""
    d = 7
    rng = np.random.default_rng(1)
    bn, ref = paired_batchnorm(d, momentum)
    assert bn.training and ref.training
    # Not B = 2: two samples normalise to -1 and +1 whatever x is, so dx is of the order of
    # eps, the difference of O(1) terms, and only its rounding error would be compared.
    for step, batch in enumerate([16, 5, 32, 3]):
        x = rng.standard_normal((batch, d)) * (step + 1) + rng.standard_normal(d) * 3
        compare_step(bn, ref, x, rng.standard_normal((batch, d)))
    # The statistics did move away from their zeros/ones start (so the check above meant
    # something), and evaluation now uses them.
    assert np.all(np.abs(bn.running_mean) > 1e-3) and np.all(np.abs(bn.running_var - 1) > 1e-3)
    bn.training = False
    ref.eval()
    for batch in (10, 1):
        x = rng.standard_normal((batch, d)) * 2 + 1
        compare_step(bn, ref, x, rng.standard_normal((batch, d)))


def test_batchnorm_initial_state():
    bn = BatchNormModule(4)
    assert bn.training
    assert set(bn.params) == set(bn.grads) == {'gamma', 'beta'}
    np.testing.assert_array_equal(bn.params['gamma'], np.ones(4))
    np.testing.assert_array_equal(bn.params['beta'], np.zeros(4))
    np.testing.assert_array_equal(bn.running_mean, np.zeros(4))
    np.testing.assert_array_equal(bn.running_var, np.ones(4))


def test_batchnorm_evaluation_is_per_sample():
    """In evaluation a sample's output does not depend on the rest of its batch, and the
    running statistics stay put."""
    rng = np.random.default_rng(2)
    bn = BatchNormModule(3)
    bn.forward(rng.standard_normal((20, 3)) * 2 + 5)
    bn.training = False
    mean, var = bn.running_mean.copy(), bn.running_var.copy()
    x = rng.standard_normal((6, 3))
    out = bn.forward(x)
    np.testing.assert_allclose(bn.forward(x[:1]), out[:1], rtol=1e-15)
    np.testing.assert_array_equal(bn.running_mean, mean)
    np.testing.assert_array_equal(bn.running_var, var)


def test_batchnorm_backward_follows_forward_mode():
    """backward differentiates what forward computed, even if training changed in between."""
    rng = np.random.default_rng(3)
    x, dout = rng.standard_normal((8, 4)), rng.standard_normal((8, 4))
    a, b = BatchNormModule(4), BatchNormModule(4)
    a.forward(x)
    b.forward(x)
    b.training = False
    np.testing.assert_array_equal(b.backward(dout), a.backward(dout))


def test_batchnorm_needs_two_samples_in_training():
    with pytest.raises(ValueError, match='at least 2 samples'):
        BatchNormModule(3).forward(np.ones((1, 3)))


def test_batchnorm_float32():
    rng = np.random.default_rng(4)
    bn = BatchNormModule(5, dtype=np.float32)
    x = rng.standard_normal((8, 5)).astype(np.float32)
    for training in (True, False):
        bn.training = training
        out = bn.forward(x)
        dx = bn.backward(np.ones_like(out))
        assert out.dtype == dx.dtype == np.float32
        for array in (*bn.params.values(), *bn.grads.values(), bn.running_mean, bn.running_var):
            assert array.dtype == np.float32


# ----------------------------------------------------------------------------- dropout


def test_dropout_evaluation_and_p0_are_identity():
    rng = np.random.default_rng(5)
    x, dout = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    evaluating = DropoutModule(0.5, rng=rng)
    evaluating.training = False
    for module in (evaluating, DropoutModule(0.0, rng=rng)):
        np.testing.assert_array_equal(module.forward(x), x)
        np.testing.assert_array_equal(module.backward(dout), dout)


@pytest.mark.parametrize('p', [0.5, 0.3])
def test_dropout_scales_kept_units(p):
    """Dropped units are exactly 0, kept ones x / (1 - p) (exactly so for p = 0.5), and
    backward lets the gradient through the same units with the same factor."""
    rng = np.random.default_rng(6)
    x = rng.uniform(0.5, 2.0, size=(50, 40))  # no zeros, so out == 0 means dropped
    dout = rng.standard_normal(x.shape)
    dropout = DropoutModule(p, rng=np.random.default_rng(0))
    out = dropout.forward(x)
    kept = dropout.mask
    assert kept.dtype == bool and kept.shape == x.shape
    np.testing.assert_array_equal(out != 0, kept)
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-15)
    dx = dropout.backward(dout)
    np.testing.assert_array_equal(dx[~kept], 0)
    np.testing.assert_allclose(dx[kept], dout[kept] / (1 - p), rtol=1e-15)
    if p == 0.5:
        np.testing.assert_array_equal(out[kept], 2 * x[kept])


def test_dropout_preserves_the_mean():
    """Over a million units: the kept fraction is 1 - p and the mean output equals the input
    (each estimate within 5 of its standard errors: 4.6e-4 and 6.5e-4)."""
    p = 0.3
    dropout = DropoutModule(p, rng=np.random.default_rng(7))
    out = dropout.forward(np.ones((1000, 1000)))
    assert abs(dropout.mask.mean() - (1 - p)) < 5 * 4.6e-4
    assert abs(out.mean() - 1) < 5 * 6.5e-4


def test_dropout_masks_are_reproducible_and_fresh():
    """The same seed gives the same masks; each forward draws a new one."""
    x = np.ones((20, 30))
    a = DropoutModule(0.5, rng=np.random.default_rng(8))
    b = DropoutModule(0.5, rng=np.random.default_rng(8))
    first = a.forward(x)
    np.testing.assert_array_equal(b.forward(x), first)
    assert not np.array_equal(a.forward(x), first)


def test_dropout_float32():
    dropout = DropoutModule(0.2, rng=np.random.default_rng(9))
    x = np.ones((6, 7), dtype=np.float32)
    out = dropout.forward(x)
    assert out.dtype == dropout.backward(out).dtype == np.float32


@pytest.mark.parametrize('p', [-0.1, 1.0, 1.5, float('nan')])
def test_dropout_rejects_p_outside_0_1(p):
    with pytest.raises(ValueError, match=r'p must be in \[0, 1\)'):
        DropoutModule(p)


def test_batchnorm_in_place_lines_are_its_formulas():
    """BatchNormModule computes in place; its output and gradients are the docstring's
    formulas, written out here as they stand, in float64, in training and in evaluation."""
    rng = np.random.default_rng(0)
    x, dy = rng.normal(2.0, 3.0, (2, 7, 5))
    bn = BatchNormModule(5)
    bn.params['gamma'][...], bn.params['beta'][...] = rng.standard_normal((2, 5))
    gamma, beta, B = bn.params['gamma'], bn.params['beta'], len(x)
    for training in (True, False):
        bn.training = training
        mu, var = (x.mean(0), x.var(0)) if training else (bn.running_mean, bn.running_var)
        mu, var = mu.copy(), var.copy()  # the running statistics move in training
        y = bn.forward(x)
        sigma = np.sqrt(var + bn.eps)
        x_hat = (x - mu) / sigma
        np.testing.assert_allclose(y, gamma * x_hat + beta, rtol=1e-13, atol=1e-13)
        dx = bn.backward(dy)
        np.testing.assert_allclose(bn.grads['beta'], dy.sum(0), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(bn.grads['gamma'], (dy * x_hat).sum(0), rtol=1e-13, atol=1e-13)
        expected = (
            gamma / (B * sigma) * (B * dy - dy.sum(0) - x_hat * (dy * x_hat).sum(0))
            if training
            else gamma / sigma * dy
        )
        np.testing.assert_allclose(dx, expected, rtol=1e-12, atol=1e-13)

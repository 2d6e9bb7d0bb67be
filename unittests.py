"""Gradient checks: every hand-written backward pass against central differences, in float64.

    python unittests.py        # or: python -m pytest unittests.py

NumPy modules: a check passes when the largest elementwise relative error
(gradient_check.rel_error) is at most 1e-5. Batch normalization: torch.autograd.gradcheck on
the manual function, and agreement with torch.nn.BatchNorm1d to 1e-8.
"""

from quiet_start import interrupt, stop_signals, stopped  # (first: see its docstring)

import sys
import unittest

import numpy as np
import torch
from torch import nn

from convnet_numpy import ConvNet
from custom_batchnorm import (
    CustomBatchNormAutograd,
    CustomBatchNormManualFunction,
    CustomBatchNormManualModule,
)
from gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    eval_numerical_gradient_at,
    rel_error,
)
from mlp_numpy import MLP
from modules import (
    BatchNorm2dModule,
    BatchNormModule,
    Conv2dModule,
    CrossEntropyModule,
    DropoutModule,
    LinearModule,
    MaxPool2dModule,
    ReLUModule,
    SoftMaxModule,
)

TOL = 1e-5


def random_probabilities(rng, shape):
    p = rng.uniform(0.05, 1.0, size=shape)
    return p / p.sum(axis=1, keepdims=True)


def random_targets(rng, n, c):
    return np.eye(c)[rng.integers(0, c, size=n)]


class GradientCase(unittest.TestCase):
    def setUp(self):
        self.rng = np.random.default_rng(0)

    def assertGradClose(self, analytic, numeric, what):
        self.assertEqual(analytic.shape, numeric.shape, what)
        err = rel_error(analytic, numeric)
        self.assertLessEqual(err, TOL, f'{what}: relative error {err:.2e}')


class TestLosses(GradientCase):
    def test_crossentropy_loss(self):
        n, c = 8, 6
        x = random_probabilities(self.rng, (n, c))
        y = random_targets(self.rng, n, c)
        loss_module = CrossEntropyModule()
        loss = loss_module.forward(x, y)
        self.assertAlmostEqual(loss, -np.mean(np.log(x[y == 1])), places=12)
        dx = loss_module.backward(x, y)
        dx_num = eval_numerical_gradient(lambda xx: loss_module.forward(xx, y), x)
        self.assertGradClose(dx, dx_num, 'CrossEntropyModule dx')

    def test_crossentropy_at_zero_probability(self):
        x = np.array([[0.0, 1.0], [0.5, 0.5]])
        loss_module = CrossEntropyModule()
        # A zero probability of a wrong class costs nothing; of the right class, a large
        # but finite loss.
        self.assertAlmostEqual(
            loss_module.forward(x, np.array([[0.0, 1.0], [1.0, 0.0]])), np.log(2) / 2, places=12
        )
        loss = loss_module.forward(x, np.array([[1.0, 0.0], [1.0, 0.0]]))
        self.assertTrue(np.isfinite(loss) and loss > 300)
        self.assertTrue(np.all(np.isfinite(loss_module.backward(x, np.eye(2)))))

    def test_softmax(self):
        n, c = 6, 5
        x = self.rng.standard_normal((n, c))
        softmax = SoftMaxModule()
        out = softmax.forward(x)
        np.testing.assert_allclose(out, np.exp(x) / np.exp(x).sum(1, keepdims=True), rtol=1e-12)
        dout = self.rng.standard_normal((n, c))
        dx = softmax.backward(dout)
        dx_num = eval_numerical_gradient_array(lambda xx: SoftMaxModule().forward(xx), x, dout)
        self.assertGradClose(dx, dx_num, 'SoftMaxModule dx')

    def test_softmax_large_inputs(self):
        for dtype in (np.float32, np.float64):
            x = np.array([[1000.0, 1000.0, -1000.0], [1e4, 0.0, 0.0]], dtype=dtype)
            out = SoftMaxModule().forward(x)
            self.assertEqual(out.dtype, dtype)
            np.testing.assert_allclose(out, [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], atol=1e-7)


class TestLayers(GradientCase):
    def test_linear_forward(self):
        layer = LinearModule(30, 20, rng=self.rng)
        self.assertEqual(layer.params['weight'].shape, (20, 30))
        self.assertEqual(layer.params['bias'].shape, (20,))
        self.assertTrue(np.all(layer.params['bias'] == 0))
        self.assertLess(abs(layer.params['weight'].std() - 1e-4), 2e-5)
        x = self.rng.standard_normal((4, 30))
        np.testing.assert_allclose(layer.forward(x), x @ layer.params['weight'].T, rtol=1e-12)

    def test_linear_backward(self):
        n, d_in, d_out = 5, 7, 4
        x = self.rng.standard_normal((n, d_in))
        layer = LinearModule(d_in, d_out, rng=self.rng)
        layer.params['weight'] = self.rng.standard_normal((d_out, d_in))
        layer.params['bias'] = self.rng.standard_normal(d_out)
        out = layer.forward(x)
        dout = self.rng.standard_normal(out.shape)
        dx = layer.backward(dout)
        self.assertGradClose(
            dx, eval_numerical_gradient_array(layer.forward, x, dout), 'LinearModule dx'
        )
        for name in ('weight', 'bias'):
            num = eval_numerical_gradient_array(
                lambda _: layer.forward(x), layer.params[name], dout
            )
            self.assertGradClose(layer.grads[name], num, f'LinearModule d{name}')

    def test_relu_backward(self):
        x = self.rng.standard_normal((6, 9))
        x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink, where no derivative exists
        relu = ReLUModule()
        out = relu.forward(x)
        np.testing.assert_array_equal(out, np.maximum(x, 0))
        dout = self.rng.standard_normal(out.shape)
        dx = relu.backward(dout)
        self.assertGradClose(
            dx, eval_numerical_gradient_array(ReLUModule().forward, x, dout), 'ReLUModule dx'
        )

    def test_float32(self):
        x = self.rng.standard_normal((3, 8)).astype(np.float32)
        y = random_targets(self.rng, 3, 4).astype(np.float32)
        model = MLP(8, [5], 4, dtype=np.float32, rng=self.rng)
        probs = model.forward(x)
        loss_module = CrossEntropyModule()
        dx = model.backward(loss_module.backward(probs, y))
        self.assertEqual(probs.dtype, np.float32)
        self.assertEqual(dx.dtype, np.float32)
        for layer in model.linear_layers:
            for grad in layer.grads.values():
                self.assertEqual(grad.dtype, np.float32)


class TestBatchNorm(GradientCase):
    def make(self, n, d):
        """A batch far from zero mean and unit variance, and a module with non-trivial gamma
        and beta (at gamma = 1, beta = 0 a wrong dgamma or dbeta could still pass)."""
        x = self.rng.standard_normal((n, d)) * 3 + 2
        bn = BatchNormModule(d)
        bn.params['gamma'] = self.rng.standard_normal(d)
        bn.params['beta'] = self.rng.standard_normal(d)
        return x, bn

    def check(self, bn, x, mode):
        out = bn.forward(x)
        dout = self.rng.standard_normal(out.shape)
        dx = bn.backward(dout)
        self.assertGradClose(
            dx, eval_numerical_gradient_array(bn.forward, x, dout), f'BatchNormModule dx ({mode})'
        )
        for name in ('gamma', 'beta'):
            num = eval_numerical_gradient_array(lambda _: bn.forward(x), bn.params[name], dout)
            self.assertGradClose(bn.grads[name], num, f'BatchNormModule d{name} ({mode})')

    def test_batchnorm_backward_training(self):
        x, bn = self.make(8, 5)
        out = bn.forward(x)
        np.testing.assert_allclose(out.mean(axis=0), bn.params['beta'], atol=1e-12)
        np.testing.assert_allclose(out.std(axis=0), np.abs(bn.params['gamma']), rtol=1e-5)
        self.check(bn, x, 'training')

    def test_batchnorm_backward_evaluation(self):
        x, bn = self.make(8, 5)
        bn.running_mean = self.rng.standard_normal(5)
        bn.running_var = self.rng.uniform(0.5, 2.0, size=5)
        bn.training = False
        self.check(bn, x, 'evaluation')


class TestDropout(GradientCase):
    def test_dropout_backward(self):
        """A fresh module with the same seed draws the same mask, so the numerical gradient
        differentiates the very function whose backward is checked."""
        p, seed = 0.4, 7
        x = self.rng.standard_normal((6, 9))
        dropout = DropoutModule(p, rng=np.random.default_rng(seed))
        out = dropout.forward(x)
        self.assertTrue(0 < np.count_nonzero(out) < out.size)  # some units dropped, some kept
        dout = self.rng.standard_normal(out.shape)
        dx = dropout.backward(dout)
        dx_num = eval_numerical_gradient_array(
            lambda xx: DropoutModule(p, rng=np.random.default_rng(seed)).forward(xx), x, dout
        )
        self.assertGradClose(dx, dx_num, 'DropoutModule dx')


class TestMLP(GradientCase):
    def check_mlp(self, n_hidden, **options):
        n, d, c = 6, 10, 4
        x = self.rng.standard_normal((n, d))
        y = random_targets(self.rng, n, c)
        model = MLP(d, n_hidden, c, rng=self.rng, **options)
        # The course's N(0, 1e-4^2) weights make every gradient tiny and every hidden unit
        # sit next to ReLU's kink; unit-scale weights test the same code where it is smooth.
        for layer in model.linear_layers:
            for p in layer.params.values():
                p[...] = self.rng.standard_normal(p.shape) / np.sqrt(p.shape[-1])
        loss_module = CrossEntropyModule()
        dropouts = [layer for layer in model.layers if isinstance(layer, DropoutModule)]

        def loss():
            for dropout in dropouts:  # the same masks at every evaluation
                dropout.rng = np.random.default_rng(7)
            return loss_module.forward(model.forward(x), y)

        loss()
        dx = model.backward(loss_module.backward(model.layers[-1].out, y))
        self.assertGradClose(dx, eval_numerical_gradient(lambda _: loss(), x), 'MLP dx')
        for i, layer in enumerate(model.layers):
            for name, p in getattr(layer, 'params', {}).items():
                analytic = layer.grads[name].copy()
                numeric = eval_numerical_gradient(lambda _: loss(), p)
                what = f'MLP layer {i} ({type(layer).__name__}) d{name}'
                if name == 'bias' and isinstance(model.layers[i + 1], BatchNormModule):
                    # Batch norm subtracts the batch mean, bias included: the gradient is 0,
                    # and a relative error between two roundings of 0 means nothing.
                    self.assertLess(np.abs(analytic).max() + np.abs(numeric).max(), 1e-8, what)
                else:
                    self.assertGradClose(analytic, numeric, what)

    def test_mlp_two_hidden_layers(self):
        self.check_mlp([7, 5])

    def test_mlp_one_hidden_layer(self):
        self.check_mlp([8])

    def test_softmax_classifier(self):
        self.check_mlp([])

    def test_mlp_with_batchnorm_and_dropout(self):
        """Training mode: batch statistics, and dropout masks held fixed."""
        self.check_mlp([8, 7], batchnorm=True, dropout=0.3)

    def test_backward_without_input_gradient(self):
        x = self.rng.standard_normal((5, 6))
        y = random_targets(self.rng, 5, 3)
        model = MLP(6, [4], 3, rng=self.rng)
        ce = CrossEntropyModule()
        probs = model.forward(x)
        self.assertIsNotNone(model.backward(ce.backward(probs, y)))
        grads = [g.copy() for layer in model.linear_layers for g in layer.grads.values()]
        self.assertIsNone(model.backward(ce.backward(probs, y), input_grad=False))
        again = [g for layer in model.linear_layers for g in layer.grads.values()]
        for a, b in zip(grads, again):
            np.testing.assert_array_equal(a, b)

    def test_check_catches_a_wrong_gradient(self):
        """The checks above could fail: a ReLU backward that returns the input value instead
        of its derivative 1 is caught."""

        class WrongReLU(ReLUModule):
            def backward(self, dout):
                return dout * self.out

        x = self.rng.standard_normal((4, 5)) + 2.0
        dout = self.rng.standard_normal((4, 5))
        relu = WrongReLU()
        relu.forward(x)
        err = rel_error(
            relu.backward(dout), eval_numerical_gradient_array(ReLUModule().forward, x, dout)
        )
        self.assertGreater(err, 1e-2)


class TestConvolution(GradientCase):
    """Conv2d, max-pool and spatial batch norm: stride 1 and 2, padding 0 and 1, maps down to
    the 2 x 2 and 1 x 1 of conv5 and maxpool5, non-square maps (H != W catches a swap)."""

    SHAPES = ((2, 3, 5, 4), (2, 4, 2, 2), (3, 2, 1, 1))  # (B, C, H, W)

    def check_module(self, module, x, what):
        out = module.forward(x)
        dout = self.rng.standard_normal(out.shape)
        dx = module.backward(dout)
        self.assertGradClose(
            dx, eval_numerical_gradient_array(module.forward, x, dout), f'{what} dx'
        )
        for name, p in getattr(module, 'params', {}).items():
            num = eval_numerical_gradient_array(lambda _: module.forward(x), p, dout)
            self.assertGradClose(module.grads[name], num, f'{what} d{name}')

    def test_conv2d_backward(self):
        for shape in self.SHAPES:
            for stride in (1, 2):
                for padding in (0, 1):
                    if shape[2] + 2 * padding < 3:  # smaller than the kernel
                        continue
                    with self.subTest(shape=shape, stride=stride, padding=padding):
                        conv = Conv2dModule(shape[1], 3, 3, stride, padding, rng=self.rng)
                        x = self.rng.standard_normal(shape)
                        self.check_module(conv, x, f'Conv2dModule {shape} s{stride} p{padding}')

    def test_conv2d_equals_torch(self):
        x = self.rng.standard_normal((2, 3, 6, 5))
        for stride, padding in ((1, 1), (2, 1), (2, 0)):
            conv = Conv2dModule(3, 4, 3, stride, padding, rng=self.rng)
            want = torch.nn.functional.conv2d(
                torch.from_numpy(x),
                torch.from_numpy(conv.params['weight']),
                torch.from_numpy(conv.params['bias']),
                stride=stride,
                padding=padding,
            )
            np.testing.assert_allclose(conv.forward(x), want.numpy(), rtol=1e-12, atol=1e-12)

    def test_maxpool_backward(self):
        for shape in self.SHAPES:
            for k, stride, padding in ((3, 2, 1), (3, 1, 1), (2, 2, 0), (3, 2, 0)):
                if shape[2] + 2 * padding < k:
                    continue
                with self.subTest(shape=shape, k=k, stride=stride, padding=padding):
                    pool = MaxPool2dModule(k, stride, padding)
                    # distinct values, far apart next to h: no window has a near tie
                    x = self.rng.permutation(np.prod(shape)).reshape(shape) / 10.0
                    self.check_module(pool, x, f'MaxPool2dModule {shape} k{k} s{stride}')

    def test_maxpool_equals_torch_with_ties(self):
        """Windows of equal values (a ReLU's zeros) route their gradient to the first
        maximum, as torch; padding never wins, even against negative values."""
        x = np.maximum(self.rng.standard_normal((2, 3, 5, 5)), 0) - 0.5
        dout = self.rng.standard_normal((2, 3, 3, 3))
        pool = MaxPool2dModule(3, 2, 1)
        x_t = torch.from_numpy(x).requires_grad_()
        out_t = torch.nn.functional.max_pool2d(x_t, 3, 2, 1)
        out_t.backward(torch.from_numpy(dout))
        np.testing.assert_array_equal(pool.forward(x), out_t.detach().numpy())
        dx = pool.backward(dout)
        np.testing.assert_array_equal(dx != 0, x_t.grad.numpy() != 0)  # the same winners
        np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-15, atol=1e-15)  # sums' order

    def test_batchnorm2d_backward(self):
        for shape in self.SHAPES:
            for training in (True, False):
                with self.subTest(shape=shape, training=training):
                    bn = BatchNorm2dModule(shape[1])
                    bn.params['gamma'] = self.rng.standard_normal(shape[1])
                    bn.params['beta'] = self.rng.standard_normal(shape[1])
                    bn.running_mean = self.rng.standard_normal(shape[1])
                    bn.running_var = self.rng.uniform(0.5, 2.0, shape[1])
                    bn.training = training
                    x = self.rng.standard_normal(shape) * 3 + 2
                    self.check_module(bn, x, f'BatchNorm2dModule {shape} training={training}')

    def test_batchnorm2d_equals_torch(self):
        x = self.rng.standard_normal((4, 3, 5, 2)) * 2 + 1
        bn, reference = BatchNorm2dModule(3), nn.BatchNorm2d(3).double()
        out = bn.forward(x)
        want = reference(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bn.running_var, reference.running_var.numpy(), rtol=1e-12)

    def test_narrow_convnet_end_to_end(self):
        """Table 1 at 1/32 of its width on 8 x 8 images (maps 8, 4, 2, 1, 1, 1), batch 8:
        dL/dx whole, and 12 entries of every parameter (all of them would take minutes).

        h = 1e-6: a perturbation moves thousands of activations, and the smaller it is, the
        less likely one of them crosses a ReLU's kink or a max-pool's tie, where a central
        difference is wrong (at this seed none does; one seed in 20 puts one there). Most
        gradients here are exactly 0 and their numerical twins rounding noise (eps L / h, about
        1e-9): the relative error's floor is 1e-3, so that entries below it are judged
        absolutely, to 1e-8, and the others (up to about 1) relatively, to 1e-5."""
        x = self.rng.standard_normal((8, 3, 8, 8))
        y = random_targets(self.rng, 8, 10)
        model = ConvNet(3, 10, dtype=np.float64, rng=self.rng, width=1 / 32)
        loss_module = CrossEntropyModule()

        def loss(_):
            return loss_module.forward(model.forward(x), y)

        def check(analytic, numeric, what):
            err = rel_error(analytic, numeric, floor=1e-3)
            self.assertLessEqual(err, TOL, f'{what}: relative error {err:.2e}')

        loss(x)
        dx = model.backward(loss_module.backward(model.layers[-1].out, y))
        check(dx, eval_numerical_gradient(loss, x, h=1e-6), 'ConvNet dx')
        for i, layer in enumerate(model.layers):
            for name, p in getattr(layer, 'params', {}).items():
                indices = self.rng.choice(p.size, size=min(12, p.size), replace=False)
                numeric = eval_numerical_gradient_at(loss, p, indices, h=1e-6)
                analytic = layer.grads[name].reshape(-1)[indices]
                what = f'ConvNet {model.names[i]} d{name}'
                if name == 'bias' and isinstance(layer, Conv2dModule):
                    # batch norm subtracts the conv's bias again: its gradient is 0
                    self.assertLess(np.abs(analytic).max() + np.abs(numeric).max(), 1e-8, what)
                else:
                    check(analytic, numeric, what)


class TestCustomBatchNorm(unittest.TestCase):
    """The hand-derived batch-norm backward pass (custom_batchnorm.py); more checks are in
    tests/test_custom_batchnorm.py."""

    def test_manual_function_gradcheck(self):
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(8, 5, generator=gen, dtype=torch.float64) * 2 + 1
        gamma = torch.randn(5, generator=gen, dtype=torch.float64)
        beta = torch.randn(5, generator=gen, dtype=torch.float64)
        for t in (x, gamma, beta):
            t.requires_grad_()
        self.assertTrue(
            torch.autograd.gradcheck(
                CustomBatchNormManualFunction.apply, (x, gamma, beta, 1e-5), eps=1e-6, atol=1e-6
            )
        )

    def test_modules_match_batchnorm1d(self):
        gen = torch.Generator().manual_seed(0)
        n_neurons = 6
        x = torch.randn(16, n_neurons, generator=gen, dtype=torch.float64) * 3 + 2
        dy = torch.randn(16, n_neurons, generator=gen, dtype=torch.float64)
        gamma = torch.randn(n_neurons, generator=gen, dtype=torch.float64)
        beta = torch.randn(n_neurons, generator=gen, dtype=torch.float64)

        reference = nn.BatchNorm1d(n_neurons).double()
        with torch.no_grad():
            reference.weight.copy_(gamma)
            reference.bias.copy_(beta)
        x_ref = x.clone().requires_grad_()
        out_ref = reference(x_ref)
        out_ref.backward(dy)

        for module_cls in (CustomBatchNormAutograd, CustomBatchNormManualModule):
            with self.subTest(module=module_cls.__name__):
                custom = module_cls(n_neurons).double()
                with torch.no_grad():
                    custom.gamma.copy_(gamma)
                    custom.beta.copy_(beta)
                x_custom = x.clone().requires_grad_()
                out_custom = custom(x_custom)
                out_custom.backward(dy)
                for got, want in [
                    (out_custom, out_ref),
                    (x_custom.grad, x_ref.grad),
                    (custom.gamma.grad, reference.weight.grad),
                    (custom.beta.grad, reference.bias.grad),
                ]:
                    self.assertLess((got - want).abs().max().item(), 1e-8)


class Checks(unittest.TestProgram):
    """unittest's command line, with a name that is no check here (exit 2) and a selection that
    matches none (exit 5, as pytest's) said in one sentence, not as a failing or empty run."""

    def createTests(self, *args, **kwargs):  # before unittest looks the names up
        if unknown := [n for n in self.testNames or [] if not is_check(n)]:
            print(f'unittests.py: error: no check is named {", ".join(unknown)}.', file=sys.stderr)
            sys.exit(2)
        super().createTests(*args, **kwargs)

    def runTests(self):
        if self.test.countTestCases() == 0:
            print('unittests.py: error: no check matches what was given.', file=sys.stderr)
            sys.exit(5)
        super().runTests()


def is_check(name):
    """Whether name is a TestCase class of this file, or one of its methods."""
    case, _, method = name.partition('.')
    found = globals().get(case)
    is_case = isinstance(found, type) and issubclass(found, unittest.TestCase)
    return is_case and (not method or callable(getattr(found, method, None)))


if __name__ == '__main__':
    with stop_signals(interrupt):  # each stops the checks as Ctrl-C does, in one sentence
        try:
            Checks()
        except KeyboardInterrupt as e:
            sys.exit(stopped('unittests.py', e))

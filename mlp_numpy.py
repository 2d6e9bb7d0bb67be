"""Multi-layer perceptron in NumPy, built from modules.py."""
import numpy as np

from modules import LinearModule, ReLUModule, SoftMaxModule


class MLP:
    """Linear-ReLU ... Linear-ReLU, Linear-Softmax.

    Args:
        n_inputs: features per example (3072 for flattened CIFAR-10 images).
        n_hidden: units of each hidden layer; [] gives a softmax (multinomial logistic)
            classifier.
        n_classes: number of classes.
        dtype: of the parameters; float32 for speed, float64 (the default, as the course's
            gradient checks expect) for exactness.
        rng: numpy Generator for the weight initialisation.
    """

    def __init__(self, n_inputs, n_hidden, n_classes, dtype=np.float64, rng=None):
        rng = np.random.default_rng() if rng is None else rng
        sizes = [n_inputs, *n_hidden, n_classes]
        self.layers = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            self.layers += [LinearModule(fan_in, fan_out, dtype=dtype, rng=rng), ReLUModule()]
        self.layers[-1] = SoftMaxModule()

    @property
    def linear_layers(self):
        return [layer for layer in self.layers if isinstance(layer, LinearModule)]

    def forward(self, x):
        """x: (B, n_inputs) -> class probabilities (B, n_classes)."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout, input_grad=True):
        """dout: dL/d(probabilities), (B, n_classes). Fills every linear layer's grads and
        returns dL/dx (B, n_inputs), or None with input_grad=False (training needs no dL/dx,
        and skipping it saves a third of the first layer's backward work)."""
        first, *rest = self.layers
        for layer in reversed(rest):
            dout = layer.backward(dout)
        return first.backward(dout, input_grad=input_grad)

    def sgd_step(self, learning_rate):
        """Plain gradient descent on every parameter, in place. Scales the gradients in
        place (backward overwrites them anyway) instead of allocating lr * grad."""
        for layer in self.linear_layers:
            for name, param in layer.params.items():
                grad = layer.grads[name]
                grad *= learning_rate
                param -= grad

    def __repr__(self):
        shapes = [layer.params['weight'].shape[::-1] for layer in self.linear_layers]
        return f'MLP({" -> ".join(str(s[0]) for s in shapes)} -> {shapes[-1][1]})'

"""Multi-layer perceptron in NumPy, built from modules.py."""

import numpy as np

from modules import (
    BatchNormModule,
    DropoutModule,
    LinearModule,
    ReLUModule,
    Sequential,
    SoftMaxModule,
    torch_default_init,
)

INITS = ('course', 'kaiming')


class MLP(Sequential):
    """Linear [-> BatchNorm] -> ReLU [-> Dropout] per hidden layer, then Linear -> Softmax.

    Args:
        n_inputs: features per example (3072 for flattened CIFAR-10 images).
        n_hidden: units of each hidden layer; [] gives a softmax (multinomial logistic)
            classifier.
        n_classes: number of classes.
        dtype: of the parameters; float32 for speed, float64 (the default, as the course's
            gradient checks expect) for exactness.
        rng: numpy Generator for the weight initialisation and the dropout masks.
        batchnorm: a BatchNormModule after each hidden linear layer.
        dropout: probability of dropping a hidden unit in training (0: no dropout layers).
        init: 'course' draws weights from N(0, 0.0001^2) with zero biases; 'kaiming' draws
            weights and biases from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default
            for nn.Linear (kaiming_uniform_ with a = sqrt(5)), as mlp_pytorch.MLP does.
    """

    def __init__(
        self,
        n_inputs,
        n_hidden,
        n_classes,
        dtype=np.float64,
        rng=None,
        batchnorm=False,
        dropout=0.0,
        init='course',
    ):
        if init not in INITS:
            raise ValueError(f'init must be one of {", ".join(INITS)}, got {init!r}.')
        if not (
            isinstance(n_hidden, (list, tuple))
            and all(isinstance(n, int) and n > 0 for n in n_hidden)
        ):
            raise ValueError(f'n_hidden must be a list of positive integers, got {n_hidden!r}.')
        rng = np.random.default_rng() if rng is None else rng
        sizes, layers = [n_inputs, *n_hidden], []
        for fan_in, fan_out in zip(sizes, n_hidden):
            layers.append(self._linear(fan_in, fan_out, dtype, rng, init))
            if batchnorm:
                layers.append(BatchNormModule(fan_out, dtype=dtype))
            layers.append(ReLUModule())
            if dropout:
                layers.append(DropoutModule(dropout, rng))
        layers += [self._linear(sizes[-1], n_classes, dtype, rng, init), SoftMaxModule()]
        super().__init__(layers)

    @staticmethod
    def _linear(fan_in, fan_out, dtype, rng, init):
        layer = LinearModule(fan_in, fan_out, dtype=dtype, rng=rng)
        if init == 'kaiming':
            for param in layer.params.values():
                param[...] = torch_default_init(rng, param.shape, fan_in, param.dtype)
        return layer

    @property
    def linear_layers(self):
        return [layer for layer in self.layers if isinstance(layer, LinearModule)]

    def __repr__(self):
        shapes = [layer.params['weight'].shape[::-1] for layer in self.linear_layers]
        return f'MLP({" -> ".join(str(s[0]) for s in shapes)} -> {shapes[-1][1]})'

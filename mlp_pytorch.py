"""The MLP as a PyTorch nn.Module, with the options tried while tuning it."""

import torch
from torch import nn

from custom_batchnorm import CustomBatchNormAutograd, CustomBatchNormManualModule

BATCHNORMS = {
    'none': None,
    'torch': nn.BatchNorm1d,
    'autograd': CustomBatchNormAutograd,
    'manual': CustomBatchNormManualModule,
}
ACTIVATIONS = {'relu': nn.ReLU, 'elu': nn.ELU, 'gelu': nn.GELU, 'leaky_relu': nn.LeakyReLU}
INITS = ('course', 'kaiming')


class MLP(nn.Module):
    """Linear [-> BatchNorm] -> activation [-> Dropout] per hidden layer, then Linear.

    forward(x): x of shape (B, n_inputs) or (B, 3, 32, 32) (flattened here) -> logits (B,
    n_classes); the softmax lives in the loss (cross_entropy), where it is stable.

    Args:
        n_inputs, n_hidden, n_classes: as in mlp_numpy.MLP; n_hidden=[] is a softmax
            classifier.
        batchnorm: 'none', 'torch' (nn.BatchNorm1d), 'autograd' or 'manual'
            (custom_batchnorm.py), after each hidden linear layer.
        dropout: probability of dropping a hidden unit in training.
        activation: 'relu', 'elu', 'gelu' or 'leaky_relu'.
        init: 'course' draws weights from N(0, 0.0001^2) with zero biases, as the NumPy MLP
            does, so the two can be compared step for step; 'kaiming' keeps PyTorch's default.
    """

    def __init__(
        self,
        n_inputs,
        n_hidden,
        n_classes,
        batchnorm='none',
        dropout=0.0,
        activation='relu',
        init='course',
    ):
        super().__init__()
        for name, value, choices in (
            ('batchnorm', batchnorm, BATCHNORMS),
            ('activation', activation, ACTIVATIONS),
            ('init', init, INITS),
        ):
            if value not in choices:
                raise ValueError(f'{name} must be one of {", ".join(choices)}, got {value!r}.')
        if not (
            isinstance(n_hidden, (list, tuple))
            and all(isinstance(n, int) and n > 0 for n in n_hidden)
        ):
            raise ValueError(f'n_hidden must be a list of positive integers, got {n_hidden!r}.')
        if not 0 <= dropout < 1:
            raise ValueError(f'dropout must be in [0, 1), got {dropout!r}.')
        layers = []
        fan_in = n_inputs
        for width in n_hidden:
            layers.append(nn.Linear(fan_in, width))
            if BATCHNORMS[batchnorm] is not None:
                layers.append(BATCHNORMS[batchnorm](width))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            fan_in = width
        layers.append(nn.Linear(fan_in, n_classes))
        self.layers = nn.Sequential(*layers)
        if init == 'course':
            for m in self.layers:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, 1e-4)
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.layers(torch.flatten(x, 1))

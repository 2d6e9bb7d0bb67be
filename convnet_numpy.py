"""The VGG-style ConvNet of Table 1 of the course assignment (see convnet_pytorch.py), in NumPy,
built from modules.py: every forward and backward pass written by hand.

    conv1 -> maxpool1 -> conv2 -> maxpool2 -> conv3_a -> conv3_b -> maxpool3 -> conv4_a
    -> conv4_b -> maxpool4 -> conv5_a -> conv5_b -> maxpool5 -> linear -> softmax

Each conv is Conv2d 3x3 (stride 1, padding 1) -> BatchNorm2d -> ReLU; each max-pool 3x3 with
stride 2 and padding 1 halves the maps, from 32 x 32 to 1 x 1, so the linear layer sees the
512 channels. Table 1's avgpool (1 x 1 window, stride 1) is the identity and is left out.
"""

import numpy as np

from modules import (
    BatchNorm2dModule,
    Conv2dModule,
    FlattenModule,
    LinearModule,
    MaxPool2dModule,
    ReLUModule,
    Sequential,
    SoftMaxModule,
    torch_default_init,
)

# Table 1: a number is a conv block with that many output channels, 'M' a max-pool.
TABLE_1 = (
    ('conv1', 64),
    ('maxpool1', 'M'),
    ('conv2', 128),
    ('maxpool2', 'M'),
    ('conv3_a', 256),
    ('conv3_b', 256),
    ('maxpool3', 'M'),
    ('conv4_a', 512),
    ('conv4_b', 512),
    ('maxpool4', 'M'),
    ('conv5_a', 512),
    ('conv5_b', 512),
    ('maxpool5', 'M'),
)


class ConvNet(Sequential):
    """Table 1's ConvNet, with PyTorch's default initialisation, as convnet_pytorch.ConvNet:
    the same parameters in the same order (parameters() lists them as that model's
    parameters() does), so that weights can be copied from one to the other.

    Args:
        n_channels: channels of the input images (3 for CIFAR-10).
        n_classes: number of classes (10 for CIFAR-10).
        dtype: of the parameters and the computation; float32 for speed, float64 for the
            gradient checks.
        rng: numpy Generator for the initialisation.
        width: multiplies every layer's number of channels; 1 is Table 1. Smaller widths
            exist for fast tests.
    """

    def __init__(self, n_channels, n_classes, dtype=np.float32, rng=None, *, width=1):
        if not width > 0:
            raise ValueError(f'width must be positive, got {width!r}.')
        rng = np.random.default_rng() if rng is None else rng
        layers, self.names, channels = [], [], n_channels
        for name, out in TABLE_1:
            if out == 'M':
                block = [MaxPool2dModule(kernel_size=3, stride=2, padding=1)]
            else:
                out = max(1, round(out * width))
                block = [
                    Conv2dModule(channels, out, 3, stride=1, padding=1, dtype=dtype, rng=rng),
                    BatchNorm2dModule(out, dtype=dtype),
                    ReLUModule(),
                ]
                channels = out
            layers += block
            self.names += [name] * len(block)
        linear = LinearModule(channels, n_classes, dtype=dtype, rng=rng)
        for param in linear.params.values():
            param[...] = torch_default_init(rng, param.shape, channels, dtype)
        layers += [FlattenModule(), linear, SoftMaxModule()]
        self.names += ['flatten', 'linear', 'softmax']
        super().__init__(layers)

    def forward(self, x):
        """x: (B, n_channels, 32, 32) -> class probabilities (B, n_classes)."""
        return super().forward(x)

    def batch_norms(self):
        """The BatchNorm2dModules, in order (their running statistics are state too)."""
        return [layer for layer in self.layers if isinstance(layer, BatchNorm2dModule)]

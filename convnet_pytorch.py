"""The VGG-style ConvNet of Table 1 of the course assignment.

    name       kernel  stride  padding  channels in/out
    conv1      3x3     1       1        3/64
    maxpool1   3x3     2       1        64/64
    conv2      3x3     1       1        64/128
    maxpool2   3x3     2       1        128/128
    conv3_a    3x3     1       1        128/256
    conv3_b    3x3     1       1        256/256
    maxpool3   3x3     2       1        256/256
    conv4_a    3x3     1       1        256/512
    conv4_b    3x3     1       1        512/512
    maxpool4   3x3     2       1        512/512
    conv5_a    3x3     1       1        512/512
    conv5_b    3x3     1       1        512/512
    maxpool5   3x3     2       1        512/512
    avgpool    1x1     1       0        512/512
    linear     -       -       -        512/10

Every conv is followed by batch normalisation and a ReLU. The five max-pools halve a 32 x 32
image down to 1 x 1, so the linear layer sees exactly the 512 channels.
"""

import torch.nn.functional as F
from torch import nn


class Im2colConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters, same outputs) computed as one matrix product: the weights,
    flattened to (out, in * 3 * 3), times every 3 x 3 patch of the input unfolded into a column
    ("im2col"). conv5_a and conv5_b see 2 x 2 maps, where most of each padded window is zeros
    and the CPU's convolution kernels run well below a matrix product's speed (the report's
    Speed section has the measurement)."""

    def forward(self, x):
        """x: (B, in, H, W) -> (B, out, H, W)."""
        patches = F.unfold(x, self.kernel_size, padding=self.padding)  # (B, in * 3 * 3, H * W)
        rows = patches.transpose(1, 2).flatten(0, 1)  # (B * H * W, in * 3 * 3): one per pixel
        out = rows @ self.weight.flatten(1).T + self.bias  # (B * H * W, out)
        return out.view(x.shape[0], x.shape[2], x.shape[3], -1).permute(0, 3, 1, 2)


def conv_block(in_channels, out_channels, conv=nn.Conv2d):
    """Conv2d 3x3 stride 1 padding 1 -> BatchNorm2d -> ReLU: (B, in, H, W) -> (B, out, H, W).
    conv: the Conv2d class that computes it."""
    return nn.Sequential(
        conv(in_channels, out_channels, kernel_size=3, stride=1, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),  # in place: BatchNorm's output is not needed by its backward
    )


def max_pool():
    """3x3 stride 2 padding 1: (B, C, H, W) -> (B, C, ceil(H / 2), ceil(W / 2))."""
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


class ConvNet(nn.Module):
    """Table 1's ConvNet, with PyTorch's default initialisation.

    Submodules are named after the table (conv1, maxpool1, ..., avgpool, linear); each convN
    is an nn.Sequential of Conv2d, BatchNorm2d and ReLU.
    """

    def __init__(self, n_channels, n_classes, *, width=1):
        """
        Inputs:
        - n_channels: int, channels of the input images (3 for CIFAR-10).
        - n_classes: int, number of classes (10 for CIFAR-10).
        - width: multiplies every layer's number of channels; 1 is Table 1. Smaller widths
          exist for fast tests of the code around the network.
        """
        super().__init__()

        def c(n):
            return max(1, round(n * width))

        self.conv1 = conv_block(n_channels, c(64))
        self.maxpool1 = max_pool()
        self.conv2 = conv_block(c(64), c(128))
        self.maxpool2 = max_pool()
        self.conv3_a = conv_block(c(128), c(256))
        self.conv3_b = conv_block(c(256), c(256))
        self.maxpool3 = max_pool()
        self.conv4_a = conv_block(c(256), c(512))
        self.conv4_b = conv_block(c(512), c(512))
        self.maxpool4 = max_pool()
        self.conv5_a = conv_block(c(512), c(512), Im2colConv2d)  # on 2 x 2 maps
        self.conv5_b = conv_block(c(512), c(512), Im2colConv2d)
        self.maxpool5 = max_pool()
        self.avgpool = nn.AvgPool2d(kernel_size=1, stride=1, padding=0)
        self.linear = nn.Linear(c(512), n_classes)

    def forward(self, x):
        """x: float tensor (B, n_channels, 32, 32) -> logits (B, n_classes) (no softmax:
        F.cross_entropy takes logits).

        Smaller images work too (every max-pool of a 1 x 1 map gives 1 x 1); larger ones
        leave more than one position per channel and do not fit the linear layer.
        """
        *body, _ = self.children()
        for layer in body:
            x = layer(x)
        return self.linear(x.flatten(1))

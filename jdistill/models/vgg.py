"""VGG with BatchNorm for CIFAR (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for
Large-Scale Image Recognition"), as in the CRD/RepDistiller benchmark: vgg8, vgg11, vgg13, vgg16,
vgg19 (its ``vgg*_bn``), without the fully connected layers of the ImageNet model.

Five blocks of conv3x3(bias)-BN-ReLU layers, with 2x2 max pooling after blocks 0, 1 and 2 (on
32x32 inputs RepDistiller skips the pooling after block 3), global average pooling and a linear
classifier reading the 512 channels. Block widths are 64, 128, 256, 512, 512; the number of
convolutions per block is (1, 1, 1, 1, 1) for vgg8, (1, 1, 2, 2, 2) for vgg11, (2, 2, 2, 2, 2)
for vgg13, (2, 2, 3, 3, 3) for vgg16, (2, 2, 4, 4, 4) for vgg19. Convolutions start from
Kaiming-normal (fan_out) weights and zero biases, the classifier from N(0, 0.01^2) weights and
zero biases.

Features on 32x32 inputs: ``stem`` is block 0's output, ``stageK`` block K's, each after its last
ReLU and before pooling; ``stageK_pre`` is ``stageK`` before that ReLU.

============  ==============
feature       shape
============  ==============
stem          [32, 32, 64]
stage1(_pre)  [16, 16, 128]
stage2(_pre)  [8, 8, 256]
stage3(_pre)  [4, 4, 512]
stage4(_pre)  [4, 4, 512]
embedding     [512]
============  ==============
"""

import itertools
from collections.abc import Sequence

import jax
from flax import nnx

from jdistill.models.common import Output
from jdistill.models.layers import ConvBN, global_avg_pool, linear, max_pool2x2, require_cifar_input

WIDTHS = (64, 128, 256, 512, 512)
CONVS_PER_BLOCK = {
    8: (1, 1, 1, 1, 1),
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}


class VGGBlock(nnx.Module):
    """``count`` conv3x3(bias)-BN layers with ReLU between them; returns the last BN's output."""

    def __init__(self, in_planes: int, planes: int, count: int, *, rngs: nnx.Rngs):
        sizes = [in_planes] + [planes] * count
        self.layers = nnx.List(
            [ConvBN(a, b, 3, use_bias=True, rngs=rngs) for a, b in itertools.pairwise(sizes)]
        )

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = layer(jax.nn.relu(x) if i > 0 else x, train)
        return x


class VGG(nnx.Module):
    """VGG-``depth`` with BatchNorm for 32x32 inputs; ``depth`` in 8, 11, 13, 16, 19."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, depth: int, rngs: nnx.Rngs):
        in_channels = require_cifar_input("VGG", input_shape)
        if depth not in CONVS_PER_BLOCK:
            raise ValueError(f"VGG: depth must be one of {sorted(CONVS_PER_BLOCK)}, got {depth}")
        sizes = [in_channels, *WIDTHS]
        self.blocks = nnx.List(
            [
                VGGBlock(a, b, count, rngs=rngs)
                for a, b, count in zip(sizes[:-1], sizes[1:], CONVS_PER_BLOCK[depth])
            ]
        )
        self.head = linear(
            WIDTHS[-1],
            num_classes,
            kernel_init=nnx.initializers.normal(0.01),
            bias_init=nnx.initializers.zeros_init(),
            rngs=rngs,
        )

    def __call__(
        self, images: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> Output:
        del dropout_key  # no dropout
        h = jax.nn.relu(self.blocks[0](images, train))
        features = {"stem": h}
        for k, block in enumerate(self.blocks[1:], start=1):
            if k <= 3:  # pooling after blocks 0, 1, 2
                h = max_pool2x2(h)
            pre = block(h, train)
            h = jax.nn.relu(pre)
            features[f"stage{k}_pre"], features[f"stage{k}"] = pre, h
        features["embedding"] = global_avg_pool(h)
        return self.head(features["embedding"]), features

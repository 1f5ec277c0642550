"""ResNet50 for CIFAR (He et al. 2016, "Deep Residual Learning for Image Recognition"), the
teacher of the CRD/RepDistiller benchmark (its resnetv2.py).

conv3x3(64)-BN-ReLU (no downsampling stem), then four stages of bottleneck blocks of widths 64,
128, 256, 512 (outputs 4x wider; strides 1, 2, 2, 2; 3, 4, 6, 3 blocks), global average pooling
and a linear classifier. A bottleneck block is conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1-BN
plus a shortcut (identity, or conv1x1-BN where the shape changes), then ReLU. Convolutions have no
bias and start from Kaiming-normal (fan_out) weights.

Features on 32x32 inputs (``stageK_pre`` is ``stageK`` before its final ReLU):

============  ==============
feature       shape
============  ==============
stem          [32, 32, 64]
stage1(_pre)  [32, 32, 256]
stage2(_pre)  [16, 16, 512]
stage3(_pre)  [8, 8, 1024]
stage4(_pre)  [4, 4, 2048]
embedding     [2048]
============  ==============
"""

from collections.abc import Sequence

import jax
from flax import nnx

from jdistill.models.common import Output
from jdistill.models.layers import ConvBN, linear, require_cifar_input, staged_forward

EXPANSION = 4


class Bottleneck(nnx.Module):
    """conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1-BN plus shortcut; returns the sum before the ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        out_planes = EXPANSION * planes
        self.conv1 = ConvBN(in_planes, planes, 1, rngs=rngs)
        self.conv2 = ConvBN(planes, planes, 3, stride=stride, rngs=rngs)
        self.conv3 = ConvBN(planes, out_planes, 1, rngs=rngs)
        changes_shape = stride != 1 or in_planes != out_planes
        self.shortcut = ConvBN(in_planes, out_planes, 1, stride=stride, rngs=rngs) if changes_shape else None

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out = jax.nn.relu(self.conv1(x, train))
        out = self.conv3(jax.nn.relu(self.conv2(out, train)), train)
        return out + (x if self.shortcut is None else self.shortcut(x, train))


def residual_stages(block, expansion: int, counts: Sequence[int], *, rngs: nnx.Rngs) -> tuple[nnx.List, int]:
    """Stages of ``counts`` blocks (``block(in_planes, planes, stride)``) of widths 64, 128, 256,
    ... on a 64-channel input, strides 1, 2, 2, ..., each block's output ``expansion`` x its width;
    and the channels of the last stage's output."""
    in_planes, stages = 64, []
    for i, count in enumerate(counts):
        planes, blocks = 64 * 2**i, []
        for j in range(count):
            blocks.append(block(in_planes, planes, 2 if i > 0 and j == 0 else 1, rngs=rngs))
            in_planes = expansion * planes
        stages.append(nnx.List(blocks))
    return nnx.List(stages), in_planes


class BottleneckResNet(nnx.Module):
    """CIFAR ResNet of bottleneck blocks, ``num_blocks`` per stage; (3, 4, 6, 3) is ResNet50."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        num_blocks: Sequence[int] = (3, 4, 6, 3),
        rngs: nnx.Rngs,
    ):
        in_channels = require_cifar_input("BottleneckResNet", input_shape)
        self.stem = ConvBN(in_channels, 64, 3, rngs=rngs)
        self.stages, out_planes = residual_stages(Bottleneck, EXPANSION, num_blocks, rngs=rngs)
        self.head = linear(out_planes, num_classes, rngs=rngs)

    def __call__(
        self, images: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> Output:
        del dropout_key  # no dropout
        return staged_forward(self, images, train)

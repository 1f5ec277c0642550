"""CIFAR ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", section 4.2)
as in the CRD/RepDistiller benchmark: resnet8 ... resnet110 and the 4x wider resnet8x4, resnet32x4.

conv3x3(w0)-BN-ReLU, then three stages of n = (depth - 2) / 6 basic blocks of widths w1, w2, w3
(stride 1, 2, 2), global average pooling and a linear classifier. A basic block is
conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (identity, or conv1x1-BN where the shape changes),
then ReLU. Widths (w0, w1, w2, w3) are (16, 16, 32, 64), or (32, 64, 128, 256) for the x4 models.
Convolutions have no bias and start from Kaiming-normal (fan_out) weights.

Features on 32x32 inputs (``stageK_pre`` is ``stageK`` before its final ReLU):

============  ================  ==================
feature       resnet8..110      resnet8x4, 32x4
============  ================  ==================
stem          [32, 32, 16]      [32, 32, 32]
stage1(_pre)  [32, 32, 16]      [32, 32, 64]
stage2(_pre)  [16, 16, 32]      [16, 16, 128]
stage3(_pre)  [8, 8, 64]        [8, 8, 256]
embedding     [64]              [256]
============  ================  ==================
"""

import itertools
from collections.abc import Sequence

import jax
from flax import nnx

from jdistill.models.common import Output
from jdistill.models.layers import ConvBN, linear, require_cifar_input, staged_forward


class BasicBlock(nnx.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut; returns the sum before the final ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = ConvBN(in_planes, planes, 3, stride=stride, rngs=rngs)
        self.conv2 = ConvBN(planes, planes, 3, rngs=rngs)
        changes_shape = stride != 1 or in_planes != planes
        self.downsample = ConvBN(in_planes, planes, 1, stride=stride, rngs=rngs) if changes_shape else None

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out = self.conv2(jax.nn.relu(self.conv1(x, train)), train)
        return out + (x if self.downsample is None else self.downsample(x, train))


class ResNet(nnx.Module):
    """CIFAR ResNet of ``depth`` = 6n + 2 layers and stem and stage ``widths`` (w0, w1, w2, w3)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        depth: int,
        widths: Sequence[int] = (16, 16, 32, 64),
        rngs: nnx.Rngs,
    ):
        in_channels = require_cifar_input("ResNet", input_shape)
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet: depth must be 6n + 2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.stem = ConvBN(in_channels, widths[0], 3, rngs=rngs)
        stages = []
        for i, (in_planes, planes) in enumerate(itertools.pairwise(widths)):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_planes, planes, stride, rngs=rngs)]
            blocks += [BasicBlock(planes, planes, 1, rngs=rngs) for _ in range(n - 1)]
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        self.head = linear(widths[-1], num_classes, rngs=rngs)

    def __call__(
        self, images: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> Output:
        del dropout_key  # no dropout
        return staged_forward(self, images, train)

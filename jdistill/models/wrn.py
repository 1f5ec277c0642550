"""Wide residual networks (Zagoruyko & Komodakis 2016, "Wide Residual Networks") for CIFAR, as in
the CRD/RepDistiller benchmark: wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2 (WRN-depth-k, no dropout).

conv3x3(16), then three stages of n = (depth - 4) / 6 pre-activation blocks of widths 16k, 32k,
64k (strides 1, 2, 2), BN-ReLU, global average pooling and a linear classifier. A block is
BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3 plus a shortcut: the identity where the width is
unchanged, else a conv1x1(stride) of the block's BN-ReLU'd input. Convolutions have no bias and
start from Kaiming-normal (fan_out) weights; the classifier's bias starts at zero.

In this pre-activation network the stage outputs are sums with no ReLU after them. As in
RepDistiller, ``stageK`` is that sum (``stem`` the first convolution's output), and
``stageK_pre`` is the sum normalised by the BatchNorm that next reads it (the first block of
stage K + 1, or the final BN for stage 3): the input of the next ReLU, so
``relu(stage3_pre)`` is what the pooling averages, and ``stageK != relu(stageK_pre)``.

Features on 32x32 inputs:

============  ===============
feature       shape
============  ===============
stem          [32, 32, 16]
stage1(_pre)  [32, 32, 16k]
stage2(_pre)  [16, 16, 32k]
stage3(_pre)  [8, 8, 64k]
embedding     [64k]
============  ===============
"""

import itertools
from collections.abc import Sequence

import jax
from flax import nnx

from jdistill.models.common import Output
from jdistill.models.layers import batch_norm, conv, global_avg_pool, linear, require_cifar_input


class WideBlock(nnx.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus shortcut; returns the sum and BN(input)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, *, rngs: nnx.Rngs):
        self.bn1 = batch_norm(in_planes, rngs=rngs)
        self.conv1 = conv(in_planes, out_planes, 3, stride=stride, rngs=rngs)
        self.bn2 = batch_norm(out_planes, rngs=rngs)
        self.conv2 = conv(out_planes, out_planes, 3, rngs=rngs)
        same_width = in_planes == out_planes
        self.shortcut = None if same_width else conv(in_planes, out_planes, 1, stride=stride, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        normed = self.bn1(x, use_running_average=not train)
        act = jax.nn.relu(normed)
        out = self.conv2(jax.nn.relu(self.bn2(self.conv1(act), use_running_average=not train)))
        return out + (x if self.shortcut is None else self.shortcut(act)), normed


class WideResNet(nnx.Module):
    """WRN-``depth``-``widen_factor``; ``depth`` = 6n + 4."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        depth: int,
        widen_factor: int,
        rngs: nnx.Rngs,
    ):
        in_channels = require_cifar_input("WideResNet", input_shape)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet: depth must be 6n + 4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stem = conv(in_channels, widths[0], 3, rngs=rngs)
        stages = []
        for i, (in_planes, planes) in enumerate(itertools.pairwise(widths)):
            stride = 1 if i == 0 else 2
            blocks = [WideBlock(in_planes, planes, stride, rngs=rngs)]
            blocks += [WideBlock(planes, planes, 1, rngs=rngs) for _ in range(n - 1)]
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        self.bn = batch_norm(widths[-1], rngs=rngs)
        self.head = linear(widths[-1], num_classes, bias_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(
        self, images: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> Output:
        del dropout_key  # no dropout
        h = self.stem(images)
        features = {"stem": h}
        for k, stage in enumerate(self.stages, start=1):
            for j, block in enumerate(stage):
                h, normed = block(h, train)
                if k > 1 and j == 0:  # the BN of stage k - 1's output
                    features[f"stage{k - 1}_pre"] = normed
            features[f"stage{k}"] = h
        normed = self.bn(h, use_running_average=not train)
        features[f"stage{len(self.stages)}_pre"] = normed
        features["embedding"] = global_avg_pool(jax.nn.relu(normed))
        return self.head(features["embedding"]), features

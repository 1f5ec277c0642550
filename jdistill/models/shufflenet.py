"""ShuffleNet V1 (Zhang et al. 2018, "ShuffleNet: An Extremely Efficient Convolutional Neural
Network for Mobile Devices") and V2 (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for
Efficient CNN Architecture Design") for CIFAR, as in the CRD/RepDistiller benchmark (``ShuffleV1``:
3 groups, widths 240, 480, 960; ``ShuffleV2``: size 1x, widths 116, 232, 464, 1024).

Both: conv1x1(24)-BN-ReLU (no downsampling stem), three stages that each halve the resolution,
global average pooling and a linear classifier; PyTorch's default initialisation throughout.

ShuffleV1 stage: 4, 8, 4 bottleneck units of grouped conv1x1(width / 4)-BN-ReLU-channel shuffle-
depthwise conv3x3-BN-ReLU-grouped conv1x1-BN, added to the input, or (the first unit, stride 2)
concatenated with a 3x3 average pooling of it; then ReLU. The unit on the 24-channel stem has an
ungrouped first conv1x1. ``stageK_pre`` is ``stageK`` before that ReLU.

ShuffleV2 stage: a down-sampling unit (two stride-2 branches concatenated and shuffled), then
3, 7, 3 basic units that split the channels in halves, keep the first and send the second
through conv1x1-BN-ReLU-depthwise conv3x3-BN-conv1x1-BN-ReLU, concatenate and shuffle; then
conv1x1(1024)-BN-ReLU before the pooling. As in RepDistiller, ``stageK_pre`` is the last unit's
concatenation before its ReLU *and before its shuffle*: ``stageK == shuffle(relu(stageK_pre))``.

Features on 32x32 inputs:

============  =============  =============
feature       ShuffleV1      ShuffleV2
============  =============  =============
stem          [32, 32, 24]   [32, 32, 24]
stage1(_pre)  [16, 16, 240]  [16, 16, 116]
stage2(_pre)  [8, 8, 480]    [8, 8, 232]
stage3(_pre)  [4, 4, 960]    [4, 4, 464]
embedding     [960]          [1024]
============  =============  =============
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jdistill.models.common import Output
from jdistill.models.layers import (
    TORCH_DEFAULT,
    ConvBN,
    channel_shuffle,
    global_avg_pool,
    linear,
    require_cifar_input,
    staged_forward,
)

STEM_WIDTH = 24


def _conv_bn(in_planes: int, out_planes: int, kernel_size: int, *, rngs: nnx.Rngs, **kwargs) -> ConvBN:
    return ConvBN(in_planes, out_planes, kernel_size, kernel_init=TORCH_DEFAULT, rngs=rngs, **kwargs)


class ShuffleV1Unit(nnx.Module):
    """ShuffleNet V1 bottleneck unit; returns the sum or concatenation before the final ReLU."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int, *, rngs: nnx.Rngs):
        mid = out_planes // 4
        self.first_groups = 1 if in_planes == STEM_WIDTH else groups
        self.conv1 = _conv_bn(in_planes, mid, 1, groups=self.first_groups, rngs=rngs)
        self.conv2 = _conv_bn(mid, mid, 3, stride=stride, groups=mid, rngs=rngs)
        self.conv3 = _conv_bn(mid, out_planes, 1, groups=groups, rngs=rngs)
        self.stride = stride

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out = channel_shuffle(jax.nn.relu(self.conv1(x, train)), self.first_groups)
        out = self.conv3(jax.nn.relu(self.conv2(out, train)), train)
        if self.stride == 1:
            return out + x
        pooled = nnx.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=True)
        return jnp.concatenate([out, pooled], axis=-1)


class ShuffleV1(nnx.Module):
    """ShuffleNet V1 with ``groups`` groups and stage ``widths`` of ``num_blocks`` units."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        widths: Sequence[int] = (240, 480, 960),
        num_blocks: Sequence[int] = (4, 8, 4),
        groups: int = 3,
        rngs: nnx.Rngs,
    ):
        in_channels = require_cifar_input("ShuffleV1", input_shape)
        self.stem = _conv_bn(in_channels, STEM_WIDTH, 1, rngs=rngs)
        in_planes = STEM_WIDTH
        stages = []
        for width, count in zip(widths, num_blocks):
            # The first unit concatenates its pooled input: its branch makes the other channels.
            units = [ShuffleV1Unit(in_planes, width - in_planes, 2, groups, rngs=rngs)]
            units += [ShuffleV1Unit(width, width, 1, groups, rngs=rngs) for _ in range(count - 1)]
            stages.append(nnx.List(units))
            in_planes = width
        self.stages = nnx.List(stages)
        self.head = linear(in_planes, num_classes, rngs=rngs)

    def __call__(
        self, images: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> Output:
        del dropout_key  # no dropout
        return staged_forward(self, images, train)


class ShuffleV2Down(nnx.Module):
    """ShuffleNet V2 down-sampling unit: [dwconv3x3(s2)-BN-conv1x1-BN-ReLU,
    conv1x1-BN-ReLU-dwconv3x3(s2)-BN-conv1x1-BN-ReLU], concatenated and shuffled."""

    def __init__(self, in_planes: int, out_planes: int, *, rngs: nnx.Rngs):
        mid = out_planes // 2
        self.left_dw = _conv_bn(in_planes, in_planes, 3, stride=2, groups=in_planes, rngs=rngs)
        self.left_pw = _conv_bn(in_planes, mid, 1, rngs=rngs)
        self.right_pw1 = _conv_bn(in_planes, mid, 1, rngs=rngs)
        self.right_dw = _conv_bn(mid, mid, 3, stride=2, groups=mid, rngs=rngs)
        self.right_pw2 = _conv_bn(mid, mid, 1, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        left = jax.nn.relu(self.left_pw(self.left_dw(x, train), train))
        right = self.right_dw(jax.nn.relu(self.right_pw1(x, train)), train)
        right = jax.nn.relu(self.right_pw2(right, train))
        return channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class ShuffleV2Basic(nnx.Module):
    """ShuffleNet V2 basic unit; returns the shuffled output and the unshuffled pre-activation."""

    def __init__(self, planes: int, *, rngs: nnx.Rngs):
        half = planes // 2
        self.pw1 = _conv_bn(half, half, 1, rngs=rngs)
        self.dw = _conv_bn(half, half, 3, groups=half, rngs=rngs)
        self.pw2 = _conv_bn(half, half, 1, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        kept, x2 = jnp.split(x, 2, axis=-1)
        branch = self.pw2(self.dw(jax.nn.relu(self.pw1(x2, train)), train), train)
        out = jnp.concatenate([kept, jax.nn.relu(branch)], axis=-1)
        return channel_shuffle(out, 2), jnp.concatenate([kept, branch], axis=-1)


class ShuffleV2Stage(nnx.Module):
    """A down-sampling unit and ``count`` basic units; returns the output and its pre-activation."""

    def __init__(self, in_planes: int, out_planes: int, count: int, *, rngs: nnx.Rngs):
        self.down = ShuffleV2Down(in_planes, out_planes, rngs=rngs)
        self.units = nnx.List([ShuffleV2Basic(out_planes, rngs=rngs) for _ in range(count)])

    def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        h = self.down(x, train)
        for unit in self.units:
            h, pre = unit(h, train)
        return h, pre


class ShuffleV2(nnx.Module):
    """ShuffleNet V2 with stage ``widths`` of ``num_blocks`` basic units and a ``last_width`` conv."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        widths: Sequence[int] = (116, 232, 464),
        num_blocks: Sequence[int] = (3, 7, 3),
        last_width: int = 1024,
        rngs: nnx.Rngs,
    ):
        in_channels = require_cifar_input("ShuffleV2", input_shape)
        if min(num_blocks) < 1:
            raise ValueError(f"ShuffleV2: every stage needs a basic unit, got num_blocks={tuple(num_blocks)}")
        self.stem = _conv_bn(in_channels, STEM_WIDTH, 1, rngs=rngs)
        sizes = [STEM_WIDTH, *widths]
        self.stages = nnx.List(
            [ShuffleV2Stage(a, b, count, rngs=rngs) for a, b, count in zip(sizes[:-1], sizes[1:], num_blocks)]
        )
        self.head_conv = _conv_bn(widths[-1], last_width, 1, rngs=rngs)
        self.head = linear(last_width, num_classes, rngs=rngs)

    def __call__(
        self, images: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> Output:
        del dropout_key  # no dropout
        h = jax.nn.relu(self.stem(images, train))
        features = {"stem": h}
        for k, stage in enumerate(self.stages, start=1):
            h, features[f"stage{k}_pre"] = stage(h, train)
            features[f"stage{k}"] = h
        features["embedding"] = global_avg_pool(jax.nn.relu(self.head_conv(h, train)))
        return self.head(features["embedding"]), features

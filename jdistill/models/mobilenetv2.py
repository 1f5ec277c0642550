"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks") for
CIFAR, as in the CRD/RepDistiller benchmark, whose ``mobile_half`` (width multiplier 0.5,
expansion 6) is ``MobileNetV2`` in the registry.

conv3x3(stride 2)-BN-ReLU, then seven groups of inverted residual blocks (expansion t, width c,
n blocks, first stride s: (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
(6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1); widths and the stem's 32 scaled by the multiplier
and truncated), conv1x1(1280)-BN-ReLU, global average pooling and a linear classifier. A block is
conv1x1(expand)-BN-ReLU-depthwise conv3x3(stride)-BN-ReLU-conv1x1(project)-BN, plus the input
where stride and width allow (RepDistiller keeps the expanding conv1x1 even when t = 1).
Convolutions have no bias and start from Kaiming-normal (fan_out) weights, the classifier from
N(0, 0.01^2) weights and zero biases.

The features are RepDistiller's: the stem and the outputs of groups 1, 2, 4 and 6. Those are
linear bottlenecks with no ReLU after them, so RepDistiller returns the same features with or
without ``preact``: here ``stageK_pre`` is the same array as ``stageK``.

Features on 32x32 inputs (width multiplier 0.5):

============  ==============
feature       shape
============  ==============
stem          [16, 16, 16]
stage1(_pre)  [16, 16, 12]
stage2(_pre)  [8, 8, 16]
stage3(_pre)  [4, 4, 48]
stage4(_pre)  [2, 2, 160]
embedding     [1280]
============  ==============
"""

from collections.abc import Sequence

import jax
from flax import nnx

from jdistill.models.common import Output
from jdistill.models.layers import ConvBN, global_avg_pool, linear, require_cifar_input

# (width, blocks, first stride) per group; the first group expands by 1, the others by ``expansion``.
GROUPS = ((16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))
# The groups whose outputs are the features stage1 ... stage4.
FEATURE_GROUPS = (1, 2, 4, 6)


class InvertedResidual(nnx.Module):
    """conv1x1-BN-ReLU-dwconv3x3-BN-ReLU-conv1x1-BN, plus the input where shapes allow."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, expansion: int, *, rngs: nnx.Rngs):
        hidden = in_planes * expansion
        self.expand = ConvBN(in_planes, hidden, 1, rngs=rngs)
        self.depthwise = ConvBN(hidden, hidden, 3, stride=stride, groups=hidden, rngs=rngs)
        self.project = ConvBN(hidden, out_planes, 1, rngs=rngs)
        self.residual = stride == 1 and in_planes == out_planes

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out = jax.nn.relu(self.expand(x, train))
        out = self.project(jax.nn.relu(self.depthwise(out, train)), train)
        return x + out if self.residual else out


class MobileNetV2(nnx.Module):
    """MobileNetV2 for 32x32 inputs with ``width_mult`` and ``expansion`` (RepDistiller's T)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        width_mult: float = 0.5,
        expansion: int = 6,
        rngs: nnx.Rngs,
    ):
        in_channels = require_cifar_input("MobileNetV2", input_shape)
        planes = int(32 * width_mult)
        self.stem = ConvBN(in_channels, planes, 3, stride=2, rngs=rngs)
        groups = []
        for i, (width, count, stride) in enumerate(GROUPS):
            t = 1 if i == 0 else expansion
            out_planes = int(width * width_mult)
            blocks = []
            for j in range(count):
                blocks.append(InvertedResidual(planes, out_planes, stride if j == 0 else 1, t, rngs=rngs))
                planes = out_planes
            groups.append(nnx.List(blocks))
        self.groups = nnx.List(groups)
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.head_conv = ConvBN(planes, last, 1, rngs=rngs)
        self.head = linear(
            last,
            num_classes,
            kernel_init=nnx.initializers.normal(0.01),
            bias_init=nnx.initializers.zeros_init(),
            rngs=rngs,
        )

    def __call__(
        self, images: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> Output:
        del dropout_key  # no dropout
        h = jax.nn.relu(self.stem(images, train))
        features = {"stem": h}
        for i, group in enumerate(self.groups):
            for block in group:
                h = block(h, train)
            if i in FEATURE_GROUPS:
                k = FEATURE_GROUPS.index(i) + 1
                features[f"stage{k}_pre"] = features[f"stage{k}"] = h
        features["embedding"] = global_avg_pool(jax.nn.relu(self.head_conv(h, train)))
        return self.head(features["embedding"]), features

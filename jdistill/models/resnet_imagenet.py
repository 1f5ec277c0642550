"""ImageNet ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", table 1) as
torchvision builds them: ``resnet18_imagenet``, ``resnet34_imagenet``, ``resnet50_imagenet``
(11,689,512 / 21,797,672 / 25,557,032 parameters for 1,000 classes, torchvision's counts).

conv7x7(64, stride 2, pad 3)-BN-ReLU, max-pool 3x3 (stride 2, pad 1), four stages of widths 64,
128, 256, 512 (strides 1, 2, 2, 2) of basic blocks (ResNet-18: 2, 2, 2, 2; ResNet-34: 3, 4, 6, 3)
or bottleneck blocks (ResNet-50: 3, 4, 6, 3; outputs 4x wider, the stride on the 3x3 convolution
as torchvision's "v1.5"), global average pooling and a linear classifier. The blocks are the CIFAR
models' (:mod:`jdistill.models.resnet`, :mod:`jdistill.models.resnet_bottleneck`); convolutions
have no bias and start from Kaiming-normal (fan_out) weights, BatchNorm from scale 1 and offset 0.

Features on 224x224 inputs (``stageK_pre`` is ``stageK`` before its final ReLU; ResNet-50's stages
are 4x wider: 256, 512, 1024, 2048):

============  ===================
feature       ResNet-18/34
============  ===================
stem          [56, 56, 64]
stage1(_pre)  [56, 56, 64]
stage2(_pre)  [28, 28, 128]
stage3(_pre)  [14, 14, 256]
stage4(_pre)  [7, 7, 512]
embedding     [512]
============  ===================
"""

from collections.abc import Sequence

import jax
from flax import nnx

from jdistill.models.common import Output
from jdistill.models.layers import ConvBN, linear, staged_forward
from jdistill.models.resnet import BasicBlock
from jdistill.models.resnet_bottleneck import EXPANSION, Bottleneck, residual_stages


class Stem(nnx.Module):
    """conv7x7/2-BN then max-pool 3x3/2 (the ReLU that follows commutes with the max)."""

    def __init__(self, in_channels: int, *, rngs: nnx.Rngs):
        self.conv = ConvBN(in_channels, 64, 7, stride=2, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return nnx.max_pool(self.conv(x, train), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class ImageNetResNet(nnx.Module):
    """A ResNet of ``blocks`` per stage, each a basic block or (``bottleneck``) a bottleneck block."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        blocks: Sequence[int],
        bottleneck: bool = False,
        rngs: nnx.Rngs,
    ):
        if len(input_shape) != 3 or min(input_shape[:2]) < 32:
            raise ValueError(
                f"ImageNetResNet: input_shape must be HxWxC with H, W >= 32, got {tuple(input_shape)}"
            )
        block, expansion = (Bottleneck, EXPANSION) if bottleneck else (BasicBlock, 1)
        self.stem = Stem(input_shape[2], rngs=rngs)
        self.stages, out_planes = residual_stages(block, expansion, blocks, rngs=rngs)
        self.head = linear(out_planes, num_classes, rngs=rngs)

    def __call__(
        self, images: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> Output:
        del dropout_key  # no dropout
        return staged_forward(self, images, train)

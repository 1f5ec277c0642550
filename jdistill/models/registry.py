"""Built-in models by name: ``create_model("mlp1200", (28, 28, 1), 10, rngs=nnx.Rngs(0))``."""

import functools
from collections.abc import Callable, Sequence

import jax
from flax import nnx

from jdistill.models.cnn import LeNet5, SmallCNN
from jdistill.models.mlp import MLP
from jdistill.models.mobilenetv2 import MobileNetV2
from jdistill.models.resnet import ResNet
from jdistill.models.resnet_bottleneck import BottleneckResNet
from jdistill.models.resnet_imagenet import ImageNetResNet
from jdistill.models.shufflenet import ShuffleV1, ShuffleV2
from jdistill.models.vgg import VGG
from jdistill.models.vit import ViT
from jdistill.models.wrn import WideResNet

SMALL_MODELS: dict[str, Callable[..., nnx.Module]] = {
    # Hinton et al. 2015 MNIST pair: a teacher regularised by dropout, an unregularised student.
    "mlp1200": functools.partial(MLP, widths=(1200, 1200), dropout=0.5, input_dropout=0.2),
    "mlp800": functools.partial(MLP, widths=(800, 800)),
    # For studies of that pair: the teacher's net without dropout, the student's with the teacher's dropout.
    "mlp1200_plain": functools.partial(MLP, widths=(1200, 1200)),
    "mlp800_dropout": functools.partial(MLP, widths=(800, 800), dropout=0.5, input_dropout=0.2),
    # Smaller MLPs for quick runs and the embedded-data demo.
    "mlp256": functools.partial(MLP, widths=(256, 256)),
    "mlp32": functools.partial(MLP, widths=(32,)),
    "lenet5": LeNet5,
    "lenet5_half": functools.partial(LeNet5, channels=(3, 8), fc=(60, 42)),
    "small_cnn": SmallCNN,
    # Vision transformers on 7x7 patches (depth x width): a teacher and a shallower, narrower student.
    "vit4x64": functools.partial(ViT, depth=4, width=64, heads=4),
    "vit2x32": functools.partial(ViT, depth=2, width=32, heads=2),
}
# The CIFAR-100 model zoo of the CRD/RepDistiller benchmark (Tian et al. 2020), 32x32 inputs.
CIFAR_ZOO: dict[str, Callable[..., nnx.Module]] = {
    **{f"resnet{d}": functools.partial(ResNet, depth=d) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": functools.partial(ResNet, depth=8, widths=(32, 64, 128, 256)),
    "resnet32x4": functools.partial(ResNet, depth=32, widths=(32, 64, 128, 256)),
    "wrn_16_1": functools.partial(WideResNet, depth=16, widen_factor=1),
    "wrn_16_2": functools.partial(WideResNet, depth=16, widen_factor=2),
    "wrn_40_1": functools.partial(WideResNet, depth=40, widen_factor=1),
    "wrn_40_2": functools.partial(WideResNet, depth=40, widen_factor=2),
    **{f"vgg{d}": functools.partial(VGG, depth=d) for d in (8, 11, 13, 16, 19)},
    "MobileNetV2": functools.partial(MobileNetV2, width_mult=0.5),
    "ShuffleV1": ShuffleV1,
    "ShuffleV2": ShuffleV2,
    "ResNet50": functools.partial(BottleneckResNet, num_blocks=(3, 4, 6, 3)),
}
# torchvision's ImageNet ResNets (224x224 inputs; other sizes of at least 32x32 work too).
IMAGENET_ZOO: dict[str, Callable[..., nnx.Module]] = {
    "resnet18_imagenet": functools.partial(ImageNetResNet, blocks=(2, 2, 2, 2)),
    "resnet34_imagenet": functools.partial(ImageNetResNet, blocks=(3, 4, 6, 3)),
    "resnet50_imagenet": functools.partial(ImageNetResNet, blocks=(3, 4, 6, 3), bottleneck=True),
}
MODELS = {**SMALL_MODELS, **CIFAR_ZOO, **IMAGENET_ZOO}
CIFAR_MODELS = tuple(CIFAR_ZOO)
IMAGENET_MODELS = tuple(IMAGENET_ZOO)


def native_input_shape(name: str) -> tuple[int, int, int]:
    """The input a model is listed with: 32x32x3 for the CIFAR zoo, 224x224x3 for the ImageNet
    ResNets, 28x28x1 (MNIST) otherwise."""
    if name in IMAGENET_MODELS:
        return (224, 224, 3)
    return (32, 32, 3) if name in CIFAR_MODELS else (28, 28, 1)


def create_model(name: str, input_shape: Sequence[int], num_classes: int, *, rngs: nnx.Rngs) -> nnx.Module:
    """Build the model ``name`` for images of ``input_shape`` (H, W, C) and ``num_classes``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; built-in models: {', '.join(sorted(MODELS))}")
    return MODELS[name](tuple(input_shape), num_classes, rngs=rngs)


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars (``nnx.Param`` leaves) in ``model``."""
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))

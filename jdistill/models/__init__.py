"""Flax NNX models that return ``(logits, features)``, and connectors for feature methods.

See :mod:`jdistill.models.common` for the calling convention.
"""

from jdistill.models.cnn import LeNet5, SmallCNN
from jdistill.models.common import Output
from jdistill.models.connector import Connector
from jdistill.models.mlp import MLP
from jdistill.models.mobilenetv2 import MobileNetV2
from jdistill.models.registry import (
    CIFAR_MODELS,
    IMAGENET_MODELS,
    MODELS,
    count_params,
    create_model,
    native_input_shape,
)
from jdistill.models.resnet import ResNet
from jdistill.models.resnet_bottleneck import BottleneckResNet
from jdistill.models.shufflenet import ShuffleV1, ShuffleV2
from jdistill.models.vae import VAE, ImageDecoder, ImageEncoder, LatentMapper
from jdistill.models.vgg import VGG
from jdistill.models.vit import ViT
from jdistill.models.wrn import WideResNet

__all__ = [
    "CIFAR_MODELS",
    "IMAGENET_MODELS",
    "MLP",
    "MODELS",
    "VAE",
    "VGG",
    "BottleneckResNet",
    "Connector",
    "ImageDecoder",
    "ImageEncoder",
    "LatentMapper",
    "LeNet5",
    "MobileNetV2",
    "Output",
    "ResNet",
    "ShuffleV1",
    "ShuffleV2",
    "SmallCNN",
    "ViT",
    "WideResNet",
    "count_params",
    "create_model",
    "native_input_shape",
]

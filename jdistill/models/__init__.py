"""Flax NNX models that return ``(logits, features)``, and connectors for feature methods.

See :mod:`jdistill.models.common` for the calling convention.
"""

from jdistill.models.cnn import LeNet5, SmallCNN
from jdistill.models.common import Output
from jdistill.models.connector import Connector
from jdistill.models.mlp import MLP
from jdistill.models.registry import MODELS, count_params, create_model

__all__ = ["MLP", "LeNet5", "SmallCNN", "Connector", "Output", "MODELS", "count_params", "create_model"]

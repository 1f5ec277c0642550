"""Multi-layer perceptrons, as in Hinton et al. 2015 ("Distilling the Knowledge in a Neural Network")."""

import math
from collections.abc import Sequence

import jax
from flax import nnx

from jdistill.models.common import Output, dropout_or_identity


class MLP(nnx.Module):
    """ReLU MLP on flattened images: ``in -> widths[0] -> ... -> num_classes``.

    Hinton's MNIST teacher is ``MLP((28, 28, 1), 10, widths=(1200, 1200), dropout=0.5,
    input_dropout=0.2)``; his student is ``MLP((28, 28, 1), 10, widths=(800, 800))``.

    Features: ``hidden{i}`` (post-ReLU activations of hidden layer i, 1-based) and
    ``embedding`` (the last hidden layer, input of the classifier).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        widths: Sequence[int],
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        if not widths:
            raise ValueError("MLP: widths must name at least one hidden layer")
        sizes = [math.prod(input_shape), *widths]
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.head = nnx.Linear(sizes[-1], num_classes, rngs=rngs)
        self.input_dropout = nnx.Dropout(input_dropout)
        self.dropout = nnx.Dropout(dropout)

    def __call__(
        self, images: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> Output:
        keys = _split_or_none(dropout_key, len(self.hidden) + 1)
        h = images.reshape(images.shape[0], -1)
        h = dropout_or_identity(self.input_dropout, h, train, keys[0])
        features = {}
        for i, (layer, key) in enumerate(zip(self.hidden, keys[1:]), start=1):
            h = jax.nn.relu(layer(h))
            features[f"hidden{i}"] = h
            h = dropout_or_identity(self.dropout, h, train, key)
        features["embedding"] = features[f"hidden{len(self.hidden)}"]
        return self.head(h), features


def _split_or_none(key, n):
    return [None] * n if key is None else list(jax.random.split(key, n))

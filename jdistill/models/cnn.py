"""Convolutional models for small grey or colour images: LeNet-5, LeNet-5-half, a small CNN."""

from collections.abc import Sequence

import jax
from flax import nnx

from jdistill.models.common import Output, dropout_or_identity
from jdistill.models.toeplitz_conv import ToeplitzConv


def _max_pool(x):
    """2x2 max pooling, stride 2 (an odd last row or column is dropped, as 'VALID' pooling does).
    A reshape and a max: on CPU its gradient is several times faster than ``nnx.max_pool``'s."""
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class LeNet5(nnx.Module):
    """LeNet-5 (LeCun et al. 1998) for 28x28 or 32x32 inputs.

    conv5x5(c1, 'SAME' on 28x28 / 'VALID' on 32x32) -> ReLU -> maxpool -> conv5x5(c2, VALID)
    -> ReLU -> maxpool -> fc(f1) -> ReLU -> fc(f2) -> ReLU -> fc(num_classes).
    ``channels=(6, 16), fc=(120, 84)`` is LeNet-5; ``(3, 8), (60, 42)`` is the LeNet-5-half
    student of the data-free distillation papers (Chen et al. 2019, DAFL), whose code initialises
    them as PyTorch does (:func:`jdistill.models.layers.torch_init`; ``init="torch"``).

    Features: ``conv1``, ``conv2`` (post-ReLU maps, before pooling), ``fc1``, ``embedding``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        channels: Sequence[int] = (6, 16),
        fc: Sequence[int] = (120, 84),
        rngs: nnx.Rngs,
    ):
        height, width, in_channels = input_shape
        if (height, width) not in ((28, 28), (32, 32)):
            raise ValueError(f"LeNet5: input_shape must be 28x28xC or 32x32xC, got {tuple(input_shape)}")
        c1, c2 = channels
        f1, f2 = fc
        # Convolutions as matrix products: several times faster than XLA's on CPU at these sizes.
        self.conv1 = ToeplitzConv(
            in_channels, c1, (5, 5), padding="SAME" if height == 28 else "VALID", rngs=rngs
        )
        self.conv2 = ToeplitzConv(c1, c2, (5, 5), padding="VALID", rngs=rngs)
        self.fc1 = nnx.Linear(5 * 5 * c2, f1, rngs=rngs)
        self.fc2 = nnx.Linear(f1, f2, rngs=rngs)
        self.head = nnx.Linear(f2, num_classes, rngs=rngs)

    def __call__(
        self, images: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> Output:
        del train, dropout_key  # no dropout in LeNet-5
        c1 = jax.nn.relu(self.conv1(images))
        c2 = jax.nn.relu(self.conv2(_max_pool(c1)))
        h = _max_pool(c2).reshape(images.shape[0], -1)
        f1 = jax.nn.relu(self.fc1(h))
        emb = jax.nn.relu(self.fc2(f1))
        return self.head(emb), {"conv1": c1, "conv2": c2, "fc1": f1, "embedding": emb}


class SmallCNN(nnx.Module):
    """A small CNN for any image size divisible by 4 (e.g. 8x8 digits, 28x28 MNIST, 32x32 CIFAR).

    [conv3x3(c) -> ReLU -> maxpool] x len(channels) -> global average pool -> fc(hidden)
    -> ReLU -> dropout -> fc(num_classes).

    Features: ``conv{i}`` (post-ReLU maps, before pooling) and ``embedding`` (the fc output).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        in_channels = input_shape[-1]
        sizes = [in_channels, *channels]
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.fc = nnx.Linear(sizes[-1], hidden, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)
        self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

    def __call__(
        self, images: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> Output:
        features = {}
        h = images
        for i, conv in enumerate(self.convs, start=1):
            h = jax.nn.relu(conv(h))
            features[f"conv{i}"] = h
            h = _max_pool(h)
        emb = jax.nn.relu(self.fc(h.mean(axis=(1, 2))))
        features["embedding"] = emb
        emb = dropout_or_identity(self.dropout, emb, train, dropout_key)
        return self.head(emb), features

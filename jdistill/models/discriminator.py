"""Discriminators of adversarial distillation: they score an input as the teacher's (high) or the
student's (low), optionally conditioned on the label."""

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

LEAKY_SLOPE = 0.2


def _with_labels(x: jax.Array, labels: jax.Array | None, num_classes: int) -> jax.Array:
    """``x ⊕ one_hot(labels)`` for a conditional discriminator (``num_classes`` > 0), else ``x``."""
    if not num_classes:
        return x
    if labels is None:
        raise ValueError("a conditional discriminator needs the labels")
    return jnp.concatenate([x, jax.nn.one_hot(labels, num_classes, dtype=x.dtype)], axis=-1)


class VectorDiscriminator(nnx.Module):
    """An MLP on vectors ``[B, D]`` (logits, probabilities, an embedding):
    ``x ⊕ one_hot(y) -> [Linear -> LeakyReLU(0.2)] per width -> Linear -> score [B]``.
    ``num_classes`` > 0 makes it conditional on the label (the one-hot is concatenated)."""

    def __init__(
        self, in_features: int, *, num_classes: int = 0, widths: Sequence[int] = (256, 256), rngs: nnx.Rngs
    ):
        sizes = [in_features + num_classes, *widths]
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])
        self.score = nnx.Linear(sizes[-1], 1, rngs=rngs)
        self.num_classes = num_classes

    def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        h = _with_labels(x.reshape(x.shape[0], -1), labels, self.num_classes)
        for layer in self.hidden:
            h = jax.nn.leaky_relu(layer(h), LEAKY_SLOPE)
        return self.score(h)[:, 0]


class ConvDiscriminator(nnx.Module):
    """A small convolutional discriminator on NHWC feature maps:
    ``[conv3x3 stride 2 -> LeakyReLU(0.2)] per channel count -> global average pool`` followed
    by a :class:`VectorDiscriminator` head (which adds the one-hot label when conditional)."""

    def __init__(
        self,
        in_channels: int,
        *,
        num_classes: int = 0,
        channels: Sequence[int] = (32, 64),
        widths: Sequence[int] = (256,),
        rngs: nnx.Rngs,
    ):
        sizes = [in_channels, *channels]
        self.convs = nnx.List(
            [nnx.Conv(a, b, (3, 3), strides=2, rngs=rngs) for a, b in itertools.pairwise(sizes)]
        )
        self.head = VectorDiscriminator(sizes[-1], num_classes=num_classes, widths=widths, rngs=rngs)

    def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        for conv in self.convs:
            x = jax.nn.leaky_relu(conv(x), LEAKY_SLOPE)
        return self.head(x.mean(axis=(1, 2)), labels)


def build_discriminator(shape: tuple, *, num_classes: int, widths: Sequence[int], rngs: nnx.Rngs):
    """A :class:`VectorDiscriminator` for vectors ``[D]``, a :class:`ConvDiscriminator` for maps
    ``[H, W, C]``; conditional when ``num_classes`` > 0."""
    if len(shape) == 3:
        return ConvDiscriminator(shape[-1], num_classes=num_classes, widths=widths, rngs=rngs)
    return VectorDiscriminator(shape[0], num_classes=num_classes, widths=widths, rngs=rngs)

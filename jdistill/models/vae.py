"""MLP variational autoencoder (Kingma & Welling 2014, "Auto-Encoding Variational Bayes") and the
encoder/decoder pair a smaller student learns from it (generative latent mapping).

    encoder: image [B, H, W, C] -> flatten -> ReLU MLP (widths) -> linear -> [B, out_features]
    decoder: z [B, latent_dim] -> ReLU MLP (widths) -> linear -> Bernoulli logits [B, H, W, C]

The VAE's encoder outputs ``2 * latent_dim`` numbers, the mean and log-variance of ``q(z | x)``;
the student's encoder outputs a latent point. These are not classifiers: they are not in the
model registry (:data:`jdistill.models.MODELS`).
"""

import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def _mlp(sizes: Sequence[int], rngs: nnx.Rngs) -> nnx.List:
    return nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])


def _forward(layers: nnx.List, h: jax.Array) -> jax.Array:
    for layer in layers[:-1]:
        h = jax.nn.relu(layer(h))
    return layers[-1](h)


class ImageEncoder(nnx.Module):
    """ReLU MLP from flattened images to ``out_features`` numbers (no activation on the output)."""

    def __init__(
        self, image_shape: Sequence[int], out_features: int, *, widths: Sequence[int], rngs: nnx.Rngs
    ):
        self.image_shape = tuple(image_shape)
        self.layers = _mlp([math.prod(image_shape), *widths, out_features], rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"ImageEncoder: images must be [batch, {self.image_shape}], got {images.shape}")
        return _forward(self.layers, images.reshape(images.shape[0], -1))


class ImageDecoder(nnx.Module):
    """ReLU MLP from latent points ``[B, latent_dim]`` to per-pixel Bernoulli logits ``[B, *image_shape]``."""

    def __init__(self, latent_dim: int, image_shape: Sequence[int], *, widths: Sequence[int], rngs: nnx.Rngs):
        self.latent_dim = latent_dim
        self.image_shape = tuple(image_shape)
        self.layers = _mlp([latent_dim, *widths, math.prod(image_shape)], rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"ImageDecoder: latent points must be [batch, {self.latent_dim}], got {z.shape}")
        return _forward(self.layers, z).reshape(z.shape[0], *self.image_shape)


class VAE(nnx.Module):
    """Gaussian encoder ``q(z | x) = N(mean, diag(exp(log_variance)))``, prior ``N(0, I)``, and a
    Bernoulli decoder ``p(x | z)``; both MLPs with the hidden ``widths`` (the decoder's reversed)."""

    def __init__(
        self,
        image_shape: Sequence[int],
        *,
        latent_dim: int = 16,
        widths: Sequence[int] = (512, 256),
        rngs: nnx.Rngs,
    ):
        if latent_dim < 1 or not widths:
            raise ValueError(f"VAE: latent_dim must be >= 1 and widths non-empty, got {latent_dim}, {widths}")
        self.latent_dim = latent_dim
        self.encoder = ImageEncoder(image_shape, 2 * latent_dim, widths=widths, rngs=rngs)
        self.decoder = ImageDecoder(latent_dim, image_shape, widths=tuple(reversed(widths)), rngs=rngs)

    def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(mean, log_variance)`` of ``q(z | images)``, each ``[B, latent_dim]``."""
        h = self.encoder(images)
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def __call__(self, images: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(logits, mean, log_variance)``: the decoder's logits at one reparameterised sample
        ``z = mean + exp(log_variance / 2) * eps``, ``eps ~ N(0, I)`` drawn from ``key``."""
        mean, log_variance = self.encode(images)
        z = mean + jnp.exp(0.5 * log_variance) * jax.random.normal(key, mean.shape, mean.dtype)
        return self.decoder(z), mean, log_variance


class LatentMapper(nnx.Module):
    """The student of generative latent mapping: an encoder from images to latent points and a
    decoder from latent points to pixel logits, trained separately against a VAE teacher."""

    def __init__(
        self,
        image_shape: Sequence[int],
        *,
        latent_dim: int,
        encoder_widths: Sequence[int] = (128,),
        decoder_widths: Sequence[int] = (128,),
        rngs: nnx.Rngs,
    ):
        self.encoder = ImageEncoder(image_shape, latent_dim, widths=encoder_widths, rngs=rngs)
        self.decoder = ImageDecoder(latent_dim, image_shape, widths=decoder_widths, rngs=rngs)

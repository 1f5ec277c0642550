"""What every jdistill model shares: its output convention and dropout handling.

A model is an ``nnx.Module`` called as ``model(images, train=..., dropout_key=...)`` on NHWC
images, returning ``(logits, features)`` where ``features`` maps names to intermediate
activations (NHWC maps or [B, D] vectors). Every model has an ``embedding`` feature: the
vector the classifier head reads.
"""

from typing import TypeAlias

import jax
from flax import nnx

Output: TypeAlias = tuple[jax.Array, dict[str, jax.Array]]


def dropout_or_identity(layer: nnx.Dropout, x: jax.Array, train: bool, key: jax.Array | None) -> jax.Array:
    """Apply ``layer`` when training with a nonzero rate; a missing key is an error then."""
    if not train or layer.rate == 0.0:
        return x
    if key is None:
        raise ValueError("dropout_key: a model with dropout needs a PRNG key when train=True")
    return layer(x, deterministic=False, rngs=key)

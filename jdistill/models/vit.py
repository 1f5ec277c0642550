"""A small vision transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words") whose
attention probabilities are features, for attention transfer between transformers."""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jdistill.models.common import Output


class Block(nnx.Module):
    """Pre-LayerNorm transformer block: ``x + attention(LN(x))``, then ``x + MLP(LN(x))``.

    The multi-head self-attention is written out, ``softmax(Q K^T / sqrt(d_head)) V`` per head,
    so that its probabilities and values can be returned.
    """

    def __init__(self, width: int, heads: int, mlp_width: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.norm1 = nnx.LayerNorm(width, rngs=rngs)
        self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
        self.proj = nnx.Linear(width, width, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, rngs=rngs)
        self.fc1 = nnx.Linear(width, mlp_width, rngs=rngs)
        self.fc2 = nnx.Linear(mlp_width, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Tokens [B, N, D] -> (tokens [B, N, D], attention [B, H, N, N], values [B, H, N, D / H])."""
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = jnp.moveaxis(qkv, (2, 3), (0, 2))  # each [B, H, N, d_head]
        attn = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) / math.sqrt(d // self.heads), axis=-1)
        mixed = jnp.swapaxes(attn @ v, 1, 2).reshape(b, n, d)
        x = x + self.proj(mixed)
        x = x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x))))
        return x, attn, v


class ViT(nnx.Module):
    """Vision transformer with a class token, for small images.

    The image is cut into non-overlapping ``patch`` x ``patch`` patches, each linearly embedded to
    ``width``; a learned class token is prepended and learned position embeddings added; ``depth``
    pre-LayerNorm blocks (``heads`` heads, MLP of ``mlp_ratio * width`` with GELU) follow; the
    class token's final state, layer-normalised, feeds a linear head. On 28x28 MNIST with 7x7
    patches there are 16 patches, N = 17 tokens (token 0 is the class token).

    Features (l = 1..depth): ``attn{l}`` (attention probabilities of block l, [heads, N, N]: query
    rows, key columns, each row sums to 1), ``values{l}`` (its per-head values,
    [heads, N, width / heads]), ``block{l}`` (token states after block l, [N, width]) and
    ``embedding`` (the normalised class-token state the head reads, [width]).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        depth: int,
        width: int,
        heads: int,
        patch: int = 7,
        mlp_ratio: int = 2,
        rngs: nnx.Rngs,
    ):
        height, wide, channels = input_shape
        if height % patch or wide % patch:
            raise ValueError(
                f"ViT: input_shape {height}x{wide} is not divisible into {patch}x{patch} patches"
            )
        if depth < 1 or width % heads:
            raise ValueError(
                f"ViT: needs depth >= 1 and width divisible by heads, got {depth}, {width}, {heads}"
            )
        self.patch = patch
        tokens = (height // patch) * (wide // patch) + 1
        self.embed = nnx.Linear(patch * patch * channels, width, rngs=rngs)
        init = nnx.initializers.normal(0.02)
        self.cls = nnx.Param(init(rngs.params(), (1, 1, width)))
        self.position = nnx.Param(init(rngs.params(), (1, tokens, width)))
        self.blocks = nnx.List([Block(width, heads, mlp_ratio * width, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, num_classes, rngs=rngs)

    def __call__(
        self, images: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> Output:
        del train, dropout_key  # no dropout
        b, h, w, c = images.shape
        p = self.patch
        patches = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        x = self.embed(patches.reshape(b, (h // p) * (w // p), p * p * c))
        cls = jnp.broadcast_to(self.cls[...], (b, 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + self.position[...]
        features = {}
        for i, block in enumerate(self.blocks, start=1):
            x, features[f"attn{i}"], features[f"values{i}"] = block(x)
            features[f"block{i}"] = x
        features["embedding"] = self.norm(x[:, 0])
        return self.head(features["embedding"]), features

"""A small causal (decoder-only) transformer language model with a key/value-cached sampler.

GPT-2's layout (Radford et al. 2019: pre-norm blocks, GELU MLP, a final norm, the head tied to the
token embedding) with rotary position embeddings (Su et al. 2021, "RoFormer"): positions rotate the
queries and keys of every head, so there is no position table, the parameter count does not depend
on the context, and cached decoding needs no position bookkeeping beyond an offset. ``context`` is
the longest sequence the model accepts (its training length).
"""

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jdistill.models.common import dropout_or_identity

NORMS = ("layer", "rms")
# One (keys, values) pair per block, each [B, L, heads, width / heads], in the compute dtype.
KVCache = list[tuple[jax.Array, jax.Array]]


def rotary(x: jax.Array, positions: jax.Array, *, base: float = 10000.0) -> jax.Array:
    """Rotate [B, T, H, d] queries or keys by their ``positions`` [T] (RoPE, "rotate half" form).

    Channel pair ``(i, i + d/2)`` turns by the angle ``p * base^(-2i/d)``, so the dot product of a
    query at ``p`` and a key at ``q`` depends on ``p - q`` only. Angles in float32.
    """
    half = x.shape[-1] // 2
    inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[:, None] * inv_freq  # [T, d/2]
    cos, sin = jnp.cos(angles)[:, None, :], jnp.sin(angles)[:, None, :]  # [T, 1, d/2]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def causal_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, q_positions: jax.Array, k_positions: jax.Array
) -> jax.Array:
    """``softmax(Q K^T / sqrt(d) + mask) V`` per head, a query at ``p`` seeing keys at positions <= p.

    q [B, S, H, d], k and v [B, L, H, d], positions [S] and [L] -> [B, S, H, d]. Scores and softmax
    in float32.
    """
    scores = jnp.einsum("bshd,blhd->bhsl", q, k, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(q.shape[-1])
    visible = k_positions[None, :] <= q_positions[:, None]
    scores = jnp.where(visible, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhsl,blhd->bshd", probs, v)


def _norm(kind: str, width: int, dtype, rngs: nnx.Rngs) -> nnx.Module:
    if kind == "layer":
        return nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
    return nnx.RMSNorm(width, dtype=dtype, rngs=rngs)


class CausalSelfAttention(nnx.Module):
    """Multi-head causal self-attention with rotary positions, optionally against a key/value cache."""

    def __init__(self, width: int, heads: int, *, dtype=None, rngs: nnx.Rngs):
        self.heads = heads
        self.qkv = nnx.Linear(width, 3 * width, dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(width, width, dtype=dtype, rngs=rngs)

    def __call__(
        self, x: jax.Array, positions: jax.Array, cache: tuple[jax.Array, jax.Array] | None = None
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """x [B, S, D] at ``positions`` [S] -> (out [B, S, D], (keys, values)).

        Without ``cache`` the keys and values are this call's own [B, S, H, d]. With a cache
        [B, L, H, d] they are written into it at ``positions[0]`` (positions must be consecutive)
        and the queries attend to the whole cache, the slots after them masked.
        """
        b, s, d = x.shape
        q, k, v = jnp.moveaxis(self.qkv(x).reshape(b, s, 3, self.heads, d // self.heads), 2, 0)
        q, k = rotary(q, positions), rotary(k, positions)
        if cache is None:
            k_positions = positions
        else:
            start = (0, positions[0], 0, 0)
            k = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), start)
            v = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), start)
            k_positions = jnp.arange(k.shape[1])
        out = causal_attention(q, k.astype(q.dtype), v.astype(q.dtype), positions, k_positions)
        return self.proj(out.reshape(b, s, d)), (k, v)


class Block(nnx.Module):
    """Pre-norm decoder block: ``x + attention(norm(x))``, then ``x + MLP(norm(x))`` (GELU),
    dropout on each branch's output."""

    def __init__(
        self, width: int, heads: int, mlp_width: int, *, norm: str, dropout: float, dtype=None, rngs: nnx.Rngs
    ):
        self.norm1 = _norm(norm, width, dtype, rngs)
        self.attn = CausalSelfAttention(width, heads, dtype=dtype, rngs=rngs)
        self.norm2 = _norm(norm, width, dtype, rngs)
        self.fc1 = nnx.Linear(width, mlp_width, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(mlp_width, width, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x, positions, cache=None, *, train=False, dropout_key=None):
        """x [B, S, D] -> (x [B, S, D], this block's (keys, values))."""
        keys = [None, None] if dropout_key is None else list(jax.random.split(dropout_key))
        attended, kv = self.attn(self.norm1(x), positions, cache)
        x = x + dropout_or_identity(self.dropout, attended, train, keys[0])
        mlp = self.fc2(jax.nn.gelu(self.fc1(self.norm2(x))))
        return x + dropout_or_identity(self.dropout, mlp, train, keys[1]), kv


class TransformerLM(nnx.Module):
    """Causal transformer language model: tokens [B, T] int -> next-token logits [B, T, V] float32.

    Token embedding (N(0, 0.02)), ``depth`` pre-norm blocks (``heads`` heads with rotary positions,
    MLP of ``mlp_ratio * width``), a final norm (``norm``: "layer" or "rms"), and the head
    ``logits = h W`` without bias, ``W`` [D, V] being the embedding transposed when ``tie_weights``.
    Logits at position t depend on tokens 0..t only. Parameters are float32; ``dtype`` (e.g.
    bfloat16) is the compute dtype of every layer, the head's product accumulating in float32.
    ``dropout`` (default 0) acts on the embedding and on each block's branches when ``train``.

    ``hidden(tokens)`` gives the final-normed states [B, T, D] and ``head_weight()`` the [D, V]
    matrix, so that ``logits_from_hidden(h) = h W`` can be computed chunk by chunk; ``decode``
    runs tokens against a key/value cache (``init_cache``) for :func:`sample`.
    """

    def __init__(
        self,
        vocab_size: int,
        context: int,
        *,
        depth: int,
        width: int,
        heads: int,
        mlp_ratio: int = 4,
        norm: str = "layer",
        tie_weights: bool = True,
        dropout: float = 0.0,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        if depth < 1 or width % heads or (width // heads) % 2:
            raise ValueError(
                f"TransformerLM: needs depth >= 1 and an even head width (width / heads), "
                f"got depth {depth}, width {width}, heads {heads}"
            )
        if norm not in NORMS:
            raise ValueError(f"TransformerLM: norm must be one of {NORMS}, got {norm!r}")
        self.vocab_size, self.context, self.heads = vocab_size, context, heads
        init = nnx.initializers.normal(0.02)
        self.embed = nnx.Embed(vocab_size, width, embedding_init=init, dtype=dtype, rngs=rngs)
        self.blocks = nnx.List(
            [
                Block(width, heads, mlp_ratio * width, norm=norm, dropout=dropout, dtype=dtype, rngs=rngs)
                for _ in range(depth)
            ]
        )
        self.norm = _norm(norm, width, dtype, rngs)
        self.head = (
            None
            if tie_weights
            else nnx.Linear(width, vocab_size, use_bias=False, kernel_init=init, rngs=rngs)
        )
        self.dropout = nnx.Dropout(dropout)

    def head_weight(self) -> jax.Array:
        """The output projection ``W`` [D, V] (float32): ``logits = hidden W``."""
        return self.embed.embedding[...].T if self.head is None else self.head.kernel[...]

    def logits_from_hidden(self, h: jax.Array) -> jax.Array:
        """Hidden states [..., D] -> logits [..., V] float32, multiplied in ``h``'s dtype."""
        return jnp.matmul(h, self.head_weight().astype(h.dtype), preferred_element_type=jnp.float32)

    def _run(self, tokens, start, cache, train, dropout_key):
        s = tokens.shape[1]
        end = s if cache is None else cache[0][0].shape[1]
        if end > self.context:
            raise ValueError(f"TransformerLM: {end} positions exceed the context of {self.context}")
        keys = [None] * (len(self.blocks) + 1)
        if dropout_key is not None:
            keys = list(jax.random.split(dropout_key, len(self.blocks) + 1))
        positions = start + jnp.arange(s)
        x = dropout_or_identity(self.dropout, self.embed(tokens), train, keys[0])
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(
                x, positions, None if cache is None else cache[i], train=train, dropout_key=keys[i + 1]
            )
            new_cache.append(kv)
        return self.norm(x), new_cache

    def hidden(
        self, tokens: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        """Tokens [B, T] -> final-normed hidden states [B, T, D] (in the compute dtype)."""
        return self._run(tokens, 0, None, train, dropout_key)[0]

    def __call__(
        self, tokens: jax.Array, *, train: bool = False, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        """Tokens [B, T] -> logits [B, T, V] float32 for the token after each position."""
        return self.logits_from_hidden(self.hidden(tokens, train=train, dropout_key=dropout_key))

    def init_cache(self, batch: int, length: int, dtype=jnp.float32) -> KVCache:
        """An empty key/value cache for ``length`` positions (at most ``context``)."""
        block = self.blocks[0].attn
        shape = (batch, length, self.heads, block.proj.in_features // self.heads)
        return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in self.blocks]

    def decode(self, tokens: jax.Array, cache: KVCache, start) -> tuple[jax.Array, KVCache]:
        """Tokens [B, S] at positions ``start .. start + S - 1`` (``start`` may be traced), against
        ``cache`` holding positions ``< start`` -> (logits [B, S, V] float32, the updated cache)."""
        h, cache = self._run(tokens, start, cache, False, None)
        return self.logits_from_hidden(h), cache


def next_token(
    logits: jax.Array, key: jax.Array, *, temperature=1.0, top_k: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """Draw one token per row of ``logits`` [B, V] -> (tokens [B] int32, their log-probabilities [B]).

    The token is drawn from ``softmax(logits / temperature)`` restricted to the ``top_k`` largest
    logits; ``temperature`` 0 (may be traced) takes the argmax. The log-probability is the model's
    own, ``log softmax(logits)`` at temperature 1 without truncation.
    """
    logits = logits.astype(jnp.float32)
    allowed = logits
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        allowed = jnp.where(logits < kth, -jnp.inf, logits)
    t = jnp.asarray(temperature, jnp.float32)
    drawn = jax.random.categorical(key, allowed / jnp.where(t > 0, t, 1.0), axis=-1)
    token = jnp.where(t > 0, drawn, jnp.argmax(allowed, axis=-1)).astype(jnp.int32)
    logprob = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), token[:, None], axis=-1)[:, 0]
    return token, logprob


def sample(
    model: TransformerLM,
    prompt: jax.Array,
    *,
    steps: int,
    key: jax.Array,
    temperature=1.0,
    top_k: int | None = None,
    return_logprobs: bool = False,
):
    """Continue ``prompt`` [B, P] by ``steps`` tokens -> tokens [B, P + steps] int32 (and, with
    ``return_logprobs``, the model's log-probabilities of the new tokens [B, steps]).

    The prompt runs once through :meth:`TransformerLM.decode` (prefill), then one token per step in
    a ``lax.scan`` against the key/value cache. Token i is drawn by :func:`next_token` with the
    i-th key of ``jax.random.split(key, steps)``. Jit it with ``steps``, ``top_k`` and
    ``return_logprobs`` static: ``nnx.jit(sample, static_argnames=("steps", "top_k",
    "return_logprobs"))``.
    """
    b, p = prompt.shape
    if steps < 1 or p < 1 or p + steps > model.context:
        raise ValueError(
            f"sample: needs a prompt, steps >= 1 and prompt + steps <= context {model.context}, "
            f"got prompt {p}, steps {steps}"
        )
    keys = jax.random.split(key, steps)
    dtype = model.embed.dtype or jnp.float32
    logits, cache = model.decode(prompt, model.init_cache(b, p + steps - 1, dtype), 0)
    first = next_token(logits[:, -1], keys[0], temperature=temperature, top_k=top_k)

    def step(carry, inputs):
        token, cache = carry
        step_key, position = inputs
        logits, cache = model.decode(token[:, None], cache, position)
        token, logprob = next_token(logits[:, 0], step_key, temperature=temperature, top_k=top_k)
        return (token, cache), (token, logprob)

    positions = p + jnp.arange(steps - 1)
    _, (tokens, logprobs) = jax.lax.scan(step, (first[0], cache), (keys[1:], positions))
    new = jnp.concatenate([first[0][:, None], tokens.T], axis=1)
    out = jnp.concatenate([prompt.astype(jnp.int32), new], axis=1)
    if return_logprobs:
        return out, jnp.concatenate([first[1][:, None], logprobs.T], axis=1)
    return out


# Named configurations (depth x width x heads; MLP 4x width, LayerNorm, tied head, no dropout), sized
# for byte-level text (V = 259) on 2 CPU cores: 826,496 and 116,672 parameters, 7.1x apart. (A 4 x 256
# teacher, 3.2M, took 2-3x the time per step of 4 x 128 and learned less in the same minutes.)
LM_CONFIGS: dict[str, Callable[..., TransformerLM]] = {
    "lm_teacher": functools.partial(TransformerLM, depth=4, width=128, heads=4),
    "lm_student": functools.partial(TransformerLM, depth=2, width=64, heads=2),
}


def create_lm(name: str, vocab_size: int, context: int, *, rngs: nnx.Rngs, **overrides) -> TransformerLM:
    """Build the named language model ``name`` (``LM_CONFIGS``) for ``vocab_size`` and ``context``;
    ``overrides`` (e.g. ``dtype``, ``dropout``) replace its defaults."""
    if name not in LM_CONFIGS:
        raise ValueError(f"unknown language model {name!r}; named models: {', '.join(sorted(LM_CONFIGS))}")
    return LM_CONFIGS[name](vocab_size, context, rngs=rngs, **overrides)

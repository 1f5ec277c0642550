"""Any dense token divergence from hidden states and output projections, a chunk of the sequence at
a time, so that [batch, time, vocab] logits never exist whole."""

import functools

import jax
import jax.numpy as jnp

from jdistill.losses import _checks
from jdistill.losses.tokens.dense import (
    REDUCTIONS,
    _check_choice,
    _check_mask,
    _reduce,
    _valid,
)


def _check_head(name, head, hidden_name, hidden):
    if callable(head):
        return
    _checks.check_rank(name, head, 2, "[hidden, vocab]")
    if jnp.shape(head)[0] != jnp.shape(hidden)[-1]:
        raise ValueError(
            f"{name}: expected shape [{jnp.shape(hidden)[-1]}, vocab] (the hidden size of {hidden_name}), "
            f"got {_checks.fmt_shape(jnp.shape(head))}"
        )


def _project(head, hidden):
    if callable(head):
        return head(hidden)
    return jnp.einsum("btd,dv->btv", hidden, head, preferred_element_type=jnp.float32)


def chunked(
    divergence,
    student_hidden,
    student_head,
    teacher_hidden,
    teacher_head,
    *,
    chunk_size,
    mask=None,
    reduction="token_mean",
    **divergence_kwargs,
) -> jax.Array:
    """A dense token divergence computed from hidden states, ``chunk_size`` positions at a time.

    ``chunked(div, h_s, W_s, h_t, W_t, ...)`` equals ``div(h_s @ W_s, h_t @ W_t, ...)`` in value and
    in gradient (with respect to the hidden states and the heads), but only [B, chunk_size, V]
    logits of each model exist at a time: a ``jax.lax.scan`` over chunks of the sequence whose body
    is rematerialised (``jax.checkpoint``), so the backward pass recomputes each chunk's logits
    instead of storing them. Peak memory for the logits: ``2 B chunk_size V`` floats instead of
    ``2 B T V`` (and as many again for their gradients). A ``T`` that ``chunk_size`` does not divide
    is padded, the padding masked.

    Example (a frozen teacher)::

        loss = losses.chunked(losses.jsd, h_s, w_s, jax.lax.stop_gradient(h_t),
                              jax.lax.stop_gradient(w_t), chunk_size=256, mask=mask, beta=0.5)

    Args:
      divergence: a dense divergence of this module (:func:`forward_kl`, :func:`reverse_kl`,
        :func:`jsd`, :func:`skew_forward_kl`, :func:`skew_reverse_kl`, :func:`tvd`) or any function
        with their calling form that supports ``reduction="none"``.
      student_hidden: [B, T, D_s] the student's final hidden states (before its output projection).
      student_head: [D_s, V] the student's output projection (a Flax ``Dense``/``Linear`` kernel;
        for tied embeddings pass ``embedding.T``), or a function ``[B, c, D_s] -> [B, c, V]`` for
        anything else (a bias, logit soft-capping, scaling); its parameters get gradients through
        the closure.
      teacher_hidden: [B, T, D_t] the teacher's (``D_t`` may differ from ``D_s``).
      teacher_head: [D_t, V] or a function, as ``student_head``.
      chunk_size: Python int > 0, positions per chunk.
      mask: [B, T], as the dense form.
      reduction: as the dense form; the per-token values are gathered ([B, T], small) and reduced.
      **divergence_kwargs: the divergence's own keywords: ``temperature``, ``beta``, ``alpha``.

    Returns:
      float32: a scalar, or [B, T] for ``reduction="none"``.

    Raises:
      ValueError: on bad ranks, mismatched batch, time or hidden sizes, a bad ``chunk_size``, and
        whatever ``divergence`` raises for a chunk's logits (e.g. different vocabularies).
    """
    _checks.check_rank("student_hidden", student_hidden, 3, "[batch, time, hidden]")
    _checks.check_rank("teacher_hidden", teacher_hidden, 3, "[batch, time, hidden]")
    _checks.check_match("teacher_hidden", teacher_hidden, "student_hidden", student_hidden, axes=(0, 1))
    _check_head("student_head", student_head, "student_hidden", student_hidden)
    _check_head("teacher_head", teacher_head, "teacher_hidden", teacher_hidden)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a Python int > 0, got {chunk_size!r}")
    _check_mask(mask, student_hidden, "student_hidden")
    _check_choice("reduction", reduction, REDUCTIONS)
    batch, time = jnp.shape(student_hidden)[:2]
    valid = _valid(mask, (batch, time))
    chunks = -(-time // chunk_size)
    pad = chunks * chunk_size - time

    def split(x):  # [B, T, ...] -> [chunks, B, chunk_size, ...]
        x = jnp.pad(jnp.asarray(x), [(0, 0), (0, pad)] + [(0, 0)] * (jnp.ndim(x) - 2))
        x = x.reshape((batch, chunks, chunk_size) + jnp.shape(x)[2:])
        return jnp.swapaxes(x, 0, 1)

    @functools.partial(jax.checkpoint, prevent_cse=False)  # prevent_cse: not needed inside scan
    def body(_, xs):
        h_s, h_t, m = xs
        per_token = divergence(
            _project(student_head, h_s),
            _project(teacher_head, h_t),
            mask=m,
            reduction="none",
            **divergence_kwargs,
        )
        return None, per_token

    _, per_token = jax.lax.scan(body, None, (split(student_hidden), split(teacher_hidden), split(valid)))
    per_token = jnp.swapaxes(per_token, 0, 1).reshape(batch, chunks * chunk_size)[:, :time]
    return _reduce(per_token, valid, reduction)

"""A sparse teacher: its top-k tokens per position, and the dense divergences on the support they
leave (the k tokens and a tail bucket, or the k renormalised)."""

import math

import jax
import jax.numpy as jnp

from jdistill.losses import _checks
from jdistill.losses.tokens.dense import (
    _LOG_TINY,
    _LOGITS,
    REDUCTIONS,
    SPARSE_MODES,
    _check_choice,
    _check_mask,
    _check_unit_interval,
    _doc,
    _forward,
    _jsd,
    _log_probs,
    _reduce,
    _reverse,
    _skew_forward,
    _skew_reverse,
    _tvd,
    _valid,
)


def top_k_teacher(teacher_logits, k, *, temperature=1.0) -> tuple[jax.Array, jax.Array]:
    """The teacher's k most probable tokens per position, for the ``sparse_*`` divergences.

    ``log_probs = log softmax(teacher_logits / T)`` at ``indices``, over the whole vocabulary (not
    renormalised: ``1 - sum exp(log_probs)`` is the tail mass), in decreasing order. Store these
    (``2 k`` numbers per token instead of ``V``) to distil from a cached or remote teacher.

    Args:
      teacher_logits: [B, T, V] teacher logits, any float dtype.
      k: Python int in ``1..V``.
      temperature: scalar ``T > 0``; give the ``sparse_*`` divergence the same one.

    Returns:
      ``(indices, log_probs)``: int32 [B, T, k] and float32 [B, T, k].

    Raises:
      ValueError: on a rank other than 3, ``k`` outside ``1..V`` or a bad temperature.
    """
    _checks.check_rank("teacher_logits", teacher_logits, 3, _LOGITS)
    _check_k(k, jnp.shape(teacher_logits)[-1])
    _checks.check_temperature(temperature)
    log_p = _log_probs(teacher_logits, jnp.ones(jnp.shape(teacher_logits)[:2], bool), temperature)
    log_probs, indices = jax.lax.top_k(log_p, k)
    return indices.astype(jnp.int32), log_probs


def _check_k(k, vocab):
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab:
        raise ValueError(f"k: expected a Python int in 1..{vocab} (the vocabulary size), got {k!r}")


def _safe_logsumexp(x):
    """logsumexp over the last axis; ``-inf`` with zero gradient where every entry is ``-inf``."""
    empty = jnp.max(x, axis=-1) == -jnp.inf
    out = jax.nn.logsumexp(jnp.where(empty[..., None], 0.0, x), axis=-1)
    return jnp.where(empty, -jnp.inf, out)


def _sparse_log_probs(student_logits, indices, teacher_log_probs, valid, temperature, mode):
    """(log_p, log_q) over the k indices, plus the tail bucket in ``"tail"`` mode (when k < V)."""
    k, vocab = jnp.shape(indices)[-1], jnp.shape(student_logits)[-1]
    indices = jnp.where(valid[..., None], jnp.asarray(indices), 0)
    log_p = jnp.asarray(teacher_log_probs).astype(jnp.float32)
    log_p = jnp.where(valid[..., None], log_p, -math.log(k + 1))
    z = _log_probs(student_logits, valid, temperature)
    log_q = jnp.take_along_axis(z, indices, axis=-1)
    if mode == "renormalised":
        return (
            log_p - jax.nn.logsumexp(log_p, axis=-1, keepdims=True),
            log_q - jax.nn.logsumexp(log_q, axis=-1, keepdims=True),
        )
    if k == vocab:  # No tail: the k indices are the whole vocabulary.
        return log_p, log_q
    # The teacher's tail from its top-k mass; the student's from its logits outside the indices
    # (exact even when small). Both floored at the smallest normal float32.
    tail_p = -jnp.expm1(jnp.minimum(jax.nn.logsumexp(log_p, axis=-1), 0.0))
    log_tail_p = jnp.log(jnp.maximum(tail_p, math.exp(_LOG_TINY)))
    in_top_k = jnp.put_along_axis(jnp.zeros(jnp.shape(z), bool), indices, True, axis=-1, inplace=False)
    log_tail_q = jnp.maximum(_safe_logsumexp(jnp.where(in_top_k, -jnp.inf, z)), _LOG_TINY)
    return (
        jnp.concatenate([log_p, log_tail_p[..., None]], axis=-1),
        jnp.concatenate([log_q, log_tail_q[..., None]], axis=-1),
    )


def _sparse(kernel, student_logits, indices, teacher_log_probs, mode, mask, temperature, reduction, **kwargs):
    _checks.check_rank("student_logits", student_logits, 3, _LOGITS)
    _checks.check_rank("teacher_indices", indices, 3, "[batch, time, k]")
    _checks.check_match("teacher_indices", indices, "student_logits", student_logits, axes=(0, 1))
    if not jnp.issubdtype(jnp.result_type(indices), jnp.integer):
        raise ValueError(f"teacher_indices: expected integer token indices, got {jnp.result_type(indices)}")
    _check_k(jnp.shape(indices)[-1], jnp.shape(student_logits)[-1])
    _checks.check_match("teacher_log_probs", teacher_log_probs, "teacher_indices", indices)
    _check_mask(mask, student_logits)
    _checks.check_temperature(temperature)
    _check_choice("mode", mode, SPARSE_MODES)
    _check_choice("reduction", reduction, REDUCTIONS)
    valid = _valid(mask, jnp.shape(student_logits)[:2])
    log_p, log_q = _sparse_log_probs(student_logits, indices, teacher_log_probs, valid, temperature, mode)
    return _reduce(kernel(log_p, log_q, **kwargs), valid, reduction)


_SPARSE = """
    The teacher is given sparsely, by its top-k tokens (:func:`top_k_teacher`), and both
    distributions are reduced to the same support before the divergence:

    - ``mode="tail"``: k + 1 buckets, the k tokens and the rest. The teacher's tail mass is
      ``1 - sum exp(teacher_log_probs)``; the student's is its probability outside the k tokens
      (from its logits, exact). Both are floored at 1.2e-38 (the smallest normal float32), so a tail
      that rounds to zero keeps the divergence finite. With ``k = V`` there is no tail bucket.
    - ``mode="renormalised"``: k buckets, both distributions renormalised over the k tokens.

    With ``k = V`` both modes equal the dense divergence. The tail mode's value is a lower bound of
    the dense one (merging outcomes cannot increase any of these divergences: data processing);
    the renormalised one is not.

    Args:
      student_logits: [B, T, V] student logits, any float dtype.
      teacher_indices: [B, T, k] integer token indices (distinct per position; not checked).
      teacher_log_probs: [B, T, k] the teacher's log-probabilities at those indices, over the whole
        vocabulary, already at the temperature (:func:`top_k_teacher` with the same ``T``).
      mode: ``"tail"`` or ``"renormalised"``.
      mask, reduction: as the dense form.
      temperature: scalar ``T > 0``, for the student's softmax only.

    Returns:
      float32: a scalar, or [B, T] for ``reduction="none"``.

    Raises:
      ValueError: on bad ranks or shapes, non-integer indices, ``k`` outside ``1..V``, a bad
        temperature, or an unknown mode or reduction.
"""


@_doc(_SPARSE)
def sparse_forward_kl(
    student_logits,
    teacher_indices,
    teacher_log_probs,
    *,
    mode="tail",
    mask=None,
    temperature=1.0,
    reduction="token_mean",
) -> jax.Array:
    """:func:`forward_kl` against a top-k teacher."""
    return _sparse(
        _forward, student_logits, teacher_indices, teacher_log_probs, mode, mask, temperature, reduction
    )


@_doc(_SPARSE)
def sparse_reverse_kl(
    student_logits,
    teacher_indices,
    teacher_log_probs,
    *,
    mode="tail",
    mask=None,
    temperature=1.0,
    reduction="token_mean",
) -> jax.Array:
    """:func:`reverse_kl` against a top-k teacher."""
    return _sparse(
        _reverse, student_logits, teacher_indices, teacher_log_probs, mode, mask, temperature, reduction
    )


@_doc(_SPARSE)
def sparse_jsd(
    student_logits,
    teacher_indices,
    teacher_log_probs,
    *,
    beta=0.5,
    mode="tail",
    mask=None,
    temperature=1.0,
    reduction="token_mean",
) -> jax.Array:
    """:func:`jsd` (same ``beta``) against a top-k teacher."""
    _check_unit_interval("beta", beta)
    return _sparse(
        _jsd,
        student_logits,
        teacher_indices,
        teacher_log_probs,
        mode,
        mask,
        temperature,
        reduction,
        beta=beta,
    )


@_doc(_SPARSE)
def sparse_skew_forward_kl(
    student_logits,
    teacher_indices,
    teacher_log_probs,
    *,
    alpha=0.1,
    mode="tail",
    mask=None,
    temperature=1.0,
    reduction="token_mean",
) -> jax.Array:
    """:func:`skew_forward_kl` against a top-k teacher."""
    _check_unit_interval("alpha", alpha)
    return _sparse(
        _skew_forward,
        student_logits,
        teacher_indices,
        teacher_log_probs,
        mode,
        mask,
        temperature,
        reduction,
        alpha=alpha,
    )


@_doc(_SPARSE)
def sparse_skew_reverse_kl(
    student_logits,
    teacher_indices,
    teacher_log_probs,
    *,
    alpha=0.1,
    mode="tail",
    mask=None,
    temperature=1.0,
    reduction="token_mean",
) -> jax.Array:
    """:func:`skew_reverse_kl` against a top-k teacher."""
    _check_unit_interval("alpha", alpha)
    return _sparse(
        _skew_reverse,
        student_logits,
        teacher_indices,
        teacher_log_probs,
        mode,
        mask,
        temperature,
        reduction,
        alpha=alpha,
    )


@_doc(_SPARSE)
def sparse_tvd(
    student_logits,
    teacher_indices,
    teacher_log_probs,
    *,
    mode="tail",
    mask=None,
    temperature=1.0,
    reduction="token_mean",
) -> jax.Array:
    """:func:`tvd` against a top-k teacher."""
    return _sparse(
        _tvd, student_logits, teacher_indices, teacher_log_probs, mode, mask, temperature, reduction
    )

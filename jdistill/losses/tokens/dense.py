"""Dense token divergences on [batch, time, vocab] logits and their reductions; the conventions are
:mod:`jdistill.losses.tokens`'s."""

import math

import jax
import jax.numpy as jnp

from jdistill.losses import _checks

REDUCTIONS = ("token_mean", "sequence_mean", "sum", "none")
SPARSE_MODES = ("tail", "renormalised")
_LOGITS = "[batch, time, vocab]"
# Floor of a top-k tail mass (the smallest normal float32): a tail that rounds to zero keeps every
# divergence finite.
_LOG_TINY = math.log(float(jnp.finfo(jnp.float32).tiny))


# ------------------------------------------------------------------------------------------ checks


def _doc(extra):
    """Appends the shared Args/Returns text to a function's docstring."""

    def decorate(fn):
        fn.__doc__ = fn.__doc__.rstrip() + "\n" + extra
        return fn

    return decorate


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, allowed))}, got {value!r}")


def _check_unit_interval(name, value):
    """A scalar in [0, 1]; the range is checked only when the value is concrete (not traced)."""
    if jnp.ndim(value) != 0:
        raise ValueError(
            f"{name}: expected a scalar in [0, 1] (shape []), got shape {_checks.fmt_shape(jnp.shape(value))}"
        )
    if not isinstance(value, jax.core.Tracer) and not 0.0 <= float(value) <= 1.0:  # Also rejects NaN.
        raise ValueError(f"{name}: expected a scalar in [0, 1], got {value}")


def _check_mask(mask, logits, ref_name="student_logits"):
    if mask is not None and jnp.shape(mask) != jnp.shape(logits)[:2]:
        raise ValueError(
            f"mask: expected shape {_checks.fmt_shape(jnp.shape(logits)[:2])} ([batch, time] of "
            f"{ref_name}), got {_checks.fmt_shape(jnp.shape(mask))}"
        )


def _check_dense(student_logits, teacher_logits, mask, temperature, reduction):
    _checks.check_rank("student_logits", student_logits, 3, _LOGITS)
    _checks.check_match("teacher_logits", teacher_logits, "student_logits", student_logits)
    _check_mask(mask, student_logits)
    _checks.check_temperature(temperature)
    _check_choice("reduction", reduction, REDUCTIONS)


def _valid(mask, shape):
    return jnp.ones(shape, bool) if mask is None else jnp.asarray(mask) != 0


def _log_probs(logits, valid, temperature):
    """float32 log-softmax of ``logits / T``; rows at invalid positions are zeros first, so that
    whatever they held gives no NaN (in value or gradient)."""
    x = jnp.asarray(logits).astype(jnp.float32)
    x = jnp.where(valid[..., None], x, 0.0)
    return jax.nn.log_softmax(x / jnp.asarray(temperature, jnp.float32), axis=-1)


# ------------------------------------------------------------ divergences of two log-distributions
# Each takes ``log_p`` (teacher) and ``log_q`` (student) over the last axis and returns [...].


def _kl(log_a, log_b):
    """``sum a (log a - log b)``; entries with ``a = 0`` contribute 0 (also in the gradient)."""
    a = jnp.exp(log_a)
    diff = jnp.where(a > 0, log_a - log_b, 0.0)
    return jnp.sum(a * diff, axis=-1)


def _log_mix(weight, log_a, log_b):
    """``log(weight a + (1 - weight) b)`` in log space; finite gradients where both are 0."""
    weight = jnp.asarray(weight, jnp.float32)
    x = jnp.log(weight) + log_a
    y = jnp.log1p(-weight) + log_b
    top = jnp.maximum(x, y)
    empty = top == -jnp.inf
    top = jnp.where(empty, 0.0, top)
    total = jnp.where(empty, 1.0, jnp.exp(x - top) + jnp.exp(y - top))
    return jnp.where(empty, -jnp.inf, top + jnp.log(total))


def _forward(log_p, log_q):
    return _kl(log_p, log_q)


def _reverse(log_p, log_q):
    return _kl(log_q, log_p)


def _skew_forward(log_p, log_q, *, alpha):
    return _kl(log_p, _log_mix(alpha, log_p, log_q))


def _skew_reverse(log_p, log_q, *, alpha):
    return _kl(log_q, _log_mix(alpha, log_q, log_p))


def _jsd_interior(log_p, log_q, beta):
    log_m = _log_mix(beta, log_p, log_q)
    return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)


def _jsd(log_p, log_q, *, beta):
    if not isinstance(beta, jax.core.Tracer):  # Concrete: only the branch needed.
        beta = float(beta)
        if beta == 0.0:
            return _forward(log_p, log_q)
        if beta == 1.0:
            return _reverse(log_p, log_q)
        return _jsd_interior(log_p, log_q, beta)
    beta = jnp.asarray(beta, jnp.float32)
    interior = _jsd_interior(log_p, log_q, beta)
    return jnp.where(
        beta == 0.0, _forward(log_p, log_q), jnp.where(beta == 1.0, _reverse(log_p, log_q), interior)
    )


def _tvd(log_p, log_q):
    return 0.5 * jnp.sum(jnp.abs(jnp.exp(log_p) - jnp.exp(log_q)), axis=-1)


# -------------------------------------------------------------------------------------- reductions


def _reduce(per_token, valid, reduction):
    per_token = jnp.where(valid, per_token, 0.0)
    if reduction == "none":
        return per_token
    if reduction == "sum":
        return jnp.sum(per_token)
    if reduction == "token_mean":
        total, count = jnp.sum(per_token), jnp.sum(valid)
        return total / jnp.maximum(count, 1).astype(jnp.float32)
    total, count = _sequence_sums(per_token, valid)
    return total / jnp.maximum(count, 1).astype(jnp.float32)


def _sequence_sums(per_token, valid):
    tokens = jnp.sum(valid, axis=-1)
    means = jnp.sum(per_token, axis=-1) / jnp.maximum(tokens, 1).astype(jnp.float32)
    has = tokens > 0
    return jnp.sum(jnp.where(has, means, 0.0)), jnp.sum(has).astype(jnp.int32)


def _check_per_token(per_token, mask):
    _checks.check_rank("per_token", per_token, 2, "[batch, time]")
    _check_mask(mask, per_token, "per_token")


def token_sums(per_token, mask=None) -> tuple[jax.Array, jax.Array]:
    """``(sum, count)`` of a per-token divergence over unmasked tokens, for unbiased token means.

    ``token_mean = sum / max(count, 1)`` of one batch. Over micro-batches (gradient accumulation) or
    devices, add the sums and the counts first and divide once: ``sum_i sum_i / max(sum_i count_i,
    1)``; the mean of the micro-batch means is biased when they hold different numbers of tokens.
    With gradient accumulation, either count every micro-batch's tokens first (the masks are data)
    and differentiate ``sum_i / total_count`` in each, accumulating the gradients (TRL's
    ``num_items_in_batch``), or accumulate the gradients of ``sum_i`` and divide them by the total
    count at the end. Across devices inside ``shard_map``, ``jax.lax.psum`` both. (Under ``jit`` of
    globally sharded arrays, ``reduction="token_mean"`` is already the global mean.)

    Args:
      per_token: [B, T] divergence per token, e.g. from ``reduction="none"``.
      mask: [B, T] bool or numbers (nonzero = counted) or ``None`` (every token).

    Returns:
      ``(sum, count)``: float32 and int32 scalars.

    Raises:
      ValueError: if ``per_token`` is not rank 2 or ``mask`` has another shape.
    """
    _check_per_token(per_token, mask)
    per_token = jnp.asarray(per_token).astype(jnp.float32)
    valid = _valid(mask, jnp.shape(per_token))
    return jnp.sum(jnp.where(valid, per_token, 0.0)), jnp.sum(valid).astype(jnp.int32)


def sequence_sums(per_token, mask=None) -> tuple[jax.Array, jax.Array]:
    """``(sum, count)`` for unbiased ``"sequence_mean"`` averages: the sum over sequences with an
    unmasked token of their mean over unmasked tokens, and the number of such sequences. Combine over
    micro-batches or devices as :func:`token_sums` says.

    Args and raises as :func:`token_sums`; returns float32 and int32 scalars.
    """
    _check_per_token(per_token, mask)
    per_token = jnp.asarray(per_token).astype(jnp.float32)
    valid = _valid(mask, jnp.shape(per_token))
    return _sequence_sums(jnp.where(valid, per_token, 0.0), valid)


# ------------------------------------------------------------------------------ dense divergences


def _dense(kernel, student_logits, teacher_logits, mask, temperature, reduction, **kwargs):
    _check_dense(student_logits, teacher_logits, mask, temperature, reduction)
    valid = _valid(mask, jnp.shape(student_logits)[:2])
    log_q = _log_probs(student_logits, valid, temperature)
    log_p = _log_probs(teacher_logits, valid, temperature)
    return _reduce(kernel(log_p, log_q, **kwargs), valid, reduction)


_ARGS = """
    Args:
      student_logits: [B, T, V] student logits, any float dtype.
      teacher_logits: [B, T, V] teacher logits, any float dtype.
      mask: [B, T] bool or numbers, nonzero where the token counts; ``None``: every token.
      temperature: scalar ``T > 0`` applied to both (no ``T^2`` factor); checked to be positive
        only when concrete, so a traced temperature does not recompile.
      reduction: ``"token_mean"``, ``"sequence_mean"``, ``"sum"`` or ``"none"`` (module docstring).
"""
_RETURNS = """
    Returns:
      float32: a scalar, or [B, T] for ``reduction="none"``.

    Raises:
      ValueError: on a rank other than 3, mismatched shapes, a mask of another shape than [B, T],
        a non-scalar or non-positive temperature, or an unknown reduction.
"""


@_doc(_ARGS + _RETURNS)
def forward_kl(
    student_logits, teacher_logits, *, mask=None, temperature=1.0, reduction="token_mean"
) -> jax.Array:
    """Forward KL from the teacher to the student per token (mean-seeking).

    ``d(b, t) = KL(p_t || p_s) = sum_v p_t[v] (log p_t[v] - log p_s[v])`` with
    ``p = softmax(logits / T)``. TRL's ``generalized_jsd_loss(beta=0)``; the word-level KD of Kim &
    Rush (2016), "Sequence-Level Knowledge Distillation"; :func:`kd` per token, without ``T^2``.
    """
    return _dense(_forward, student_logits, teacher_logits, mask, temperature, reduction)


@_doc(_ARGS + _RETURNS)
def reverse_kl(
    student_logits, teacher_logits, *, mask=None, temperature=1.0, reduction="token_mean"
) -> jax.Array:
    """Reverse KL from the student to the teacher per token (mode-seeking).

    ``d(b, t) = KL(p_s || p_t) = sum_v p_s[v] (log p_s[v] - log p_t[v])``. TRL's
    ``generalized_jsd_loss(beta=1)``. MiniLLM minimises the reverse KL of whole sequences (by policy
    gradient); this is its per-token form. Gu et al. (2024), "MiniLLM: Knowledge Distillation of
    Large Language Models".
    """
    return _dense(_reverse, student_logits, teacher_logits, mask, temperature, reduction)


@_doc(
    _ARGS.replace(
        "      mask:",
        "      beta: scalar in [0, 1], the teacher's weight in the mixture (checked when concrete).\n      mask:",
    )
    + _RETURNS
)
def jsd(
    student_logits, teacher_logits, *, beta=0.5, mask=None, temperature=1.0, reduction="token_mean"
) -> jax.Array:
    """Generalised Jensen-Shannon divergence per token, GKD's and TRL's convention.

    For ``0 < beta < 1``, with the mixture ``m = beta p_t + (1 - beta) p_s``::

        d(b, t) = beta KL(p_t || m) + (1 - beta) KL(p_s || m)

    ``beta = 0.5`` is the symmetric Jensen-Shannon divergence (at most ``log 2``). ``beta = 0`` is
    defined as :func:`forward_kl` and ``beta = 1`` as :func:`reverse_kl`. These endpoints are not
    the formula's limits, which are 0 (``d ~ beta KL(p_t || p_s)`` as ``beta -> 0``, ``~ (1 - beta)
    KL(p_s || p_t)`` as ``beta -> 1``): they are the limits of ``d / beta`` and ``d / (1 - beta)``.
    So the loss jumps at both endpoints, and near them ``beta`` mostly scales it. Equivalently,
    ``jsd(beta) = beta skew_forward_kl(alpha=beta) + (1 - beta) skew_reverse_kl(alpha=1 - beta)``.

    Mapping to other conventions: identical to TRL's ``GKDTrainer.generalized_jsd_loss(student,
    teacher, labels, beta, temperature)`` and ``DistillationConfig.beta`` (checked against TRL
    1.16.0 in ``tests/parity/test_trl.py``, endpoints included) and to the generalised JSD of
    Agarwal et al. (2024) as TRL implements it: ``jdistill beta = TRL beta``. Before
    huggingface/trl#3043 (2025), TRL's mixture was ``beta p_s + (1 - beta) p_t`` (as that pull
    request describes): check the version when comparing results. Variants that swap the weights,
    ``(1 - beta) KL(p_t || m) + beta KL(p_s || m)``, interpolate continuously between the endpoints
    but are a different function: no ``beta`` maps one onto the other.

    ``beta`` may be traced (no recompilation); then all three branches are computed and selected.

    Agarwal et al. (2024), "On-Policy Distillation of Language Models: Learning from
    Self-Generated Mistakes" (GKD).
    """
    _check_unit_interval("beta", beta)
    return _dense(_jsd, student_logits, teacher_logits, mask, temperature, reduction, beta=beta)


@_doc(
    _ARGS.replace("      mask:", "      alpha: scalar skew in [0, 1] (checked when concrete).\n      mask:")
    + _RETURNS
)
def skew_forward_kl(
    student_logits, teacher_logits, *, alpha=0.1, mask=None, temperature=1.0, reduction="token_mean"
) -> jax.Array:
    """Skew forward KL per token: the forward KL to a student distribution skewed to the teacher.

    ``d(b, t) = KL(p_t || alpha p_t + (1 - alpha) p_s)``; ``alpha = 0`` is :func:`forward_kl`,
    ``alpha = 1`` gives 0. Bounded by ``log(1 / alpha)``, with smoother gradients than the KL.

    Ko et al. (2024), "DistiLLM: Towards Streamlined Distillation for Large Language Models".
    """
    _check_unit_interval("alpha", alpha)
    return _dense(_skew_forward, student_logits, teacher_logits, mask, temperature, reduction, alpha=alpha)


@_doc(
    _ARGS.replace("      mask:", "      alpha: scalar skew in [0, 1] (checked when concrete).\n      mask:")
    + _RETURNS
)
def skew_reverse_kl(
    student_logits, teacher_logits, *, alpha=0.1, mask=None, temperature=1.0, reduction="token_mean"
) -> jax.Array:
    """Skew reverse KL per token: the reverse KL to a teacher distribution skewed to the student.

    ``d(b, t) = KL(p_s || alpha p_s + (1 - alpha) p_t)``; ``alpha = 0`` is :func:`reverse_kl`,
    ``alpha = 1`` gives 0.

    Ko et al. (2024), "DistiLLM: Towards Streamlined Distillation for Large Language Models".
    """
    _check_unit_interval("alpha", alpha)
    return _dense(_skew_reverse, student_logits, teacher_logits, mask, temperature, reduction, alpha=alpha)


@_doc(_ARGS + _RETURNS)
def tvd(student_logits, teacher_logits, *, mask=None, temperature=1.0, reduction="token_mean") -> jax.Array:
    """Total variation distance per token: ``d(b, t) = 0.5 sum_v |p_t[v] - p_s[v]|``, in [0, 1].

    Wen et al. (2023), "f-Divergence Minimization for Sequence-Level Knowledge Distillation".
    """
    return _dense(_tvd, student_logits, teacher_logits, mask, temperature, reduction)

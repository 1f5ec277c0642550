"""Transformer attention transfer: attention distributions and value relations (MiniLM).

Both losses compare [B, H, N, N] row-stochastic matrices (one distribution over keys per head
and query token) with ``KL(teacher || student)`` per row, averaged over rows and heads, as
MiniLM does (Wang et al. 2020, eq. 6 and 8: ``1 / (A_h |x|) sum_a sum_t KL(A^T_{a,t} || A^S_{a,t})``).
TinyBERT (Jiao et al. 2020) instead takes the mean squared error of the pre-softmax scores;
it is not implemented here.

Head counts may differ: :func:`map_heads` turns the teacher's H_t heads into the student's H_s
by averaging groups of teacher distributions (an average of distributions is a distribution).
Layers are the caller's choice (see ``jdistill.methods.attention``).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jdistill.losses import _checks

HeadMap = Sequence[int | Sequence[int]]


def _head_groups(student_heads: int, teacher_heads: int, head_map: HeadMap | None) -> list[list[int]]:
    """For each student head, the teacher heads whose distributions it imitates (averaged)."""
    if head_map is None:
        if teacher_heads % student_heads:
            raise ValueError(
                f"head_map: the teacher's {teacher_heads} heads cannot be grouped evenly onto the "
                f"student's {student_heads}; pass head_map, one teacher head (or list of heads) per "
                f"student head"
            )
        g = teacher_heads // student_heads
        return [list(range(i * g, (i + 1) * g)) for i in range(student_heads)]
    groups = [[int(h)] if np.ndim(h) == 0 else [int(x) for x in h] for h in head_map]
    if len(groups) != student_heads:
        raise ValueError(
            f"head_map: expected one entry per student head ({student_heads}), got {len(groups)}"
        )
    if any(not g or not all(0 <= h < teacher_heads for h in g) for g in groups):
        raise ValueError(
            f"head_map: every entry must name teacher heads in [0, {teacher_heads}), got {list(head_map)}"
        )
    return groups


def map_heads(teacher, student_heads: int, *, head_map: HeadMap | None = None) -> jax.Array:
    """The teacher's per-head distributions [B, H_t, N, M] mapped onto ``student_heads`` heads.

    Student head ``i`` gets the mean of the teacher heads ``head_map[i]`` (an int or a list of
    ints). Without ``head_map``, ``H_t`` must be a multiple of ``H_s`` and consecutive groups of
    ``H_t / H_s`` teacher heads are averaged (equal counts: the identity). Averaging keeps each
    row a probability distribution.

    Args:
      teacher: [B, H_t, N, M] probabilities (rows sum to 1), any float dtype.
      student_heads: the student's head count H_s.
      head_map: optional, one entry per student head.

    Returns:
      [B, H_s, N, M] float32 probabilities.
    """
    _checks.check_rank("teacher", teacher, 4, "[batch, heads, queries, keys]")
    teacher = jnp.asarray(teacher).astype(jnp.float32)
    groups = _head_groups(student_heads, teacher.shape[1], head_map)
    if groups == [[h] for h in range(teacher.shape[1])]:
        return teacher
    return jnp.stack([teacher[:, g].mean(axis=1) for g in groups], axis=1)


def _check_pair(student_name, student, teacher_name, teacher, layout, same_last: bool) -> None:
    _checks.check_rank(student_name, student, 4, layout)
    _checks.check_rank(teacher_name, teacher, 4, layout)
    axes = (0, 2, 3) if same_last else (0, 2)
    _checks.check_match(
        teacher_name,
        teacher,
        student_name,
        student,
        axes=axes,
        hint="Batch and token counts must agree (heads are mapped with head_map).",
    )


def _row_kl(log_student, log_teacher) -> jax.Array:
    """[B, H, N, M] log-distributions -> [B]: KL(teacher || student) per row, mean over H and N."""
    return optax.losses.kl_divergence_with_log_targets(log_student, log_teacher).mean(axis=(1, 2))


def attention_kl(student_attn, teacher_attn, *, head_map: HeadMap | None = None, eps=1e-12) -> jax.Array:
    """Per-example KL divergence between teacher and student attention distributions.

    .. math::
        \\ell_b = \\frac{1}{H_s N} \\sum_{a=1}^{H_s} \\sum_{t=1}^{N}
            \\mathrm{KL}\\big(\\bar A^T_{b,a,t} \\,\\|\\, A^S_{b,a,t}\\big)

    where ``A[b, a, t]`` is head ``a``'s attention distribution of query token ``t`` over the
    keys and ``bar A^T`` the teacher's heads mapped onto the student's (:func:`map_heads`).
    MiniLM's attention transfer (Wang et al. 2020, eq. 6), with the same reduction.

    The inputs are probabilities (softmax outputs); their logarithms are taken of
    ``max(p, eps)``, so a zero (an underflowed softmax entry) gives a finite loss and finite
    gradients. An entry below ``eps`` then contributes at most ``eps * log(eps / p_s)`` per
    entry, negligible at the default 1e-12, and the loss is exactly 0 when the student's
    distributions equal the (mapped) teacher's.

    Wang et al. (2020), "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression
    of Pre-Trained Transformers".

    Args:
      student_attn: [B, H_s, N, N] student attention probabilities (rows sum to 1), any float
        dtype. Rectangular [B, H, N, M] (queries, keys) works too.
      teacher_attn: [B, H_t, N, N] teacher attention probabilities.
      head_map: which teacher heads each student head imitates (see :func:`map_heads`); default:
        consecutive groups of ``H_t / H_s`` heads, averaged.
      eps: floor on probabilities before the logarithm.

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: if the inputs are not rank 4, their batch or token counts differ, or the
        heads cannot be mapped.
    """
    layout = "[batch, heads, queries, keys]"
    _check_pair("student_attn", student_attn, "teacher_attn", teacher_attn, layout, same_last=True)
    s = jnp.asarray(student_attn).astype(jnp.float32)
    t = map_heads(teacher_attn, s.shape[1], head_map=head_map)
    return _row_kl(jnp.log(jnp.maximum(s, eps)), jnp.log(jnp.maximum(t, eps)))


def value_relation_logits(values) -> jax.Array:
    """[B, H, N, d] per-head values -> [B, H, N, N] log of ``softmax(V V^T / sqrt(d))``."""
    v = jnp.asarray(values).astype(jnp.float32)
    return jax.nn.log_softmax(v @ jnp.swapaxes(v, -1, -2) / jnp.sqrt(v.shape[-1]), axis=-1)


def value_relation(student_values, teacher_values, *, head_map: HeadMap | None = None) -> jax.Array:
    """Per-example MiniLM value-relation transfer.

    .. math::
        VR = \\mathrm{softmax}\\big(V V^\\top / \\sqrt{d}\\big) \\quad \\text{per head}, \\qquad
        \\ell_b = \\frac{1}{H_s N} \\sum_{a=1}^{H_s} \\sum_{t=1}^{N}
            \\mathrm{KL}\\big(\\overline{VR}^T_{b,a,t} \\,\\|\\, VR^S_{b,a,t}\\big)

    ``d`` is each model's own head width, so student and teacher widths may differ; only the
    token counts must agree. The teacher's relation distributions are mapped onto the student's
    heads as in :func:`attention_kl` (MiniLM itself requires equal head counts). Computed from
    log-softmaxes, so no probability is ever clipped when the head counts are equal.

    Wang et al. (2020), "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression
    of Pre-Trained Transformers", eq. 7-8.

    Args:
      student_values: [B, H_s, N, d_s] the student's per-head values, any float dtype.
      teacher_values: [B, H_t, N, d_t] the teacher's.
      head_map: see :func:`map_heads`.

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: if the inputs are not rank 4, their batch or token counts differ, or the
        heads cannot be mapped.
    """
    layout = "[batch, heads, tokens, head_dim]"
    _check_pair("student_values", student_values, "teacher_values", teacher_values, layout, same_last=False)
    log_s = value_relation_logits(student_values)
    log_t = value_relation_logits(teacher_values)
    groups = _head_groups(log_s.shape[1], log_t.shape[1], head_map)
    # Mean of the group's probabilities, in log space: logsumexp - log(group size).
    log_t = jnp.stack(
        [jax.nn.logsumexp(log_t[:, g], axis=1) - jnp.log(float(len(g))) for g in groups], axis=1
    )
    return _row_kl(log_s, log_t)

"""Losses on intermediate features: FitNets hints and attention transfer."""

import jax
import jax.numpy as jnp

from jdistill.losses import _checks

# Floor on the L2 norm of an attention map: an all-zero map stays zero, with
# finite value and gradient, instead of producing 0 / 0.
_NORM_EPS = 1e-12

_CONNECTOR_HINT = (
    "Student and teacher features must have the same shape; use a connector "
    "(jdistill.models.Connector, a linear or 1x1-conv regressor) to map the "
    "student's features to the teacher's shape."
)


def feature_mse(student_feat, teacher_feat) -> jax.Array:
    """Per-example mean squared error between feature maps (FitNets hint loss).

    ``mse_b = mean_{all non-batch axes} (s_b - t_b)^2``, computed in float32.

    Romero et al. (2015), "FitNets: Hints for Thin Deep Nets".

    Args:
      student_feat: [B, ...] student features, already mapped to the teacher's
        shape by a connector if the widths differ.
      teacher_feat: teacher features, same shape as ``student_feat``.

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: if ``student_feat`` has rank < 2 or the shapes differ.
    """
    _checks.check_min_rank("student_feat", student_feat, 2, "[batch, ...]")
    _checks.check_match(
        "teacher_feat",
        teacher_feat,
        "student_feat",
        student_feat,
        hint=_CONNECTOR_HINT,
    )
    s = jnp.asarray(student_feat).astype(jnp.float32)
    t = jnp.asarray(teacher_feat).astype(jnp.float32)
    return jnp.mean(jnp.square(s - t), axis=tuple(range(1, s.ndim)))


def attention_map(feat, *, p=2) -> jax.Array:
    """Spatial attention map of NHWC features, L2-normalised over positions.

    ``a_b = q_b / max(||q_b||_2, eps)`` with ``q_b[h, w] = mean_c |feat_b[h, w,
    c]|^p`` flattened over ``(h, w)`` and ``eps = 1e-12``; an all-zero map gives
    zeros (finite value and gradient). Computed in float32.

    Zagoruyko & Komodakis (2017), "Paying More Attention to Attention".

    Args:
      feat: [B, H, W, C] features.
      p: exponent applied to the activations before the channel mean.

    Returns:
      [B, H * W] float32 attention maps.

    Raises:
      ValueError: if ``feat`` is not rank 4.
    """
    _checks.check_rank("feat", feat, 4, "[batch, height, width, channels]")
    feat = jnp.asarray(feat).astype(jnp.float32)
    q = jnp.mean(jnp.abs(feat) ** p, axis=-1).reshape(feat.shape[0], -1)
    sum_sq = jnp.sum(jnp.square(q), axis=-1, keepdims=True)
    return q * jax.lax.rsqrt(jnp.maximum(sum_sq, _NORM_EPS**2))


def attention_transfer(student_feat, teacher_feat, *, p=2) -> jax.Array:
    """Per-example attention-transfer loss between NHWC feature maps.

    ``at_b = mean_{h, w} (attention_map(s)_b - attention_map(t)_b)^2``. The
    channel counts may differ; the loss is invariant to scaling either feature
    map by a positive constant. Computed in float32.

    Zagoruyko & Komodakis (2017), "Paying More Attention to Attention".

    Args:
      student_feat: [B, H, W, C_s] student features.
      teacher_feat: [B, H, W, C_t] teacher features.
      p: exponent of :func:`attention_map`.

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: if either input is not rank 4, or batch or spatial sizes
        differ.
    """
    layout = "[batch, height, width, channels]"
    _checks.check_rank("student_feat", student_feat, 4, layout)
    _checks.check_rank("teacher_feat", teacher_feat, 4, layout)
    _checks.check_match("teacher_feat", teacher_feat, "student_feat", student_feat, axes=(0, 1, 2))
    diff = attention_map(student_feat, p=p) - attention_map(teacher_feat, p=p)
    return jnp.mean(jnp.square(diff), axis=-1)

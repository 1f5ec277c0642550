"""Logit losses that split or reshape the KD objective: DKD and DIST.

Zhao et al. (2022), "Decoupled Knowledge Distillation";
Huang et al. (2022), "Knowledge Distillation from A Stronger Teacher".
"""

import jax
import jax.numpy as jnp
import optax

from jdistill.losses import _checks

# Offset subtracted from the target class's scaled logit before the
# non-target softmax, as in mdistiller's DKD: exp(-1000) underflows to exactly
# 0 in float32, so the target class drops out of the distribution while the
# value and gradient stay finite (a -inf logit would give 0 * inf = NaN).
_NCKD_MASK_OFFSET = 1000.0

# Added to the product of norms in DIST's Pearson correlation (DIST_KD's value).
_PEARSON_EPS = 1e-8


def _check_logits(student_logits, teacher_logits) -> None:
    _checks.check_rank("student_logits", student_logits, 2, "[batch, classes]")
    _checks.check_match("teacher_logits", teacher_logits, "student_logits", student_logits)


def _scaled(logits, temperature) -> jax.Array:
    return jnp.asarray(logits).astype(jnp.float32) / temperature


def dkd_terms(student_logits, teacher_logits, labels, *, temperature=4.0) -> tuple[jax.Array, jax.Array]:
    """Per-example target-class (TCKD) and non-target-class (NCKD) KD terms.

    With ``p = softmax(z / T)`` for the student (``z = s``) and the teacher
    (``z = t``) and ``y`` the label:

    - ``b = (p_y, 1 - p_y)``, the binary target / non-target distribution;
      ``tckd = T^2 * KL(b_t || b_s)``.
    - ``p_hat = softmax over the classes c != y of z_c / T``;
      ``nckd = T^2 * KL(p_hat_t || p_hat_s)``.

    Each term is the per-example sum over its classes, so the batch mean of
    each equals mdistiller's ``F.kl_div(..., size_average=False) * T^2 / B``.
    The split satisfies ``kd = tckd + (1 - p_t,y) * nckd`` with ``kd`` the
    ``T^2``-scaled Hinton loss (:func:`jdistill.losses.kd`).

    Follows mdistiller (``mdistiller/distillers/DKD.py``), which the paper's
    tables come from, in two details: both terms carry the ``T^2`` factor, and
    the non-target softmax is taken of ``z / T - 1000 * onehot(y)`` rather
    than over the non-target classes alone. The two agree exactly in float32
    unless the target's scaled logit exceeds another class's by more than
    about 900. TCKD is computed in log space (``log(1 - p_y)`` as a
    non-target logsumexp) rather than as mdistiller's ``log`` of summed
    probabilities: the same value, finite when ``p_y`` underflows.

    Args:
      student_logits: [B, C] student logits, any float dtype, ``C >= 2``.
      teacher_logits: [B, C] teacher logits, any float dtype.
      labels: [B] integer class indices in ``[0, C)`` (the range is not checked).
      temperature: scalar ``T > 0``, a Python number or a JAX array (checked to
        be positive only when concrete). mdistiller's CIFAR-100 default is 4.

    Returns:
      ``(tckd, nckd)``, each [B] float32, both already multiplied by ``T^2``.

    Raises:
      ValueError: on wrong ranks, mismatched shapes, fewer than two classes,
        bad labels, a non-scalar temperature or a concrete temperature <= 0.
    """
    _check_logits(student_logits, teacher_logits)
    if jnp.shape(student_logits)[1] < 2:
        raise ValueError(
            "student_logits: expected at least 2 classes [batch, classes >= 2], got shape "
            f"{_checks.fmt_shape(jnp.shape(student_logits))}"
        )
    _checks.check_labels(labels, student_logits)
    _checks.check_temperature(temperature)
    temperature = jnp.asarray(temperature).astype(jnp.float32)
    s = _scaled(student_logits, temperature)
    t = _scaled(teacher_logits, temperature)
    target = jax.nn.one_hot(labels, s.shape[1], dtype=bool)

    def log_binary(z):
        # [B, 2] log (p_y, 1 - p_y) from the scaled logits.
        log_total = jax.nn.logsumexp(z, axis=1)
        log_target = jnp.sum(jnp.where(target, z, 0.0), axis=1) - log_total
        log_other = jax.nn.logsumexp(z, axis=1, where=~target) - log_total
        return jnp.stack([log_target, log_other], axis=1)

    tckd = optax.losses.kl_divergence_with_log_targets(log_binary(s), log_binary(t))

    def log_non_target(z):
        return jax.nn.log_softmax(z - _NCKD_MASK_OFFSET * target, axis=1)

    nckd = optax.losses.kl_divergence_with_log_targets(log_non_target(s), log_non_target(t))
    scale = temperature**2
    return scale * tckd, scale * nckd


def dkd(student_logits, teacher_logits, labels, *, temperature=4.0, alpha=1.0, beta=8.0) -> jax.Array:
    """Per-example Decoupled Knowledge Distillation loss.

    ``dkd_b = alpha * tckd_b + beta * nckd_b`` with the terms of
    :func:`dkd_terms` (each ``T^2``-scaled). Classical KD weighs NCKD by the
    teacher's non-target mass ``1 - p_t,y``; DKD weighs the two independently.
    The defaults (``T = 4``, ``alpha = 1``, ``beta = 8``) are mdistiller's
    CIFAR-100 configuration; ``beta`` is tuned per teacher-student pair there.
    The cross-entropy term and mdistiller's linear warm-up of the DKD weight
    (``min(epoch / 20, 1)``) are the caller's.

    Zhao, Cui, Song, Qiu & Liang (2022), "Decoupled Knowledge Distillation".

    Args:
      student_logits: [B, C] student logits, any float dtype, ``C >= 2``.
      teacher_logits: [B, C] teacher logits, any float dtype.
      labels: [B] integer class indices.
      temperature: scalar ``T > 0``, as in :func:`dkd_terms`.
      alpha: weight of TCKD (may be traced).
      beta: weight of NCKD (may be traced).

    Returns:
      [B] float32 losses; their mean is mdistiller's ``dkd_loss``.

    Raises:
      ValueError: as :func:`dkd_terms`.
    """
    tckd, nckd = dkd_terms(student_logits, teacher_logits, labels, temperature=temperature)
    return alpha * tckd + beta * nckd


def _safe_norm(x, axis) -> jax.Array:
    """L2 norm along ``axis`` with a zero (not NaN) gradient at the zero vector."""
    sq = jnp.sum(jnp.square(x), axis=axis)
    nonzero = sq > 0
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def _pearson(a, b, axis) -> jax.Array:
    """Pearson correlation of ``a`` and ``b`` along ``axis`` (DIST_KD's eps)."""
    a = a - jnp.mean(a, axis=axis, keepdims=True)
    b = b - jnp.mean(b, axis=axis, keepdims=True)
    dot = jnp.sum(a * b, axis=axis)
    return dot / (_safe_norm(a, axis) * _safe_norm(b, axis) + _PEARSON_EPS)


def dist_terms(student_logits, teacher_logits, *, temperature=1.0) -> tuple[jax.Array, jax.Array]:
    """DIST's inter-class and intra-class relation losses.

    With ``Y = softmax(z / T)`` row-wise ([B, C]) for student and teacher and
    ``rho`` the Pearson correlation ``<a - mean a, b - mean b> / (||a - mean
    a|| * ||b - mean b|| + 1e-8)``:

    - ``inter = T^2 * mean_b (1 - rho(Y_s[b, :], Y_t[b, :]))``: each
      example's distribution over classes;
    - ``intra = T^2 * mean_c (1 - rho(Y_s[:, c], Y_t[:, c]))``: each class's
      probabilities across the batch.

    Both are batch-level (``intra`` couples examples), hence scalars. Pearson
    correlation is invariant to shifting and positively scaling either
    argument, so DIST asks the student to match the teacher's relations, not
    its exact probabilities. A zero-variance vector (e.g. a class column when
    ``B == 1``) has correlation 0, with a zero gradient. The ``T^2`` factor
    and the 1e-8 follow the ``DIST`` module with temperature ``tau`` of the
    authors' classification code (hunto/image_classification_sota) and its
    ports; the paper's loss has the same form.

    Args:
      student_logits: [B, C] student logits, any float dtype.
      teacher_logits: [B, C] teacher logits, any float dtype.
      temperature: scalar ``T > 0`` (checked to be positive only when
        concrete).

    Returns:
      ``(inter, intra)``, float32 scalars, both already multiplied by ``T^2``.

    Raises:
      ValueError: on wrong ranks, mismatched shapes, a non-scalar temperature
        or a concrete temperature <= 0.
    """
    _check_logits(student_logits, teacher_logits)
    _checks.check_temperature(temperature)
    temperature = jnp.asarray(temperature).astype(jnp.float32)
    y_s = jax.nn.softmax(_scaled(student_logits, temperature), axis=1)
    y_t = jax.nn.softmax(_scaled(teacher_logits, temperature), axis=1)
    inter = 1.0 - jnp.mean(_pearson(y_s, y_t, axis=1))
    intra = 1.0 - jnp.mean(_pearson(y_s, y_t, axis=0))
    scale = temperature**2
    return scale * inter, scale * intra


def dist(student_logits, teacher_logits, *, temperature=1.0, beta=1.0, gamma=1.0) -> jax.Array:
    """DIST loss: inter- plus intra-class Pearson-correlation relations.

    ``dist = beta * inter + gamma * intra`` with the ``T^2``-scaled terms of
    :func:`dist_terms`. The defaults (``T = 1``, ``beta = gamma = 1``) are
    those of the authors' ``DIST`` module. The cross-entropy term is the
    caller's.

    Huang, You, Wang, Qian & Xu (2022), "Knowledge Distillation from A
    Stronger Teacher".

    Args:
      student_logits: [B, C] student logits, any float dtype.
      teacher_logits: [B, C] teacher logits, any float dtype.
      temperature: scalar ``T > 0``, as in :func:`dist_terms`.
      beta: weight of the inter-class term (may be traced).
      gamma: weight of the intra-class term (may be traced).

    Returns:
      Scalar float32 loss (batch-level: not a mean of per-example values).

    Raises:
      ValueError: as :func:`dist_terms`.
    """
    inter, intra = dist_terms(student_logits, teacher_logits, temperature=temperature)
    return beta * inter + gamma * intra

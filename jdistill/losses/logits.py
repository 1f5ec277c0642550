"""Losses on classifier logits: cross-entropy and Hinton distillation."""

import jax
import jax.numpy as jnp
import optax

from jdistill.losses import _checks


def cross_entropy(logits, labels) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels.

    ``ce_b = -log softmax(logits_b)[labels_b]``, computed in float32.

    Args:
      logits: [B, C] unnormalised log-probabilities, any float dtype.
      labels: [B] integer class indices in ``[0, C)`` (the range is not checked).

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: if ``logits`` is not rank 2 or ``labels`` is not an integer
        array of shape [B].
    """
    _checks.check_rank("logits", logits, 2, "[batch, classes]")
    _checks.check_labels(labels, logits)
    return optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits).astype(jnp.float32), labels)


def kd(student_logits, teacher_logits, *, temperature) -> jax.Array:
    """Per-example knowledge-distillation loss on temperature-softened logits.

    ``kd_b = T^2 * KL(softmax(t_b / T) || softmax(s_b / T))``: forward KL from
    the teacher's distribution to the student's. The ``T^2`` factor keeps the
    gradient scale independent of ``T``. Computed in float32 from log-softmaxes
    (``optax.losses.kl_divergence_with_log_targets``), so gradients stay finite
    with respect to both inputs even when a probability underflows to 0.
    Gradients are not stopped: the caller decides whether the teacher is frozen.

    Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural
    Network".

    Args:
      student_logits: [B, C] student logits, any float dtype.
      teacher_logits: [B, C] teacher logits, any float dtype.
      temperature: scalar ``T > 0``, a Python number or a JAX array. It is
        checked to be positive only when concrete; a traced temperature (e.g. a
        jitted argument, so that changing it does not recompile) is not checked.

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: on wrong ranks, mismatched shapes, a non-scalar temperature or
        a concrete temperature <= 0.
    """
    _checks.check_rank("student_logits", student_logits, 2, "[batch, classes]")
    _checks.check_match("teacher_logits", teacher_logits, "student_logits", student_logits)
    _checks.check_temperature(temperature)
    temperature = jnp.asarray(temperature).astype(jnp.float32)
    s = jnp.asarray(student_logits).astype(jnp.float32)
    t = jnp.asarray(teacher_logits).astype(jnp.float32)
    kl = optax.losses.kl_divergence_with_log_targets(
        jax.nn.log_softmax(s / temperature), jax.nn.log_softmax(t / temperature)
    )
    return temperature**2 * kl


def hinton(student_logits, teacher_logits, labels, *, temperature, alpha) -> jax.Array:
    """Per-example Hinton distillation loss: hard labels plus soft targets.

    ``hinton_b = alpha * cross_entropy(s, labels)_b + (1 - alpha) * kd_b`` with
    ``kd_b = kd(s, t, temperature=T)_b``: ``alpha`` weights the hard-label term
    (``alpha = 1`` is plain supervised training, ``alpha = 0`` pure
    distillation).

    Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural
    Network".

    Args:
      student_logits: [B, C] student logits, any float dtype.
      teacher_logits: [B, C] teacher logits, any float dtype.
      labels: [B] integer class indices.
      temperature: scalar ``T > 0``, as in :func:`kd`.
      alpha: scalar weight of the cross-entropy term, normally in [0, 1] (not
        checked; it may be traced).

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: as :func:`cross_entropy` and :func:`kd`.
    """
    # kd first: it validates the logits under their own names.
    soft = kd(student_logits, teacher_logits, temperature=temperature)
    ce = cross_entropy(student_logits, labels)
    return alpha * ce + (1 - alpha) * soft

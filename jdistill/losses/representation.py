"""Representation mapping: a projected student embedding regresses the teacher's penultimate
embedding, directly (L2 or cosine) or through the teacher's frozen classifier head (SRRL).

The student's embedding is first mapped to the teacher's width by a trainable projection
(``jdistill.models.Connector``); these losses compare the projected embedding with the
teacher's. Yang, Martinez, Bulat & Tzimiropoulos (2021), "Knowledge Distillation via Softmax
Regression Representation Learning" (SRRL), ICLR.
"""

import jax
import jax.numpy as jnp
import optax

from jdistill.losses import _checks
from jdistill.losses.features import feature_mse

# Floor on the norms in the cosine: an all-zero embedding (a dead ReLU layer) gives a finite loss.
_COSINE_EPS = 1e-8
_PROJECT_HINT = (
    "Project the student's embedding to the teacher's width first with a connector "
    "(jdistill.models.Connector, a trainable linear map)."
)


def _check_pair(projected_student, teacher_embedding) -> None:
    _checks.check_rank("projected_student", projected_student, 2, "[batch, dim]")
    _checks.check_match(
        "teacher_embedding", teacher_embedding, "projected_student", projected_student, hint=_PROJECT_HINT
    )


def embedding_l2(projected_student, teacher_embedding) -> jax.Array:
    """Mean squared error between the projected student embedding and the teacher's.

    .. math::
      \\ell_b = \\frac{1}{D} \\sum_d (r(s)_{bd} - t_{bd})^2

    SRRL's feature-matching term ``L_FM`` (up to the constant 1 / D); FitNets' hint loss
    (:func:`jdistill.losses.feature_mse`) applied to penultimate embeddings.

    Args:
      projected_student: [B, D] student embeddings mapped to the teacher's width, any float dtype.
      teacher_embedding: [B, D] teacher embeddings.

    Returns:
      [B] float32 losses, 0 where the two agree.

    Raises:
      ValueError: if ``projected_student`` is not [B, D] or the shapes differ.
    """
    _check_pair(projected_student, teacher_embedding)
    return feature_mse(projected_student, teacher_embedding)


def embedding_cosine(projected_student, teacher_embedding) -> jax.Array:
    """Cosine distance between the projected student embedding and the teacher's.

    .. math::
      \\ell_b = 1 - \\frac{\\langle r(s)_b, t_b \\rangle}{\\max(\\|r(s)_b\\|, \\epsilon)
      \\max(\\|t_b\\|, \\epsilon)}

    with ``epsilon = 1e-8`` (``optax.cosine_distance``). It matches directions only: scaling
    either embedding by a positive factor leaves it unchanged, so the projected embedding's norm
    is free (which matters when it is passed through the teacher's head, whose bias is fixed).

    Args:
      projected_student: [B, D] student embeddings mapped to the teacher's width, any float dtype.
      teacher_embedding: [B, D] teacher embeddings.

    Returns:
      [B] float32 losses in [0, 2], 0 where the two point the same way.

    Raises:
      ValueError: if ``projected_student`` is not [B, D] or the shapes differ.
    """
    _check_pair(projected_student, teacher_embedding)
    s = jnp.asarray(projected_student).astype(jnp.float32)
    t = jnp.asarray(teacher_embedding).astype(jnp.float32)
    return optax.cosine_distance(s, t, epsilon=_COSINE_EPS)


def teacher_head_regression(projected_student, teacher_logits, head_kernel, head_bias) -> jax.Array:
    """SRRL's softmax-regression term: the projected student embedding, passed through the
    teacher's frozen linear classifier head, should give the teacher's logits.

    .. math::
      \\ell_b = \\frac{1}{C} \\sum_c \\big((r(s)_b W + w_0)_c - z^t_{bc}\\big)^2

    where ``W, w_0`` are the teacher's head kernel and bias and ``z^t`` its logits (Yang et
    al. 2021 match the two outputs of the teacher's classifier with an L2 loss). Gradients
    reach the head's arrays too: pass them as constants (outside the trained parameters).

    Args:
      projected_student: [B, D] student embeddings mapped to the teacher's width.
      teacher_logits: [B, C] the teacher's logits for the same images.
      head_kernel: [D, C] the teacher's head kernel (``logits = embedding @ kernel + bias``).
      head_bias: [C] the teacher's head bias.

    Returns:
      [B] float32 losses, 0 when ``projected_student`` equals the teacher's embedding.

    Raises:
      ValueError: if a shape is wrong or the arrays do not fit together.
    """
    _checks.check_rank("projected_student", projected_student, 2, "[batch, dim]")
    _checks.check_rank("teacher_logits", teacher_logits, 2, "[batch, classes]")
    _checks.check_rank("head_kernel", head_kernel, 2, "[dim, classes]")
    _checks.check_rank("head_bias", head_bias, 1, "[classes]")
    d, c = jnp.shape(head_kernel)
    if jnp.shape(projected_student)[1] != d:
        raise ValueError(
            f"projected_student: expected width {d} (the teacher head's input, head_kernel "
            f"{_checks.fmt_shape((d, c))}), got shape {_checks.fmt_shape(jnp.shape(projected_student))}. "
            f"{_PROJECT_HINT}"
        )
    want = (jnp.shape(projected_student)[0], c)
    if jnp.shape(teacher_logits) != want:
        raise ValueError(
            f"teacher_logits: expected shape {_checks.fmt_shape(want)} (projected_student's batch, "
            f"head_kernel's classes), got {_checks.fmt_shape(jnp.shape(teacher_logits))}"
        )
    if jnp.shape(head_bias) != (c,):
        raise ValueError(
            f"head_bias: expected shape [{c}] (head_kernel's classes), got "
            f"{_checks.fmt_shape(jnp.shape(head_bias))}"
        )
    s = jnp.asarray(projected_student).astype(jnp.float32)
    logits = s @ jnp.asarray(head_kernel, jnp.float32) + jnp.asarray(head_bias, jnp.float32)
    return jnp.mean(jnp.square(logits - jnp.asarray(teacher_logits, jnp.float32)), axis=-1)

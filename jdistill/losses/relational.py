"""Relational knowledge distillation (RKD) on batches of embeddings.

Park, Kim, Lu & Cho (2019), "Relational Knowledge Distillation".
"""

import jax
import jax.numpy as jnp
import optax

from jdistill.losses import _checks

# Floor on squared pairwise distances: the diagonal (and duplicate embeddings)
# get distance sqrt(_DIST_SQ_EPS) > 0 before the diagonal is zeroed, so the
# square root has a finite gradient everywhere (zero below the floor).
_DIST_SQ_EPS = 1e-12


def _check_embeddings(student_emb, teacher_emb) -> None:
    _checks.check_rank("student_emb", student_emb, 2, "[batch, dim]")
    _checks.check_rank("teacher_emb", teacher_emb, 2, "[batch, dim]")
    _checks.check_match("teacher_emb", teacher_emb, "student_emb", student_emb, axes=(0,))


def _differences(emb) -> jax.Array:
    """[B, B, D] float32 differences ``emb[i] - emb[j]``."""
    emb = jnp.asarray(emb).astype(jnp.float32)
    return emb[:, None, :] - emb[None, :, :]


def _normalised_distances(emb) -> jax.Array:
    """[B, B] Euclidean distances divided by their off-diagonal mean."""
    b = jnp.shape(emb)[0]
    sq = jnp.sum(jnp.square(_differences(emb)), axis=-1)
    dist = jnp.sqrt(jnp.maximum(sq, _DIST_SQ_EPS))
    dist = jnp.where(jnp.eye(b, dtype=bool), 0.0, dist)
    # Off-diagonal entries are >= sqrt(eps) > 0, so the mean is positive when
    # B >= 2; for B == 1 every matrix is [[0]] and the floor avoids 0 / 0.
    mean = jnp.sum(dist) / max(b * (b - 1), 1)
    return dist / jnp.maximum(mean, jnp.sqrt(_DIST_SQ_EPS))


def _unit(v) -> jax.Array:
    """Normalises the last axis to unit length; exact zero vectors stay zero.

    The double ``where`` keeps both the value and the gradient at a zero vector
    equal to zero (a clamped norm would give a finite but ~1/eps gradient).
    """
    sq = jnp.sum(jnp.square(v), axis=-1, keepdims=True)
    nonzero = sq > 0
    return jnp.where(nonzero, v * jax.lax.rsqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def _angle_cosines(emb) -> jax.Array:
    """[B, B, B] cosines ``cos[i, j, k]`` of the angle at ``j`` in (i, j, k)."""
    u = _unit(_differences(emb))  # u[i, j] = unit(e_i - e_j)
    return jnp.einsum("ijd,kjd->ijk", u, u)


def rkd_distance(student_emb, teacher_emb) -> jax.Array:
    """RKD distance loss: matches normalised pairwise distances.

    ``psi(e)_ij = ||e_i - e_j|| / mean_{k != l} ||e_k - e_l||`` (diagonal 0);
    ``loss = mean_{i, j} smooth_l1(psi(s)_ij - psi(t)_ij)`` with smooth-L1 the
    Huber loss with delta 1. Invariant to scaling and translating either batch.
    Squared distances are clamped at 1e-12 before the square root, so value and
    gradient are finite on the diagonal and for duplicate embeddings.

    Park et al. (2019), "Relational Knowledge Distillation".

    Args:
      student_emb: [B, D_s] student embeddings (flatten other layouts first).
      teacher_emb: [B, D_t] teacher embeddings; ``D_t`` may differ from ``D_s``.

    Returns:
      Scalar float32 loss.

    Raises:
      ValueError: if either input is not rank 2 or the batch sizes differ.
    """
    _check_embeddings(student_emb, teacher_emb)
    return jnp.mean(
        optax.huber_loss(
            _normalised_distances(student_emb),
            _normalised_distances(teacher_emb),
            delta=1.0,
        )
    )


def rkd_angle(student_emb, teacher_emb) -> jax.Array:
    """RKD angle loss: matches the angles formed by every triplet.

    ``cos(e)_ijk = <u_ij, u_kj>`` with ``u_ij = (e_i - e_j) / ||e_i - e_j||``
    (zero when ``e_i == e_j``, with zero gradient there);
    ``loss = mean_{i, j, k} smooth_l1(cos(s)_ijk - cos(t)_ijk)`` (Huber, delta
    1). Builds [B, B, D] differences and a [B, B, B] tensor.

    Park et al. (2019), "Relational Knowledge Distillation".

    Args:
      student_emb: [B, D_s] student embeddings.
      teacher_emb: [B, D_t] teacher embeddings; ``D_t`` may differ from ``D_s``.

    Returns:
      Scalar float32 loss.

    Raises:
      ValueError: if either input is not rank 2 or the batch sizes differ.
    """
    _check_embeddings(student_emb, teacher_emb)
    return jnp.mean(optax.huber_loss(_angle_cosines(student_emb), _angle_cosines(teacher_emb), delta=1.0))


def rkd(student_emb, teacher_emb, *, distance_weight=25.0, angle_weight=50.0) -> jax.Array:
    """Weighted RKD loss: distance plus angle terms.

    ``rkd = distance_weight * rkd_distance + angle_weight * rkd_angle``; the
    defaults (25, 50) are the paper's.

    Park et al. (2019), "Relational Knowledge Distillation".

    Args:
      student_emb: [B, D_s] student embeddings.
      teacher_emb: [B, D_t] teacher embeddings.
      distance_weight: weight of :func:`rkd_distance`.
      angle_weight: weight of :func:`rkd_angle`.

    Returns:
      Scalar float32 loss.

    Raises:
      ValueError: as :func:`rkd_distance`.
    """
    distance = rkd_distance(student_emb, teacher_emb)
    angle = rkd_angle(student_emb, teacher_emb)
    return distance_weight * distance + angle_weight * angle

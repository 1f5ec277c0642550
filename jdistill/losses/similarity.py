"""Batch-similarity losses: SP, CC and PKT, as in RepDistiller.

Each matches how the examples of a batch relate to one another (Gram
matrices, correlations, similarity distributions) rather than the features
themselves, so student and teacher widths may differ (CC excepted: it compares
embeddings of equal width). The scalar results are batch-level losses.
"""

import jax
import jax.numpy as jnp

from jdistill.losses import _checks

# Floor on a Gram-matrix row's norm before division (torch F.normalize's eps).
_GRAM_NORM_EPS = 1e-12


def _safe_norm(x, axis=-1, keepdims=True) -> jax.Array:
    """L2 norm with a zero (not NaN) gradient at the zero vector."""
    sq = jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims)
    nonzero = sq > 0
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def _flat(x) -> jax.Array:
    x = jnp.asarray(x).astype(jnp.float32)
    return x.reshape(x.shape[0], -1)


def _normalised_gram(feat) -> jax.Array:
    """[B, B] Gram matrix of the flattened features, rows L2-normalised."""
    f = _flat(feat)
    gram = f @ f.T
    return gram / jnp.maximum(_safe_norm(gram), _GRAM_NORM_EPS)


def sp(student_feat, teacher_feat) -> jax.Array:
    """Similarity-preserving loss: matches row-normalised batch Gram matrices.

    ``G = F F^T`` with ``F`` the [B, prod(rest)] flattened features, each row
    divided by its L2 norm (floored at 1e-12, like ``F.normalize``);
    ``sp = ||G_s - G_t||_F^2 / B^2``. Only the batch size must agree: the
    Gram matrices are [B, B] whatever the feature shapes. RepDistiller applies
    it to the last residual stage's feature map (before pooling) with weight
    3000 on CIFAR-100.

    Tung & Mori (2019), "Similarity-Preserving Knowledge Distillation".

    Args:
      student_feat: [B, ...] student features (e.g. [B, H, W, C]), any float
        dtype.
      teacher_feat: [B, ...] teacher features, any shape with the same batch.

    Returns:
      Scalar float32 loss.

    Raises:
      ValueError: if either input has rank < 2 or the batch sizes differ.
    """
    _checks.check_min_rank("student_feat", student_feat, 2, "[batch, ...]")
    _checks.check_min_rank("teacher_feat", teacher_feat, 2, "[batch, ...]")
    if jnp.shape(teacher_feat)[0] != jnp.shape(student_feat)[0]:
        raise ValueError(
            f"teacher_feat: expected batch size {jnp.shape(student_feat)[0]} to match student_feat "
            f"(shape {_checks.fmt_shape(jnp.shape(student_feat))}), got shape "
            f"{_checks.fmt_shape(jnp.shape(teacher_feat))}"
        )
    b = jnp.shape(student_feat)[0]
    diff = _normalised_gram(teacher_feat) - _normalised_gram(student_feat)
    return jnp.sum(jnp.square(diff)) / (b * b)


def cc(student_emb, teacher_emb) -> jax.Array:
    """Correlation-congruence loss as RepDistiller implements it.

    With ``d_i = |s_i - t_i|`` (elementwise absolute difference of example
    ``i``'s embeddings), ``cc = mean_{i=0}^{B-2} <d_i, d_{i+1}>``: the mean
    over consecutive pairs of examples in batch order of the dot product of
    their absolute embedding differences. It is >= 0, and 0 when the student
    matches the teacher on at least one of each consecutive pair.

    This is RepDistiller's ``distiller_zoo/CC.py`` (code the paper's authors
    sent to RepDistiller's author), which we follow to reproduce its table. It
    is not the paper's formula, which matches [B, B] correlation matrices of
    the whole batch computed with a (Taylor-expanded Gaussian) kernel. In
    RepDistiller the inputs are the penultimate features mapped by a learned
    linear layer to 128 dimensions (no normalisation), and the loss weight is
    0.02 on CIFAR-100; the embedding layer is the caller's.

    Peng et al. (2019), "Correlation Congruence for Knowledge Distillation".

    Args:
      student_emb: [B, D] student embeddings, ``B >= 2``, any float dtype.
      teacher_emb: [B, D] teacher embeddings, same shape.

    Returns:
      Scalar float32 loss.

    Raises:
      ValueError: if the inputs are not rank 2, their shapes differ, or
        ``B < 2``.
    """
    _checks.check_rank("student_emb", student_emb, 2, "[batch, dim]")
    _checks.check_match(
        "teacher_emb",
        teacher_emb,
        "student_emb",
        student_emb,
        hint="CC compares embeddings elementwise; map both to the same width first.",
    )
    if jnp.shape(student_emb)[0] < 2:
        raise ValueError(
            "student_emb: expected a batch of at least 2 examples (CC pairs consecutive examples), "
            f"got shape {_checks.fmt_shape(jnp.shape(student_emb))}"
        )
    s = jnp.asarray(student_emb).astype(jnp.float32)
    t = jnp.asarray(teacher_emb).astype(jnp.float32)
    delta = jnp.abs(s - t)
    return jnp.mean(jnp.sum(delta[:-1] * delta[1:], axis=1))


def _similarity_distribution(emb, eps) -> jax.Array:
    """[B, B] row-stochastic matrix of cosine similarities mapped to [0, 1]."""
    x = _flat(emb)
    x = x / (_safe_norm(x) + eps)
    sim = (x @ x.T + 1.0) / 2.0
    return sim / jnp.sum(sim, axis=1, keepdims=True)


def pkt(student_emb, teacher_emb, *, eps=1e-7) -> jax.Array:
    """Probabilistic knowledge transfer: matches cosine-similarity distributions.

    Each embedding is divided by ``||x|| + eps``; ``K = (X X^T + 1) / 2`` maps
    the cosine similarities to [0, 1]; ``P = K / rowsum(K)`` turns each row
    into a distribution over the batch. Then
    ``pkt = mean_{i, j} P_t[i, j] * log((P_t[i, j] + eps) / (P_s[i, j] + eps))``:
    the mean over all B^2 entries, i.e. the row KL(P_t[i] || P_s[i]) (with
    eps) averaged over rows and divided by ``B``. This is RepDistiller's
    ``distiller_zoo/PKT.py`` (the authors' code); the paper's
    ``sum_i sum_j`` differs by the constant ``B^2`` (absorbed in the loss
    weight, 30000 on CIFAR-100). RepDistiller applies it to the pooled
    penultimate features, whose widths may differ. RepDistiller also replaces
    NaNs in the normalised embeddings by 0; that only matters for NaN inputs
    and is not reproduced (an all-zero embedding stays zero here, with a finite
    gradient).

    Passalis & Tefas (2018), "Learning Deep Representations with Probabilistic
    Knowledge Transfer".

    Args:
      student_emb: [B, D_s] student embeddings (or [B, ...], flattened), any
        float dtype.
      teacher_emb: [B, D_t] teacher embeddings with the same batch size.
      eps: stabiliser added to norms and probabilities (RepDistiller's 1e-7).

    Returns:
      Scalar float32 loss.

    Raises:
      ValueError: if either input has rank < 2 or the batch sizes differ.
    """
    _checks.check_min_rank("student_emb", student_emb, 2, "[batch, dim]")
    _checks.check_min_rank("teacher_emb", teacher_emb, 2, "[batch, dim]")
    if jnp.shape(teacher_emb)[0] != jnp.shape(student_emb)[0]:
        raise ValueError(
            f"teacher_emb: expected batch size {jnp.shape(student_emb)[0]} to match student_emb "
            f"(shape {_checks.fmt_shape(jnp.shape(student_emb))}), got shape "
            f"{_checks.fmt_shape(jnp.shape(teacher_emb))}"
        )
    p_s = _similarity_distribution(student_emb, eps)
    p_t = _similarity_distribution(teacher_emb, eps)
    return jnp.mean(p_t * jnp.log((p_t + eps) / (p_s + eps)))

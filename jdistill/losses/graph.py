"""Instance relationship graph (IRG) distillation.

Liu, Cao, Li, Yuan, Hu, Li & Duan (2019), "Knowledge Distillation via Instance
Relationship Graph", CVPR. A batch forms a graph per layer: its vertices are the
instances' features, its edges their squared Euclidean distances. The student
matches the teacher's vertices (on the logits), edges (on chosen layers) and the
*IRG transformation*: how far each instance moves between two layers of a model.

Normalisation: each edge matrix, and each transformation vector, is divided by
its largest entry (as the widely used re-implementation of the authors' Caffe
code does), so the terms compare shapes of graphs, not magnitudes: they are
invariant to scaling the features of either model (and the edges to translating
them). RKD (:mod:`jdistill.losses.relational`) divides plain distances by their
mean instead.
"""

import jax
import jax.numpy as jnp

from jdistill.losses import _checks
from jdistill.losses.feature_transfer import _match_spatial, _pool_matrix
from jdistill.losses.features import feature_mse

# Floor on the largest entry a matrix is divided by: an all-zero graph (every
# instance identical) stays zero instead of giving 0 / 0.
_MAX_EPS = 1e-12

# Full float32 accuracy for the Gram matrix: squared distances are differences of
# similar sums, and float32 products may run in TF32 on recent NVIDIA GPUs.
_HIGHEST = jax.lax.Precision.HIGHEST


def _check_batch(name: str, x, ref_name: str, ref) -> None:
    """The batch sizes agree (the ranks may differ: a map may be compared with a vector)."""
    if jnp.shape(x)[0] != jnp.shape(ref)[0]:
        raise ValueError(
            f"{name}: expected batch size {jnp.shape(ref)[0]} to match {ref_name} (shape "
            f"{_checks.fmt_shape(jnp.shape(ref))}), got shape {_checks.fmt_shape(jnp.shape(x))}"
        )


def _flat(x) -> jax.Array:
    x = jnp.asarray(x).astype(jnp.float32)
    return x.reshape(x.shape[0], -1)


def _pool_last(x, size: int) -> jax.Array:
    """1-D adaptive average pooling of the last axis to ``size`` (PyTorch's bins)."""
    if x.shape[-1] == size:
        return x
    return jnp.einsum("...c,dc->...d", x, _pool_matrix(x.shape[-1], size), precision=_HIGHEST)


def _max_normalised(x) -> jax.Array:
    return x / jnp.maximum(jnp.max(x), _MAX_EPS)


def irg_edge_matrix(feat) -> jax.Array:
    """The IRG edges of one layer: squared distances between instances, over their maximum.

    ``A_ij = ||f_i - f_j||^2 / max_kl ||f_k - f_l||^2`` with ``f_i`` the flattened
    features of instance ``i``. Built from the Gram matrix (``|f_i|^2 + |f_j|^2 -
    2 <f_i, f_j>``, clamped at 0, diagonal set to 0), so memory is [B, B] rather
    than [B, B, D]. Computed in float32.

    Args:
      feat: [B, ...] features of a batch (flattened per instance).

    Returns:
      [B, B] float32 symmetric matrix in [0, 1], zero on the diagonal.

    Raises:
      ValueError: if ``feat`` has rank < 2.
    """
    _checks.check_min_rank("feat", feat, 2, "[batch, ...]")
    f = _flat(feat)
    sq = jnp.sum(jnp.square(f), axis=-1)
    gram = jnp.matmul(f, f.T, precision=_HIGHEST)
    dist = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
    dist = jnp.where(jnp.eye(f.shape[0], dtype=bool), 0.0, dist)
    return _max_normalised(dist)


def irg_vertex(student_logits, teacher_logits) -> jax.Array:
    """IRG vertex loss on the logits: per-example mean squared difference.

    ``L_V,b = mean_c (s_bc - t_bc)^2`` (the batch mean is PyTorch's
    ``mse_loss(s, t)``). Computed in float32.

    Liu et al. (2019), "Knowledge Distillation via Instance Relationship Graph".

    Args:
      student_logits: [B, C] student logits.
      teacher_logits: [B, C] teacher logits.

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: if either input is not rank 2 or the shapes differ.
    """
    _checks.check_rank("student_logits", student_logits, 2, "[batch, classes]")
    _checks.check_rank("teacher_logits", teacher_logits, 2, "[batch, classes]")
    _checks.check_match("teacher_logits", teacher_logits, "student_logits", student_logits)
    return feature_mse(student_logits, teacher_logits)


def irg_edge(student_feat, teacher_feat) -> jax.Array:
    """IRG edge loss of one layer: matches the normalised distance matrices.

    ``L_E = mean_ij (A(s)_ij - A(t)_ij)^2`` with ``A`` :func:`irg_edge_matrix`.
    Invariant to scaling and translating either batch's features. Feature sizes
    may differ between student and teacher (only the batch must agree).

    Liu et al. (2019), "Knowledge Distillation via Instance Relationship Graph".

    Args:
      student_feat: [B, ...] student features of one layer.
      teacher_feat: [B, ...] teacher features of one layer, any size per instance.

    Returns:
      Scalar float32 loss.

    Raises:
      ValueError: if either input has rank < 2 or the batch sizes differ.
    """
    _checks.check_min_rank("student_feat", student_feat, 2, "[batch, ...]")
    _checks.check_min_rank("teacher_feat", teacher_feat, 2, "[batch, ...]")
    _check_batch("teacher_feat", teacher_feat, "student_feat", student_feat)
    return jnp.mean(jnp.square(irg_edge_matrix(student_feat) - irg_edge_matrix(teacher_feat)))


def irg_match_sizes(early, late) -> tuple[jax.Array, jax.Array]:
    """Brings one model's features at two layers to a common size, without parameters.

    The IRG transformation compares an instance's features at two layers of the
    same model, which usually differ in size. Spatial sizes: NHWC maps are
    adaptive-average-pooled to the smaller map's (H, W); a map compared with a
    vector is averaged over all positions first. Then the longer of the two
    (flattened) vectors is adaptive-average-pooled along its length to the
    shorter's: for a map with twice the channels of the other, this averages
    channel pairs, as the re-implementation of the authors' code does.

    Args:
      early: [B, ...] features of the earlier layer (rank 2 or 4, NHWC).
      late: [B, ...] features of the later layer (rank 2 or 4, NHWC).

    Returns:
      ``(early, late)`` as [B, D] float32 arrays of equal ``D``.

    Raises:
      ValueError: if either input is not rank 2 or 4 or the batch sizes differ.
    """
    for name, x in (("early", early), ("late", late)):
        if jnp.ndim(x) not in (2, 4):
            raise ValueError(
                f"{name}: expected rank 2 [batch, dim] or 4 [batch, height, width, channels], "
                f"got shape {_checks.fmt_shape(jnp.shape(x))}"
            )
    _check_batch("late", late, "early", early)
    a, b = jnp.asarray(early).astype(jnp.float32), jnp.asarray(late).astype(jnp.float32)
    if a.ndim == 4 and b.ndim == 4:
        a, b = _match_spatial(a, b)
        # Then channels, per position: the same map pooled along its last axis.
        a, b = (_pool_last(x, min(a.shape[-1], b.shape[-1])) for x in (a, b))
    a = jnp.mean(a, axis=(1, 2)) if a.ndim == 4 and b.ndim == 2 else a
    b = jnp.mean(b, axis=(1, 2)) if b.ndim == 4 and a.ndim == 2 else b
    a, b = _flat(a), _flat(b)
    return tuple(_pool_last(x, min(a.shape[-1], b.shape[-1])) for x in (a, b))


def irg_transformation(student_early, student_late, teacher_early, teacher_late) -> jax.Array:
    """IRG transformation loss: matches how far each instance moves between two layers.

    ``theta(e, l)_i = ||e_i - l_i||^2 / max_k ||e_k - l_k||^2`` for one model's
    features ``e`` (earlier layer) and ``l`` (later layer) of equal size;
    ``L_T = mean_i (theta(s_e, s_l)_i - theta(t_e, t_l)_i)^2``. Invariant to scaling
    both layers of one model by the same factor. Bring each model's two layers to a
    common size first, e.g. with :func:`irg_match_sizes`; the student's size may
    differ from the teacher's.

    Liu et al. (2019), "Knowledge Distillation via Instance Relationship Graph".

    Args:
      student_early: [B, ...] student features at the earlier layer.
      student_late: student features at the later layer, the shape of ``student_early``.
      teacher_early: [B, ...] teacher features at the earlier layer.
      teacher_late: teacher features at the later layer, the shape of ``teacher_early``.

    Returns:
      Scalar float32 loss.

    Raises:
      ValueError: if an input has rank < 2, a model's two layers differ in shape, or
        the batch sizes differ.
    """
    hint = "Bring a model's two layers to one size first, e.g. with jdistill.losses.irg_match_sizes."
    _checks.check_min_rank("student_early", student_early, 2, "[batch, ...]")
    _checks.check_min_rank("teacher_early", teacher_early, 2, "[batch, ...]")
    _checks.check_match("student_late", student_late, "student_early", student_early, hint=hint)
    _checks.check_match("teacher_late", teacher_late, "teacher_early", teacher_early, hint=hint)
    _check_batch("teacher_early", teacher_early, "student_early", student_early)

    def theta(early, late):
        return _max_normalised(jnp.sum(jnp.square(_flat(early) - _flat(late)), axis=-1))

    return jnp.mean(jnp.square(theta(student_early, student_late) - theta(teacher_early, teacher_late)))


def irg(
    student_logits,
    teacher_logits,
    student_feats,
    teacher_feats,
    *,
    vertex_weight=0.1,
    edge_weight=5.0,
    transformation_weight=5.0,
) -> jax.Array:
    """The IRG loss: vertices on the logits, edges on every given layer, transformations
    between consecutive given layers.

    ``irg = vertex_weight * mean_b L_V + edge_weight * mean_layers L_E +
    transformation_weight * mean_consecutive L_T``, with :func:`irg_vertex`,
    :func:`irg_edge` and :func:`irg_transformation` (each pair of consecutive
    layers brought to one size by :func:`irg_match_sizes`). The default weights
    (0.1, 5, 5) are those of the widely used re-implementation.

    Liu et al. (2019), "Knowledge Distillation via Instance Relationship Graph".

    Args:
      student_logits: [B, C] student logits.
      teacher_logits: [B, C] teacher logits.
      student_feats: sequence of the student's features, earlier layers first.
      teacher_feats: the teacher's features at the corresponding layers (same count).
      vertex_weight, edge_weight, transformation_weight: the terms' weights.

    Returns:
      Scalar float32 loss.

    Raises:
      ValueError: if the feature lists are empty or differ in length, or as the terms.
    """
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(
            f"student_feats, teacher_feats: expected the same number (>= 1) of layers, got "
            f"{len(student_feats)} and {len(teacher_feats)}"
        )
    vertex = jnp.mean(irg_vertex(student_logits, teacher_logits))
    edge = jnp.mean(jnp.stack([irg_edge(s, t) for s, t in zip(student_feats, teacher_feats)]))
    loss = vertex_weight * vertex + edge_weight * edge
    pairs = list(zip(student_feats[:-1], student_feats[1:], teacher_feats[:-1], teacher_feats[1:]))
    if pairs:
        terms = [
            irg_transformation(*irg_match_sizes(se, sl), *irg_match_sizes(te, tl)) for se, sl, te, tl in pairs
        ]
        loss = loss + transformation_weight * jnp.mean(jnp.stack(terms))
    return loss

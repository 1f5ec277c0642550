"""Tests for jdistill.losses.graph: IRG vertices, edges, transformation and the combined loss."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses

# Most tests call jitted losses (eager dispatch compiles each primitive on its own, slowly on
# CPU); the eager path is covered by the jit-vs-eager test and the validation tests.
irg_vertex = jax.jit(losses.irg_vertex)
irg_edge = jax.jit(losses.irg_edge)
irg_transformation = jax.jit(losses.irg_transformation)
irg_match_sizes = jax.jit(losses.irg_match_sizes)


def _x(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ------------------------------------------------------ numpy references (float64, loops)


def _ref_edges(feat):
    f = np.asarray(feat, np.float64).reshape(len(feat), -1)
    b = len(f)
    a = np.zeros((b, b))
    for i, j in itertools.product(range(b), repeat=2):
        a[i, j] = np.sum((f[i] - f[j]) ** 2)
    return a / a.max()


def _ref_edge_loss(s, t):
    return np.mean((_ref_edges(s) - _ref_edges(t)) ** 2)


def _ref_theta(early, late):
    e = np.asarray(early, np.float64).reshape(len(early), -1)
    z = np.asarray(late, np.float64).reshape(len(late), -1)
    d = np.array([np.sum((e[i] - z[i]) ** 2) for i in range(len(e))])
    return d / d.max()


def _ref_transformation(se, sl, te, tl):
    return np.mean((_ref_theta(se, sl) - _ref_theta(te, tl)) ** 2)


def _ref_pool_1d(x, n_out):
    """PyTorch's adaptive_avg_pool1d bins along the last axis."""
    n_in = x.shape[-1]
    cols = []
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        cols.append(x[..., start:end].mean(-1))
    return np.stack(cols, -1)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("batch,ds,dt", [(4, 3, 7), (6, 5, 5)])
def test_edge_matches_reference(batch, ds, dt):
    s, t = _x(0, batch, ds), _x(1, batch, dt) * 3.0
    got = irg_edge(s, t)
    chex.assert_shape(got, ())
    assert got.dtype == jnp.float32
    chex.assert_trees_all_close(got, np.float32(_ref_edge_loss(s, t)), rtol=1e-4, atol=1e-7)
    chex.assert_trees_all_close(losses.irg_edge_matrix(s), _ref_edges(s).astype(np.float32), atol=1e-5)


def test_edge_hand_computed():
    # Three points on a line at 0, 1, 3: squared distances 1, 9, 4, maximum 9.
    s = np.array([[0.0], [1.0], [3.0]], np.float32)
    want = np.array([[0, 1, 9], [1, 0, 4], [9, 4, 0]], np.float32) / 9.0
    chex.assert_trees_all_close(losses.irg_edge_matrix(s), want, atol=1e-6)
    # Against an equilateral teacher (every normalised edge 1): mean of squared differences.
    t = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]], np.float32)
    ones = 1.0 - np.eye(3)
    chex.assert_trees_all_close(irg_edge(s, t), np.mean((want - ones) ** 2), rtol=1e-5)


def test_edge_of_feature_maps_flattens_instances():
    s, t = _x(2, 5, 4, 4, 3), _x(3, 5, 2, 2, 8)
    chex.assert_trees_all_close(irg_edge(s, t), irg_edge(s.reshape(5, -1), t.reshape(5, -1)), rtol=1e-6)
    chex.assert_trees_all_close(irg_edge(s, t), np.float32(_ref_edge_loss(s, t)), rtol=1e-4)


def test_vertex_matches_reference():
    s, t = _x(4, 5, 10), _x(5, 5, 10)
    got = irg_vertex(s, t)
    chex.assert_shape(got, (5,))
    chex.assert_trees_all_close(got, np.mean((s - t) ** 2, axis=1), rtol=1e-6)


@pytest.mark.parametrize("de,dl,dt", [(6, 6, 4), (3, 3, 9)])
def test_transformation_matches_reference(de, dl, dt):
    se, sl, te, tl = _x(6, 5, de), _x(7, 5, dl), _x(8, 5, dt), _x(9, 5, dt)
    got = irg_transformation(se, sl, te, tl)
    chex.assert_shape(got, ())
    chex.assert_trees_all_close(got, np.float32(_ref_transformation(se, sl, te, tl)), rtol=1e-5)


def test_transformation_hand_computed():
    # Student: instances move by squared distances 1 and 4 -> theta (1/4, 1);
    # teacher: 2 and 2 -> theta (1, 1). Loss: mean((3/4)^2, 0) = 9/32.
    se = np.array([[0.0], [0.0]], np.float32)
    sl = np.array([[1.0], [2.0]], np.float32)
    te = np.zeros((2, 2), np.float32)
    tl = np.ones((2, 2), np.float32)
    chex.assert_trees_all_close(irg_transformation(se, sl, te, tl), np.float32(9 / 32), rtol=1e-6)


def test_match_sizes_vectors_pool_the_longer():
    e, z = _x(10, 4, 10), _x(11, 4, 4)
    a, b = irg_match_sizes(e, z)
    chex.assert_shape((a, b), (4, 4))
    chex.assert_trees_all_close(a, _ref_pool_1d(e, 4), atol=1e-6)
    chex.assert_trees_all_close(b, z, atol=1e-6)


def test_match_sizes_maps_pool_space_then_channel_pairs():
    # The earlier map is larger in space and has half the channels of the later one:
    # space is average-pooled 2x2, and the later map's channel pairs are averaged.
    e, z = _x(12, 3, 8, 8, 4), _x(13, 3, 4, 4, 8)
    a, b = irg_match_sizes(e, z)
    want_e = e.reshape(3, 4, 2, 4, 2, 4).mean(axis=(2, 4)).reshape(3, -1)
    want_z = ((z[..., 0::2] + z[..., 1::2]) / 2).reshape(3, -1)
    chex.assert_trees_all_close((a, b), (want_e, want_z), atol=1e-6)


def test_match_sizes_map_and_vector():
    # A map against a vector: the map is averaged over positions, then the longer is pooled.
    e, z = _x(14, 2, 5, 5, 6), _x(15, 2, 12)
    a, b = irg_match_sizes(e, z)
    chex.assert_trees_all_close((a, b), (e.mean(axis=(1, 2)), _ref_pool_1d(z, 6)), atol=1e-6)


def test_combined_is_the_weighted_sum_of_the_terms():
    s_logits, t_logits = _x(16, 6, 10), _x(17, 6, 10)
    s_feats = [_x(18, 6, 4, 4, 3), _x(19, 6, 12)]
    t_feats = [_x(20, 6, 4, 4, 5), _x(21, 6, 20)]
    got = jax.jit(lambda *a: losses.irg(*a, vertex_weight=0.5, edge_weight=2.0, transformation_weight=3.0))(
        s_logits, t_logits, s_feats, t_feats
    )
    vertex = np.mean((s_logits - t_logits) ** 2)
    edge = np.mean([_ref_edge_loss(a, b) for a, b in zip(s_feats, t_feats)])
    transformation = irg_transformation(
        *irg_match_sizes(s_feats[0], s_feats[1]), *irg_match_sizes(t_feats[0], t_feats[1])
    )
    chex.assert_trees_all_close(got, np.float32(0.5 * vertex + 2.0 * edge + 3.0 * transformation), rtol=1e-5)
    # One layer: no transformation term.
    one = losses.irg(s_logits, t_logits, s_feats[1:], t_feats[1:], vertex_weight=0.0, edge_weight=1.0)
    chex.assert_trees_all_close(one, np.float32(_ref_edge_loss(s_feats[1], t_feats[1])), rtol=1e-5)


# ---------------------------------------------------------------- properties


def test_zero_when_student_is_teacher():
    logits, early, late = _x(22, 5, 10), _x(23, 5, 6, 6, 4), _x(24, 5, 16)
    pair = irg_match_sizes(early, late)
    values = (
        irg_vertex(logits, logits),
        irg_edge(late, late),
        irg_transformation(*pair, *pair),
        losses.irg(logits, logits, [early, late], [early, late]),
    )
    # Zero up to rounding (XLA may fuse the two sides' identical computations differently).
    chex.assert_trees_all_close(values, jax.tree.map(jnp.zeros_like, values), atol=1e-12)


def test_edge_invariant_to_scaling_and_translating_either_side():
    s, t = _x(25, 6, 4), _x(26, 6, 9)
    base = irg_edge(s, t)
    chex.assert_trees_all_close(irg_edge(3.0 * s + 5.0, t), base, rtol=1e-4, atol=1e-6)
    chex.assert_trees_all_close(irg_edge(s, 0.1 * t - 2.0), base, rtol=1e-4, atol=1e-6)
    # ... and to a rotation (any orthogonal map): distances are unchanged.
    q, _ = np.linalg.qr(_x(27, 4, 4))
    chex.assert_trees_all_close(irg_edge(s @ q.astype(np.float32), t), base, rtol=1e-4, atol=1e-6)


def test_transformation_invariant_to_scaling_one_model():
    se, sl, te, tl = _x(28, 5, 6), _x(29, 5, 6), _x(30, 5, 3), _x(31, 5, 3)
    base = irg_transformation(se, sl, te, tl)
    chex.assert_trees_all_close(irg_transformation(4.0 * se, 4.0 * sl, te, tl), base, rtol=1e-5)
    chex.assert_trees_all_close(irg_transformation(se, sl, 0.2 * te, 0.2 * tl), base, rtol=1e-5)


def test_edge_is_not_blind_to_relations():
    # Same points, one moved: the loss must see it (a test that cannot fail is a defect).
    s = _x(32, 6, 4)
    moved = s.copy()
    moved[0] += 3.0
    assert float(irg_edge(s, moved)) > 1e-3


def test_all_zero_batch_is_finite():
    z = np.zeros((4, 3), np.float32)
    chex.assert_trees_all_equal(losses.irg_edge_matrix(z), np.zeros((4, 4), np.float32))
    chex.assert_tree_all_finite((irg_edge(z, _x(33, 4, 3)), irg_transformation(z, z, z, z)))


def test_computes_in_float32():
    s, t = _x(34, 4, 6).astype(jnp.bfloat16), _x(35, 4, 6).astype(jnp.float16)
    for value in (irg_vertex(s, t), irg_edge(s, t), irg_transformation(s, s, t, t)):
        assert value.dtype == jnp.float32


# ---------------------------------------------------------------- gradients, jit, vmap


def test_gradients_finite_and_match_finite_differences():
    s_logits, t_logits = _x(36, 4, 5), _x(37, 4, 5)
    s_feats, t_feats = [_x(38, 4, 3, 3, 2), _x(39, 4, 6)], [_x(40, 4, 3, 3, 4), _x(41, 4, 8)]
    # A duplicated instance: zero distance, where a square root would have an infinite slope.
    s_feats[1][1] = s_feats[1][0]

    def f(sl, s0, s1):
        return losses.irg(sl, t_logits, [s0, s1], t_feats)

    grads = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(s_logits, *s_feats)
    chex.assert_tree_all_finite(grads)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in grads)
    direction = _x(42, 4, 6)
    eps = 1e-2
    f64 = jax.jit(f)
    numeric = (
        f64(s_logits, s_feats[0], s_feats[1] + eps * direction)
        - f64(s_logits, s_feats[0], s_feats[1] - eps * direction)
    ) / (2 * eps)
    chex.assert_trees_all_close(jnp.sum(grads[2] * direction), numeric, rtol=2e-2, atol=1e-4)


def test_jit_and_vmap_agree_with_eager():
    s, t = _x(43, 3, 5, 4), _x(44, 3, 5, 6)
    for fn, jitted, other in ((losses.irg_edge, irg_edge, t), (losses.irg_vertex, irg_vertex, t[..., :4])):
        eager = jnp.stack([fn(s[k], other[k]) for k in range(3)])
        chex.assert_trees_all_close(jax.vmap(jitted)(s, other), eager, rtol=1e-6)
        chex.assert_trees_all_close(jitted(s[0], other[0]), fn(s[0], other[0]), rtol=1e-6)
    eager = jnp.stack([losses.irg_transformation(s[k], s[k] + 1.0, t[k], 2.0 * t[k]) for k in range(3)])
    chex.assert_trees_all_close(jax.vmap(irg_transformation)(s, s + 1.0, t, 2.0 * t), eager, rtol=1e-6)


# ---------------------------------------------------------------- validation


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="teacher_logits"):
        losses.irg_vertex(_x(0, 4, 10), _x(0, 4, 9))
    with pytest.raises(ValueError, match="student_logits"):
        losses.irg_vertex(_x(0, 4), _x(0, 4))
    with pytest.raises(ValueError, match="teacher_feat"):
        losses.irg_edge(_x(0, 4, 3), _x(0, 5, 3))
    with pytest.raises(ValueError, match="student_feat"):
        losses.irg_edge(_x(0, 4), _x(0, 4, 3))
    with pytest.raises(ValueError, match="irg_match_sizes"):
        losses.irg_transformation(_x(0, 4, 3), _x(0, 4, 5), _x(0, 4, 2), _x(0, 4, 2))
    with pytest.raises(ValueError, match="teacher_early"):
        losses.irg_transformation(_x(0, 4, 3), _x(0, 4, 3), _x(0, 5, 2), _x(0, 5, 2))
    with pytest.raises(ValueError, match="early"):
        losses.irg_match_sizes(_x(0, 4, 3, 3), _x(0, 4, 3))
    with pytest.raises(ValueError, match="late"):
        losses.irg_match_sizes(_x(0, 4, 3), _x(0, 5, 3))
    with pytest.raises(ValueError, match="same number"):
        losses.irg(_x(0, 4, 3), _x(0, 4, 3), [_x(0, 4, 3)], [])

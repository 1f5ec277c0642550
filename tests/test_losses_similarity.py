"""Tests for jdistill.losses.similarity: sp, cc, pkt."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.losses import similarity

# Jitted once at module level: eager op-by-op dispatch is slow on CPU. The
# eager path is covered by the jit-vs-eager and validation tests.
sp = jax.jit(similarity.sp)
cc = jax.jit(similarity.cc)
pkt = jax.jit(similarity.pkt)


def _x(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _ref_sp(fs, ft):
    """Tung & Mori as RepDistiller: row-normalised Gram matrices, float64 loops."""

    def gram(f):
        f = np.asarray(f, np.float64).reshape(len(f), -1)
        b = len(f)
        g = np.array([[sum(f[i] * f[j]) for j in range(b)] for i in range(b)])
        return np.stack([row / max(math.sqrt(sum(row**2)), 1e-12) for row in g])

    b = len(fs)
    return sum((gram(ft) - gram(fs)).ravel() ** 2) / (b * b)


def _ref_cc(s, t):
    """RepDistiller's CC: consecutive-pair products of |s - t|, float64 loops."""
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    d = np.abs(s - t)
    return np.mean([sum(d[i] * d[i + 1]) for i in range(len(s) - 1)])


def _ref_pkt(s, t, eps=1e-7):
    """RepDistiller's PKT, float64 loops."""

    def dist(x):
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        x = np.stack([v / (math.sqrt(sum(v**2)) + eps) for v in x])
        b = len(x)
        k = np.array([[(x[i] @ x[j] + 1) / 2 for j in range(b)] for i in range(b)])
        return k / k.sum(axis=1, keepdims=True)

    p_s, p_t = dist(s), dist(t)
    b = len(p_s)
    terms = [
        p_t[i, j] * math.log((p_t[i, j] + eps) / (p_s[i, j] + eps))
        for i, j in itertools.product(range(b), repeat=2)
    ]
    return sum(terms) / (b * b)


def _fd_grad(f, x, h=1e-5):
    """Central differences of a float64 numpy function of ``x``."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        g[i] = (f(up) - f(down)) / (2 * h)
    return g


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("s_shape,t_shape", [((4, 3, 2, 2), (4, 7)), ((6, 5), (6, 2, 3))])
def test_sp_matches_reference(s_shape, t_shape):
    fs, ft = _x(0, *s_shape), _x(1, *t_shape)
    got = sp(fs, ft)
    chex.assert_shape(got, ())
    assert got.dtype == jnp.float32
    chex.assert_trees_all_close(got, np.float32(_ref_sp(fs, ft)), rtol=1e-5)


def test_cc_matches_reference():
    s, t = _x(2, 5, 4), _x(3, 5, 4)
    got = cc(s, t)
    chex.assert_shape(got, ())
    assert got.dtype == jnp.float32
    chex.assert_trees_all_close(got, np.float32(_ref_cc(s, t)), rtol=1e-5)


def test_cc_hand_example():
    s = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]], np.float32)
    t = np.zeros((3, 2), np.float32)
    # d = |s|: <d0, d1> = 0, <d1, d2> = 2; mean over the 2 pairs = 1.
    chex.assert_trees_all_close(cc(s, t), 1.0)


@pytest.mark.parametrize("s_dim,t_dim", [(3, 5), (8, 8)])
def test_pkt_matches_reference(s_dim, t_dim):
    s, t = _x(4, 5, s_dim), _x(5, 5, t_dim)
    got = pkt(s, t)
    chex.assert_shape(got, ())
    assert got.dtype == jnp.float32
    chex.assert_trees_all_close(got, np.float32(_ref_pkt(s, t)), rtol=1e-4)


# ------------------------------------------------------------ properties


def test_zero_when_student_equals_teacher():
    f, e = _x(6, 4, 2, 3), _x(7, 5, 6)
    chex.assert_trees_all_close((sp(f, f), cc(e, e), pkt(e, e)), (0.0, 0.0, 0.0), atol=1e-7)


def test_sp_and_pkt_are_invariant_to_feature_scale():
    fs, ft = _x(8, 4, 6), _x(9, 4, 3)
    chex.assert_trees_all_close(sp(3.0 * fs, 0.2 * ft), sp(fs, ft), rtol=1e-5)
    chex.assert_trees_all_close(pkt(3.0 * fs, 0.2 * ft), pkt(fs, ft), rtol=1e-4)
    # Positive scale per example too: cosine similarities do not change.
    scale = np.array([[0.5], [2.0], [1.0], [4.0]], np.float32)
    chex.assert_trees_all_close(pkt(scale * fs, ft), pkt(fs, ft), rtol=1e-4)


def test_pkt_is_nonnegative_kl():
    for seed in range(3):
        assert float(pkt(_x(10 + seed, 6, 4), _x(20 + seed, 6, 5))) > 0.0


def test_cc_depends_on_batch_order():
    # Only consecutive examples are paired: reordering the batch changes it.
    s, t = _x(11, 5, 4), _x(12, 5, 4)
    perm = np.array([0, 2, 4, 1, 3])
    chex.assert_trees_all_close(cc(s[perm], t[perm]), np.float32(_ref_cc(s[perm], t[perm])), rtol=1e-5)
    assert not np.isclose(float(cc(s[perm], t[perm])), float(cc(s, t)), rtol=1e-3)


def test_gradients_match_finite_differences():
    fs, ft = _x(13, 3, 2, 2), _x(14, 3, 5)
    s, t, et = _x(15, 4, 3), _x(16, 4, 3), _x(25, 4, 5)
    g_sp = jax.jit(jax.grad(lambda fs: similarity.sp(fs, ft)))(fs)
    g_cc = jax.jit(jax.grad(lambda s: similarity.cc(s, t)))(s)
    g_pkt = jax.jit(jax.grad(lambda s: similarity.pkt(s, et)))(s)
    chex.assert_trees_all_close(
        g_sp, _fd_grad(lambda x: _ref_sp(x, ft), fs).astype(np.float32), atol=1e-5, rtol=1e-3
    )
    chex.assert_trees_all_close(
        g_cc, _fd_grad(lambda x: _ref_cc(x, t), s).astype(np.float32), atol=1e-5, rtol=1e-3
    )
    chex.assert_trees_all_close(
        g_pkt, _fd_grad(lambda x: _ref_pkt(x, et), s).astype(np.float32), atol=1e-6, rtol=1e-3
    )


def test_gradients_finite_for_zero_examples():
    # An all-zero example has a zero Gram row / zero normalised embedding.
    fs, ft = _x(17, 4, 6), _x(18, 4, 5)
    fs[1] = 0.0
    zeros = np.zeros((4, 6), np.float32)

    def total(fs, ft):
        return similarity.sp(fs, ft) + similarity.pkt(fs, ft) + similarity.cc(fs, fs + 1.0)

    grad_fn = jax.jit(jax.grad(total, argnums=(0, 1)))
    for s in (fs, zeros):
        chex.assert_tree_all_finite(jax.jit(total)(s, ft))
        grads = grad_fn(s, ft)
        chex.assert_tree_all_finite(grads)
    assert float(jnp.abs(grad_fn(fs, ft)[0]).max()) > 0.0


# -------------------------------------------------------- transformations


def test_jit_matches_eager():
    fs, ft = _x(19, 4, 2, 3), _x(20, 4, 5)

    def f(fs, ft):
        e = fs.reshape(4, -1)
        return similarity.sp(fs, ft), similarity.cc(e, e[::-1]), similarity.pkt(fs, ft)

    chex.assert_trees_all_close(jax.jit(f)(fs, ft), f(fs, ft), rtol=1e-6, atol=1e-7)


def test_vmap_over_leading_axis_matches_loop():
    fs, ft = _x(21, 3, 4, 5), _x(22, 3, 4, 5)

    def f(fs, ft):
        return similarity.sp(fs, ft), similarity.cc(fs, ft), similarity.pkt(fs, ft)

    mapped = jax.jit(jax.vmap(f))(fs, ft)
    looped = [jax.jit(f)(fs[i], ft[i]) for i in range(3)]
    looped = jax.tree.map(lambda *xs: jnp.stack(xs), *looped)
    chex.assert_shape(mapped, (3,))
    chex.assert_trees_all_close(mapped, looped, rtol=1e-5, atol=1e-7)


def test_bfloat16_inputs_give_float32_outputs():
    fs, ft = _x(23, 4, 6), _x(24, 4, 6)
    fs16, ft16 = jnp.asarray(fs, jnp.bfloat16), jnp.asarray(ft, jnp.bfloat16)
    out16 = (sp(fs16, ft16), cc(fs16, ft16), pkt(fs16, ft16))
    chex.assert_trees_all_equal_dtypes(out16, (jnp.float32(0),) * 3)
    fs_r, ft_r = fs16.astype(jnp.float32), ft16.astype(jnp.float32)
    chex.assert_trees_all_close(
        out16, (sp(fs_r, ft_r), cc(fs_r, ft_r), pkt(fs_r, ft_r)), rtol=1e-6, atol=1e-7
    )


# ------------------------------------------------------------ validation

_F = np.zeros((8, 4), np.float32)


@pytest.mark.parametrize(
    "call,pattern",
    [
        (
            lambda: similarity.sp(_F, np.zeros((7, 4))),
            r"teacher_feat: expected batch size 8 to match student_feat \(shape \[8, 4\]\), got shape \[7, 4\]",
        ),
        (
            lambda: similarity.sp(np.zeros(8), _F),
            r"student_feat: expected rank >= 2 \[batch, \.\.\.\], got shape \[8\]",
        ),
        (lambda: similarity.sp(_F, np.zeros(8)), r"teacher_feat: expected rank >= 2"),
        (
            lambda: similarity.cc(_F, np.zeros((8, 5))),
            r"teacher_emb: expected shape \[8, 4\] to match student_emb, got \[8, 5\]\. CC compares",
        ),
        (
            lambda: similarity.cc(np.zeros((8, 4, 1)), _F),
            r"student_emb: expected rank 2 \[batch, dim\], got shape \[8, 4, 1\]",
        ),
        (
            lambda: similarity.cc(np.zeros((1, 4)), np.zeros((1, 4))),
            r"student_emb: expected a batch of at least 2",
        ),
        (
            lambda: similarity.pkt(_F, np.zeros((9, 4))),
            r"teacher_emb: expected batch size 8 to match student_emb \(shape \[8, 4\]\), got shape \[9, 4\]",
        ),
        (
            lambda: similarity.pkt(np.zeros(8), _F),
            r"student_emb: expected rank >= 2 \[batch, dim\], got shape \[8\]",
        ),
    ],
)
def test_invalid_inputs_raise(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_shape_errors_raise_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"teacher_emb: .*got shape \[7, 4\]"):
        pkt(_F, np.zeros((7, 4), np.float32))

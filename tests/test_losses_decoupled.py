"""Tests for jdistill.losses.decoupled: dkd, dkd_terms, dist, dist_terms."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses
from jdistill.losses import decoupled

SIZES = [(3, 2), (6, 5)]  # (batch, classes)

# Jitted once at module level: eager op-by-op dispatch is slow on CPU. The
# eager path is covered by the jit-vs-eager and validation tests.
dkd_terms = jax.jit(decoupled.dkd_terms)
dkd = jax.jit(decoupled.dkd)
dist_terms = jax.jit(decoupled.dist_terms)
dist = jax.jit(decoupled.dist)
kd = jax.jit(losses.kd)


def _logits(seed, batch, classes, scale=3.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal((batch, classes))).astype(np.float32)


def _labels(seed, batch, classes):
    return np.random.default_rng(seed).integers(0, classes, size=batch).astype(np.int32)


def _np_softmax(row):
    row = np.asarray(row, np.float64)
    e = np.exp(row - row.max())
    return e / e.sum()


def _np_kl(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


def _ref_dkd_terms(s, t, labels, temperature):
    """mdistiller's dkd_loss per example, float64 loops."""
    tckd, nckd = [], []
    for s_row, t_row, y in zip(s, t, labels):
        p_s = _np_softmax(np.asarray(s_row, np.float64) / temperature)
        p_t = _np_softmax(np.asarray(t_row, np.float64) / temperature)
        b_s = [p_s[y], p_s.sum() - p_s[y]]
        b_t = [p_t[y], p_t.sum() - p_t[y]]
        tckd.append(temperature**2 * _np_kl(b_t, b_s))
        others = [c for c in range(len(s_row)) if c != y]
        q_s = _np_softmax(np.asarray(s_row, np.float64)[others] / temperature)
        q_t = _np_softmax(np.asarray(t_row, np.float64)[others] / temperature)
        nckd.append(temperature**2 * _np_kl(q_t, q_s))
    return np.array(tckd), np.array(nckd)


def _ref_pearson(a, b, eps=1e-8):
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + eps))


def _ref_dist_terms(s, t, temperature):
    y_s = np.stack([_np_softmax(np.asarray(r, np.float64) / temperature) for r in s])
    y_t = np.stack([_np_softmax(np.asarray(r, np.float64) / temperature) for r in t])
    batch, classes = y_s.shape
    inter = np.mean([1 - _ref_pearson(y_s[i], y_t[i]) for i in range(batch)])
    intra = np.mean([1 - _ref_pearson(y_s[:, c], y_t[:, c]) for c in range(classes)])
    return temperature**2 * inter, temperature**2 * intra


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


# ------------------------------------------------------------------- DKD


@pytest.mark.parametrize("batch,classes", SIZES)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_matches_mdistiller_reference(batch, classes, temperature):
    s, t, labels = _logits(0, batch, classes), _logits(1, batch, classes), _labels(2, batch, classes)
    tckd, nckd = dkd_terms(s, t, labels, temperature=temperature)
    for x in (tckd, nckd):
        chex.assert_shape(x, (batch,))
        assert x.dtype == jnp.float32
    want_tckd, want_nckd = _ref_dkd_terms(s, t, labels, temperature)
    chex.assert_trees_all_close(tckd, want_tckd.astype(np.float32), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(nckd, want_nckd.astype(np.float32), rtol=1e-5, atol=1e-6)
    got = dkd(s, t, labels, temperature=temperature, alpha=0.5, beta=3.0)
    chex.assert_trees_all_close(
        got, (0.5 * want_tckd + 3.0 * want_nckd).astype(np.float32), rtol=1e-5, atol=1e-6
    )


def test_dkd_defaults_are_mdistiller_cifar():
    s, t, labels = _logits(3, 4, 6), _logits(4, 4, 6), _labels(5, 4, 6)
    want_tckd, want_nckd = _ref_dkd_terms(s, t, labels, 4.0)
    chex.assert_trees_all_close(
        dkd(s, t, labels), (1.0 * want_tckd + 8.0 * want_nckd).astype(np.float32), rtol=1e-5
    )


def test_two_classes_have_no_non_target_term():
    s, t, labels = _logits(6, 3, 2), _logits(7, 3, 2), _labels(8, 3, 2)
    tckd, nckd = dkd_terms(s, t, labels, temperature=2.0)
    chex.assert_trees_all_close(nckd, jnp.zeros(3), atol=1e-6)
    # With two classes the binary distribution is the full one: TCKD is KD.
    chex.assert_trees_all_close(tckd, kd(s, t, temperature=2.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_decomposes_into_tckd_and_weighted_nckd(temperature):
    # KD = TCKD + (1 - p_t,y) NCKD (the paper's Eq. 5, both sides times T^2).
    s, t, labels = _logits(9, 6, 5), _logits(10, 6, 5), _labels(11, 6, 5)
    tckd, nckd = dkd_terms(s, t, labels, temperature=temperature)
    p_t_target = jax.nn.softmax(t / temperature)[np.arange(6), labels]
    chex.assert_trees_all_close(tckd + (1 - p_t_target) * nckd, kd(s, t, temperature=temperature), rtol=1e-4)


def test_t_squared_scaling():
    # Terms at temperature T are T^2 times the terms of logits / T at T = 1.
    s, t, labels = _logits(12, 5, 5), _logits(13, 5, 5), _labels(14, 5, 5)
    at_t = dkd_terms(s, t, labels, temperature=4.0)
    at_one = dkd_terms(s / 4.0, t / 4.0, labels, temperature=1.0)
    chex.assert_trees_all_close(at_t, jax.tree.map(lambda x: 16.0 * x, at_one), rtol=1e-5, atol=1e-6)


def test_dkd_zero_when_student_equals_teacher():
    s, labels = _logits(15, 6, 5), _labels(16, 6, 5)
    chex.assert_trees_all_close(
        dkd_terms(s, s, labels, temperature=4.0), (jnp.zeros(6), jnp.zeros(6)), atol=1e-6
    )


def test_dkd_gradient_matches_finite_differences():
    s, t, labels = _logits(17, 3, 4, scale=1.0), _logits(18, 3, 4, scale=1.0), _labels(19, 3, 4)
    w = np.array([0.7, -1.3, 2.0])

    def ref(s):
        tckd, nckd = _ref_dkd_terms(s, t, labels, 2.0)
        return float(w @ (1.5 * tckd + 0.5 * nckd))

    got = jax.jit(jax.grad(lambda s: jnp.dot(w, dkd(s, t, labels, temperature=2.0, alpha=1.5, beta=0.5))))(s)
    chex.assert_trees_all_close(got, _fd_grad(ref, s).astype(np.float32), rtol=1e-3, atol=1e-4)


def test_dkd_gradients_finite_with_extreme_logits():
    # The target probability underflows at T = 0.1 (mdistiller's log of summed
    # probabilities gives -inf there); values and gradients must stay finite.
    s = np.array([[0.0, 50.0, -50.0], [100.0, -100.0, 0.0]], np.float32)
    t = np.array([[100.0, -100.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    labels = np.array([0, 1], np.int32)
    total = jax.jit(lambda s, t: jnp.sum(decoupled.dkd(s, t, labels, temperature=0.1)))
    chex.assert_tree_all_finite(total(s, t))
    grads = jax.jit(jax.grad(total, argnums=(0, 1)))(s, t)
    chex.assert_tree_all_finite(grads)
    assert float(jnp.abs(grads[0]).max()) > 0.0


# ------------------------------------------------------------------ DIST


@pytest.mark.parametrize("batch,classes", SIZES)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dist_matches_reference(batch, classes, temperature):
    s, t = _logits(20, batch, classes), _logits(21, batch, classes)
    inter, intra = dist_terms(s, t, temperature=temperature)
    for x in (inter, intra):
        chex.assert_shape(x, ())
        assert x.dtype == jnp.float32
    want_inter, want_intra = _ref_dist_terms(s, t, temperature)
    chex.assert_trees_all_close(inter, np.float32(want_inter), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(intra, np.float32(want_intra), rtol=1e-5, atol=1e-6)
    got = dist(s, t, temperature=temperature, beta=2.0, gamma=0.5)
    chex.assert_trees_all_close(got, np.float32(2.0 * want_inter + 0.5 * want_intra), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(
        dist(s, t, temperature=temperature), np.float32(want_inter + want_intra), rtol=1e-5, atol=1e-6
    )


def test_dist_zero_when_student_equals_teacher():
    s = _logits(22, 6, 5)
    chex.assert_trees_all_close(dist_terms(s, s, temperature=2.0), (0.0, 0.0), atol=1e-5)


def test_dist_only_sees_correlations():
    # Teacher rows that are affine images of the student's (a different map per
    # row) correlate perfectly: 1 - rho = 0 for the inter-class term, but the
    # class columns are not affine images of each other.
    s = _logits(23, 4, 6)
    y_s = np.asarray(jax.nn.softmax(s), np.float64)
    a = np.array([[0.9], [0.5], [0.2], [0.7]])
    y_t = a * y_s + (1 - a) / 6  # Still distributions; Pearson(y_s[b], y_t[b]) = 1.
    t = np.log(y_t).astype(np.float32)
    inter, intra = dist_terms(s, t, temperature=1.0)
    chex.assert_trees_all_close(inter, 0.0, atol=1e-5)
    assert float(intra) > 1e-3  # Columns are not affine images of each other.


def test_dist_single_example_batch():
    # One example: every class column has zero variance, correlation 0.
    s, t = _logits(24, 1, 5), _logits(25, 1, 5)
    inter, intra = dist_terms(s, t, temperature=2.0)
    chex.assert_trees_all_close(intra, 4.0, rtol=1e-6)
    chex.assert_trees_all_close(inter, np.float32(_ref_dist_terms(s, t, 2.0)[0]), rtol=1e-5)
    grads = jax.jit(jax.grad(lambda s, t: decoupled.dist(s, t, temperature=2.0), argnums=(0, 1)))(s, t)
    chex.assert_tree_all_finite(grads)


def test_dist_gradient_matches_finite_differences():
    s, t = _logits(26, 4, 3, scale=1.0), _logits(27, 4, 3, scale=1.0)

    def ref(s):
        inter, intra = _ref_dist_terms(s, t, 2.0)
        return 1.5 * inter + 0.5 * intra

    got = jax.jit(jax.grad(lambda s: dist(s, t, temperature=2.0, beta=1.5, gamma=0.5)))(s)
    chex.assert_trees_all_close(got, _fd_grad(ref, s).astype(np.float32), rtol=1e-3, atol=1e-4)


# -------------------------------------------------------- transformations


def test_jit_matches_eager_with_traced_hyperparameters():
    s, t, labels = _logits(28, 4, 6), _logits(29, 4, 6), _labels(30, 4, 6)
    traces = []

    def f(s, t, temperature, weight):
        traces.append(None)
        return (
            decoupled.dkd(s, t, labels, temperature=temperature, alpha=weight, beta=2.0 * weight),
            decoupled.dist(s, t, temperature=temperature, beta=weight, gamma=2.0),
        )

    jitted = jax.jit(f)
    got = [jitted(s, t, jnp.float32(temperature), jnp.float32(0.7)) for temperature in (1.0, 3.0)]
    assert len(traces) == 1  # A traced temperature does not retrace.
    chex.assert_trees_all_close(got[1], f(s, t, 3.0, 0.7), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(
        got[0],
        (
            dkd(s, t, labels, temperature=1.0, alpha=0.7, beta=1.4),
            dist(s, t, temperature=1.0, beta=0.7, gamma=2.0),
        ),
        rtol=1e-6,
    )


def test_vmap_over_leading_axis_matches_loop():
    s = np.stack([_logits(31 + i, 4, 5) for i in range(3)])
    t = np.stack([_logits(34 + i, 4, 5) for i in range(3)])
    labels = np.stack([_labels(37 + i, 4, 5) for i in range(3)])

    def f(s, t, labels):
        return decoupled.dkd(s, t, labels, temperature=2.0), decoupled.dist(s, t, temperature=2.0)

    mapped = jax.jit(jax.vmap(f))(s, t, labels)
    looped = [jax.jit(f)(s[i], t[i], labels[i]) for i in range(3)]
    looped = jax.tree.map(lambda *xs: jnp.stack(xs), *looped)
    chex.assert_shape(mapped, [(3, 4), (3,)])
    chex.assert_trees_all_close(mapped, looped, rtol=1e-5, atol=1e-6)


def test_bfloat16_inputs_give_float32_outputs():
    s, t, labels = _logits(40, 4, 6), _logits(41, 4, 6), _labels(42, 4, 6)
    s16, t16 = jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)
    out16 = (dkd(s16, t16, labels), dist(s16, t16))
    chex.assert_trees_all_equal_dtypes(out16, (jnp.zeros(4, jnp.float32), jnp.float32(0)))
    out_r = (
        dkd(s16.astype(jnp.float32), t16.astype(jnp.float32), labels),
        dist(s16.astype(jnp.float32), t16),
    )
    chex.assert_trees_all_close(out16, out_r, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ validation

_S = np.zeros((8, 10), np.float32)
_LABELS = np.zeros(8, np.int32)


@pytest.mark.parametrize(
    "call,pattern",
    [
        (
            lambda: decoupled.dkd(_S, np.zeros((8, 12)), _LABELS),
            r"teacher_logits: expected shape \[8, 10\] to match student_logits, got \[8, 12\]",
        ),
        (
            lambda: decoupled.dkd(np.zeros(10), np.zeros(10), _LABELS),
            r"student_logits: expected rank 2 \[batch, classes\], got shape \[10\]",
        ),
        (
            lambda: decoupled.dkd_terms(np.zeros((8, 1)), np.zeros((8, 1)), _LABELS),
            r"student_logits: expected at least 2 classes .*got shape \[8, 1\]",
        ),
        (lambda: decoupled.dkd(_S, _S, np.zeros(7, np.int32)), r"labels: expected shape \[8\].*got \[7\]"),
        (
            lambda: decoupled.dkd(_S, _S, np.zeros(8, np.float32)),
            r"labels: expected integer class indices of shape \[8\], got float32",
        ),
        (lambda: decoupled.dkd(_S, _S, _LABELS, temperature=0.0), r"temperature: expected a positive scalar"),
        (
            lambda: decoupled.dist(_S, np.zeros((7, 10))),
            r"teacher_logits: expected shape \[8, 10\].*got \[7, 10\]",
        ),
        (
            lambda: decoupled.dist(np.zeros((8, 10, 1)), _S),
            r"student_logits: expected rank 2 \[batch, classes\], got shape \[8, 10, 1\]",
        ),
        (
            lambda: decoupled.dist(_S, _S, temperature=jnp.ones(2)),
            r"temperature: expected a scalar \(shape \[\]\), got shape \[2\]",
        ),
    ],
)
def test_invalid_inputs_raise(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_shape_errors_raise_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"teacher_logits: .*got \[8, 12\]"):
        jax.jit(decoupled.dkd)(_S, np.zeros((8, 12), np.float32), _LABELS)

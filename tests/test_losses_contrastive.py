"""Tests for jdistill.losses.contrastive: CRD scores, NCE, memory, negatives."""

import functools
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.losses import contrastive

# Jitted once at module level: eager op-by-op dispatch is slow on CPU. The
# eager path is covered by the jit-vs-eager and validation tests.
crd_scores = jax.jit(contrastive.crd_scores)
crd_partition = jax.jit(contrastive.crd_partition, static_argnums=2)
crd_normalise = jax.jit(contrastive.crd_normalise, static_argnums=2)
crd_nce = jax.jit(contrastive.crd_nce, static_argnames="num_data")
crd_update_memory = jax.jit(contrastive.crd_update_memory)
crd_negatives = jax.jit(contrastive.crd_negatives, static_argnames=("num_negatives", "replace"))
crd = jax.jit(contrastive.crd, static_argnames="num_data")


def _x(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _indices(seed, batch, k1, n):
    return np.random.default_rng(seed).integers(0, n, size=(batch, k1)).astype(np.int32)


def _ref_scores(embed, memory, indices, temperature):
    """exp(<memory[indices[b, k]], embed[b]> / T), float64 loops."""
    embed, memory = np.asarray(embed, np.float64), np.asarray(memory, np.float64)
    out = np.zeros(indices.shape)
    for b, k in np.ndindex(indices.shape):
        out[b, k] = math.exp(sum(memory[indices[b, k]] * embed[b]) / temperature)
    return out


def _ref_nce_terms(p, num_data, eps=1e-7):
    """Per-example NCE of RepDistiller's ContrastLoss, float64 loops."""
    p = np.asarray(p, np.float64)
    m = p.shape[1] - 1
    pn = 1.0 / num_data
    out = []
    for row in p:
        value = -math.log(row[0] / (row[0] + m * pn + eps))
        value -= sum(math.log(m * pn / (x + m * pn + eps)) for x in row[1:])
        out.append(value)
    return np.array(out)


def _ref_update(memory, embed, index, momentum):
    memory = np.array(memory, np.float64)
    for b, i in enumerate(index):
        v = momentum * memory[i] + (1 - momentum) * np.asarray(embed[b], np.float64)
        memory[i] = v / math.sqrt(sum(v**2))
    return memory


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


# ---------------------------------------------------------------- scores


@pytest.mark.parametrize(
    "n,dim,k1",
    [(10, 4, 4), (40, 4, 2)],  # N <= (K+1) D: all-products path; N > (K+1) D: gather path.
)
def test_scores_match_reference_with_banks_crosswise(n, dim, k1):
    e_s, e_t = _unit(_x(0, 3, dim)), _unit(_x(1, 3, dim))
    # Non-unit banks of different scales make a swapped pairing visible.
    memory_s, memory_t = 0.5 * _x(2, n, dim), 1.5 * _x(3, n, dim)
    indices = _indices(4, 3, k1, n)
    scores_s, scores_t = crd_scores(e_s, e_t, memory_s, memory_t, indices, nce_temperature=0.5)
    chex.assert_shape((scores_s, scores_t), (3, k1))
    chex.assert_trees_all_equal_dtypes((scores_s, scores_t), (jnp.zeros(1, jnp.float32),) * 2)
    want_s = _ref_scores(e_s, memory_t, indices, 0.5)  # student embedding x teacher bank
    want_t = _ref_scores(e_t, memory_s, indices, 0.5)  # teacher embedding x student bank
    chex.assert_trees_all_close(scores_s, want_s.astype(np.float32), rtol=1e-5)
    chex.assert_trees_all_close(scores_t, want_t.astype(np.float32), rtol=1e-5)


def test_scores_default_temperature_is_0_07():
    e, memory = _unit(_x(5, 2, 4)), _unit(_x(6, 6, 4))
    indices = _indices(7, 2, 3, 6)
    scores_s, _ = crd_scores(e, e, memory, memory, indices)
    chex.assert_trees_all_close(scores_s, _ref_scores(e, memory, indices, 0.07).astype(np.float32), rtol=1e-5)


@pytest.mark.parametrize("n", [10, 40])
def test_scores_gradient_flows_to_embeddings_only(n):
    e_s, e_t = _unit(_x(8, 3, 4)), _unit(_x(9, 3, 4))
    memory_s, memory_t = _x(10, n, 4), _x(11, n, 4)
    indices = _indices(12, 3, 2, n)
    w = _x(13, 3, 2)

    def loss(e_s, e_t, memory_s, memory_t):
        scores_s, scores_t = contrastive.crd_scores(
            e_s, e_t, memory_s, memory_t, indices, nce_temperature=0.5
        )
        return jnp.sum(w * jnp.log(scores_s)) + 2.0 * jnp.sum(w * jnp.log(scores_t))

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(e_s, e_t, memory_s, memory_t)
    want_s = _fd_grad(lambda e: np.sum(w * np.log(_ref_scores(e, memory_t, indices, 0.5))), e_s)
    want_t = _fd_grad(lambda e: 2.0 * np.sum(w * np.log(_ref_scores(e, memory_s, indices, 0.5))), e_t)
    chex.assert_trees_all_close(grads[:2], (want_s.astype(np.float32), want_t.astype(np.float32)), atol=1e-4)
    # The banks are frozen (RepDistiller detaches them).
    chex.assert_trees_all_close(grads[2:], (np.zeros((n, 4)), np.zeros((n, 4))))


# ------------------------------------------------------------ partition


def test_partition_set_once_from_first_batch():
    scores = np.exp(_x(14, 3, 5))
    estimate = np.float32(scores.astype(np.float64).mean() * 1000)
    chex.assert_trees_all_close(crd_partition(scores, jnp.float32(-1.0), 1000), estimate, rtol=1e-6)
    chex.assert_trees_all_close(crd_partition(scores, jnp.float32(0.0), 1000), estimate, rtol=1e-6)
    # num_data may also be traced (a jit argument).
    chex.assert_trees_all_close(jax.jit(contrastive.crd_partition)(scores, -1.0, 1000), estimate, rtol=1e-6)
    # Once set it is kept, whatever the scores.
    chex.assert_trees_all_close(crd_partition(scores, jnp.float32(7.5), 1000), 7.5)
    chex.assert_trees_all_close(crd_normalise(scores, jnp.float32(7.5), 1000), scores / np.float32(7.5))
    chex.assert_trees_all_close(crd_normalise(scores, jnp.float32(-1.0), 1000), scores / estimate, rtol=1e-6)
    # The constant carries no gradient: d sum(scores / z) / d scores = 1 / z.
    grad = jax.jit(jax.grad(lambda x: jnp.sum(contrastive.crd_normalise(x, jnp.float32(-1.0), 1000))))(scores)
    chex.assert_trees_all_close(grad, np.full_like(scores, 1.0 / estimate), rtol=1e-6)


# ------------------------------------------------------------------ NCE


@pytest.mark.parametrize("num_data", [50, 50000])
def test_nce_matches_reference(num_data):
    p = np.exp(_x(15, 4, 6)) / 30.0
    got = crd_nce(p, num_data=num_data)
    chex.assert_shape(got, (4,))
    assert got.dtype == jnp.float32
    want = _ref_nce_terms(p, num_data)
    chex.assert_trees_all_close(got, want.astype(np.float32), rtol=1e-5)
    # RepDistiller's batch value: -(sum log D1 + sum log D0) / B.
    chex.assert_trees_all_close(jnp.mean(got), np.float32(want.sum() / 4), rtol=1e-5)


def test_nce_decreases_as_positive_grows_and_increases_with_negatives():
    p = np.exp(_x(16, 1, 5)) / 10.0
    values = []
    for pos in (0.01, 0.1, 1.0, 10.0):
        q = p.copy()
        q[0, 0] = pos
        values.append(float(crd_nce(q, num_data=100)[0]))
    assert all(a > b for a, b in itertools.pairwise(values)), values
    q = p.copy()
    q[0, 3] *= 10.0
    assert float(crd_nce(q, num_data=100)[0]) > float(crd_nce(p, num_data=100)[0])


def test_nce_gradient_matches_finite_differences():
    p = np.exp(_x(17, 3, 4)) / 5.0
    got = jax.jit(jax.grad(lambda p: jnp.sum(contrastive.crd_nce(p, num_data=20))))(p)
    want = _fd_grad(lambda q: _ref_nce_terms(q, 20).sum(), p, h=1e-6)
    chex.assert_trees_all_close(got, want.astype(np.float32), rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------- memory


def test_update_memory_matches_reference():
    memory, embed = _unit(_x(18, 8, 4)), _unit(_x(19, 3, 4))
    index = np.array([5, 0, 3], np.int32)
    got = crd_update_memory(memory, embed, index, momentum=0.3)
    chex.assert_shape(got, (8, 4))
    assert got.dtype == jnp.float32
    chex.assert_trees_all_close(
        got, _ref_update(memory, embed, index, 0.3).astype(np.float32), rtol=1e-5, atol=1e-6
    )
    untouched = [1, 2, 4, 6, 7]
    chex.assert_trees_all_equal(got[np.array(untouched)], memory[untouched])
    # Default momentum 0.5; the input is not modified.
    before = memory.copy()
    chex.assert_trees_all_close(
        crd_update_memory(memory, embed, index),
        _ref_update(memory, embed, index, 0.5).astype(np.float32),
        rtol=1e-5,
    )
    chex.assert_trees_all_equal(memory, before)


def test_update_memory_rows_stay_unit_norm():
    # Start from RepDistiller's (non-unit) initial bank: updated rows become unit.
    memory = contrastive.crd_init_memory(jax.random.key(0), 12, 5)
    chex.assert_trees_all_close(jnp.mean(jnp.sum(memory**2, axis=1)), 1.0, atol=0.5)
    assert float(jnp.max(jnp.abs(memory))) <= math.sqrt(3 / 5)
    index = np.arange(12, dtype=np.int32)
    for step in range(3):
        memory = crd_update_memory(memory, 3.0 * _x(20 + step, 12, 5), index, momentum=0.5)
        chex.assert_trees_all_close(jnp.linalg.norm(memory, axis=1), jnp.ones(12), rtol=1e-5)


def test_update_memory_zero_row_stays_finite_and_no_gradient_to_embed():
    memory, embed = np.zeros((4, 3), np.float32), np.zeros((2, 3), np.float32)
    got = crd_update_memory(memory, embed, np.array([0, 2], np.int32))
    chex.assert_trees_all_equal(got, memory)
    grad = jax.jit(
        jax.grad(lambda e: jnp.sum(contrastive.crd_update_memory(_unit(_x(21, 4, 3)), e, np.array([1, 3]))))
    )(_x(22, 2, 3))
    chex.assert_trees_all_equal(grad, np.zeros((2, 3), np.float32))


def test_update_memory_duplicate_indices_write_one_candidate():
    memory, embed = _unit(_x(23, 5, 3)), _unit(_x(24, 2, 3))
    got = np.asarray(crd_update_memory(memory, embed, np.array([2, 2], np.int32)))
    candidates = [_ref_update(memory, embed[b : b + 1], [2], 0.5)[2] for b in range(2)]
    assert any(np.allclose(got[2], c, rtol=1e-5) for c in candidates)
    np.testing.assert_array_equal(np.delete(got, 2, axis=0), np.delete(memory, 2, axis=0))


# ------------------------------------------------------------ negatives

_LABELS = np.array([2, 0, 1, 0, 2, 2, 1, 0, 2, 2, 0, 1], np.int32)  # N = 12, counts (4, 3, 5)


def test_class_layout():
    order, start, count = contrastive.class_layout(_LABELS)
    np.testing.assert_array_equal(order, [1, 3, 7, 10, 2, 6, 11, 0, 4, 5, 8, 9])
    np.testing.assert_array_equal(start, [0, 4, 7])
    np.testing.assert_array_equal(count, [4, 3, 5])
    assert order.dtype == start.dtype == count.dtype == np.int32
    _, start, count = contrastive.class_layout(np.array([0, 0, 2]), num_classes=4)
    np.testing.assert_array_equal(start, [0, 2, 2, 3])
    np.testing.assert_array_equal(count, [2, 0, 1, 0])
    with pytest.raises(ValueError, match=r"labels: expected values in \[0, 2\), got \[0, 2\]"):
        contrastive.class_layout(np.array([0, 2]), num_classes=2)
    with pytest.raises(ValueError, match=r"labels: expected a non-empty rank-1 integer array"):
        contrastive.class_layout(np.zeros(3, np.float32))


# The four examples 0..3 (classes 2, 0, 1, 0) repeated: one jitted draw per
# configuration gives the statistics, and the tests share compilations.
_NEG_INDEX = np.tile(np.arange(4, dtype=np.int32), 100)
_NEG_CONFIGS = [(True, 10), (False, 6)]  # replace=False needs K <= N - max count = 7.


@pytest.mark.parametrize("replace,k", _NEG_CONFIGS)
def test_negatives_come_from_other_classes_uniformly(replace, k):
    layout = contrastive.class_layout(_LABELS)
    labels = _LABELS[_NEG_INDEX]
    out = np.asarray(
        crd_negatives(jax.random.key(0), labels, _NEG_INDEX, *layout, num_negatives=k, replace=replace)
    )
    assert out.dtype == np.int32
    chex.assert_shape(out, (400, k + 1))
    np.testing.assert_array_equal(out[:, 0], _NEG_INDEX)
    negatives = out[:, 1:]
    assert np.all((negatives >= 0) & (negatives < 12))
    assert not np.any(_LABELS[negatives] == labels[:, None])
    for example in range(4):
        neg = negatives[_NEG_INDEX == example].ravel()
        allowed = np.flatnonzero(_LABELS != _LABELS[example])
        counts = np.bincount(neg, minlength=12)[allowed]
        expected = neg.size / allowed.size  # 100 K / (7..9), at least ~67 per allowed example.
        assert np.all(np.abs(counts - expected) < 0.35 * expected), (example, counts, expected)
    if not replace:
        # A random subset: no repeats within an example's negatives.
        assert all(len(set(row)) == k for row in negatives)


@pytest.mark.parametrize("replace,k", _NEG_CONFIGS)
def test_negatives_jit_matches_eager_and_keys_matter(replace, k):
    # A small batch: eager dispatch of the random ops is slow on CPU.
    layout = contrastive.class_layout(_LABELS)
    index = np.array([4, 6], np.int32)
    labels, key = _LABELS[index], jax.random.key(1)
    eager = contrastive.crd_negatives(key, labels, index, *layout, k, replace=replace)
    jitted = crd_negatives(key, labels, index, *layout, num_negatives=k, replace=replace)
    chex.assert_trees_all_equal(jitted, eager)
    other = crd_negatives(jax.random.key(2), labels, index, *layout, num_negatives=k, replace=replace)
    assert not np.array_equal(np.asarray(other), np.asarray(jitted))


def test_negatives_without_replacement_need_enough_examples():
    layout = contrastive.class_layout(_LABELS)
    index = np.array([0], np.int32)
    with pytest.raises(
        ValueError, match=r"num_negatives: 8 exceeds the 7 examples outside the largest class"
    ):
        contrastive.crd_negatives(jax.random.key(0), _LABELS[index], index, *layout, 8, replace=False)


# ----------------------------------------------------------- composition


def test_crd_composes_the_pieces_and_fixes_z_once():
    n, dim, k = 12, 4, 5
    layout = contrastive.class_layout(_LABELS)
    memory_s = contrastive.crd_init_memory(jax.random.key(3), n, dim)
    memory_t = contrastive.crd_init_memory(jax.random.key(4), n, dim)
    z_s = z_t = jnp.float32(-1.0)
    for step, index in enumerate((np.array([0, 5, 9], np.int32), np.array([1, 2, 11], np.int32))):
        e_s, e_t = _unit(_x(30 + step, 3, dim)), _unit(_x(40 + step, 3, dim))
        indices = crd_negatives(jax.random.key(step), _LABELS[index], index, *layout, num_negatives=k)
        loss, state = crd(e_s, e_t, memory_s, memory_t, indices, z_s, z_t, num_data=n, nce_temperature=0.2)
        chex.assert_shape(loss, (3,))
        scores_s, scores_t = crd_scores(e_s, e_t, memory_s, memory_t, indices, nce_temperature=0.2)
        want_z_s = crd_partition(scores_s, z_s, n)
        want_z_t = crd_partition(scores_t, z_t, n)
        want_loss = crd_nce(crd_normalise(scores_s, z_s, n), num_data=n) + crd_nce(
            crd_normalise(scores_t, z_t, n), num_data=n
        )
        want_state = (
            crd_update_memory(memory_s, e_s, index),
            crd_update_memory(memory_t, e_t, index),
            want_z_s,
            want_z_t,
        )
        chex.assert_trees_all_close(loss, want_loss, rtol=1e-5)
        chex.assert_trees_all_close(state, want_state, rtol=1e-5)
        if step == 0:
            first_z = state[2:]
            assert float(first_z[0]) > 0 and float(first_z[1]) > 0
        else:
            chex.assert_trees_all_equal(state[2:], first_z)  # Fixed after the first batch.
        memory_s, memory_t, z_s, z_t = state


def test_crd_gradients_finite_and_jit_matches_eager():
    n, dim = 12, 4
    memory_s, memory_t = _unit(_x(50, n, dim)), _unit(_x(51, n, dim))
    indices = _indices(52, 3, 6, n)
    e_s, e_t = _unit(_x(53, 3, dim)), _unit(_x(54, 3, dim))

    def mean_loss(e_s, e_t):
        loss, state = contrastive.crd(e_s, e_t, memory_s, memory_t, indices, -1.0, -1.0, num_data=n)
        return jnp.mean(loss), state

    (value, state), grads = jax.jit(jax.value_and_grad(mean_loss, argnums=(0, 1), has_aux=True))(e_s, e_t)
    chex.assert_tree_all_finite((value, state, grads))
    assert float(jnp.abs(grads[0]).max()) > 0 and float(jnp.abs(grads[1]).max()) > 0
    eager_loss, eager_state = contrastive.crd(e_s, e_t, memory_s, memory_t, indices, -1.0, -1.0, num_data=n)
    chex.assert_trees_all_close((value, state), (jnp.mean(eager_loss), eager_state), rtol=1e-5)


def test_nce_vmap_over_leading_axis_matches_loop():
    p = np.exp(_x(55, 3, 4, 5)) / 10.0
    f = functools.partial(contrastive.crd_nce, num_data=30)
    mapped = jax.jit(jax.vmap(f))(p)
    looped = jnp.stack([jax.jit(f)(p[i]) for i in range(3)])
    chex.assert_shape(mapped, (3, 4))
    chex.assert_trees_all_close(mapped, looped, rtol=1e-6)


# ------------------------------------------------------------ validation

_E = np.zeros((4, 3), np.float32)
_M = np.zeros((10, 3), np.float32)
_I = np.zeros((4, 6), np.int32)


@pytest.mark.parametrize(
    "call,pattern",
    [
        (
            lambda: contrastive.crd_scores(_E, np.zeros((4, 5)), _M, _M, _I),
            r"teacher_embed: expected shape \[4, 3\] to match student_embed, got \[4, 5\]",
        ),
        (
            lambda: contrastive.crd_scores(_E, _E, np.zeros((10, 5)), _M, _I),
            r"memory_s: expected shape \[\*, 3\] to match student_embed \(shape \[4, 3\]\), got \[10, 5\]",
        ),
        (
            lambda: contrastive.crd_scores(_E, _E, _M, np.zeros((9, 3)), _I),
            r"memory_t: expected shape \[10, 3\] to match memory_s, got \[9, 3\]",
        ),
        (
            lambda: contrastive.crd_scores(_E, _E, _M, _M, np.zeros((5, 6), np.int32)),
            r"indices: expected shape \[4, \*\] to match student_embed \(shape \[4, 3\]\), got \[5, 6\]",
        ),
        (
            lambda: contrastive.crd_scores(_E, _E, _M, _M, np.zeros((4, 6), np.float32)),
            r"indices: expected integer indices of shape \[4, 6\], got float32",
        ),
        (
            lambda: contrastive.crd_scores(_E, _E, _M, _M, np.zeros(4, np.int32)),
            r"indices: expected rank 2 \[batch, 1 \+ num_negatives\], got shape \[4\]",
        ),
        (
            lambda: contrastive.crd_scores(_E, _E, _M, _M, _I, nce_temperature=0.0),
            r"nce_temperature: expected a positive scalar",
        ),
        (lambda: contrastive.crd_partition(np.ones((4, 6)), np.ones(1), 10), r"z: expected a scalar"),
        (
            lambda: contrastive.crd_partition(np.ones((4, 6)), 1.0, 0),
            r"num_data: expected a positive integer \(the training-set size\), got 0",
        ),
        (lambda: contrastive.crd_nce(np.ones(6), num_data=10), r"scores: expected rank 2"),
        (lambda: contrastive.crd_nce(np.ones((4, 1)), num_data=10), r"scores: expected at least 2 columns"),
        (
            lambda: contrastive.crd_update_memory(_M, np.zeros((4, 5)), np.zeros(4, np.int32)),
            r"embed: expected shape \[\*, 3\] to match memory \(shape \[10, 3\]\), got \[4, 5\]",
        ),
        (
            lambda: contrastive.crd_update_memory(_M, _E, np.zeros(3, np.int32)),
            r"index: expected shape \[4\] \(one dataset index per row of embed\), got \[3\]",
        ),
        (
            lambda: contrastive.crd_negatives(
                jax.random.key(0),
                np.zeros(2, np.int32),
                np.zeros(3, np.int32),
                *contrastive.class_layout(_LABELS),
                4,
            ),
            r"index: expected shape \[2\] to match labels, got \[3\]",
        ),
        (
            lambda: contrastive.crd_negatives(
                jax.random.key(0),
                np.zeros(2, np.int32),
                np.zeros(2, np.int32),
                *contrastive.class_layout(_LABELS),
                0,
            ),
            r"num_negatives: expected a positive Python int, got 0",
        ),
    ],
)
def test_invalid_inputs_raise(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()

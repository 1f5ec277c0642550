"""Born-again losses (CWTM, DKPP, the ensemble) against NumPy references and their properties."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses

B, C = 6, 5


def _logits(seed, shape=(B, C), scale=2.0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32) * scale


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _labels(seed=3):
    return np.random.default_rng(seed).integers(0, C, size=B).astype(np.int32)


def np_cwtm(s, t, y):
    """The paper's weights, one per example, summing to 1; returned times B (the batch mean is the sum)."""
    conf = _softmax(t.astype(np.float64)).max(-1)
    w = conf / conf.sum()
    ce = -np.log(_softmax(s.astype(np.float64))[np.arange(len(y)), y])
    return len(y) * w * ce


def test_cwtm_matches_numpy_and_its_mean_is_the_paper_weighted_sum():
    s, t, y = _logits(0), _logits(1), _labels()
    got = losses.ban_cwtm(s, t, y)
    chex.assert_shape(got, (B,))
    chex.assert_trees_all_close(got, np_cwtm(s, t, y), rtol=1e-5)
    conf = _softmax(t.astype(np.float64)).max(-1)
    weights = conf / conf.sum()
    assert weights.sum() == pytest.approx(1.0)
    ce = np.asarray(losses.cross_entropy(s, y))
    assert float(got.mean()) == pytest.approx(float((weights * ce).sum()), rel=1e-5)


def test_cwtm_with_an_equally_confident_teacher_is_plain_cross_entropy():
    s, y = _logits(0), _labels()
    t = np.zeros((B, C), np.float32)
    t[np.arange(B), (np.arange(B) * 2) % C] = 3.0  # the same top probability everywhere
    chex.assert_trees_all_close(losses.ban_cwtm(s, t, y), losses.cross_entropy(s, y), rtol=1e-5)


def test_cwtm_weights_follow_the_teacher_confidence():
    s = np.zeros((2, C), np.float32)  # equal cross-entropy for both examples
    t = np.array([[5.0, 0, 0, 0, 0], [0.5, 0, 0, 0, 0]], np.float32)
    got = np.asarray(losses.ban_cwtm(s, t, np.array([0, 1], np.int32)))
    conf = _softmax(t).max(-1)
    assert got[0] > got[1]
    assert got[0] / got[1] == pytest.approx(conf[0] / conf[1], rel=1e-5)


def test_permutation_keeps_the_top_entry_and_permutes_the_others():
    t = _logits(2, shape=(32, C))
    got = np.asarray(losses.permute_dark_knowledge(t, key=jax.random.key(0)))
    top = t.argmax(-1)
    np.testing.assert_array_equal(got.argmax(-1), top)
    np.testing.assert_array_equal(got[np.arange(32), top], t[np.arange(32), top])
    for row_got, row_t, k in zip(got, t, top):
        # The same multiset of values, and the non-top values only among the non-top classes.
        np.testing.assert_array_equal(np.sort(row_got), np.sort(row_t))
        np.testing.assert_array_equal(np.sort(np.delete(row_got, k)), np.sort(np.delete(row_t, k)))
    # With 4! orders per row, 32 rows are not all left in place, and the key decides.
    assert not np.array_equal(got, t)
    again = np.asarray(losses.permute_dark_knowledge(t, key=jax.random.key(0)))
    other = np.asarray(losses.permute_dark_knowledge(t, key=jax.random.key(1)))
    np.testing.assert_array_equal(got, again)
    assert not np.array_equal(got, other)


def test_every_order_of_the_non_top_entries_is_drawn():
    t = np.array([[3.0, 0.0, 1.0, 2.0]], np.float32)
    keys = jax.random.split(jax.random.key(0), 200)
    permuted = np.asarray(jax.vmap(lambda k: losses.permute_dark_knowledge(t, key=k))(keys))
    orders = {tuple(row[0, 1:]) for row in permuted}
    assert len(orders) == 6  # all 3! arrangements of (0, 1, 2) behind the kept top entry


def test_dkpp_is_kd_against_the_permuted_teacher():
    s, t, key = _logits(0), _logits(1), jax.random.key(5)
    permuted = np.asarray(losses.permute_dark_knowledge(t, key=key)).astype(np.float64)
    p = _softmax(permuted)
    reference = (p * (np.log(p) - np.log(_softmax(s.astype(np.float64))))).sum(-1)
    got = losses.ban_dkpp(s, t, key=key)
    chex.assert_shape(got, (B,))
    chex.assert_trees_all_close(got, reference, rtol=1e-4, atol=1e-6)
    # At temperature 2: T^2 KL of the softened distributions.
    p2 = _softmax(permuted / 2)
    ref2 = 4 * (p2 * (np.log(p2) - np.log(_softmax(s.astype(np.float64) / 2)))).sum(-1)
    chex.assert_trees_all_close(losses.ban_dkpp(s, t, key=key, temperature=2.0), ref2, rtol=1e-4, atol=1e-6)


def test_dkpp_is_zero_for_a_one_hot_like_teacher_copied_by_the_student():
    # When the non-top logits are all equal, permuting them changes nothing.
    t = np.full((B, C), -1.0, np.float32)
    t[np.arange(B), np.arange(B) % C] = 4.0
    chex.assert_trees_all_close(losses.ban_dkpp(t, t, key=jax.random.key(0)), np.zeros(B), atol=1e-6)


def test_ensemble_is_the_mean_of_softmaxes():
    members = [_logits(i) for i in range(3)]
    expected = np.mean([_softmax(m) for m in members], axis=0)
    chex.assert_trees_all_close(losses.ensemble_probabilities(members), expected, rtol=1e-5)
    chex.assert_trees_all_close(losses.ensemble_probabilities(np.stack(members)), expected, rtol=1e-5)
    chex.assert_trees_all_close(losses.ensemble_probabilities(members).sum(-1), np.ones(B), rtol=1e-5)
    chex.assert_trees_all_close(losses.ensemble_probabilities(members[:1]), _softmax(members[0]), rtol=1e-5)


def test_gradients_are_finite_and_bfloat16_computes_in_float32():
    s, t, y, key = _logits(0), _logits(1, scale=30.0), _labels(), jax.random.key(0)
    for fn in (lambda a, b: losses.ban_cwtm(a, b, y), lambda a, b: losses.ban_dkpp(a, b, key=key)):
        grads = jax.grad(lambda a, b, fn=fn: fn(a, b).mean(), argnums=(0, 1))(jnp.asarray(s), jnp.asarray(t))
        chex.assert_tree_all_finite(grads)
        assert fn(s.astype(jnp.bfloat16), t.astype(jnp.bfloat16)).dtype == jnp.float32
    zeros = jnp.zeros((B, C))
    chex.assert_tree_all_finite(jax.grad(lambda a: losses.ban_dkpp(a, zeros, key=key).mean())(zeros))


def test_jit_and_vmap_agree_with_eager():
    s, t, y, key = _logits(0), _logits(1), _labels(), jax.random.key(0)
    chex.assert_trees_all_close(jax.jit(losses.ban_cwtm)(s, t, y), losses.ban_cwtm(s, t, y), rtol=1e-6)
    dkpp = lambda a, b, k, temp: losses.ban_dkpp(a, b, key=k, temperature=temp)
    chex.assert_trees_all_close(jax.jit(dkpp)(s, t, key, 2.0), dkpp(s, t, key, 2.0), rtol=1e-6)
    groups = 2
    sg, tg, yg = (a.reshape(groups, B // groups, *a.shape[1:]) for a in (s, t, y))
    keys = jax.random.split(key, groups)
    vm = jax.vmap(lambda a, b, c: losses.ban_cwtm(a, b, c))(sg, tg, yg)
    eager = np.stack([losses.ban_cwtm(sg[i], tg[i], yg[i]) for i in range(groups)])
    chex.assert_trees_all_close(vm, eager, rtol=1e-6)
    vm = jax.vmap(lambda a, b, k: losses.ban_dkpp(a, b, key=k))(sg, tg, keys)
    eager = np.stack([losses.ban_dkpp(sg[i], tg[i], key=keys[i]) for i in range(groups)])
    chex.assert_trees_all_close(vm, eager, rtol=1e-6)


def test_bad_shapes_raise_naming_the_argument():
    s, t, y, key = _logits(0), _logits(1), _labels(), jax.random.key(0)
    with pytest.raises(ValueError, match="teacher_logits"):
        losses.ban_cwtm(s, t[:, :3], y)
    with pytest.raises(ValueError, match="labels"):
        losses.ban_cwtm(s, t, y[:3])
    with pytest.raises(ValueError, match="student_logits"):
        losses.ban_dkpp(s[0], t[0], key=key)
    with pytest.raises(ValueError, match="teacher_logits"):
        losses.ban_dkpp(s, t[:4], key=key)
    with pytest.raises(ValueError, match="temperature"):
        losses.ban_dkpp(s, t, key=key, temperature=0.0)
    with pytest.raises(ValueError, match="teacher_logits"):
        losses.permute_dark_knowledge(t[0], key=key)
    with pytest.raises(ValueError, match=r"logits\[1\]"):
        losses.ensemble_probabilities([s, t[:, :3]])
    with pytest.raises(ValueError, match="logits"):
        losses.ensemble_probabilities(s)
    with pytest.raises(ValueError, match="at least one"):
        losses.ensemble_probabilities([])

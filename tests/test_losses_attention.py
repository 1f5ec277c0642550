"""Numerics of jdistill.losses.attention: attention KL and MiniLM value relation against numpy
references, head mapping, properties, gradients, jit/vmap and shape errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses

B, N = 3, 5


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _attn(heads, seed, scale=2.0, n=N):
    logits = np.random.default_rng(seed).normal(0, scale, (B, heads, n, n))
    return _softmax(logits).astype(np.float32)


def _values(heads, dim, seed):
    return np.random.default_rng(seed).normal(0, 1, (B, heads, N, dim)).astype(np.float32)


def _np_row_kl(p_s, p_t):
    """Mean over heads and query rows of sum_j p_t log(p_t / p_s), float64, loops for clarity."""
    out = np.zeros(p_s.shape[0])
    for b in range(p_s.shape[0]):
        rows = []
        for a in range(p_s.shape[1]):
            for t in range(p_s.shape[2]):
                pt, ps = np.float64(p_t[b, a, t]), np.float64(p_s[b, a, t])
                rows.append(sum(pt[j] * np.log(pt[j] / ps[j]) for j in range(len(pt)) if pt[j] > 0))
        out[b] = np.mean(rows)
    return out


def _np_value_relation(v):
    v = np.float64(v)
    return _softmax(v @ np.swapaxes(v, -1, -2) / np.sqrt(v.shape[-1]))


def test_attention_kl_matches_a_numpy_reference():
    s, t = _attn(2, 0), _attn(2, 1)
    chex.assert_trees_all_close(losses.attention_kl(s, t), _np_row_kl(s, t), rtol=1e-5)


def test_attention_kl_of_a_hand_computed_case():
    # One head, one query row over two keys: KL([0.5, 0.5] || [0.25, 0.75]) = 0.5 log 2 + 0.5 log(2/3).
    t = jnp.array([0.5, 0.5]).reshape(1, 1, 1, 2)
    s = jnp.array([0.25, 0.75]).reshape(1, 1, 1, 2)
    chex.assert_trees_all_close(
        losses.attention_kl(s, t), jnp.array([0.5 * np.log(2.0) + 0.5 * np.log(2.0 / 3.0)]), rtol=1e-6
    )


def test_attention_kl_is_zero_when_equal_and_positive_otherwise():
    t = _attn(4, 2)
    chex.assert_trees_all_close(losses.attention_kl(t, t), jnp.zeros(B), atol=1e-7)
    assert np.all(np.asarray(losses.attention_kl(_attn(4, 3), t)) > 0)


def test_attention_kl_is_forward_kl_teacher_to_student():
    s, t = _attn(1, 4), _attn(1, 5, scale=0.5)
    chex.assert_trees_all_close(losses.attention_kl(s, t), _np_row_kl(s, t), rtol=1e-5)
    assert not np.allclose(losses.attention_kl(s, t), losses.attention_kl(t, s), rtol=1e-2)


def test_head_groups_are_averaged_onto_the_student_heads():
    s, t = _attn(2, 6), _attn(4, 7)
    mapped = np.stack([t[:, :2].mean(1), t[:, 2:].mean(1)], axis=1)
    chex.assert_trees_all_close(losses.map_heads(t, 2), mapped, rtol=1e-6)
    chex.assert_trees_all_close(losses.attention_kl(s, t), _np_row_kl(s, mapped), rtol=1e-5)
    # An average of distributions is a distribution.
    chex.assert_trees_all_close(losses.map_heads(t, 2).sum(-1), jnp.ones((B, 2, N)), atol=1e-6)


def test_head_map_identity_when_counts_are_equal_and_explicit_maps():
    t = _attn(3, 8)
    chex.assert_trees_all_close(losses.map_heads(t, 3), t)
    chex.assert_trees_all_close(losses.map_heads(t, 3, head_map=(0, 1, 2)), t)
    chex.assert_trees_all_close(losses.map_heads(t, 3, head_map=np.arange(3)), t)
    # An explicit map: student head 0 <- teacher head 2, student head 1 <- mean of heads 0 and 1.
    mapped = losses.map_heads(t, 2, head_map=(2, (0, 1)))
    chex.assert_trees_all_close(mapped, np.stack([t[:, 2], t[:, :2].mean(1)], axis=1), rtol=1e-6)
    # A student with more heads than the teacher: heads repeated.
    chex.assert_trees_all_close(losses.map_heads(t[:, :1], 2, head_map=(0, 0)), np.repeat(t[:, :1], 2, 1))


def test_attention_kl_is_finite_with_zero_probabilities():
    t = np.array([1.0, 0.0, 0.0], np.float32).reshape(1, 1, 1, 3)
    s = np.array([0.5, 0.5, 0.0], np.float32).reshape(1, 1, 1, 3)
    chex.assert_trees_all_close(losses.attention_kl(s, t), jnp.array([np.log(2.0)]), rtol=1e-6)
    grads = jax.grad(lambda s, t: losses.attention_kl(s, t).sum(), argnums=(0, 1))(
        jnp.asarray(s), jnp.asarray(t)
    )
    chex.assert_tree_all_finite(grads)
    chex.assert_trees_all_close(losses.attention_kl(t, t), jnp.zeros(1))


def test_attention_kl_gradients_through_softmax_logits_are_finite_and_match_the_closed_form():
    # d/dz sum_t KL(p_t || softmax(z)) = softmax(z) - p_t, per row; the loss averages H * N rows.
    z = jnp.asarray(np.random.default_rng(9).normal(0, 3, (B, 2, N, N)), jnp.float32)
    t = _attn(2, 10)
    grad = jax.grad(lambda z: losses.attention_kl(jax.nn.softmax(z), t).sum())(z)
    chex.assert_tree_all_finite(grad)
    chex.assert_trees_all_close(grad, (jax.nn.softmax(z) - t) / (2 * N), atol=1e-6)


def test_value_relation_matches_a_numpy_reference_with_different_head_widths():
    v_s, v_t = _values(2, 8, 11), _values(2, 16, 12)
    want = _np_row_kl(_np_value_relation(v_s), _np_value_relation(v_t))
    chex.assert_trees_all_close(losses.value_relation(v_s, v_t), want, rtol=1e-5)


def test_value_relation_maps_heads_like_attention_kl():
    v_s, v_t = _values(2, 8, 13), _values(4, 4, 14)
    r_t = _np_value_relation(v_t)
    want = _np_row_kl(_np_value_relation(v_s), np.stack([r_t[:, :2].mean(1), r_t[:, 2:].mean(1)], 1))
    chex.assert_trees_all_close(losses.value_relation(v_s, v_t), want, rtol=1e-5)
    want = _np_row_kl(_np_value_relation(v_s), r_t[:, [3, 0]])
    chex.assert_trees_all_close(losses.value_relation(v_s, v_t, head_map=(3, 0)), want, rtol=1e-5)


def test_value_relation_properties():
    v = _values(2, 8, 15)
    chex.assert_trees_all_close(losses.value_relation(v, v), jnp.zeros(B), atol=1e-6)
    # Invariant to an orthogonal rotation of the value space: V V^T is unchanged.
    q, _ = np.linalg.qr(np.random.default_rng(16).normal(size=(8, 8)))
    chex.assert_trees_all_close(losses.value_relation(v @ q.astype(np.float32), v), jnp.zeros(B), atol=1e-5)
    assert np.all(np.asarray(losses.value_relation(_values(2, 8, 17), v)) > 0)
    chex.assert_trees_all_close(
        jnp.exp(losses.value_relation_logits(v)).sum(-1), jnp.ones((B, 2, N)), atol=1e-6
    )


def test_value_relation_gradients_are_finite_at_zero_values():
    zeros = jnp.zeros((B, 2, N, 4))
    grads = jax.grad(lambda s, t: losses.value_relation(s, t).sum(), argnums=(0, 1))(zeros, zeros)
    chex.assert_tree_all_finite(grads)


def test_bfloat16_inputs_compute_in_float32():
    s, t = _attn(2, 18), _attn(2, 19)
    out = losses.attention_kl(jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16))
    assert out.dtype == jnp.float32
    out = losses.value_relation(jnp.asarray(_values(2, 4, 0), jnp.bfloat16), _values(2, 4, 1))
    assert out.dtype == jnp.float32


@pytest.mark.parametrize("fn, make", [(losses.attention_kl, _attn), (losses.value_relation, None)])
def test_jit_and_vmap_agree_with_eager(fn, make):
    if make is None:
        s, t = _values(2, 4, 20), _values(4, 8, 21)
    else:
        s, t = _attn(2, 20), _attn(4, 21)
    eager = fn(s, t)
    chex.assert_trees_all_close(jax.jit(fn)(s, t), eager, rtol=1e-6)
    # vmap over the batch, each example a batch of one.
    chex.assert_trees_all_close(jax.vmap(lambda a, b: fn(a[None], b[None])[0])(s, t), eager, rtol=1e-6)


def test_rows_of_the_vit_attention_sum_to_one():
    from flax import nnx

    from jdistill.models import create_model

    # Built and run in one compiled program (eager initialisation compiles every op separately).
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 28, 28, 1)), jnp.float32)
    rngs = lambda: nnx.Rngs(jax.random.key(0, impl="unsafe_rbg"))
    features = jax.jit(lambda x: create_model("vit2x32", (28, 28, 1), 10, rngs=rngs())(x)[1])(images)
    for name in ("attn1", "attn2"):
        chex.assert_shape(features[name], (2, 2, 17, 17))
        chex.assert_trees_all_close(features[name].sum(-1), jnp.ones((2, 2, 17)), atol=1e-5)
        assert np.all(np.asarray(features[name]) >= 0)


@pytest.mark.parametrize(
    "student, teacher, message",
    [
        (np.zeros((B, 2, N)), np.zeros((B, 2, N, N)), "student_attn: expected rank 4"),
        (np.zeros((B, 2, N, N)), np.zeros((B, 2, N)), "teacher_attn: expected rank 4"),
        (np.zeros((B, 2, N, N)), np.zeros((B + 1, 2, N, N)), "teacher_attn: expected shape"),
        (np.zeros((B, 2, N, N)), np.zeros((B, 2, N + 1, N + 1)), "teacher_attn: expected shape"),
        (np.zeros((B, 2, N, N)), np.zeros((B, 3, N, N)), "head_map: the teacher's 3 heads"),
    ],
)
def test_attention_kl_shape_errors_name_the_argument(student, teacher, message):
    with pytest.raises(ValueError, match=message):
        losses.attention_kl(student, teacher)


@pytest.mark.parametrize(
    "head_map, message",
    [((0,), "one entry per student head"), ((0, 4), r"teacher heads in \[0, 4\)"), ((0, ()), "every entry")],
)
def test_bad_head_maps_are_refused(head_map, message):
    with pytest.raises(ValueError, match=message):
        losses.attention_kl(_attn(2, 0), _attn(4, 1), head_map=head_map)


def test_value_relation_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="student_values: expected rank 4"):
        losses.value_relation(np.zeros((B, N, 4)), _values(2, 4, 0))
    with pytest.raises(ValueError, match="teacher_values: expected shape"):
        losses.value_relation(_values(2, 4, 0), np.zeros((B, 2, N + 1, 4)))

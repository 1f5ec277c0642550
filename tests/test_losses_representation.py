"""Representation-mapping losses against NumPy references and their properties."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses


def _pair(b=6, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, d)).astype(np.float32), rng.normal(size=(b, d)).astype(np.float32)


def _l2_ref(s, t):
    return np.array([np.mean([(si - ti) ** 2 for si, ti in zip(sr, tr)]) for sr, tr in zip(s, t)])


def _cosine_ref(s, t):
    out = []
    for sr, tr in zip(s, t):
        dot = sum(float(a) * float(b) for a, b in zip(sr, tr))
        out.append(
            1 - dot / (np.sqrt(sum(float(a) ** 2 for a in sr)) * np.sqrt(sum(float(b) ** 2 for b in tr)))
        )
    return np.array(out)


def _head_ref(s, t_logits, kernel, bias):
    logits = np.array([[sum(s[b, d] * kernel[d, c] for d in range(s.shape[1])) + bias[c]
                        for c in range(kernel.shape[1])] for b in range(s.shape[0])])  # fmt: skip
    return ((logits - t_logits) ** 2).mean(-1)


def _head_case(b=4, d=5, c=3, seed=1):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(b, d)).astype(np.float32)
    kernel = rng.normal(size=(d, c)).astype(np.float32)
    bias = rng.normal(size=(c,)).astype(np.float32)
    teacher = rng.normal(size=(b, c)).astype(np.float32)
    return s, teacher, kernel, bias


def test_embedding_l2_matches_numpy_and_a_hand_value():
    s, t = _pair()
    chex.assert_trees_all_close(losses.embedding_l2(s, t), _l2_ref(s, t), rtol=1e-5)
    # ((1 - 0)^2 + (2 - 4)^2) / 2 = 2.5
    chex.assert_trees_all_close(
        losses.embedding_l2(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 4.0]])), np.array([2.5])
    )


def test_embedding_cosine_matches_numpy_and_hand_values():
    s, t = _pair()
    chex.assert_trees_all_close(losses.embedding_cosine(s, t), _cosine_ref(s, t), rtol=1e-5, atol=1e-6)
    s = jnp.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    t = jnp.array([[0.0, 3.0], [-2.0, 0.0], [2.0, 2.0]])
    chex.assert_trees_all_close(losses.embedding_cosine(s, t), np.array([1.0, 2.0, 0.0]), atol=1e-6)


def test_head_regression_matches_numpy():
    s, teacher, kernel, bias = _head_case()
    chex.assert_trees_all_close(
        losses.teacher_head_regression(s, teacher, kernel, bias),
        _head_ref(s, teacher, kernel, bias),
        rtol=1e-5,
    )


@pytest.mark.parametrize("loss", [losses.embedding_l2, losses.embedding_cosine])
def test_zero_when_the_projection_equals_the_teacher(loss):
    s, _ = _pair()
    chex.assert_trees_all_close(loss(s, s), np.zeros(len(s)), atol=1e-6)
    assert float(loss(s, s + 1.0).min()) > 0


def test_head_regression_is_zero_at_the_teachers_embedding_and_only_sees_the_heads_image():
    s, _, kernel, bias = _head_case(d=5, c=3)
    teacher_logits = s @ kernel + bias
    chex.assert_trees_all_close(
        losses.teacher_head_regression(s, teacher_logits, kernel, bias), np.zeros(4), atol=1e-5
    )
    # A change in the head's null space (kernel [5, 3] has a 2-d one) leaves the loss at 0.
    null = np.linalg.svd(kernel.T)[2][-1]
    moved = s + 3.0 * null
    chex.assert_trees_all_close(
        losses.teacher_head_regression(moved, teacher_logits, kernel, bias), np.zeros(4), atol=1e-4
    )
    assert losses.embedding_l2(moved, s).min() > 1.0  # the direct L2 term does see it


def test_cosine_is_invariant_to_positive_scaling_and_l2_is_not():
    s, t = _pair()
    base = losses.embedding_cosine(s, t)
    for scale_s, scale_t in [(3.0, 1.0), (1.0, 0.25), (7.0, 0.1)]:
        chex.assert_trees_all_close(losses.embedding_cosine(scale_s * s, scale_t * t), base, atol=1e-5)
    chex.assert_trees_all_close(losses.embedding_cosine(-s, t), 2.0 - base, atol=1e-5)
    assert not np.allclose(losses.embedding_l2(3.0 * s, t), losses.embedding_l2(s, t))


def test_low_precision_inputs_compute_in_float32():
    s, t = _pair()
    for loss in (losses.embedding_l2, losses.embedding_cosine):
        out = loss(s.astype(jnp.bfloat16), t.astype(jnp.bfloat16))
        assert out.dtype == jnp.float32 and out.shape == (len(s),)
        chex.assert_trees_all_close(out, loss(s, t), rtol=0.05, atol=0.02)


def test_gradients_are_finite_even_at_zero_embeddings():
    s, t = _pair()
    zeros = jnp.zeros_like(s)
    for loss in (losses.embedding_l2, losses.embedding_cosine):
        for a, b in ((s, t), (zeros, t), (zeros, zeros), (s, s)):
            chex.assert_tree_all_finite(jax.grad(lambda x, b=b, loss=loss: loss(x, b).sum())(a))
    h_s, teacher, kernel, bias = _head_case()
    grad = jax.grad(lambda x: losses.teacher_head_regression(x, teacher, kernel, bias).sum())(h_s)
    chex.assert_tree_all_finite(grad)
    # Analytic gradient of mean_c (sW + b - z)^2: 2 / C (sW + b - z) W^T.
    chex.assert_trees_all_close(grad, 2 / 3 * (h_s @ kernel + bias - teacher) @ kernel.T, rtol=1e-4)


def test_cosine_gradient_matches_finite_differences():
    s, t = _pair(b=2, d=3)
    f = jax.jit(lambda x: losses.embedding_cosine(x, t).sum())
    grad = jax.grad(f)(s)
    eps = 1e-3
    numeric = np.zeros_like(s)
    for idx in np.ndindex(s.shape):
        e = np.zeros_like(s)
        e[idx] = eps
        numeric[idx] = (f(s + e) - f(s - e)) / (2 * eps)
    chex.assert_trees_all_close(grad, numeric, rtol=2e-2, atol=1e-3)


def test_jit_and_vmap_agree_with_eager():
    s, t = _pair()
    h_s, teacher, kernel, bias = _head_case()
    for loss in (losses.embedding_l2, losses.embedding_cosine):
        chex.assert_trees_all_close(jax.jit(loss)(s, t), loss(s, t), rtol=1e-6)
        # vmap over a leading axis of batches equals calling on each batch.
        stacked = jax.vmap(loss)(np.stack([s, t]), np.stack([t, s]))
        chex.assert_trees_all_close(stacked, np.stack([loss(s, t), loss(t, s)]), rtol=1e-6)
    head = losses.teacher_head_regression
    chex.assert_trees_all_close(jax.jit(head)(h_s, teacher, kernel, bias), head(h_s, teacher, kernel, bias))
    per_example = jax.vmap(lambda x, z: head(x[None], z[None], kernel, bias)[0])(h_s, teacher)
    chex.assert_trees_all_close(per_example, head(h_s, teacher, kernel, bias), rtol=1e-6)


@pytest.mark.parametrize("loss", [losses.embedding_l2, losses.embedding_cosine])
def test_bad_shapes_raise_and_tell_the_user_to_project(loss):
    with pytest.raises(ValueError, match=r"teacher_embedding: expected shape \[4, 8\].*connector"):
        loss(jnp.zeros((4, 8)), jnp.zeros((4, 6)))
    with pytest.raises(ValueError, match=r"projected_student: expected rank 2"):
        loss(jnp.zeros((4, 2, 2)), jnp.zeros((4, 2, 2)))


def test_head_regression_bad_shapes_name_the_argument():
    s, teacher, kernel, bias = _head_case(b=4, d=5, c=3)
    with pytest.raises(ValueError, match=r"projected_student: expected width 5.*connector"):
        losses.teacher_head_regression(s[:, :4], teacher, kernel, bias)
    with pytest.raises(ValueError, match=r"teacher_logits: expected shape \[4, 3\]"):
        losses.teacher_head_regression(s, teacher[:, :2], kernel, bias)
    with pytest.raises(ValueError, match=r"head_bias: expected shape \[3\]"):
        losses.teacher_head_regression(s, teacher, kernel, bias[:2])
    with pytest.raises(ValueError, match=r"head_kernel: expected rank 2"):
        losses.teacher_head_regression(s, teacher, kernel[0], bias)

"""Tests for jdistill.losses.rules: the rule-regularised teacher and the student's objective."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses

rule_teacher = jax.jit(losses.rule_teacher)
rule_distillation = jax.jit(losses.rule_distillation)


def _x(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _r(seed, *shape):
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def _ref_teacher(logits, r, c, lam):
    logits = np.asarray(logits, np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    q = np.empty_like(p)
    for b in range(len(p)):
        for k in range(p.shape[1]):
            q[b, k] = p[b, k] * np.exp(-c * sum(lam[l] * (1 - r[b, l, k]) for l in range(len(lam))))
        q[b] /= q[b].sum()
    return q


def test_teacher_matches_reference():
    logits, r, lam = _x(0, 4, 5), _r(1, 4, 2, 5), np.array([1.0, 0.5], np.float32)
    q = losses.rule_teacher(logits, r, C=3.0, rule_weights=lam)
    chex.assert_shape(q, (4, 5))
    assert q.dtype == jnp.float32
    chex.assert_trees_all_close(q, _ref_teacher(logits, r, 3.0, lam).astype(np.float32), atol=1e-6)


def test_teacher_hand_computed():
    # Uniform student over 2 classes; one rule false for class 1 with weight 1, C = log 3:
    # q = (1, 1/3) / (4/3) = (3/4, 1/4).
    q = losses.rule_teacher(
        np.zeros((1, 2), np.float32),
        np.array([[[1.0, 0.0]]], np.float32),
        C=np.log(3.0),
        rule_weights=np.ones(1),
    )
    chex.assert_trees_all_close(q, np.array([[0.75, 0.25]], np.float32), atol=1e-6)


def test_satisfied_rules_leave_the_student_unchanged_and_violations_shift_mass():
    logits = _x(2, 3, 4)
    p = jax.nn.softmax(logits)
    ones = np.ones((3, 2, 4), np.float32)
    chex.assert_trees_all_close(
        losses.rule_teacher(logits, ones, C=5.0, rule_weights=np.ones(2)), p, atol=1e-6
    )
    # A rule violated equally by every class changes nothing either (the normaliser absorbs it).
    chex.assert_trees_all_close(
        losses.rule_teacher(logits, 0.3 * ones, C=5.0, rule_weights=np.ones(2)), p, atol=1e-6
    )
    # A rule false only for class 0: q moves mass away from it, more so as C grows.
    r = ones.copy()
    r[:, 0, 0] = 0.0
    q1 = losses.rule_teacher(logits, r, C=1.0, rule_weights=np.ones(2))
    q5 = losses.rule_teacher(logits, r, C=5.0, rule_weights=np.ones(2))
    assert np.all(q1[:, 0] < p[:, 0]) and np.all(q5[:, 0] < q1[:, 0])
    chex.assert_trees_all_close(q5.sum(-1), np.ones(3, np.float32), atol=1e-6)


def test_distillation_matches_reference_and_masks_unlabelled():
    logits, q = _x(3, 4, 5), np.asarray(jax.nn.softmax(_x(4, 4, 5)))
    labels = np.array([0, 3, -1, 2], np.int32)
    pi = np.array([0.3, 0.3, 1.0, 0.0], np.float32)
    got = rule_distillation(logits, labels, q, imitation=pi)
    log_p = np.asarray(jax.nn.log_softmax(logits.astype(np.float64)))
    want = [(1 - pi[b]) * (-log_p[b, max(labels[b], 0)]) + pi[b] * -(q[b] * log_p[b]).sum() for b in range(4)]
    chex.assert_shape(got, (4,))
    chex.assert_trees_all_close(got, np.array(want, np.float32), rtol=1e-5)
    # A scalar imitation weight is broadcast.
    chex.assert_trees_all_close(
        rule_distillation(logits, labels.clip(0), q, imitation=0.0),
        np.array([-log_p[b, labels.clip(0)[b]] for b in range(4)], np.float32),
        rtol=1e-5,
    )


def test_imitation_weight_ramps_up_to_pi0():
    pi = losses.imitation_weight(jnp.arange(0, 200), pi0=0.9, alpha=0.95)
    assert float(pi[0]) == 0.0 and float(pi[-1]) == pytest.approx(0.9)
    assert np.all(np.diff(np.asarray(pi)) >= 0)
    assert float(pi[1]) == pytest.approx(0.05)


def test_gradients_finite_jit_and_vmap():
    logits, r, lam = _x(5, 3, 4), _r(6, 3, 2, 4), np.array([1.0, 2.0], np.float32)
    r[0, 0, 1] = 0.0  # hard violation

    def loss(s):
        q = jax.lax.stop_gradient(losses.rule_teacher(s, r, C=6.0, rule_weights=lam))
        return jnp.mean(losses.rule_distillation(s, jnp.array([0, 1, 2]), q, imitation=0.5))

    chex.assert_tree_all_finite(jax.grad(loss)(logits))
    eager = losses.rule_teacher(logits, r, C=6.0, rule_weights=lam)
    chex.assert_trees_all_close(rule_teacher(logits, r, C=6.0, rule_weights=lam), eager, atol=1e-6)
    vmapped = jax.vmap(lambda s, rr: losses.rule_teacher(s, rr, C=6.0, rule_weights=lam))(
        logits[:, None], r[:, None]
    )
    chex.assert_trees_all_close(vmapped[:, 0], eager, atol=1e-6)


def test_bad_inputs_raise():
    logits, r = _x(0, 3, 4), _r(0, 3, 2, 4)
    with pytest.raises(ValueError, match="rule_satisfaction"):
        losses.rule_teacher(logits, r[:, :, :3], C=1.0, rule_weights=np.ones(2))
    with pytest.raises(ValueError, match="rule_weights"):
        losses.rule_teacher(logits, r, C=1.0, rule_weights=np.ones(3))
    with pytest.raises(ValueError, match="C"):
        losses.rule_teacher(logits, r, C=0.0, rule_weights=np.ones(2))
    with pytest.raises(ValueError, match="teacher_probs"):
        losses.rule_distillation(logits, np.zeros(3, np.int32), logits[:, :3], imitation=0.5)
    with pytest.raises(ValueError, match="imitation"):
        losses.rule_distillation(logits, np.zeros(3, np.int32), logits, imitation=np.ones(2))
    with pytest.raises(ValueError, match="labels"):
        losses.rule_distillation(logits, np.zeros(3, np.float32), logits, imitation=0.5)

"""jdistill.rule_distill: the batches of labelled plus drawn unlabelled examples, and the rule teacher."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses, rule_distill
from jdistill.data import Dataset
from jdistill.data.dataset import UNLABELLED


def dataset(labelled=5, unlabelled=40) -> Dataset:
    rng = np.random.default_rng(0)
    n = labelled + unlabelled
    y = np.concatenate([rng.integers(0, 3, labelled), np.full(unlabelled, UNLABELLED)]).astype(np.int32)
    order = rng.permutation(n)  # labelled and unlabelled examples interleaved
    x = rng.normal(size=(n, 1, 1, 2)).astype(np.float32)
    return Dataset("toy", x[order], y[order], np.zeros((7, 1, 1, 2), np.float32), np.zeros(7, np.int32), 3)


def test_every_batch_holds_every_labelled_example_and_a_draw_of_unlabelled_ones():
    data = dataset()
    source = rule_distill.LabelledAndUnlabelled(data, unlabelled=9, steps_per_epoch=4)
    assert source.rows == 14 and source.batch_size == 16  # padded to a multiple of 8
    order = np.asarray(source.order(3, 0))
    assert order.shape == (4, 16)
    labelled = np.flatnonzero(data.y_train != UNLABELLED)
    for row in order:
        np.testing.assert_array_equal(row[:5], labelled)
        assert np.all(data.y_train[row[5:14]] == UNLABELLED) and np.all(row[14:] == -1)
    # Fresh draws every round and every epoch; the same for the same seed and epoch (resumption).
    assert len({tuple(row[5:14]) for row in order}) == 4
    assert not np.array_equal(order, source.order(3, 1))
    np.testing.assert_array_equal(order, source.order(3, 0))
    batch = source.batch(source.arrays(), jnp.asarray(order[0]), None)
    np.testing.assert_array_equal(batch["weight"], [1.0] * 14 + [0.0] * 2)
    np.testing.assert_array_equal(batch["label"][:5], data.y_train[labelled])
    assert np.all(np.asarray(batch["label"])[5:] == UNLABELLED)
    np.testing.assert_array_equal(batch["image"][:5], data.x_train[labelled])


def test_without_unlabelled_draws_a_batch_is_the_labelled_set():
    source = rule_distill.LabelledAndUnlabelled(dataset(), unlabelled=0, steps_per_epoch=2, multiple_of=1)
    assert source.batch_size == 5
    np.testing.assert_array_equal(source.order(0, 0)[1], np.flatnonzero(dataset().y_train != UNLABELLED))
    with pytest.raises(ValueError, match="no unlabelled"):
        rule_distill.LabelledAndUnlabelled(dataset(unlabelled=0), unlabelled=4, steps_per_epoch=1)
    with pytest.raises(ValueError, match="no labelled"):
        rule_distill.LabelledAndUnlabelled(dataset(labelled=0), unlabelled=4, steps_per_epoch=1)


def test_the_teachers_logits_give_the_rule_teacher():
    """softmax(teacher_logits) is losses.rule_teacher: q ∝ p exp(-C sum_l lambda_l (1 - r_l)), and
    stays finite where q underflows."""
    w = jax.random.normal(jax.random.key(0), (2, 3)) * 30

    def model(x):
        return x.reshape(len(x), -1) @ w

    def rules(module, x):  # two rules: one prefers class 0, one reads the model on -x
        first = jnp.broadcast_to(jnp.array([1.0, 0.2, 0.0]), (len(x), 3))
        return jnp.stack([first, jax.nn.softmax(module(-x))], axis=1)

    x = jax.random.normal(jax.random.key(1), (16, 1, 1, 2))
    weights = jnp.array([0.5, 2.0])
    logits = rule_distill.teacher_logits(model, x, rules=rules, C=6.0, rule_weights=weights)
    want = losses.rule_teacher(model(x), rules(model, x), C=6.0, rule_weights=weights)
    np.testing.assert_allclose(jax.nn.softmax(logits), want, atol=1e-6)
    np.testing.assert_allclose(
        rule_distill.teacher_probs(model, x, rules=rules, C=6.0, rule_weights=weights), want, atol=1e-6
    )
    assert np.all(np.isfinite(logits))

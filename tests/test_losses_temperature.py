"""Softened probabilities and entropy against NumPy and their limits in T."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses

LOGITS = np.array([[3.0, 1.0, 0.2, -1.5], [0.5, 0.5, 2.0, -0.3]], np.float32)


def _softmax_ref(z, t):
    e = np.exp((z - z.max(-1, keepdims=True)) / t)
    return e / e.sum(-1, keepdims=True)


def _entropy_ref(p):
    return np.array([-sum(x * math.log(x) for x in row if x > 0) for row in p])


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
def test_softened_probabilities_match_numpy(temperature):
    chex.assert_trees_all_close(
        losses.softened_probabilities(LOGITS, temperature=temperature),
        _softmax_ref(LOGITS, temperature),
        rtol=1e-5,
    )


def test_temperature_one_is_the_softmax_and_high_temperature_is_uniform():
    chex.assert_trees_all_close(
        losses.softened_probabilities(LOGITS, temperature=1.0), jax.nn.softmax(LOGITS)
    )
    chex.assert_trees_all_close(
        losses.softened_probabilities(LOGITS, temperature=1e6), np.full((2, 4), 0.25), atol=1e-5
    )
    # T -> 0: the arg-max's one-hot vector.
    chex.assert_trees_all_close(
        losses.softened_probabilities(LOGITS, temperature=1e-3), np.eye(4)[LOGITS.argmax(-1)], atol=1e-5
    )


def test_entropy_matches_numpy_and_its_extremes():
    p = _softmax_ref(LOGITS, 2.0)
    chex.assert_trees_all_close(losses.entropy(p), _entropy_ref(p), rtol=1e-5)
    chex.assert_trees_all_close(losses.entropy(np.eye(4)), np.zeros(4), atol=1e-7)
    chex.assert_trees_all_close(losses.entropy(np.full((3, 10), 0.1)), np.full(3, math.log(10)), rtol=1e-6)
    chex.assert_trees_all_close(losses.entropy(np.full(10, 0.1), normalise=True), 1.0, rtol=1e-6)
    chex.assert_trees_all_close(losses.entropy(p, normalise=True), _entropy_ref(p) / math.log(4), rtol=1e-5)


def test_entropy_grows_with_temperature_for_a_generic_vector():
    temperatures = np.geomspace(0.1, 100, 40)
    h = [float(losses.entropy(losses.softened_probabilities(LOGITS[0], temperature=t))) for t in temperatures]
    assert np.all(np.diff(h) > 0) and h[-1] < math.log(4)


def test_low_precision_jit_vmap_and_finite_gradients():
    out = losses.softened_probabilities(LOGITS.astype(jnp.bfloat16), temperature=2.0)
    assert out.dtype == jnp.float32
    chex.assert_trees_all_close(out, _softmax_ref(LOGITS, 2.0), atol=0.02)
    f = jax.jit(lambda z, t: losses.entropy(losses.softened_probabilities(z, temperature=t)))
    chex.assert_trees_all_close(f(LOGITS, 3.0), _entropy_ref(_softmax_ref(LOGITS, 3.0)), rtol=1e-5)
    by_t = jax.vmap(lambda t: f(LOGITS, t))(jnp.array([1.0, 3.0]))
    chex.assert_trees_all_close(by_t[1], f(LOGITS, 3.0), rtol=1e-6)
    chex.assert_tree_all_finite(jax.grad(lambda p: losses.entropy(p).sum())(jnp.array([[0.5, 0.5, 0.0]])))
    chex.assert_tree_all_finite(jax.grad(lambda t: f(LOGITS, t).sum())(2.0))
    # At T = 1e-3 most probabilities underflow to exactly 0.
    chex.assert_tree_all_finite(jax.grad(lambda z: f(z, 1e-3).sum())(LOGITS))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="temperature: expected a positive scalar"):
        losses.softened_probabilities(LOGITS, temperature=0.0)
    with pytest.raises(ValueError, match="logits: expected rank >= 1"):
        losses.softened_probabilities(jnp.float32(1.0), temperature=1.0)
    with pytest.raises(ValueError, match="probs: normalising by log C needs C >= 2"):
        losses.entropy(jnp.ones((3, 1)), normalise=True)

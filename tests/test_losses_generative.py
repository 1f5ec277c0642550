"""Generative latent-mapping losses against numpy references and hand values, with their
properties (zero at the prior / at equality), gradients, jit/vmap, dtypes and shape errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.losses import bernoulli_nll, decoder_distillation, gaussian_kl, latent_regression, negative_elbo

RNG = np.random.default_rng(0)
B, L, H = 4, 3, 5


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_gaussian_kl(m, v):
    # KL(N(m, s^2) || N(0, 1)) = log(1/s) + (s^2 + m^2) / 2 - 1/2, summed over dimensions
    s2 = np.exp(v)
    return np.sum(-0.5 * v + 0.5 * (s2 + m**2) - 0.5, axis=-1)


def np_bce(logits, x):
    p = sigmoid(logits.astype(np.float64))
    return -(x * np.log(p) + (1 - x) * np.log(1 - p))


def np_bernoulli_kl(s, t):
    p, q = sigmoid(t.astype(np.float64)), sigmoid(s.astype(np.float64))
    return np.sum((p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))).reshape(len(s), -1), axis=-1)


@pytest.fixture
def gaussian():
    return RNG.normal(size=(B, L)).astype(np.float32), RNG.normal(size=(B, L)).astype(np.float32)


@pytest.fixture
def images():
    logits = RNG.normal(size=(B, H, H, 1)).astype(np.float32) * 3
    return logits, RNG.uniform(size=(B, H, H, 1)).astype(np.float32)


# ---------------------------------------------------------------- values


def test_gaussian_kl_matches_numpy_and_hand_values(gaussian):
    m, v = gaussian
    chex.assert_trees_all_close(gaussian_kl(m, v), np_gaussian_kl(m, v), rtol=1e-5)
    # mean 1, variance 1 in one dimension: 1/2; variance e^2 (log-variance 2): (e^2 - 3) / 2
    chex.assert_trees_all_close(
        gaussian_kl(jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([[0.0, 0.0], [0.0, 2.0]])),
        jnp.array([0.5, 0.5 * (np.exp(2.0) + 4.0 - 1.0 - 2.0)]),
        rtol=1e-6,
    )


def test_gaussian_kl_is_zero_at_the_prior_and_positive_elsewhere(gaussian):
    chex.assert_trees_all_close(gaussian_kl(jnp.zeros((B, L)), jnp.zeros((B, L))), jnp.zeros(B))
    assert np.all(np.asarray(gaussian_kl(*gaussian)) > 0)


def test_bernoulli_nll_matches_numpy_and_hand_values(images):
    logits, x = images
    expected = np_bce(logits, x).reshape(B, -1).sum(-1)
    chex.assert_trees_all_close(bernoulli_nll(logits, x), expected, rtol=1e-5)
    # logit 0: probability 1/2 for any target, log 2 per pixel
    chex.assert_trees_all_close(
        bernoulli_nll(jnp.zeros((2, 3)), jnp.array([[0, 1, 0.3]] * 2)), 3 * jnp.log(2.0) * jnp.ones(2)
    )


def test_negative_elbo_is_nll_plus_beta_kl(images, gaussian):
    logits, x = images
    m, v = gaussian
    for beta in (0.0, 1.0, 4.0):
        chex.assert_trees_all_close(
            negative_elbo(logits, x, m, v, beta=beta),
            np_bce(logits, x).reshape(B, -1).sum(-1) + beta * np_gaussian_kl(m, v),
            rtol=1e-5,
        )


def test_latent_regression_is_the_summed_squared_error(gaussian):
    z_hat, z = gaussian
    chex.assert_trees_all_close(latent_regression(z_hat, z), np.sum((z_hat - z) ** 2, -1), rtol=1e-6)
    chex.assert_trees_all_close(
        latent_regression(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 4.0]])), jnp.array([5.0])
    )
    chex.assert_trees_all_close(latent_regression(z, z), jnp.zeros(B))


def test_decoder_distillation_is_the_bernoulli_kl(images):
    s = RNG.normal(size=(B, H, H, 1)).astype(np.float32) * 3
    t, _ = images
    chex.assert_trees_all_close(decoder_distillation(s, t), np_bernoulli_kl(s, t), rtol=1e-4, atol=1e-6)
    # teacher p = 1/2 (logit 0), student q = sigmoid(log 3) = 3/4:
    # KL = (log((1/2) / (3/4)) + log((1/2) / (1/4))) / 2 = log(4/3) / 2
    hand = 0.5 * np.log(4 / 3)
    chex.assert_trees_all_close(
        decoder_distillation(jnp.array([[np.log(3.0)]]), jnp.zeros((1, 1))), jnp.array([hand]), rtol=1e-6
    )


def test_decoder_distillation_is_zero_at_equality_and_its_gradient_is_the_cross_entropys(images):
    t, _ = images
    chex.assert_trees_all_close(decoder_distillation(t, t), jnp.zeros(B), atol=1e-5)
    s = t + RNG.normal(size=t.shape).astype(np.float32)
    assert np.all(np.asarray(decoder_distillation(s, t)) > 0)
    grad = jax.grad(lambda s: jnp.sum(decoder_distillation(s, t)))(s)
    chex.assert_trees_all_close(grad, sigmoid(s) - sigmoid(t), atol=1e-6)


def test_decoder_distillation_stays_finite_for_saturated_pixels():
    s = jnp.array([[-60.0, 60.0, 0.0]])
    t = jnp.array([[60.0, -60.0, 80.0]])
    value, grad = jax.value_and_grad(lambda s: decoder_distillation(s, t)[0])(s)
    chex.assert_tree_all_finite((value, grad))
    assert float(value) > 100  # two confidently wrong pixels


# ---------------------------------------------------------------- transformations


CASES = {
    "gaussian_kl": (gaussian_kl, lambda: (RNG.normal(size=(B, L)), RNG.normal(size=(B, L)))),
    "bernoulli_nll": (bernoulli_nll, lambda: (RNG.normal(size=(B, H, H, 1)), RNG.uniform(size=(B, H, H, 1)))),
    "latent_regression": (latent_regression, lambda: (RNG.normal(size=(B, L)), RNG.normal(size=(B, L)))),
    "decoder_distillation": (
        decoder_distillation,
        lambda: (RNG.normal(size=(B, H, H, 1)), RNG.normal(size=(B, H, H, 1))),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_jit_and_vmap_agree_with_eager_and_gradients_are_finite(name):
    fn, make = CASES[name]
    args = [jnp.asarray(a, jnp.float32) for a in make()]
    eager = fn(*args)
    chex.assert_shape(eager, (B,))
    chex.assert_trees_all_close(jax.jit(fn)(*args), eager, rtol=1e-6)
    per_row = jax.vmap(lambda *row: fn(*(r[None] for r in row))[0])(*args)
    chex.assert_trees_all_close(per_row, eager, rtol=1e-6)
    grads = jax.grad(lambda *a: jnp.sum(fn(*a)), argnums=tuple(range(len(args))))(*args)
    chex.assert_tree_all_finite(grads)
    assert any(float(jnp.abs(g).sum()) > 0 for g in grads)


@pytest.mark.parametrize("name", CASES)
def test_low_precision_inputs_compute_in_float32(name):
    fn, make = CASES[name]
    args = [np.asarray(a, np.float32) for a in make()]
    low = fn(*(jnp.asarray(a, jnp.bfloat16) for a in args))
    assert low.dtype == jnp.float32
    reference = fn(*(jnp.asarray(jnp.asarray(a, jnp.bfloat16), jnp.float32) for a in args))
    chex.assert_trees_all_close(low, reference, rtol=1e-6)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: gaussian_kl(jnp.zeros(L), jnp.zeros(L)), "mean"),
        (lambda: gaussian_kl(jnp.zeros((B, L)), jnp.zeros((B, L + 1))), "log_variance"),
        (lambda: bernoulli_nll(jnp.zeros(B), jnp.zeros(B)), "logits"),
        (lambda: bernoulli_nll(jnp.zeros((B, H)), jnp.zeros((B, H + 1))), "targets"),
        (lambda: latent_regression(jnp.zeros((B, L, 1)), jnp.zeros((B, L, 1))), "predicted_latent"),
        (lambda: latent_regression(jnp.zeros((B, L)), jnp.zeros((B + 1, L))), "teacher_latent"),
        (lambda: decoder_distillation(jnp.zeros((B, H)), jnp.zeros((B, H, 1))), "teacher_logits"),
        (
            lambda: negative_elbo(
                jnp.zeros((B, H)), jnp.zeros((B, H)), jnp.zeros((B + 1, L)), jnp.zeros((B + 1, L))
            ),
            "mean",
        ),
    ],
)
def test_bad_shapes_raise_naming_the_argument(call, argument):
    with pytest.raises(ValueError, match=f"^{argument}:"):
        call()

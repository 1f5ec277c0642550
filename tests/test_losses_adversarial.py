"""Tests for jdistill.losses.adversarial: DFAD, DAFL, ZSKT, discriminator objectives,
gradient penalty and mutual learning."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.losses import adversarial as adv

# Jitted once at module level: eager dispatch is slow on CPU. The eager path is covered by the
# jit-vs-eager and validation tests.
dfad = jax.jit(adv.dfad)
dfad_generator = jax.jit(adv.dfad_generator)
dafl_one_hot = jax.jit(adv.dafl_one_hot)
dafl_information_entropy = jax.jit(adv.dafl_information_entropy)
dafl_activation = jax.jit(adv.dafl_activation)
dafl_generator = jax.jit(adv.dafl_generator)
zskt_belief = jax.jit(adv.zskt_belief)
zskt_generator = jax.jit(adv.zskt_generator)
discriminator_loss = jax.jit(adv.discriminator_loss, static_argnames="objective")
fooling_loss = jax.jit(adv.fooling_loss, static_argnames="objective")
mutual_learning = jax.jit(adv.mutual_learning)


def _x(seed, *shape, scale=3.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _np_log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))


def _np_softplus(x):
    return np.log1p(np.exp(np.asarray(x, np.float64)))


def _ref_discriminator(r, f, objective):
    r, f = np.asarray(r, np.float64), np.asarray(f, np.float64)
    if objective == "bce":
        return np.mean(_np_softplus(-r)) + np.mean(_np_softplus(f))
    if objective == "least_squares":
        return 0.5 * np.mean((r - 1) ** 2) + 0.5 * np.mean(f**2)
    return np.mean(np.maximum(1 - r, 0)) + np.mean(np.maximum(1 + f, 0))


def _ref_fooling(f, objective):
    f = np.asarray(f, np.float64)
    return {
        "bce": np.mean(_np_softplus(-f)),
        "least_squares": 0.5 * np.mean((f - 1) ** 2),
        "hinge": -f.mean(),
    }[objective]


def _ref_mutual(logits, temperature):
    log_p = _np_log_softmax(np.asarray(logits, np.float64) / temperature)
    k = len(log_p)
    out = np.zeros(log_p.shape[:2])
    for a in range(k):
        for j in range(k):
            if j != a:
                out[a] += np.sum(np.exp(log_p[j]) * (log_p[j] - log_p[a]), axis=-1) / (k - 1)
    return temperature**2 * out


def _f32(x):
    return np.asarray(x, np.float32)


# ---------------------------------------------------------------- data-free games


def test_dfad_and_zskt_match_reference():
    s, t = _x(0, 5, 7), _x(1, 5, 7)
    want_dfad = np.mean(np.abs(s.astype(np.float64) - t), axis=-1)
    log_t, log_s = _np_log_softmax(t), _np_log_softmax(s)
    want_zskt = np.sum(np.exp(log_t) * (log_t - log_s), axis=-1) / 7
    for got, want in ((dfad(s, t), want_dfad), (zskt_belief(s, t), want_zskt)):
        chex.assert_shape(got, (5,))
        chex.assert_trees_all_close(got, _f32(want), rtol=1e-5, atol=1e-6)
    # Generators are exactly the negatives of the students' objectives.
    np.testing.assert_array_equal(dfad_generator(s, t), -dfad(s, t))
    np.testing.assert_array_equal(zskt_generator(s, t), -zskt_belief(s, t))


def test_dfad_and_zskt_zero_when_student_equals_teacher():
    s = _x(2, 4, 6)
    chex.assert_trees_all_close(dfad(s, s), jnp.zeros(4), atol=0)
    chex.assert_trees_all_close(zskt_belief(s, s), jnp.zeros(4), atol=1e-7)
    assert float(jnp.min(zskt_belief(s, _x(3, 4, 6)))) > 0


@pytest.mark.parametrize(
    "student,generator", [(adv.dfad, adv.dfad_generator), (adv.zskt_belief, adv.zskt_generator)]
)
def test_generator_gradient_is_negative_of_students(student, generator):
    s, t = _x(4, 4, 6), _x(5, 4, 6)
    w = jnp.asarray(_x(6, 4, scale=1.0))
    g_student = jax.jit(jax.grad(lambda s, t: jnp.dot(w, student(s, t)), argnums=(0, 1)))(s, t)
    g_generator = jax.jit(jax.grad(lambda s, t: jnp.dot(w, generator(s, t)), argnums=(0, 1)))(s, t)
    chex.assert_trees_all_close(g_generator, jax.tree.map(jnp.negative, g_student), atol=0)
    assert float(jnp.abs(g_student[0]).max()) > 0


def test_dafl_terms_match_reference():
    t, feats = _x(7, 6, 5), _x(8, 6, 4, 3, 3)
    log_p = _np_log_softmax(t)
    want_one_hot = -log_p[np.arange(6), np.argmax(t, -1)]
    pbar = np.exp(log_p).mean(0)
    want_ie = np.sum(pbar * np.log(pbar))
    want_act = -np.mean(np.abs(feats.astype(np.float64)))
    chex.assert_trees_all_close(dafl_one_hot(t), _f32(want_one_hot), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(dafl_information_entropy(t), np.float32(want_ie), rtol=1e-5)
    chex.assert_trees_all_close(dafl_activation(feats), np.float32(want_act), rtol=1e-5)
    # Default weights: the reference's 1 * one-hot + 5 * log10 entropy + 0.1 * activation.
    want = want_one_hot.mean() + 5 * np.sum(pbar * np.log10(pbar)) + 0.1 * want_act
    chex.assert_trees_all_close(dafl_generator(t, feats), np.float32(want), rtol=1e-5)
    assert adv.DAFL_INFORMATION_ENTROPY_WEIGHT == pytest.approx(5 / math.log(10))
    got = dafl_generator(t, feats, one_hot_weight=2.0, information_entropy_weight=0.5, activation_weight=3.0)
    chex.assert_trees_all_close(
        got, np.float32(2 * want_one_hot.mean() + 0.5 * want_ie + 3 * want_act), rtol=1e-5
    )


def test_dafl_exact_values():
    # softmax([0, ln 3, 0]) = [1/5, 3/5, 1/5]: the one-hot loss is ln(5/3).
    t = np.array([[0.0, math.log(3.0), 0.0], [100.0, 0.0, 0.0]], np.float32)
    chex.assert_trees_all_close(dafl_one_hot(t), np.float32([math.log(5 / 3), 0.0]), rtol=1e-6, atol=1e-7)
    # A uniform batch (flat logits, or confident rows covering every class once) gives -log C.
    for uniform in (np.zeros((3, 4), np.float32), 60 * np.eye(4, dtype=np.float32)):
        chex.assert_trees_all_close(dafl_information_entropy(uniform), np.float32(-math.log(4)), rtol=1e-6)
    # All rows confident in the same class: the mean prediction is one-hot, entropy 0.
    chex.assert_trees_all_close(dafl_information_entropy(np.tile(t[1:], (3, 1))), 0.0, atol=1e-6)
    chex.assert_trees_all_close(dafl_activation(np.array([[-1.0, 3.0], [0.0, -4.0]])), np.float32(-2.0))


# ---------------------------------------------------------------- discriminators


@pytest.mark.parametrize("objective", adv.OBJECTIVES)
def test_discriminator_objectives_match_reference(objective):
    r, f = _x(9, 6, 1), _x(10, 6, 1)
    got = discriminator_loss(r, f, objective=objective)
    chex.assert_shape(got, ())
    chex.assert_trees_all_close(got, np.float32(_ref_discriminator(r, f, objective)), rtol=1e-5, atol=1e-6)
    got = fooling_loss(f, objective=objective)
    chex.assert_trees_all_close(got, np.float32(_ref_fooling(f, objective)), rtol=1e-5, atol=1e-6)
    assert adv.discriminator_loss(r, f) == discriminator_loss(r, f, objective="bce")  # Default.


def test_discriminator_exact_values():
    r = np.array([2.0, 0.5, -1.0, 3.0], np.float32)  # relu(1 - r) = [0, 0.5, 2, 0]: mean 0.625
    f = np.array([-3.0, 0.0, 0.5, -0.5], np.float32)  # relu(1 + f) = [0, 1, 1.5, 0.5]: mean 0.75
    chex.assert_trees_all_close(discriminator_loss(r, f, objective="hinge"), np.float32(1.375), rtol=1e-6)
    chex.assert_trees_all_close(fooling_loss(f, objective="hinge"), np.float32(0.75), rtol=1e-6)
    zeros, ones = np.zeros(4, np.float32), np.ones(4, np.float32)
    chex.assert_trees_all_close(discriminator_loss(zeros, zeros), np.float32(2 * math.log(2)), rtol=1e-6)
    chex.assert_trees_all_close(discriminator_loss(ones, zeros, objective="least_squares"), 0.0, atol=0)
    chex.assert_trees_all_close(discriminator_loss(zeros, ones, objective="least_squares"), 1.0, rtol=1e-6)
    # A perfect BCE discriminator has (almost) no loss.
    assert float(discriminator_loss(50 * ones, -50 * ones)) < 1e-12


def test_fooling_losses_gradients():
    b = 8
    grad = jax.jit(jax.grad(adv.fooling_loss), static_argnames="objective")
    # Non-saturating BCE: a confidently rejected fake still gets gradient -sigmoid(-f) / B ~ -1/B.
    g = grad(np.full(b, -30.0, np.float32), objective="bce")
    chex.assert_trees_all_close(g, jnp.full(b, -1.0 / b), rtol=1e-6)
    # Least squares: minimum 0 at f = 1, with zero gradient; larger on either side.
    ones = np.ones(b, np.float32)
    assert float(fooling_loss(ones, objective="least_squares")) == 0.0
    chex.assert_trees_all_close(grad(ones, objective="least_squares"), jnp.zeros(b), atol=0)
    for d in (-0.1, 0.1):
        assert float(fooling_loss(ones + d, objective="least_squares")) > 0
    chex.assert_trees_all_close(grad(ones, objective="hinge"), jnp.full(b, -1.0 / b), rtol=1e-6)


# ---------------------------------------------------------------- gradient penalty


@pytest.mark.parametrize("shape", [(5, 6), (3, 2, 2, 3)])
def test_gradient_penalty_linear_critic(shape):
    real, fake = _x(11, *shape), _x(12, *shape)
    w = _x(13, math.prod(shape[1:]), scale=1.0)

    def penalty(w, key):
        return adv.gradient_penalty(lambda x: x.reshape(x.shape[0], -1) @ w, real, fake, key)

    penalty = jax.jit(penalty)
    want = (np.linalg.norm(w.astype(np.float64)) - 1) ** 2
    for seed in range(3):  # The gradient of a linear critic is w everywhere: the key does not matter.
        chex.assert_trees_all_close(penalty(w, jax.random.key(seed)), np.float32(want), rtol=1e-5)
    unit = w / np.linalg.norm(w)
    chex.assert_trees_all_close(penalty(unit, jax.random.key(0)), 0.0, atol=1e-10)
    g = jax.jit(jax.grad(penalty))(w, jax.random.key(0))
    chex.assert_tree_all_finite(g)
    norm = np.linalg.norm(w)
    chex.assert_trees_all_close(g, _f32(2 * (norm - 1) * w / norm), rtol=1e-4, atol=1e-6)


def test_gradient_penalty_nonlinear_critic_and_target():
    # With real == fake the interpolate is real whatever eps: a quadratic critic 0.5 ||x||^2 has
    # gradient x, so the penalty is mean_b (||x_b|| - target)^2. Scores [B, 1] are accepted.
    x = _x(14, 4, 5, scale=1.0)
    norms = np.linalg.norm(x.astype(np.float64), axis=-1)
    critic = lambda x: 0.5 * jnp.sum(x**2, axis=-1, keepdims=True)
    for target in (1.0, 2.5):
        got = jax.jit(lambda k, t: adv.gradient_penalty(critic, x, x, k, target=t))(jax.random.key(1), target)
        chex.assert_trees_all_close(got, np.float32(np.mean((norms - target) ** 2)), rtol=1e-5)
    # real != fake: the penalty depends on the key through the per-example interpolation.
    p = jax.jit(lambda k: adv.gradient_penalty(critic, x, 0 * x, k, target=0.0))
    values = [float(p(jax.random.key(s))) for s in range(2)]
    assert values[0] != values[1]
    assert all(0 <= v <= np.mean(norms**2) for v in values)


# ---------------------------------------------------------------- mutual learning


@pytest.mark.parametrize("peers", [2, 3])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_mutual_learning_matches_reference(peers, temperature):
    logits = _x(15, peers, 4, 6)
    got = mutual_learning(logits, temperature=temperature)
    chex.assert_shape(got, (peers, 4))
    chex.assert_trees_all_close(got, _f32(_ref_mutual(logits, temperature)), rtol=1e-5, atol=1e-6)


def test_mutual_learning_zero_when_peers_agree():
    logits = np.tile(_x(16, 1, 4, 6), (3, 1, 1))
    chex.assert_trees_all_close(mutual_learning(logits, temperature=2.0), jnp.zeros((3, 4)), atol=1e-6)


def test_mutual_learning_moves_each_peer_only():
    logits, temperature = _x(17, 3, 4, 5), 2.0
    p = np.exp(_np_log_softmax(logits.astype(np.float64) / temperature))
    grad = jax.jit(
        jax.grad(lambda z, k: jnp.sum(adv.mutual_learning(z, temperature=temperature)[k])),
        static_argnums=1,
    )
    for k in range(3):
        g = grad(logits, k)
        others = [j for j in range(3) if j != k]
        np.testing.assert_array_equal(np.asarray(g)[others], 0.0)
        # d/dz_k T^2 KL(p_j || p_k) = T (p_k - p_j), averaged over the other peers.
        want = temperature * (p[k] - p[others].mean(0))
        chex.assert_trees_all_close(g[k], _f32(want), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- transformations


def _all_losses(s, t, feats, r, f, peers):
    return {
        "dfad": adv.dfad(s, t),
        "dfad_generator": adv.dfad_generator(s, t),
        "zskt": adv.zskt_belief(s, t),
        "zskt_generator": adv.zskt_generator(s, t),
        "one_hot": adv.dafl_one_hot(t),
        "entropy": adv.dafl_information_entropy(t),
        "dafl": adv.dafl_generator(t, feats),
        **{f"d_{o}": adv.discriminator_loss(r, f, objective=o) for o in adv.OBJECTIVES},
        **{f"g_{o}": adv.fooling_loss(f, objective=o) for o in adv.OBJECTIVES},
        "mutual": adv.mutual_learning(peers, temperature=2.0),
    }


_SHAPES = [(4, 5), (4, 5), (4, 3), (4,), (4,), (2, 4, 5)]  # s, t, feats, r, f, peers


def _inputs(seed):
    return tuple(_x(seed + i, *shape) for i, shape in enumerate(_SHAPES))


def test_jit_matches_eager_and_gradients_are_finite():
    args = _inputs(20)
    chex.assert_trees_all_close(jax.jit(_all_losses)(*args), _all_losses(*args), rtol=1e-6, atol=1e-7)
    # Extreme logits: probabilities underflow to 0, values and gradients stay finite.
    extreme = tuple(100 * np.sign(a) for a in args)
    total = jax.jit(jax.grad(lambda *a: sum(jnp.sum(v) for v in _all_losses(*a).values()), argnums=range(6)))
    for inputs in (args, extreme):
        chex.assert_tree_all_finite(jax.jit(_all_losses)(*inputs))
        chex.assert_tree_all_finite(total(*inputs))


def test_vmap_over_leading_axis_matches_loop():
    batches = [_inputs(30 + 10 * i) for i in range(3)]
    stacked = [np.stack(xs) for xs in zip(*batches)]
    mapped = jax.jit(jax.vmap(_all_losses))(*stacked)
    looped = jax.tree.map(lambda *xs: jnp.stack(xs), *[jax.jit(_all_losses)(*b) for b in batches])
    chex.assert_shape([mapped["dfad"], mapped["entropy"], mapped["mutual"]], [(3, 4), (3,), (3, 2, 4)])
    chex.assert_trees_all_close(mapped, looped, rtol=1e-5, atol=1e-6)


def test_bfloat16_inputs_give_float32_outputs():
    args = _inputs(60)
    args16 = [jnp.asarray(a, jnp.bfloat16) for a in args]
    out16 = jax.jit(_all_losses)(*args16)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(out16))
    want = jax.jit(_all_losses)(*[a.astype(jnp.float32) for a in args16])
    chex.assert_trees_all_close(out16, want, rtol=1e-5, atol=1e-6)
    gp = adv.gradient_penalty(lambda x: x @ jnp.ones(5), args16[0], args16[1], jax.random.key(0))
    assert gp.dtype == jnp.float32


# ---------------------------------------------------------------- validation

_S = np.zeros((8, 10), np.float32)


@pytest.mark.parametrize(
    "call,pattern",
    [
        (lambda: adv.dfad(_S, np.zeros((8, 12))), r"teacher_logits: expected shape \[8, 10\].*got \[8, 12\]"),
        (lambda: adv.zskt_generator(_S, np.zeros((7, 10))), r"teacher_logits: .*got \[7, 10\]"),
        (lambda: adv.dfad(np.zeros(10), np.zeros(10)), r"student_logits: expected rank 2 \[batch, classes\]"),
        (lambda: adv.dafl_one_hot(np.zeros(10)), r"teacher_logits: expected rank 2 .*got shape \[10\]"),
        (lambda: adv.dafl_information_entropy(np.zeros((2, 3, 4))), r"teacher_logits: expected rank 2"),
        (lambda: adv.mutual_learning(_S), r"peer_logits: expected rank 3 \[peers, batch, classes\]"),
        (lambda: adv.mutual_learning(np.zeros((1, 8, 10))), r"peer_logits: .*at least 2 peers, got 1"),
        (
            lambda: adv.gradient_penalty(jnp.sum, _S, np.zeros((8, 9)), jax.random.key(0)),
            r"fake: expected shape",
        ),
        (
            lambda: adv.discriminator_loss(_S, _S, objective="wasserstein"),
            r"unknown adversarial objective 'wasserstein'; choose one of bce, least_squares, hinge",
        ),
        (lambda: adv.fooling_loss(_S, objective="BCE"), r"'BCE'; choose one of bce, least_squares, hinge"),
    ],
)
def test_invalid_inputs_raise(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_shape_errors_raise_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"teacher_logits: .*got \[8, 12\]"):
        dfad(_S, np.zeros((8, 12), np.float32))

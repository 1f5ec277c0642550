"""Tests for jdistill.losses.tokens: token-level divergences for language models, their sparse
(top-k teacher) and chunked forms, and the reductions.

Small shapes (B = 2 or 3, T = 5, V = 7) and one jitted program per check where possible: the
whole file is meant to run in seconds on 2 CPU cores.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import jaxprs_in_params

from jdistill import losses

B, T, V = 3, 5, 7
REDUCTIONS = ("token_mean", "sequence_mean", "sum", "none")
BETA, ALPHA = 0.3, 0.2  # Asymmetric on purpose: a swapped convention would show.

# name -> (dense function, its sparse form, keyword arguments)
DIVERGENCES = {
    "forward_kl": (losses.forward_kl, losses.sparse_forward_kl, {}),
    "reverse_kl": (losses.reverse_kl, losses.sparse_reverse_kl, {}),
    "jsd": (losses.jsd, losses.sparse_jsd, {"beta": BETA}),
    "skew_forward_kl": (losses.skew_forward_kl, losses.sparse_skew_forward_kl, {"alpha": ALPHA}),
    "skew_reverse_kl": (losses.skew_reverse_kl, losses.sparse_skew_reverse_kl, {"alpha": ALPHA}),
    "tvd": (losses.tvd, losses.sparse_tvd, {}),
}
NAMES = list(DIVERGENCES)


def _logits(seed, *shape, scale=3.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _mask():
    """[3, 5]: a full sequence, a partial one and an empty one."""
    mask = np.ones((B, T), bool)
    mask[1, 3:] = False
    mask[2] = False
    return mask


# ------------------------------------------------------------------------- numpy references (float64)


def _np_softmax(logits, temperature=1.0):
    x = np.asarray(logits, np.float64) / temperature
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_kl(a, b):
    return np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0) / b), 0.0), axis=-1)


def _np_divergence(name, p, q):
    """Per position over the last axis; p the teacher's probabilities, q the student's."""
    if name == "forward_kl":
        return _np_kl(p, q)
    if name == "reverse_kl":
        return _np_kl(q, p)
    if name == "jsd":
        m = BETA * p + (1 - BETA) * q
        return BETA * _np_kl(p, m) + (1 - BETA) * _np_kl(q, m)
    if name == "skew_forward_kl":
        return _np_kl(p, ALPHA * p + (1 - ALPHA) * q)
    if name == "skew_reverse_kl":
        return _np_kl(q, ALPHA * q + (1 - ALPHA) * p)
    return 0.5 * np.sum(np.abs(p - q), axis=-1)


def _np_reduce(per_token, mask, reduction):
    per_token = np.where(mask, per_token, 0.0)
    if reduction == "none":
        return per_token
    if reduction == "sum":
        return per_token.sum()
    if reduction == "token_mean":
        return per_token.sum() / mask.sum()
    means = [row[m].mean() for row, m in zip(per_token, mask) if m.any()]
    return np.mean(means)


def _every(body):
    """One jitted program: ``(*arrays) -> {name: body(fn, kwargs, *arrays)}`` over every divergence."""
    return jax.jit(lambda *arrays: {name: body(fn, kw, *arrays) for name, (fn, _, kw) in DIVERGENCES.items()})


def _all_reductions(fn, **kwargs):
    """One jitted program returning the four reductions."""
    return jax.jit(lambda s, t, mask: tuple(fn(s, t, mask=mask, reduction=r, **kwargs) for r in REDUCTIONS))


# ---------------------------------------------------------------------------------------- values


def test_matches_numpy_reference_for_every_reduction():
    s, t, mask = _logits(0, B, T, V), _logits(1, B, T, V), _mask()
    got = _every(
        lambda fn, kw, s, t, mask: [
            fn(s, t, mask=mask, temperature=2.0, reduction=r, **kw) for r in REDUCTIONS
        ]
    )(s, t, mask)
    p, q = _np_softmax(t, 2.0), _np_softmax(s, 2.0)
    for name, values in got.items():
        per_token = _np_divergence(name, p, q)
        for reduction, value in zip(REDUCTIONS, values):
            assert value.dtype == jnp.float32
            want = _np_reduce(per_token, mask, reduction).astype(np.float32)
            chex.assert_trees_all_close(
                value, want, rtol=1e-5, atol=1e-6, custom_message=f"{name} {reduction}"
            )
        chex.assert_shape(values[3], (B, T))


def test_direction_pinned_by_hand():
    # t / T = [log 3, 0] -> p_t = (3/4, 1/4); s = 0 -> p_s = (1/2, 1/2).
    s = np.zeros((1, 1, 2), np.float32)
    t = np.array([[[2.0 * math.log(3.0), 0.0]]], np.float32)
    # Forward KL(p_t || p_s) = 3/4 log(3/2) + 1/4 log(1/2) = 0.130812...
    forward = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    # Reverse KL(p_s || p_t) = 1/2 log(2/3) + 1/2 log(2) = 1/2 log(4/3) = 0.143841...
    reverse = 0.5 * math.log(4.0 / 3.0)
    # Skew forward, alpha = 1/2: m = (5/8, 3/8); 3/4 log(6/5) + 1/4 log(2/3) = 0.035375...
    skew = 0.75 * math.log(1.2) + 0.25 * math.log(2.0 / 3.0)
    # TVD: 1/2 (|3/4 - 1/2| + |1/4 - 1/2|) = 1/4.
    got = jax.jit(
        lambda s, t: (
            losses.forward_kl(s, t, temperature=2.0),
            losses.reverse_kl(s, t, temperature=2.0),
            losses.skew_forward_kl(s, t, alpha=0.5, temperature=2.0),
            losses.tvd(s, t, temperature=2.0),
        )
    )(s, t)
    np.testing.assert_allclose(got, [forward, reverse, skew, 0.25], rtol=1e-6)
    np.testing.assert_allclose([forward, reverse, skew], [0.1308120, 0.1438410, 0.0353749], atol=1e-6)


def test_forward_kl_is_kd_without_t_squared():
    s, t, temperature = _logits(2, 2, T, V), _logits(3, 2, T, V), 3.0
    per_token, kd = jax.jit(
        lambda s, t: (
            losses.forward_kl(s, t, temperature=temperature, reduction="none"),
            losses.kd(s.reshape(-1, V), t.reshape(-1, V), temperature=temperature).reshape(2, T),
        )
    )(s, t)
    chex.assert_trees_all_close(per_token * temperature**2, kd, rtol=1e-5)


def test_jsd_convention_endpoints_and_limits():
    s, t = _logits(4, 2, T, V, scale=1.0), _logits(5, 2, T, V, scale=1.0)

    @jax.jit
    def values(s, t):
        return {
            "forward": losses.forward_kl(s, t),
            "reverse": losses.reverse_kl(s, t),
            "jsd": [losses.jsd(s, t, beta=beta) for beta in (0.0, 1e-4, BETA, 1 - 1e-4, 1.0)],
            "skews": (losses.skew_forward_kl(s, t, alpha=BETA), losses.skew_reverse_kl(s, t, alpha=1 - BETA)),
            "unskewed": (losses.skew_forward_kl(s, t, alpha=0.0), losses.skew_reverse_kl(s, t, alpha=0.0)),
        }

    v = values(s, t)
    forward, reverse = v["forward"], v["reverse"]
    at_0, near_0, at_beta, near_1, at_1 = v["jsd"]
    # beta = 0 and 1 are defined as the forward and reverse KL (TRL's convention)...
    chex.assert_trees_all_close((at_0, at_1), (forward, reverse), rtol=1e-6)
    # ...which are the limits of jsd / beta and jsd / (1 - beta), not of jsd itself.
    np.testing.assert_allclose(near_0 / 1e-4, forward, rtol=1e-2)
    np.testing.assert_allclose(near_1 / 1e-4, reverse, rtol=1e-2)
    # jsd(beta) = beta skew_forward_kl(alpha=beta) + (1 - beta) skew_reverse_kl(alpha=1 - beta).
    chex.assert_trees_all_close(at_beta, BETA * v["skews"][0] + (1 - BETA) * v["skews"][1], rtol=1e-5)
    # alpha = 0 skews nothing.
    chex.assert_trees_all_close(v["unskewed"], (forward, reverse), rtol=1e-6)


def test_jsd_half_is_symmetric_js_divergence_at_most_log_2():
    s, t = _logits(6, 2, T, V), _logits(7, 2, T, V)
    s[0, 0, 0], t[0, 0, 1] = 80.0, 80.0  # Nearly disjoint one-hot distributions reach log 2.
    jsd = jax.jit(lambda s, t: losses.jsd(s, t, beta=0.5, reduction="none"))
    got = jsd(s, t)
    p, q = _np_softmax(t), _np_softmax(s)
    m = 0.5 * (p + q)
    chex.assert_trees_all_close(got, (0.5 * _np_kl(p, m) + 0.5 * _np_kl(q, m)).astype(np.float32), rtol=1e-5)
    chex.assert_trees_all_close(got, jsd(t, s), rtol=1e-5)
    np.testing.assert_allclose(got[0, 0], math.log(2.0), rtol=1e-6)
    assert float(jnp.max(got)) <= math.log(2.0) + 1e-6  # float32 rounds log 2 up.


# ---------------------------------------------------------------------------------------- properties


def test_zero_when_student_equals_teacher():
    s = _logits(8, 2, T, V)
    f = _every(lambda fn, kw, s, temperature: fn(s, s, temperature=temperature, reduction="none", **kw))
    for temperature in (0.5, 1.0, 4.0):
        for name, value in f(s, temperature).items():
            chex.assert_trees_all_close(
                value, jnp.zeros((2, T)), atol=1e-6, custom_message=f"{name} {temperature}"
            )


def test_masked_positions_change_nothing():
    s, t = _logits(9, 2, T, V), _logits(10, 2, T, V)
    mask = np.ones((2, T), bool)
    mask[:, 3:] = False
    f = _every(
        lambda fn, kw, s, t, mask: (fn(s, t, mask=mask, **kw), fn(s, t, mask=mask, reduction="none", **kw))
    )
    sliced = _every(lambda fn, kw, s, t: fn(s[:, :3], t[:, :3], **kw))
    base = f(s, t, mask)
    s2, t2 = s.copy(), t.copy()
    s2[:, 3:], t2[:, 3] = -np.inf, np.nan
    t2[:, 4] = 1e9
    chex.assert_trees_all_close(f(s2, t2, mask), base)
    assert all(np.all(np.asarray(per_token)[:, 3:] == 0.0) for _, per_token in base.values())
    # Mask equals slice.
    chex.assert_trees_all_close({name: v[0] for name, v in base.items()}, sliced(s, t), rtol=1e-6)
    # A 0/1 integer mask is the same as a boolean one.
    chex.assert_trees_all_close(f(s, t, mask.astype(np.int32)), base)


def test_gradients_finite_with_extreme_logits_and_empty_sequences():
    s, t, mask = _logits(11, B, T, V), _logits(12, B, T, V), _mask()
    s[0, 0, :2], t[0, 1, 0] = -1e9, 1e9  # Unmasked extremes.
    s[0, 2, -1] = t[0, 2, -1] = -np.inf  # A vocabulary entry impossible for both.
    s[1, 4], t[1, 3] = -np.inf, np.nan  # Masked rows of anything.
    s[2] = 1e30  # The empty sequence.

    def value_and_grads(fn, kw, s, t):
        def loss(s, t):
            return sum(
                fn(s, t, mask=mask, temperature=0.5, reduction=r, **kw)
                for r in ("token_mean", "sequence_mean")
            )

        return jax.value_and_grad(loss, argnums=(0, 1))(s, t)

    for name, (value, grads) in _every(value_and_grads)(s, t).items():
        assert np.isfinite(value), name
        chex.assert_tree_all_finite(grads, custom_message=name)
        for g in grads:
            assert np.all(np.asarray(g)[~mask] == 0.0), name
        assert float(jnp.abs(grads[0]).max()) > 0.0, name


def test_all_masked_gives_zero_and_zero_gradients():
    s, t = _logits(13, 2, T, V), _logits(14, 2, T, V)
    mask = np.zeros((2, T), bool)
    values = _all_reductions(losses.jsd)(s, t, mask)
    chex.assert_trees_all_close(values, (0.0, 0.0, 0.0, jnp.zeros((2, T))))
    grads = jax.jit(jax.grad(lambda s: losses.jsd(s, t, mask=mask)))(s)
    chex.assert_trees_all_close(grads, jnp.zeros_like(grads))


def test_token_and_sequence_sums_combine_micro_batches_without_bias():
    s, t = _logits(15, 4, T, V), _logits(16, 4, T, V)
    mask = np.ones((4, T), bool)
    mask[0, 1:] = mask[3, 2:] = False
    mask[2] = False

    @jax.jit
    def parts(s, t, mask):
        per_token = losses.reverse_kl(s, t, mask=mask, reduction="none")
        halves = [(per_token[:2], mask[:2]), (per_token[2:], mask[2:])]
        return (
            [[sums(p, m) for p, m in halves] for sums in (losses.token_sums, losses.sequence_sums)],
            [losses.reverse_kl(s, t, mask=mask, reduction=r) for r in ("token_mean", "sequence_mean")],
            (losses.token_sums(per_token), jnp.sum(per_token)),
        )

    sums, batch, (unmasked, total) = parts(s, t, mask)
    for pair, want in zip(sums, batch):
        assert pair[0][1].dtype == jnp.int32 and pair[0][0].dtype == jnp.float32
        combined = sum(float(p[0]) for p in pair) / max(sum(int(p[1]) for p in pair), 1)
        np.testing.assert_allclose(combined, want, rtol=1e-6)
        # The mean of the micro-batch means is not the batch mean (the halves hold different counts).
        naive = np.mean([float(p[0]) / int(p[1]) for p in pair])
        assert abs(naive - combined) > 1e-3
    # Without a mask, every token counts.
    chex.assert_trees_all_close(unmasked, (total, 4 * T))


# ------------------------------------------------------------------------------------ transformations


def test_jit_matches_eager_and_traced_hyperparameters_do_not_retrace():
    s, t, mask = _logits(17, 2, T, V), _logits(18, 2, T, V), _mask()[:2]
    traces = []

    def every(s, t, temperature, beta, alpha):
        traces.append(None)
        kw = {"mask": mask, "temperature": temperature}
        return (
            losses.forward_kl(s, t, **kw),
            losses.reverse_kl(s, t, **kw),
            losses.jsd(s, t, beta=beta, **kw),
            losses.skew_forward_kl(s, t, alpha=alpha, **kw),
            losses.skew_reverse_kl(s, t, alpha=alpha, **kw),
            losses.tvd(s, t, **kw),
        )

    jitted = jax.jit(every)
    for temperature, beta in [(1.0, BETA), (2.0, 0.0), (3.0, 1.0)]:
        eager = every(s, t, temperature, beta, ALPHA)
        chex.assert_trees_all_close(jitted(s, t, temperature, beta, ALPHA), eager, rtol=1e-6, atol=1e-6)
    assert len(traces) == 3 + 1  # Three eager calls, one trace.


def test_sparse_jit_matches_eager():
    # (chunked is a lax.scan, compiled as a whole even when called eagerly.)
    s, t, mask = _logits(34, 2, T, V), _logits(35, 2, T, V), _mask()[:2]

    def sparse(s, t):
        indices, log_probs = losses.top_k_teacher(t, 3, temperature=2.0)
        return losses.sparse_jsd(s, indices, log_probs, beta=BETA, mask=mask, temperature=2.0)

    chex.assert_trees_all_close(jax.jit(sparse)(s, t), sparse(s, t), rtol=1e-6, atol=1e-6)


def test_vmap_over_leading_axis_matches_loop():
    s, t = _logits(19, 3, 2, T, V), _logits(20, 3, 2, T, V)
    mask = np.stack([_mask()[:2]] * 3)
    mask[1, 0, 2:] = False

    def every(s, t, mask):
        return tuple(fn(s, t, mask=mask, **kw) for fn, _, kw in DIVERGENCES.values())

    mapped = jax.jit(jax.vmap(every))(s, t, mask)
    looped = jax.tree.map(lambda *xs: jnp.stack(xs), *[jax.jit(every)(s[i], t[i], mask[i]) for i in range(3)])
    chex.assert_trees_all_close(mapped, looped, rtol=1e-6, atol=1e-6)


def test_bfloat16_inputs_give_float32_outputs():
    s, t, mask = _logits(21, 2, T, V), _logits(22, 2, T, V), _mask()[:2]
    every = jax.jit(
        lambda s, t: tuple(fn(s, t, mask=mask, temperature=2.0, **kw) for fn, _, kw in DIVERGENCES.values())
    )
    s16, t16 = jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)
    out16 = every(s16, t16)
    assert all(v.dtype == jnp.float32 for v in out16)
    chex.assert_trees_all_close(out16, every(s16.astype(jnp.float32), t16.astype(jnp.float32)), rtol=1e-6)
    chex.assert_trees_all_close(out16, every(s, t), rtol=5e-2, atol=2e-2)


# -------------------------------------------------------------------------------------- sparse teacher


def test_top_k_teacher_matches_numpy():
    t = _logits(23, 2, T, V)
    indices, log_probs = jax.jit(lambda t: losses.top_k_teacher(t, 3, temperature=2.0))(t)
    assert indices.dtype == jnp.int32 and log_probs.dtype == jnp.float32
    want_indices = np.argsort(-t, axis=-1)[..., :3]
    np.testing.assert_array_equal(indices, want_indices)
    want = np.log(np.take_along_axis(_np_softmax(t, 2.0), want_indices, axis=-1))
    chex.assert_trees_all_close(log_probs, want.astype(np.float32), rtol=1e-5, atol=1e-6)


def _sparse_all(k, mode, mask=None):
    """One program: every sparse divergence (reduction "none") from a top-k teacher."""

    def f(s, t):
        indices, log_probs = losses.top_k_teacher(t, k, temperature=2.0)
        return tuple(
            sparse(s, indices, log_probs, mode=mode, mask=mask, temperature=2.0, reduction="none", **kw)
            for _, sparse, kw in DIVERGENCES.values()
        )

    return jax.jit(f)


@pytest.mark.parametrize("mode", ["tail", "renormalised"])
def test_sparse_with_k_equal_to_vocabulary_is_dense(mode):
    s, t = _logits(24, 2, T, V), _logits(25, 2, T, V)
    dense = tuple(fn(s, t, temperature=2.0, reduction="none", **kw) for fn, _, kw in DIVERGENCES.values())
    chex.assert_trees_all_close(_sparse_all(V, mode)(s, t), dense, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3, V - 1])
def test_sparse_matches_numpy_reference(k):
    s, t = _logits(26, 2, T, V), _logits(27, 2, T, V)
    p, q = _np_softmax(t, 2.0), _np_softmax(s, 2.0)
    idx = np.argsort(-t, axis=-1)[..., :k]
    p_k, q_k = np.take_along_axis(p, idx, -1), np.take_along_axis(q, idx, -1)
    tail_p = np.concatenate([p_k, 1 - p_k.sum(-1, keepdims=True)], -1)
    tail_q = np.concatenate([q_k, 1 - q_k.sum(-1, keepdims=True)], -1)
    renorm_p, renorm_q = p_k / p_k.sum(-1, keepdims=True), q_k / q_k.sum(-1, keepdims=True)
    for mode, pp, qq in [("tail", tail_p, tail_q), ("renormalised", renorm_p, renorm_q)]:
        got = _sparse_all(k, mode)(s, t)
        for name, value in zip(NAMES, got):
            want = _np_divergence(name, pp, qq).astype(np.float32)
            chex.assert_trees_all_close(value, want, rtol=2e-5, atol=2e-6, custom_message=f"{name} {mode}")
            if mode == "tail":  # Grouping the tail can only lose information.
                dense = _np_divergence(name, p, q)
                assert np.all(np.asarray(value) <= dense + 1e-5), name


def test_sparse_masking_and_confident_teacher_gradients():
    s, t, mask = _logits(28, B, T, V), _logits(29, B, T, V), _mask()
    t[0, 0] = [80.0] + [0.0] * (V - 1)  # Its tail, 5 exp(-80) = 9e-35, rounds to zero in float32.
    indices, log_probs = jax.jit(lambda t: losses.top_k_teacher(t, 2))(t)
    bad_indices, bad_log_probs = np.array(indices), np.array(log_probs)
    bad_indices[~mask], bad_log_probs[~mask] = V + 5, np.nan  # Out of range and NaN where masked.

    def loss(s, log_probs, indices):
        return sum(
            sparse(s, indices, log_probs, mode=mode, mask=mask, **kw)
            for _, sparse, kw in DIVERGENCES.values()
            for mode in ("tail", "renormalised")
        )

    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    value, grads = f(s, log_probs, indices)
    bad_value, bad_grads = f(s, bad_log_probs, bad_indices)
    np.testing.assert_allclose(bad_value, value, rtol=1e-6)
    assert np.isfinite(value)
    chex.assert_tree_all_finite((grads, bad_grads))
    assert np.all(np.asarray(bad_grads[0])[~mask] == 0.0)


# --------------------------------------------------------------------------------------------- chunked


def _hidden(seed, d_s=3, d_t=4, time=T):
    rng = np.random.default_rng(seed)
    return tuple(
        rng.standard_normal(shape).astype(np.float32)
        for shape in [(B, time, d_s), (d_s, V), (B, time, d_t), (d_t, V)]
    )


@pytest.mark.parametrize("chunk_size", [2, 8])  # 2 does not divide T = 5; 8 > T.
def test_chunked_equals_dense_in_value_and_gradient(chunk_size):
    args, mask = _hidden(30), _mask()

    def chunked(h_s, w_s, h_t, w_t):
        return losses.chunked(
            losses.jsd, h_s, w_s, h_t, w_t, chunk_size=chunk_size, mask=mask, beta=BETA, temperature=2.0
        )

    def dense(h_s, w_s, h_t, w_t):
        return losses.jsd(h_s @ w_s, h_t @ w_t, mask=mask, beta=BETA, temperature=2.0)

    got = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1, 2, 3)))(*args)
    want = jax.jit(jax.value_and_grad(dense, argnums=(0, 1, 2, 3)))(*args)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)


def test_chunked_reductions_and_head_functions():
    h_s, w_s, h_t, w_t = _hidden(31)
    bias, mask = _logits(32, V), _mask()

    def head(h):  # A bias and Gemma-style soft-capping.
        return 5.0 * jnp.tanh((h @ w_s + bias) / 5.0)

    @jax.jit
    def both(h_s, h_t):
        chunked = [
            losses.chunked(losses.forward_kl, h_s, head, h_t, w_t, chunk_size=2, mask=mask, reduction=r)
            for r in REDUCTIONS
        ]
        dense = [losses.forward_kl(head(h_s), h_t @ w_t, mask=mask, reduction=r) for r in REDUCTIONS]
        return chunked, dense

    chunked, dense = both(h_s, h_t)
    chex.assert_trees_all_close(chunked, dense, rtol=1e-5, atol=1e-6)


def test_chunked_never_holds_full_logits():
    """No array in the gradient's program, scan bodies included, is as large as [B, T, V]."""
    time, chunk_size = 12, 3
    args = _hidden(33, time=time)

    def largest(fn):
        jaxpr = jax.make_jaxpr(jax.grad(fn, argnums=(0, 1)))(*args)
        sizes = []

        def walk(jaxpr):
            for eqn in jaxpr.eqns:
                sizes.extend(int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape"))
                for sub in jaxprs_in_params(eqn.params):
                    walk(sub)

        walk(jaxpr.jaxpr)
        return max(sizes)

    full = B * time * V
    chunked = largest(lambda *a: losses.chunked(losses.reverse_kl, *a, chunk_size=chunk_size))
    dense = largest(lambda h_s, w_s, h_t, w_t: losses.reverse_kl(h_s @ w_s, h_t @ w_t))
    assert dense >= full  # The check sees [B, T, V] where it exists...
    assert chunked < full  # ...and the chunked form has none.


def test_sparse_and_chunked_under_vmap_match_a_loop():
    """vmap over a leading axis (several students, say) of a sparse and a chunked divergence."""
    s, t = _logits(36, 3, 2, T, V), _logits(37, 3, 2, T, V)
    h_s, w_s, h_t, w_t = (np.stack([a * (i + 1) for i in range(3)]) for a in _hidden(38))
    mask2, mask3 = np.stack([_mask()[:2]] * 3), np.stack([_mask()] * 3)
    mask2[1, 0, 2:] = mask3[1, 0, 2:] = False

    def both(s, t, h_s, w_s, h_t, w_t, mask2, mask3):
        indices, log_probs = losses.top_k_teacher(t, 3, temperature=2.0)
        return (
            losses.sparse_skew_forward_kl(s, indices, log_probs, alpha=ALPHA, mask=mask2, temperature=2.0),
            losses.sparse_reverse_kl(s, indices, log_probs, mode="renormalised", mask=mask2),
            losses.chunked(losses.jsd, h_s, w_s, h_t, w_t, chunk_size=2, mask=mask3, beta=BETA),
        )

    args = (s, t, h_s, w_s, h_t, w_t, mask2, mask3)
    mapped = jax.jit(jax.vmap(both))(*args)
    looped = [jax.jit(both)(*(a[i] for a in args)) for i in range(3)]
    chex.assert_trees_all_close(
        mapped, jax.tree.map(lambda *xs: jnp.stack(xs), *looped), rtol=1e-5, atol=1e-6
    )
    assert len({float(v) for v in mapped[2]}) == 3  # the members differ: each was computed with its own


def test_sparse_and_chunked_take_bfloat16_and_compute_in_float32():
    s, t, mask = _logits(39, 2, T, V), _logits(40, 2, T, V), _mask()[:2]
    s16, t16 = jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)
    indices, log_probs = losses.top_k_teacher(t16, 3, temperature=2.0)
    assert log_probs.dtype == jnp.float32
    want_indices, want = losses.top_k_teacher(t16.astype(jnp.float32), 3, temperature=2.0)
    np.testing.assert_array_equal(indices, want_indices)
    chex.assert_trees_all_close(log_probs, want, rtol=1e-6)
    sparse = jax.jit(lambda s, lp: losses.sparse_jsd(s, indices, lp, beta=BETA, mask=mask, temperature=2.0))
    out16 = sparse(s16, log_probs.astype(jnp.bfloat16))
    assert out16.dtype == jnp.float32
    np.testing.assert_allclose(out16, sparse(s16.astype(jnp.float32), log_probs), rtol=5e-2, atol=2e-3)
    h_s, w_s, h_t, w_t = _hidden(41)
    mask3 = _mask()

    def chunked(*a):
        return losses.chunked(losses.forward_kl, *a, chunk_size=2, mask=mask3)

    bf16 = [jnp.asarray(a, jnp.bfloat16) for a in (h_s, w_s, h_t, w_t)]
    value16 = jax.jit(chunked)(*bf16)
    assert value16.dtype == jnp.float32
    want16 = losses.forward_kl(*(jnp.einsum("btd,dv->btv", h, w, preferred_element_type=jnp.float32)
                                 for h, w in (bf16[:2], bf16[2:])), mask=mask3)  # fmt: skip
    np.testing.assert_allclose(value16, want16, rtol=1e-5)
    grads = jax.jit(jax.grad(chunked, argnums=(0, 1)))(*bf16)
    assert all(g.dtype == jnp.bfloat16 for g in grads)  # a gradient has its input's dtype
    chex.assert_tree_all_finite(grads)


# ------------------------------------------------------------------------------------------ validation

_S = np.zeros((2, 5, 7), np.float32)
_IDX = np.zeros((2, 5, 3), np.int32)
_LP = np.full((2, 5, 3), -2.0, np.float32)
_H = np.zeros((2, 5, 3), np.float32)
_W = np.zeros((3, 7), np.float32)


@pytest.mark.parametrize(
    "call,pattern",
    [
        (
            lambda: losses.forward_kl(_S, np.zeros((2, 5, 8))),
            r"teacher_logits: expected shape \[2, 5, 7\] to match",
        ),
        (lambda: losses.reverse_kl(_S[0], _S[0]), r"student_logits: expected rank 3 \[batch, time, vocab\]"),
        (lambda: losses.tvd(_S, _S, mask=np.ones((2, 4))), r"mask: expected shape \[2, 5\] .*got \[2, 4\]"),
        (lambda: losses.jsd(_S, _S, temperature=0.0), r"temperature: expected a positive scalar"),
        (lambda: losses.jsd(_S, _S, beta=1.5), r"beta: expected a scalar in \[0, 1\], got 1.5"),
        (lambda: losses.jsd(_S, _S, beta=np.ones(2)), r"beta: expected a scalar in \[0, 1\] \(shape \[\]\)"),
        (
            lambda: losses.skew_forward_kl(_S, _S, alpha=-0.1),
            r"alpha: expected a scalar in \[0, 1\], got -0.1",
        ),
        (lambda: losses.skew_reverse_kl(_S, _S, alpha=float("nan")), r"alpha: expected a scalar in \[0, 1\]"),
        (
            lambda: losses.forward_kl(_S, _S, reduction="mean"),
            r"reduction: expected one of 'token_mean', 'sequence_mean', 'sum', 'none', got 'mean'",
        ),
        (lambda: losses.top_k_teacher(_S, 0), r"k: expected a Python int in 1..7 .*got 0"),
        (lambda: losses.top_k_teacher(_S, 8), r"k: expected a Python int in 1..7"),
        (
            lambda: losses.sparse_forward_kl(_S, _IDX, _LP, mode="topk"),
            r"mode: expected one of 'tail', 'renormalised', got 'topk'",
        ),
        (
            lambda: losses.sparse_reverse_kl(_S, _IDX.astype(np.float32), _LP),
            r"teacher_indices: expected integer",
        ),
        (lambda: losses.sparse_jsd(_S, _IDX, _LP[..., :2]), r"teacher_log_probs: expected shape \[2, 5, 3\]"),
        (lambda: losses.sparse_tvd(_S, _IDX[:1], _LP[:1]), r"teacher_indices: expected shape \[2, 5, \*\]"),
        (
            lambda: losses.sparse_forward_kl(_S, np.zeros((2, 5, 9), np.int32), np.zeros((2, 5, 9))),
            r"k: expected",
        ),
        (
            lambda: losses.chunked(losses.jsd, _H, np.zeros((4, 7)), _H, _W, chunk_size=2),
            r"student_head: expected shape \[3, vocab\]",
        ),
        (
            lambda: losses.chunked(losses.jsd, _H, _W, _H[:, :4], _W, chunk_size=2),
            r"teacher_hidden: expected shape",
        ),
        (
            lambda: losses.chunked(losses.jsd, _H, _W, _H, _W, chunk_size=0),
            r"chunk_size: expected a Python int > 0",
        ),
        (
            lambda: losses.chunked(losses.jsd, _H, _W, _H, np.zeros((3, 9)), chunk_size=2),
            r"teacher_logits: expected shape \[2, 2, 7\]",
        ),
        (lambda: losses.token_sums(_S), r"per_token: expected rank 2 \[batch, time\]"),
        (lambda: losses.sequence_sums(_S[..., 0], np.ones((2, 6))), r"mask: expected shape \[2, 5\]"),
    ],
)
def test_invalid_inputs_raise(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()

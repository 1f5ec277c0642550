"""Tests for jdistill.losses.features: feature_mse, attention maps/transfer."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses

# (batch, height, width, student channels, teacher channels)
SIZES = [(2, 3, 3, 4, 4), (3, 4, 2, 3, 8)]

# Most tests call jitted losses: op-by-op (eager) dispatch compiles every
# primitive separately and is several times slower on CPU. The eager path is
# covered by the jit-vs-eager test and by the validation tests.
feature_mse = jax.jit(losses.feature_mse)
attention_map = jax.jit(losses.attention_map, static_argnames="p")
attention_transfer = jax.jit(losses.attention_transfer, static_argnames="p")


def _feat(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _ref_mse(s, t):
    out = np.zeros(len(s))
    for b in range(len(s)):
        d = (np.asarray(s[b], np.float64) - np.asarray(t[b], np.float64)).ravel()
        out[b] = sum(x * x for x in d) / d.size
    return out


def _ref_attention_map(feat, p):
    batch, height, width, channels = feat.shape
    out = np.zeros((batch, height * width))
    for b in range(batch):
        for h in range(height):
            for w in range(width):
                out[b, h * width + w] = (
                    sum(abs(float(feat[b, h, w, c])) ** p for c in range(channels)) / channels
                )
        out[b] /= math.sqrt(sum(q * q for q in out[b]))
    return out


def _ref_attention_transfer(s, t, p):
    a_s, a_t = _ref_attention_map(s, p), _ref_attention_map(t, p)
    return ((a_s - a_t) ** 2).mean(axis=1)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4, 2)])
def test_feature_mse_matches_reference(shape):
    s, t = _feat(0, *shape), _feat(1, *shape)
    got = feature_mse(s, t)
    chex.assert_shape(got, (shape[0],))
    assert got.dtype == jnp.float32
    chex.assert_trees_all_close(got, _ref_mse(s, t).astype(np.float32), rtol=1e-5)


def test_feature_mse_hand_example():
    s = np.array([[[1.0, 2.0]], [[3.0, 4.0]]], np.float32)  # [2, 1, 2]
    got = feature_mse(s, np.zeros_like(s))
    chex.assert_trees_all_close(got, jnp.array([2.5, 12.5]))


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("batch,height,width,cs,ct", SIZES)
def test_attention_matches_reference(batch, height, width, cs, ct, p):
    s, t = _feat(2, batch, height, width, cs), _feat(3, batch, height, width, ct)
    a_s = attention_map(s, p=p)
    chex.assert_shape(a_s, (batch, height * width))
    chex.assert_trees_all_close(a_s, _ref_attention_map(s, p).astype(np.float32), rtol=1e-5, atol=1e-6)
    got = attention_transfer(s, t, p=p)
    chex.assert_shape(got, (batch,))
    assert got.dtype == jnp.float32
    chex.assert_trees_all_close(
        got,
        _ref_attention_transfer(s, t, p).astype(np.float32),
        rtol=1e-5,
        atol=1e-7,
    )


def test_attention_hand_example():
    # One channel, two positions with activations 3 and 4.
    feat = np.array([3.0, 4.0], np.float32).reshape(1, 1, 2, 1)
    chex.assert_trees_all_close(attention_map(feat, p=1), jnp.array([[0.6, 0.8]]))
    q = np.array([9.0, 16.0]) / math.sqrt(81.0 + 256.0)
    chex.assert_trees_all_close(attention_map(feat, p=2), jnp.asarray(q[None], jnp.float32))
    # Against a uniform map [1, 1] / sqrt(2): mean of the two squared gaps.
    uniform = np.ones((1, 1, 2, 1), np.float32)
    u = 1.0 / math.sqrt(2.0)
    want = ((0.6 - u) ** 2 + (0.8 - u) ** 2) / 2
    chex.assert_trees_all_close(attention_transfer(feat, uniform, p=1), jnp.array([want], jnp.float32))


# ------------------------------------------------------------ properties


def test_zero_when_student_equals_teacher():
    s = _feat(4, 3, 4, 4, 5)
    chex.assert_trees_all_close(feature_mse(s, s), jnp.zeros(3))
    # Not bit-exact: XLA may fuse the two identical branches differently.
    chex.assert_trees_all_close(attention_transfer(s, s), jnp.zeros(3), atol=1e-12)


def test_attention_transfer_invariant_to_channel_count_and_scale():
    s, t = _feat(5, 2, 3, 4, 3), _feat(6, 2, 3, 4, 5)
    base = attention_transfer(s, t)
    # Repeating the teacher's channels leaves the channel mean unchanged.
    wide_teacher = np.concatenate([t, t, t], axis=-1)
    chex.assert_trees_all_close(attention_transfer(s, wide_teacher), base, rtol=1e-5)
    # Scaling either map by a positive constant is undone by the normalisation.
    chex.assert_trees_all_close(attention_transfer(3.5 * s, 0.25 * t), base, rtol=1e-4, atol=1e-8)
    assert float(base.min()) > 0.0


def test_attention_map_is_unit_norm_and_safe_for_zero_maps():
    feat = _feat(7, 3, 2, 3, 4)
    feat[1] = 0.0
    a = attention_map(feat)
    norms = jnp.linalg.norm(a, axis=-1)
    chex.assert_trees_all_close(norms, jnp.array([1.0, 0.0, 1.0]), atol=1e-6)
    chex.assert_tree_all_finite(a)


@pytest.mark.parametrize("p", [1, 2])
def test_gradients_finite_including_zero_features(p):
    t = _feat(8, 2, 3, 3, 4)
    zeros = np.zeros((2, 3, 3, 4), np.float32)

    def total(s, t):
        return jnp.sum(attention_transfer(s, t, p=p) + feature_mse(s, t))

    grad_fn = jax.jit(jax.grad(total, argnums=(0, 1)))
    for s, t_ in [(_feat(9, 2, 3, 3, 4), t), (zeros, t), (t, zeros), (zeros, zeros)]:
        grads = grad_fn(s, t_)
        chex.assert_tree_all_finite(grads)
    # A non-trivial case has a non-zero gradient.
    assert float(jnp.abs(grad_fn(_feat(9, 2, 3, 3, 4), t)[0]).max()) > 0.0


# -------------------------------------------------------- transformations


def test_jit_matches_eager():
    s, t = _feat(10, 2, 3, 2, 3), _feat(11, 2, 3, 2, 5)

    def f(s, t):
        return (losses.feature_mse(s, s[::-1]), losses.attention_transfer(s, t), losses.attention_map(t))

    chex.assert_trees_all_close(jax.jit(f)(s, t), f(s, t), rtol=1e-6, atol=1e-7)


def test_vmap_over_leading_axis_matches_loop():
    s, t = _feat(12, 3, 2, 3, 2, 4), _feat(13, 3, 2, 3, 2, 6)

    def f(s, t):
        return (losses.feature_mse(s, t[..., :4]), losses.attention_transfer(s, t))

    mapped = jax.jit(jax.vmap(f))(s, t)
    looped = [jax.jit(f)(s[i], t[i]) for i in range(3)]
    looped = jax.tree.map(lambda *xs: jnp.stack(xs), *looped)
    chex.assert_shape(mapped, (3, 2))
    chex.assert_trees_all_close(mapped, looped, rtol=1e-6, atol=1e-7)


def test_bfloat16_inputs_give_float32_outputs():
    s, t = _feat(14, 2, 3, 3, 4), _feat(15, 2, 3, 3, 4)
    s16, t16 = jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)

    def f(s, t):
        return (feature_mse(s, t), attention_transfer(s, t), attention_map(s))

    out16 = f(s16, t16)
    chex.assert_trees_all_equal_dtypes(out16, (jnp.zeros(2), jnp.zeros(2), jnp.zeros((2, 9))))
    # Computed in float32 from the rounded values, hence close to float32.
    out_r = f(s16.astype(jnp.float32), t16.astype(jnp.float32))
    chex.assert_trees_all_close(out16, out_r, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(out16, f(s, t), rtol=5e-2, atol=1e-3)


# ------------------------------------------------------------ validation

_F = np.zeros((2, 4, 4, 3), np.float32)


@pytest.mark.parametrize(
    "call,pattern",
    [
        (
            lambda: losses.feature_mse(_F, np.zeros((2, 4, 4, 8))),
            r"teacher_feat: expected shape \[2, 4, 4, 3\] to match student_feat, "
            r"got \[2, 4, 4, 8\].*connector \(jdistill\.models\.Connector",
        ),
        (
            lambda: losses.feature_mse(_F, np.zeros((3, 4, 4, 3))),
            r"teacher_feat: .*got \[3, 4, 4, 3\].*jdistill\.models\.Connector",
        ),
        (
            lambda: losses.feature_mse(np.zeros(2), np.zeros(2)),
            r"student_feat: expected rank >= 2 \[batch, \.\.\.\], "
            r"got shape \[2\]",
        ),
        (
            lambda: losses.attention_map(np.zeros((2, 16, 3))),
            r"feat: expected rank 4 \[batch, height, width, channels\], "
            r"got shape \[2, 16, 3\]",
        ),
        (
            lambda: losses.attention_transfer(np.zeros((2, 16, 3)), _F),
            r"student_feat: expected rank 4 .*got shape \[2, 16, 3\]",
        ),
        (
            lambda: losses.attention_transfer(_F, np.zeros((2, 4, 4))),
            r"teacher_feat: expected rank 4 .*got shape \[2, 4, 4\]",
        ),
        (
            lambda: losses.attention_transfer(_F, np.zeros((2, 8, 8, 3))),
            r"teacher_feat: expected shape \[2, 4, 4, \*\] to match student_feat "
            r"\(shape \[2, 4, 4, 3\]\), got \[2, 8, 8, 3\]",
        ),
        (
            lambda: losses.attention_transfer(_F, np.zeros((4, 4, 4, 6))),
            r"teacher_feat: expected shape \[2, 4, 4, \*\].*got \[4, 4, 4, 6\]",
        ),
    ],
)
def test_invalid_inputs_raise(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()

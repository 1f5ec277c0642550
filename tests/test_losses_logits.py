"""Tests for jdistill.losses.logits: kd, hinton, cross_entropy."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses

SIZES = [(3, 2), (8, 10)]  # (batch, classes)

# Most tests call jitted losses: op-by-op (eager) dispatch compiles every
# primitive separately and is several times slower on CPU. The eager path is
# covered by the jit-vs-eager test and by the validation tests.
kd = jax.jit(losses.kd)
hinton = jax.jit(losses.hinton)
cross_entropy = jax.jit(losses.cross_entropy)


def _logits(seed, batch, classes, scale=3.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal((batch, classes))).astype(np.float32)


def _labels(seed, batch, classes):
    return np.random.default_rng(seed).integers(0, classes, size=batch).astype(np.int32)


def _np_softmax(row):
    row = np.asarray(row, np.float64)
    e = np.exp(row - row.max())
    return e / e.sum()


def _ref_kl(teacher_logits, student_logits, temperature):
    """Unscaled KL(softmax(t / T) || softmax(s / T)) per row, float64 loops."""
    out = np.zeros(len(teacher_logits))
    for b, (t_row, s_row) in enumerate(zip(teacher_logits, student_logits)):
        p = _np_softmax(np.asarray(t_row, np.float64) / temperature)
        q = _np_softmax(np.asarray(s_row, np.float64) / temperature)
        out[b] = sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q))
    return out


def _ref_ce(logits, labels):
    return np.array([-math.log(_np_softmax(row)[y]) for row, y in zip(logits, labels)])


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("batch,classes", SIZES)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_is_t_squared_times_reference_kl(batch, classes, temperature):
    s, t = _logits(0, batch, classes), _logits(1, batch, classes)
    got = kd(s, t, temperature=temperature)
    chex.assert_shape(got, (batch,))
    assert got.dtype == jnp.float32
    want = temperature**2 * _ref_kl(t, s, temperature)
    chex.assert_trees_all_close(got, want.astype(np.float32), rtol=1e-5, atol=1e-6)


def test_kd_two_class_closed_form():
    # t / T = [log 3, 0] -> p = (3/4, 1/4); s = 0 -> q = (1/2, 1/2).
    s = np.zeros((1, 2), np.float32)
    t = np.array([[2.0 * math.log(3.0), 0.0]], np.float32)
    want = 4.0 * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    got = kd(s, t, temperature=2.0)
    chex.assert_trees_all_close(got, jnp.array([want], jnp.float32), rtol=1e-6)


def test_kd_is_forward_kl_from_teacher():
    s, t = _logits(2, 4, 5), _logits(3, 4, 5)
    forward = kd(s, t, temperature=1.0)
    chex.assert_trees_all_close(forward, _ref_kl(t, s, 1.0).astype(np.float32), rtol=1e-5)
    # KL is asymmetric: swapping the arguments gives a different value.
    assert not np.allclose(forward, kd(t, s, temperature=1.0), rtol=1e-3)


def test_kd_large_temperature_limit():
    # As T -> inf, T^2 KL -> ||(s - mean s) - (t - mean t)||^2 / (2 C).
    s, t = _logits(4, 4, 6, scale=1.0), _logits(5, 4, 6, scale=1.0)
    d = (s - s.mean(-1, keepdims=True)) - (t - t.mean(-1, keepdims=True))
    limit = (d.astype(np.float64) ** 2).sum(-1) / (2 * s.shape[-1])
    got = kd(s, t, temperature=100.0)
    chex.assert_trees_all_close(got, limit.astype(np.float32), rtol=3e-2)


@pytest.mark.parametrize("batch,classes", SIZES)
def test_cross_entropy_matches_reference(batch, classes):
    logits, labels = _logits(6, batch, classes), _labels(7, batch, classes)
    got = cross_entropy(logits, labels)
    chex.assert_shape(got, (batch,))
    assert got.dtype == jnp.float32
    chex.assert_trees_all_close(got, _ref_ce(logits, labels).astype(np.float32), rtol=1e-5, atol=1e-6)


def test_cross_entropy_two_class_closed_form():
    logits = np.array([[math.log(3.0), 0.0], [math.log(3.0), 0.0]], np.float32)
    got = cross_entropy(logits, np.array([0, 1]))
    want = jnp.array([-math.log(0.75), -math.log(0.25)], jnp.float32)
    chex.assert_trees_all_close(got, want, rtol=1e-6)


@pytest.mark.parametrize("batch,classes", SIZES)
def test_hinton_matches_reference(batch, classes):
    s, t = _logits(8, batch, classes), _logits(9, batch, classes)
    labels = _labels(10, batch, classes)
    alpha, temperature = 0.3, 2.0
    got = hinton(s, t, labels, temperature=temperature, alpha=alpha)
    chex.assert_shape(got, (batch,))
    want = alpha * _ref_ce(s, labels) + (1 - alpha) * temperature**2 * _ref_kl(t, s, temperature)
    chex.assert_trees_all_close(got, want.astype(np.float32), rtol=1e-5, atol=1e-6)


def test_hinton_alpha_endpoints():
    s, t, labels = _logits(11, 5, 4), _logits(12, 5, 4), _labels(13, 5, 4)
    ce = cross_entropy(s, labels)
    soft = kd(s, t, temperature=3.0)
    chex.assert_trees_all_close(hinton(s, t, labels, temperature=3.0, alpha=1.0), ce)
    chex.assert_trees_all_close(hinton(s, t, labels, temperature=3.0, alpha=0.0), soft)


# ------------------------------------------------------------ properties


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 8.0])
def test_kd_zero_when_student_equals_teacher(temperature):
    s = _logits(14, 6, 5)
    chex.assert_trees_all_close(kd(s, s, temperature=temperature), jnp.zeros(6), atol=1e-6)


def test_gradients_finite_with_extreme_logits():
    # Softmax at T = 0.1 underflows to exact zeros for these logits; the
    # gradients must stay finite with respect to student and teacher alike.
    s = np.array([[0.0, 50.0, -50.0], [1.0, 2.0, 3.0]], np.float32)
    t = np.array([[100.0, -100.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    labels = np.array([2, 0])

    def total(s, t):
        return jnp.sum(hinton(s, t, labels, temperature=0.1, alpha=0.5) + kd(s, t, temperature=0.1))

    grads = jax.jit(jax.grad(total, argnums=(0, 1)))(s, t)
    chex.assert_tree_all_finite(grads)
    # The student's gradient is not trivially zero.
    assert float(jnp.abs(grads[0]).max()) > 0.0


def test_gradient_matches_softmax_difference():
    # d kd / d s = T * (softmax(s / T) - softmax(t / T)) for each row.
    s, t, temperature = _logits(15, 3, 4), _logits(16, 3, 4), 2.0
    grad_fn = jax.grad(lambda s: kd(s, t, temperature=temperature).sum())
    got = jax.jit(grad_fn)(s)
    want = temperature * np.stack(
        [_np_softmax(s_row / temperature) - _np_softmax(t_row / temperature) for s_row, t_row in zip(s, t)]
    )
    chex.assert_trees_all_close(got, want.astype(np.float32), atol=1e-5)


# -------------------------------------------------------- transformations


def test_jit_matches_eager_with_traced_temperature():
    s, t, labels = _logits(17, 4, 6), _logits(18, 4, 6), _labels(19, 4, 6)
    traces = []

    @jax.jit
    def f(s, t, temperature, alpha):
        traces.append(None)
        return (
            losses.kd(s, t, temperature=temperature),
            losses.hinton(s, t, labels, temperature=temperature, alpha=alpha),
            losses.cross_entropy(s, labels),
        )

    for temperature in (1.0, 3.0):
        eager = (
            losses.kd(s, t, temperature=temperature),
            losses.hinton(s, t, labels, temperature=temperature, alpha=0.4),
            losses.cross_entropy(s, labels),
        )
        jitted = f(s, t, jnp.float32(temperature), jnp.float32(0.4))
        chex.assert_trees_all_close(jitted, eager, rtol=1e-6, atol=1e-6)
    # A traced temperature is not checked, so changing it does not retrace.
    assert len(traces) == 1


def test_vmap_over_leading_axis_matches_loop():
    s = np.stack([_logits(20 + i, 4, 5) for i in range(3)])
    t = np.stack([_logits(30 + i, 4, 5) for i in range(3)])
    labels = np.stack([_labels(40 + i, 4, 5) for i in range(3)])

    def f(s, t, labels):
        return (
            losses.kd(s, t, temperature=2.0),
            losses.hinton(s, t, labels, temperature=2.0, alpha=0.5),
            losses.cross_entropy(s, labels),
        )

    mapped = jax.jit(jax.vmap(f))(s, t, labels)
    looped = [jax.jit(f)(s[i], t[i], labels[i]) for i in range(3)]
    looped = jax.tree.map(lambda *xs: jnp.stack(xs), *looped)
    chex.assert_shape(mapped, (3, 4))
    chex.assert_trees_all_close(mapped, looped, rtol=1e-6, atol=1e-6)


def test_bfloat16_inputs_give_float32_outputs():
    s, t, labels = _logits(50, 4, 6), _logits(51, 4, 6), _labels(52, 4, 6)
    s16, t16 = jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)
    outs16 = (
        kd(s16, t16, temperature=2.0),
        hinton(s16, t16, labels, temperature=2.0, alpha=0.5),
        cross_entropy(s16, labels),
    )
    chex.assert_trees_all_equal_dtypes(outs16, (jnp.zeros(4, jnp.float32),) * 3)
    # Computed in float32 from the (rounded) bfloat16 values...
    s_r, t_r = s16.astype(jnp.float32), t16.astype(jnp.float32)
    outs_r = (
        kd(s_r, t_r, temperature=2.0),
        hinton(s_r, t_r, labels, temperature=2.0, alpha=0.5),
        cross_entropy(s_r, labels),
    )
    chex.assert_trees_all_close(outs16, outs_r, rtol=1e-6, atol=1e-6)
    # ...so close to the float32 result up to the input rounding.
    outs32 = (
        kd(s, t, temperature=2.0),
        hinton(s, t, labels, temperature=2.0, alpha=0.5),
        cross_entropy(s, labels),
    )
    chex.assert_trees_all_close(outs16, outs32, rtol=5e-2, atol=5e-2)


# ------------------------------------------------------------ validation

_S = np.zeros((8, 10), np.float32)
_LABELS = np.zeros(8, np.int32)


@pytest.mark.parametrize(
    "call,pattern",
    [
        (
            lambda: losses.kd(_S, np.zeros((8, 12)), temperature=1.0),
            r"teacher_logits: expected shape \[8, 10\] to match student_logits, "
            r"got \[8, 12\]",
        ),
        (
            lambda: losses.kd(_S, np.zeros((7, 10)), temperature=1.0),
            r"teacher_logits: expected shape \[8, 10\].*got \[7, 10\]",
        ),
        (
            lambda: losses.kd(np.zeros(10), np.zeros(10), temperature=1.0),
            r"student_logits: expected rank 2 \[batch, classes\], "
            r"got shape \[10\]",
        ),
        (
            lambda: losses.kd(_S, np.zeros((8, 10, 1)), temperature=1.0),
            r"teacher_logits: expected shape \[8, 10\].*got \[8, 10, 1\]",
        ),
        (lambda: losses.kd(_S, _S, temperature=0.0), r"temperature: expected a positive scalar"),
        (
            lambda: losses.kd(_S, _S, temperature=jnp.float32(-1.0)),
            r"temperature: expected a positive scalar",
        ),
        (
            lambda: losses.kd(_S, _S, temperature=jnp.ones(2)),
            r"temperature: expected a scalar \(shape \[\]\), got shape \[2\]",
        ),
        (
            lambda: losses.cross_entropy(np.zeros((8, 10, 2)), _LABELS),
            r"logits: expected rank 2 \[batch, classes\], got shape \[8, 10, 2\]",
        ),
        (
            lambda: losses.cross_entropy(_S, np.zeros(8, np.float32)),
            r"labels: expected integer class indices of shape \[8\], got float32",
        ),
        (
            lambda: losses.cross_entropy(_S, np.zeros((8, 1), np.int32)),
            r"labels: expected shape \[8\].*got \[8, 1\]",
        ),
        (lambda: losses.cross_entropy(_S, np.zeros(7, np.int32)), r"labels: expected shape \[8\].*got \[7\]"),
        (
            lambda: losses.hinton(_S, _S, np.zeros(9, np.int32), temperature=1.0, alpha=0.5),
            r"labels: expected shape \[8\].*got \[9\]",
        ),
        (
            lambda: losses.hinton(_S, np.zeros((8, 3)), _LABELS, temperature=1.0, alpha=0.5),
            r"teacher_logits: expected shape \[8, 10\].*got \[8, 3\]",
        ),
        (
            lambda: losses.hinton(np.zeros((2, 8, 10)), _S, _LABELS, temperature=1.0, alpha=0.5),
            r"student_logits: expected rank 2",
        ),
        (
            lambda: losses.hinton(_S, _S, _LABELS, temperature=-2.0, alpha=0.5),
            r"temperature: expected a positive scalar",
        ),
    ],
)
def test_invalid_inputs_raise(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_shape_errors_raise_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"teacher_logits: .*got \[8, 12\]"):
        jax.jit(lambda s, t, temp: losses.kd(s, t, temperature=temp))(_S, np.zeros((8, 12), np.float32), 1.0)

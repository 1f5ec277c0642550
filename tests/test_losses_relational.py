"""Tests for jdistill.losses.relational: rkd_distance, rkd_angle, rkd."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill import losses

SIZES = [(3, 4, 7), (6, 5, 3)]  # (batch, student dim, teacher dim)

# Most tests call jitted losses: op-by-op (eager) dispatch compiles every
# primitive separately and is several times slower on CPU. The eager path is
# covered by the jit-vs-eager test and by the validation tests.
rkd_distance = jax.jit(losses.rkd_distance)
rkd_angle = jax.jit(losses.rkd_angle)
rkd = jax.jit(losses.rkd)


def _emb(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _all(s, t):
    return rkd_distance(s, t), rkd_angle(s, t), rkd(s, t)


def _smooth_l1(x):
    return 0.5 * x * x if abs(x) < 1.0 else abs(x) - 0.5


def _ref_distances(emb):
    emb = np.asarray(emb, np.float64)
    b = len(emb)
    d = np.zeros((b, b))
    for i, j in itertools.product(range(b), repeat=2):
        d[i, j] = math.sqrt(sum((emb[i] - emb[j]) ** 2))
    return d / (d.sum() / (b * (b - 1)))


def _ref_rkd_distance(s, t):
    ds, dt = _ref_distances(s), _ref_distances(t)
    return np.mean([_smooth_l1(x) for x in (ds - dt).ravel()])


def _ref_cosines(emb):
    emb = np.asarray(emb, np.float64)
    b = len(emb)
    cos = np.zeros((b, b, b))
    for i, j, k in itertools.product(range(b), repeat=3):
        u, v = emb[i] - emb[j], emb[k] - emb[j]
        nu, nv = np.linalg.norm(u), np.linalg.norm(v)
        if nu > 0 and nv > 0:
            cos[i, j, k] = u @ v / (nu * nv)
    return cos


def _ref_rkd_angle(s, t):
    cs, ct = _ref_cosines(s), _ref_cosines(t)
    return np.mean([_smooth_l1(x) for x in (cs - ct).ravel()])


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("batch,ds,dt", SIZES)
def test_matches_reference(batch, ds, dt):
    # Scale the teacher so that some differences fall on the linear (|x| > 1)
    # side of smooth-L1 as well as the quadratic side.
    s, t = _emb(0, batch, ds), _emb(1, batch, dt) ** 3
    dist, angle, total = _all(s, t)
    for x in (dist, angle, total):
        chex.assert_shape(x, ())
        assert x.dtype == jnp.float32
    want_dist, want_angle = _ref_rkd_distance(s, t), _ref_rkd_angle(s, t)
    chex.assert_trees_all_close(dist, np.float32(want_dist), rtol=1e-5)
    chex.assert_trees_all_close(angle, np.float32(want_angle), rtol=1e-5)
    chex.assert_trees_all_close(total, np.float32(25.0 * want_dist + 50.0 * want_angle), rtol=1e-5)


def test_hand_example_equilateral_vs_right_isoceles():
    s = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]], np.float32)
    t = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    # Distances: student all 1 after normalisation; teacher sides 1, 1, sqrt 2
    # over their mean (2 + sqrt 2) / 3. Each pair appears twice in the matrix.
    mean_t = (2 + math.sqrt(2)) / 3
    leg, hyp = 1 - 1 / mean_t, 1 - math.sqrt(2) / mean_t
    want_dist = (4 * 0.5 * leg**2 + 2 * 0.5 * hyp**2) / 9
    # Angles: 60 degrees everywhere for the student; 90 at teacher vertex 0 and
    # 45 at vertices 1, 2. Each vertex has two ordered (i != k) triplets; the
    # i == k triplets have cosine 1 in both and the rest are degenerate (0).
    gap90, gap45 = 0.5 - 0.0, 0.5 - math.sqrt(2) / 2
    want_angle = (2 * 0.5 * gap90**2 + 4 * 0.5 * gap45**2) / 27
    chex.assert_trees_all_close(rkd_distance(s, t), np.float32(want_dist), rtol=1e-5)
    chex.assert_trees_all_close(rkd_angle(s, t), np.float32(want_angle), rtol=1e-5)


def test_two_example_batches_carry_no_relational_signal():
    # With B = 2 the normalised distance matrix is always [[0, 1], [1, 0]] and
    # every non-degenerate angle is the 0-degree angle of (i, j, i).
    s, t = _emb(2, 2, 3), 10.0 * _emb(3, 2, 5)
    chex.assert_trees_all_close(_all(s, t), (0.0, 0.0, 0.0), atol=1e-6)


def test_weights():
    s, t = _emb(4, 4, 3), _emb(5, 4, 6)
    got = rkd(s, t, distance_weight=2.0, angle_weight=-3.0)
    want = 2.0 * rkd_distance(s, t) - 3.0 * rkd_angle(s, t)
    chex.assert_trees_all_close(got, want, rtol=1e-6)


# ------------------------------------------------------------ properties


def test_zero_when_student_equals_teacher():
    e = _emb(6, 5, 4)
    chex.assert_trees_all_close(_all(e, e), (0.0, 0.0, 0.0), atol=1e-6)


def test_single_example_batch_is_zero():
    chex.assert_trees_all_close(_all(_emb(7, 1, 3), _emb(8, 1, 4)), (0.0, 0.0, 0.0))


@pytest.mark.parametrize("batch,ds,dt", SIZES)
def test_invariant_to_scale_and_translation(batch, ds, dt):
    s, t = _emb(9, batch, ds), _emb(10, batch, dt)
    base = _all(s, t)
    assert float(base[2]) > 0.0
    scaled = _all(4.0 * s, 0.3 * t)
    shifted = _all(s + _emb(11, 1, ds), t - 2.0 * _emb(12, 1, dt))
    chex.assert_trees_all_close(scaled, base, rtol=1e-4, atol=1e-6)
    chex.assert_trees_all_close(shifted, base, rtol=1e-4, atol=1e-6)


def test_gradients_finite_for_degenerate_embeddings():
    t = _emb(13, 5, 6)
    duplicates = _emb(14, 5, 3)
    duplicates[1] = duplicates[3] = duplicates[0]
    grad_fn = jax.jit(jax.grad(lambda s, t: rkd(s, t), argnums=(0, 1)))
    cases = {
        "generic": _emb(15, 5, 3),
        "all_zero": np.zeros((5, 3), np.float32),
        "all_identical": np.ones((5, 3), np.float32),
        "duplicates": duplicates,
        "equal_to_teacher": t,
    }
    for name, s in cases.items():
        grads = grad_fn(s, t)
        chex.assert_tree_all_finite(grads)
        # No 1 / eps blow-up where difference vectors vanish.
        assert float(jnp.abs(grads[0]).max()) < 1e3, name
    assert float(jnp.abs(grad_fn(cases["generic"], t)[0]).max()) > 0.0
    assert float(jnp.abs(grad_fn(duplicates, t)[0]).max()) > 0.0


# -------------------------------------------------------- transformations


def test_jit_matches_eager():
    s, t = _emb(16, 4, 3), _emb(17, 4, 5)

    def f(s, t):
        return (
            losses.rkd_distance(s, t),
            losses.rkd_angle(s, t),
            losses.rkd(s, t, distance_weight=1.5, angle_weight=0.5),
        )

    chex.assert_trees_all_close(jax.jit(f)(s, t), f(s, t), rtol=1e-6, atol=1e-7)


def test_vmap_over_leading_axis_matches_loop():
    s, t = _emb(18, 3, 4, 2), _emb(19, 3, 4, 5)

    def f(s, t):
        return losses.rkd_distance(s, t), losses.rkd_angle(s, t)

    mapped = jax.jit(jax.vmap(f))(s, t)
    looped = [jax.jit(f)(s[i], t[i]) for i in range(3)]
    looped = jax.tree.map(lambda *xs: jnp.stack(xs), *looped)
    chex.assert_shape(mapped, (3,))
    chex.assert_trees_all_close(mapped, looped, rtol=1e-6, atol=1e-7)


def test_bfloat16_inputs_give_float32_outputs():
    s, t = _emb(20, 4, 3), _emb(21, 4, 6)
    s16, t16 = jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)
    out16 = _all(s16, t16)
    chex.assert_trees_all_equal_dtypes(out16, (jnp.float32(0),) * 3)
    # Computed in float32 from the rounded values, hence close to float32.
    out_r = _all(s16.astype(jnp.float32), t16.astype(jnp.float32))
    chex.assert_trees_all_close(out16, out_r, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(out16, _all(s, t), rtol=5e-2, atol=1e-3)


# ------------------------------------------------------------ validation

_E = np.zeros((8, 4), np.float32)


@pytest.mark.parametrize("fn", [losses.rkd_distance, losses.rkd_angle, losses.rkd])
@pytest.mark.parametrize(
    "student,teacher,pattern",
    [
        (
            _E,
            np.zeros((7, 4)),
            r"teacher_emb: expected shape \[8, \*\] to match student_emb "
            r"\(shape \[8, 4\]\), got \[7, 4\]",
        ),
        (np.zeros(8), _E, r"student_emb: expected rank 2 \[batch, dim\], got shape \[8\]"),
        (np.zeros((8, 2, 2)), _E, r"student_emb: expected rank 2 \[batch, dim\], got shape \[8, 2, 2\]"),
        (_E, np.zeros((8, 4, 1)), r"teacher_emb: expected rank 2 \[batch, dim\], got shape \[8, 4, 1\]"),
    ],
)
def test_invalid_inputs_raise(fn, student, teacher, pattern):
    with pytest.raises(ValueError, match=pattern):
        fn(student, teacher)

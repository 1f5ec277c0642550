"""Tests for jdistill.losses.feature_transfer: VID, AB, FT, FSP, NST and pooling.

The numpy references below are written from RepDistiller's definitions (NCHW
there, NHWC here) with explicit loops in float64.
"""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.losses import feature_transfer as ftl

# Most tests call jitted losses: op-by-op (eager) dispatch compiles every
# primitive separately and is several times slower on CPU. The eager path is
# covered by the jit-vs-eager test and by the validation tests.
adaptive_avg_pool = jax.jit(ftl.adaptive_avg_pool, static_argnames="size")
match_spatial = jax.jit(ftl.match_spatial)
vid = jax.jit(ftl.vid, static_argnames="eps")
ab = jax.jit(ftl.ab, static_argnames="margin")
ab_layers = jax.jit(ftl.ab_layers, static_argnames="margin")
factor = jax.jit(ftl.factor, static_argnames="power")
factor_transfer = jax.jit(ftl.factor_transfer, static_argnames=("p", "power"))
paraphraser_reconstruction = jax.jit(ftl.paraphraser_reconstruction)
fsp_matrix = jax.jit(ftl.fsp_matrix)
fsp = jax.jit(ftl.fsp)
nst = jax.jit(ftl.nst)


def _feat(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --------------------------------------------------------- numpy references


def _ref_pool(x, out_h, out_w):
    """PyTorch's adaptive_avg_pool2d bins, NHWC, float64."""
    x = np.asarray(x, np.float64)
    b, h, w, c = x.shape
    out = np.zeros((b, out_h, out_w, c))
    for i in range(out_h):
        h0, h1 = math.floor(i * h / out_h), math.ceil((i + 1) * h / out_h)
        for j in range(out_w):
            w0, w1 = math.floor(j * w / out_w), math.ceil((j + 1) * w / out_w)
            out[:, i, j, :] = x[:, h0:h1, w0:w1, :].mean(axis=(1, 2))
    return out


def _ref_match(s, t):
    """The reference's rule for square maps: pool the larger to (H, H)."""
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    hs, ht = s.shape[1], t.shape[1]
    if hs > ht:
        s = _ref_pool(s, ht, ht)
    elif hs < ht:
        t = _ref_pool(t, hs, hs)
    return s, t


def _ref_vid(mu, t, log_scale, eps=1e-5):
    mu, t = np.asarray(mu, np.float64), np.asarray(t, np.float64)
    var = np.log(1.0 + np.exp(np.asarray(log_scale, np.float64))) + eps
    out = np.zeros(len(mu))
    for b in range(len(mu)):
        terms = [
            0.5 * ((t[b][idx] - mu[b][idx]) ** 2 / var[idx[-1]] + math.log(var[idx[-1]]))
            for idx in np.ndindex(mu.shape[1:])
        ]
        out[b] = sum(terms) / len(terms)
    return out


def _ref_ab(s, t, m=1.0):
    out = np.zeros(len(s))
    for b in range(len(s)):
        for x, y in zip(np.asarray(s[b], np.float64).ravel(), np.asarray(t[b], np.float64).ravel()):
            if y <= 0 and x > -m:
                out[b] += (x + m) ** 2
            if y > 0 and x <= m:
                out[b] += (x - m) ** 2
    return out


def _ref_factor(f, power=2):
    f = np.asarray(f, np.float64)
    b, h, w, c = f.shape
    out = np.zeros((b, h * w))
    for n in range(b):
        for i, j in itertools.product(range(h), range(w)):
            out[n, i * w + j] = sum(f[n, i, j, k] ** power for k in range(c)) / c
        out[n] /= max(math.sqrt(sum(q * q for q in out[n])), 1e-12)
    return out


def _ref_factor_transfer(s, t, p=1, power=2):
    s, t = _ref_match(s, t)
    return (np.abs(_ref_factor(s, power) - _ref_factor(t, power)) ** p).mean(axis=1)


def _ref_fsp_matrix(a, b):
    a, b = _ref_match(a, b)
    n, h, w, ca = a.shape
    cb = b.shape[-1]
    g = np.zeros((n, ca, cb))
    for k, i, j in itertools.product(range(n), range(ca), range(cb)):
        g[k, i, j] = sum(a[k, y, x, i] * b[k, y, x, j] for y in range(h) for x in range(w)) / (h * w)
    return g


def _ref_fsp(student_pairs, teacher_pairs):
    total = 0.0
    for (sa, sb), (ta, tb) in zip(student_pairs, teacher_pairs):
        total = total + ((_ref_fsp_matrix(sa, sb) - _ref_fsp_matrix(ta, tb)) ** 2).mean(axis=(1, 2))
    return total


def _ref_nst(s, t):
    s, t = _ref_match(s, t)
    out = np.zeros(len(s))
    for b in range(len(s)):
        # Channel vectors over positions, each L2-normalised.
        fs = [s[b, :, :, c].ravel() / np.linalg.norm(s[b, :, :, c]) for c in range(s.shape[-1])]
        ft = [t[b, :, :, c].ravel() / np.linalg.norm(t[b, :, :, c]) for c in range(t.shape[-1])]

        def mean_kernel(xs, ys):
            return np.mean([float(x @ y) ** 2 for x in xs for y in ys])

        out[b] = mean_kernel(ft, ft) + mean_kernel(fs, fs) - 2 * mean_kernel(fs, ft)
    return out


def _directional_check(fn, args, argnums, seed, h=1e-2, rtol=2e-2, atol=1e-5):
    """jax.grad against central finite differences along random directions.

    For each argument in ``argnums``: compares ``<grad, v>`` with
    ``(f(x + h v) - f(x - h v)) / 2h`` for a random unit direction ``v``, where
    ``f`` is the sum of ``fn``'s per-example losses (float32 throughout).
    """

    def total(*a):
        return jnp.sum(fn(*a))

    # One compilation serves both: the values at shifted points are the FD's.
    value_and_grad = jax.jit(jax.value_and_grad(total, argnums=argnums))
    _, grads = value_and_grad(*args)
    for k, (argnum, grad) in enumerate(zip(argnums, grads)):
        x = np.asarray(args[argnum], np.float32)
        v = _feat(seed + k, *x.shape)
        v /= np.linalg.norm(v)

        def at(step, argnum=argnum, x=x, v=v):
            shifted = list(args)
            shifted[argnum] = x + step * v
            return float(value_and_grad(*shifted)[0])

        analytic = float(jnp.sum(grad * v))
        numeric = (at(h) - at(-h)) / (2 * h)
        assert abs(analytic - numeric) <= atol + rtol * abs(numeric), (argnum, analytic, numeric)
        assert abs(numeric) > 10 * atol, argnum  # The check is not vacuous.


# ----------------------------------------------------------------- pooling


@pytest.mark.parametrize(
    "shape,size",
    [((2, 4, 4, 3), (2, 2)), ((2, 6, 4, 2), (3, 1)), ((1, 5, 7, 2), (3, 2)), ((1, 2, 3, 2), (3, 4))],
)
def test_adaptive_avg_pool_matches_torch_bins(shape, size):
    x = _feat(0, *shape)
    got = adaptive_avg_pool(x, size=size)
    chex.assert_shape(got, (shape[0], *size, shape[-1]))
    assert got.dtype == jnp.float32
    chex.assert_trees_all_close(got, _ref_pool(x, *size).astype(np.float32), rtol=1e-5, atol=1e-6)


def test_adaptive_avg_pool_identity_and_hand_example():
    x = _feat(1, 2, 3, 3, 2)
    chex.assert_trees_all_equal(adaptive_avg_pool(x, size=(3, 3)), x)
    # 3 -> 2: bins [0, 2) and [1, 3) overlap at the middle row / column.
    y = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    want = np.array([[2.0, 3.0], [5.0, 6.0]], np.float32).reshape(1, 2, 2, 1)
    chex.assert_trees_all_close(adaptive_avg_pool(y, size=(2, 2)), want)


def test_match_spatial_pools_the_larger_map():
    small, large = _feat(2, 2, 2, 2, 3), _feat(3, 2, 4, 4, 5)
    s, t = match_spatial(large, small)
    chex.assert_trees_all_close(s, _ref_pool(large, 2, 2).astype(np.float32), rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_equal(t, small)
    s, t = match_spatial(small, large)
    chex.assert_shape((s, t), [(2, 2, 2, 3), (2, 2, 2, 5)])
    s, t = match_spatial(small, small[..., :1])
    chex.assert_trees_all_equal((s, t), (small, small[..., :1]))


# --------------------------------------------------------------------- VID


@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (3, 5)])
def test_vid_matches_reference(shape):
    mu, t = _feat(4, *shape), _feat(5, *shape)
    log_scale = _feat(6, shape[-1])
    got = vid(mu, t, log_scale)
    chex.assert_shape(got, (shape[0],))
    assert got.dtype == jnp.float32
    chex.assert_trees_all_close(got, _ref_vid(mu, t, log_scale).astype(np.float32), rtol=1e-5)
    want_eps = _ref_vid(mu, t, log_scale, eps=0.5).astype(np.float32)
    chex.assert_trees_all_close(vid(mu, t, log_scale, eps=0.5), want_eps, rtol=1e-5)


def test_vid_hand_example_and_log_scale_init():
    # One element, error 2, variance 4: 0.5 * (4 / 4 + log 4).
    log_scale = ftl.vid_log_scale_init(1, variance=4.0)
    chex.assert_trees_all_close(jax.nn.softplus(log_scale) + 1e-5, jnp.array([4.0]), rtol=1e-6)
    got = vid(np.zeros((1, 1), np.float32), np.full((1, 1), 2.0, np.float32), log_scale)
    chex.assert_trees_all_close(got, jnp.array([0.5 * (1.0 + math.log(4.0))]), rtol=1e-6)
    # RepDistiller's initial variance is 5.
    default = ftl.vid_log_scale_init(3)
    chex.assert_shape(default, (3,))
    chex.assert_trees_all_close(jax.nn.softplus(default) + 1e-5, jnp.full(3, 5.0), rtol=1e-6)


def test_vid_minimised_at_teacher_mean_and_at_empirical_variance():
    t = _feat(7, 4, 2, 2, 3)
    log_scale = _feat(8, 3)
    at_teacher = vid(t, t, log_scale)
    var = jax.nn.softplus(log_scale) + 1e-5
    chex.assert_trees_all_close(at_teacher, jnp.full(4, 0.5 * jnp.mean(jnp.log(var))), rtol=1e-6)
    for seed in range(3):
        wrong = t + 0.3 * _feat(9 + seed, *t.shape)
        assert bool(jnp.all(vid(wrong, t, log_scale) > at_teacher))
    # For a fixed mean, the batch loss is minimised where each channel's
    # variance equals that channel's mean squared error.
    mu = t + _feat(12, *t.shape)
    mse = np.mean((mu - t) ** 2, axis=(0, 1, 2))
    best = np.log(np.expm1(mse - 1e-5)).astype(np.float32)

    def batch_loss(ls):
        return jnp.mean(vid(mu, t, ls))

    grad = jax.jit(jax.grad(batch_loss))(best)
    chex.assert_trees_all_close(grad, jnp.zeros(3), atol=1e-5)
    for delta in (-0.3, 0.3):
        assert float(batch_loss(best + delta)) > float(batch_loss(best))


def test_vid_gradients_match_analytic():
    mu, t, log_scale = _feat(13, 2, 2, 3, 4), _feat(14, 2, 2, 3, 4), _feat(15, 4)
    d_mu, d_ls = jax.jit(jax.grad(lambda m, ls: jnp.sum(vid(m, t, ls)), argnums=(0, 1)))(mu, log_scale)
    n = 2 * 3 * 4  # elements per example
    var = np.log1p(np.exp(log_scale.astype(np.float64))) + 1e-5
    sq = (t.astype(np.float64) - mu) ** 2
    want_mu = (mu - t.astype(np.float64)) / var / n
    sigmoid = 1.0 / (1.0 + np.exp(-log_scale.astype(np.float64)))
    want_ls = (0.5 * (1.0 / var - sq / var**2)).sum(axis=(0, 1, 2)) / n * sigmoid
    chex.assert_trees_all_close(d_mu, want_mu.astype(np.float32), rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(d_ls, want_ls.astype(np.float32), rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------- AB


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_ab_matches_reference(margin):
    s, t = 1.5 * _feat(16, 3, 2, 3, 4), _feat(17, 3, 2, 3, 4)
    got = ab(s, t, margin=margin)
    chex.assert_shape(got, (3,))
    assert got.dtype == jnp.float32
    chex.assert_trees_all_close(got, _ref_ab(s, t, margin).astype(np.float32), rtol=1e-5)


def test_ab_hand_example():
    # Teacher off (t <= 0): penalise s > -1 by (s + 1)^2; on: s <= 1 by (s - 1)^2.
    s = np.array([[0.0, -2.0, 0.5, 3.0, -0.5, 1.0]], np.float32)
    t = np.array([[-1.0, 0.0, 2.0, 1.0, 0.0, 1.0]], np.float32)
    chex.assert_trees_all_close(ab(s, t), jnp.array([1.0 + 0.0 + 0.25 + 0.0 + 0.25 + 0.0]))


def test_ab_zero_beyond_margin_and_positive_inside():
    t = _feat(18, 2, 3, 3, 4)
    beyond = np.where(t > 0, 1.0 + np.abs(_feat(19, *t.shape)), -1.0 - np.abs(_feat(20, *t.shape)))
    chex.assert_trees_all_equal(ab(beyond, t), jnp.zeros(2))
    # Equal to the teacher is not enough: values inside the margin are pulled out.
    assert float(jnp.min(ab(t, t))) > 0.0
    # Right side, but inside the margin: penalised.
    inside = np.where(t > 0, 0.5, -0.5).astype(np.float32)
    chex.assert_trees_all_close(ab(inside, t), jnp.full(2, 0.25 * t[0].size))


def test_ab_layers_weights_and_scale():
    shapes = [(2, 4, 4, 3), (2, 2, 2, 5), (2, 1, 1, 6)]
    s = [_feat(21 + i, *shape) for i, shape in enumerate(shapes)]
    t = [_feat(31 + i, *shape) for i, shape in enumerate(shapes)]
    got = ab_layers(s, t)
    want = 3 / 1000 * (0.25 * _ref_ab(s[0], t[0]) + 0.5 * _ref_ab(s[1], t[1]) + _ref_ab(s[2], t[2]))
    chex.assert_shape(got, (2,))
    chex.assert_trees_all_close(got, want.astype(np.float32), rtol=1e-5)
    chex.assert_trees_all_close(ab_layers(s[:1], t[:1]), 3 / 1000 * ab(s[0], t[0]), rtol=1e-6)


def test_ab_gradient():
    s, t = 1.5 * _feat(40, 2, 3, 3, 4), _feat(41, 2, 3, 3, 4)
    _directional_check(ab, (s, t), (0,), seed=42)
    # The teacher enters only through indicators: no gradient.
    grad_t = jax.jit(jax.grad(lambda s, t: jnp.sum(ab(s, t)), argnums=1))(s, t)
    chex.assert_trees_all_equal(grad_t, jnp.zeros_like(grad_t))


# ---------------------------------------------------------------------- FT


@pytest.mark.parametrize("power", [2, 1, 3])
def test_factor_matches_reference(power):
    f = _feat(43, 2, 3, 4, 5)
    got = factor(f, power=power)
    chex.assert_shape(got, (2, 12))
    chex.assert_trees_all_close(got, _ref_factor(f, power).astype(np.float32), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(jnp.linalg.norm(got, axis=-1), jnp.ones(2), rtol=1e-6)


@pytest.mark.parametrize(
    "s_shape,t_shape,p",
    [((2, 4, 4, 3), (2, 4, 4, 6), 1), ((2, 4, 4, 3), (2, 2, 2, 4), 1), ((3, 2, 2, 2), (3, 4, 4, 3), 2)],
)
def test_factor_transfer_matches_reference(s_shape, t_shape, p):
    s, t = _feat(44, *s_shape), _feat(45, *t_shape)
    got = factor_transfer(s, t, p=p)
    chex.assert_shape(got, (s_shape[0],))
    assert got.dtype == jnp.float32
    chex.assert_trees_all_close(got, _ref_factor_transfer(s, t, p).astype(np.float32), rtol=1e-5, atol=1e-7)


def test_factor_transfer_properties():
    s, t = _feat(46, 2, 3, 3, 4), _feat(47, 2, 3, 3, 2)
    chex.assert_trees_all_close(factor_transfer(s, s), jnp.zeros(2), atol=1e-7)
    base = factor_transfer(s, t)
    assert float(base.min()) > 0.0
    chex.assert_trees_all_close(factor_transfer(3.0 * s, 0.2 * t), base, rtol=1e-4, atol=1e-7)
    # An all-zero factor stays zero; the loss is then the mean of |factor(t)|.
    zeros = np.zeros_like(s)
    chex.assert_trees_all_close(factor(zeros), jnp.zeros((2, 9)))
    chex.assert_trees_all_close(factor_transfer(zeros, t), jnp.mean(jnp.abs(factor(t)), axis=-1), rtol=1e-6)


def test_factor_transfer_gradient():
    s, t = _feat(48, 2, 3, 3, 4), _feat(49, 2, 3, 3, 2)
    _directional_check(factor_transfer, (s, t), (0, 1), seed=50)


def test_paraphraser_reconstruction():
    rec, t = _feat(52, 2, 3, 3, 4), _feat(53, 2, 3, 3, 4)
    got = paraphraser_reconstruction(rec, t)
    want = ((rec.astype(np.float64) - t) ** 2).reshape(2, -1).mean(axis=1)
    chex.assert_shape(got, (2,))
    chex.assert_trees_all_close(got, want.astype(np.float32), rtol=1e-6)
    chex.assert_trees_all_equal(paraphraser_reconstruction(t, t), jnp.zeros(2))
    # Gradient of the mean squared error: 2 (rec - t) / n.
    grad = jax.jit(jax.grad(lambda r: jnp.sum(paraphraser_reconstruction(r, t))))(rec)
    chex.assert_trees_all_close(grad, 2 * (rec - t) / 36, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------- FSP


@pytest.mark.parametrize(
    "a_shape,b_shape",
    [((2, 3, 3, 2), (2, 3, 3, 4)), ((2, 4, 4, 3), (2, 2, 2, 2)), ((1, 2, 2, 3), (1, 4, 4, 2))],
)
def test_fsp_matrix_matches_reference(a_shape, b_shape):
    a, b = _feat(54, *a_shape), _feat(55, *b_shape)
    got = fsp_matrix(a, b)
    chex.assert_shape(got, (a_shape[0], a_shape[-1], b_shape[-1]))
    chex.assert_trees_all_close(got, _ref_fsp_matrix(a, b).astype(np.float32), rtol=1e-5, atol=1e-6)


def _fsp_inputs(seed, batch=2):
    # Student maps 4x4 -> 4x4 -> 2x2; teacher maps 2x2 -> 2x2 -> 1x1, same channels.
    rng = np.random.default_rng(seed)
    s = [
        rng.standard_normal(shape).astype(np.float32)
        for shape in [(batch, 4, 4, 2), (batch, 4, 4, 3), (batch, 2, 2, 4)]
    ]
    t = [
        rng.standard_normal(shape).astype(np.float32)
        for shape in [(batch, 2, 2, 2), (batch, 2, 2, 3), (batch, 1, 1, 4)]
    ]
    return list(itertools.pairwise(s)), list(itertools.pairwise(t))


def test_fsp_matches_reference():
    s_pairs, t_pairs = _fsp_inputs(56)
    got = fsp(s_pairs, t_pairs)
    chex.assert_shape(got, (2,))
    assert got.dtype == jnp.float32
    chex.assert_trees_all_close(got, _ref_fsp(s_pairs, t_pairs).astype(np.float32), rtol=1e-5)
    # One pair: the mean over matrix entries of the squared difference.
    one = fsp(s_pairs[:1], t_pairs[:1])
    want = jnp.mean(jnp.square(fsp_matrix(*s_pairs[0]) - fsp_matrix(*t_pairs[0])), axis=(1, 2))
    chex.assert_trees_all_close(one, want, rtol=1e-6)


def test_fsp_zero_when_student_equals_teacher():
    s_pairs, _ = _fsp_inputs(57)
    chex.assert_trees_all_close(fsp(s_pairs, s_pairs), jnp.zeros(2), atol=1e-12)


def test_fsp_gradient():
    s_pairs, t_pairs = _fsp_inputs(58)
    flat_s = [s_pairs[0][0], s_pairs[0][1], s_pairs[1][1]]

    def loss(a, b, c):
        return fsp([(a, b), (b, c)], t_pairs)

    _directional_check(loss, flat_s, (0, 1, 2), seed=59)


# --------------------------------------------------------------------- NST


@pytest.mark.parametrize(
    "s_shape,t_shape",
    [
        ((2, 3, 3, 2), (2, 3, 3, 5)),  # channel Gram (positions > channels)
        ((2, 2, 2, 6), (2, 2, 2, 7)),  # position Gram (channels > positions)
        ((2, 4, 4, 3), (2, 2, 2, 4)),  # student pooled
        ((1, 2, 2, 3), (1, 4, 4, 2)),  # teacher pooled
    ],
)
def test_nst_matches_reference(s_shape, t_shape):
    s, t = _feat(62, *s_shape), _feat(63, *t_shape)
    got = nst(s, t)
    chex.assert_shape(got, (s_shape[0],))
    assert got.dtype == jnp.float32
    chex.assert_trees_all_close(got, _ref_nst(s, t).astype(np.float32), rtol=1e-5, atol=1e-6)


def test_nst_hand_example():
    # One student channel e1, teacher channels e1 and e2 (2 positions):
    # K_tt = [[1, 0], [0, 1]] mean 1/2; K_ss = 1; K_st = [1, 0] mean 1/2.
    s = np.array([3.0, 0.0], np.float32).reshape(1, 1, 2, 1)
    t = np.array([[2.0, 0.0], [0.0, 5.0]], np.float32).reshape(1, 1, 2, 2)
    chex.assert_trees_all_close(nst(s, t), jnp.array([0.5 + 1.0 - 1.0]), atol=1e-7)


def test_nst_properties():
    s, t = _feat(64, 2, 3, 3, 4), _feat(65, 2, 3, 3, 6)
    chex.assert_trees_all_close(nst(s, s), jnp.zeros(2), atol=1e-6)
    base = nst(s, t)
    assert float(base.min()) > 0.0
    # Each channel is normalised separately: per-channel positive scales cancel.
    scale_s, scale_t = np.arange(1, 5, dtype=np.float32), np.linspace(0.1, 3, 6).astype(np.float32)
    chex.assert_trees_all_close(nst(s * scale_s, t * scale_t), base, rtol=1e-4, atol=1e-6)
    # Duplicating all of a map's channels leaves every kernel mean unchanged.
    chex.assert_trees_all_close(nst(s, np.concatenate([t, t], -1)), base, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t_channels", [2, 9])  # channel and position Gram paths
def test_nst_gradient(t_channels):
    s, t = _feat(66, 2, 2, 2, 3), _feat(67, 2, 2, 2, t_channels)
    _directional_check(nst, (s, t), (0, 1), seed=68)


# ------------------------------------------------- finite gradients, zeros


def test_gradients_finite_including_zero_maps():
    t = _feat(70, 2, 2, 2, 3)
    zeros = np.zeros_like(t)
    log_scale = np.full(3, -30.0, np.float32)  # variance at its floor eps

    def total(s, t):
        return jnp.sum(
            nst(s, t)
            + factor_transfer(s, t)
            + fsp([(s, s)], [(t, t)])
            + ab(s, t)
            + vid(s, t, log_scale)
            + paraphraser_reconstruction(s, t)
        )

    grad_fn = jax.jit(jax.grad(total, argnums=(0, 1)))
    for s, t_ in [(_feat(71, 2, 2, 2, 3), t), (zeros, t), (t, zeros), (zeros, zeros), (t, t)]:
        chex.assert_tree_all_finite(grad_fn(s, t_))
        chex.assert_tree_all_finite(total(s, t_))


# -------------------------------------------------------- transformations


def _all_losses(s, t, log_scale):
    return (
        ftl.vid(s, t, log_scale),
        ftl.ab(s, t),
        ftl.ab_layers([s, t], [t, s]),
        ftl.factor_transfer(s, t[:, :2, :2, :2]),
        ftl.paraphraser_reconstruction(s, t),
        ftl.fsp([(s, t[..., :1])], [(t, s[..., :1])]),
        ftl.nst(s, t[..., :2]),
    )


def test_jit_matches_eager():
    # Op-by-op dispatch compiles each primitive, so a subset: it covers both
    # pooling paths (integer ratio in fsp, general in nst).
    s, t, log_scale = _feat(72, 2, 4, 4, 3), _feat(73, 2, 4, 4, 3), _feat(74, 3)

    def f(s, t, log_scale):
        return (
            ftl.vid(s, t, log_scale),
            ftl.fsp([(s, t[:, :2, :2, :1])], [(t, s[..., :1])]),
            ftl.nst(s, t[:, :3, :3, :2]),
        )

    chex.assert_trees_all_close(jax.jit(f)(s, t, log_scale), f(s, t, log_scale), rtol=1e-5, atol=1e-7)


def test_vmap_over_leading_axis_matches_loop():
    s, t, log_scale = _feat(75, 3, 2, 4, 4, 3), _feat(76, 3, 2, 4, 4, 3), _feat(77, 3)
    f = jax.jit(_all_losses)
    mapped = jax.jit(jax.vmap(_all_losses, in_axes=(0, 0, None)))(s, t, log_scale)
    looped = jax.tree.map(lambda *xs: jnp.stack(xs), *[f(s[i], t[i], log_scale) for i in range(3)])
    chex.assert_trees_all_equal_shapes(mapped, (jnp.zeros((3, 2)),) * 7)
    chex.assert_trees_all_close(mapped, looped, rtol=1e-5, atol=1e-7)


def test_bfloat16_inputs_give_float32_outputs():
    s, t, log_scale = _feat(78, 2, 4, 4, 3), _feat(79, 2, 4, 4, 3), _feat(80, 3)
    s16, t16, ls16 = (jnp.asarray(x, jnp.bfloat16) for x in (s, t, log_scale))
    f = jax.jit(_all_losses)
    out16 = f(s16, t16, ls16)
    chex.assert_trees_all_equal_dtypes(out16, (jnp.zeros(2),) * 7)
    rounded = f(*(x.astype(jnp.float32) for x in (s16, t16, ls16)))
    chex.assert_trees_all_close(out16, rounded, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------ validation

_F = np.zeros((2, 4, 4, 3), np.float32)


@pytest.mark.parametrize(
    "call,pattern",
    [
        (
            lambda: ftl.adaptive_avg_pool(_F, (2, 0)),
            r"size: expected two positive integers \(height, width\), got \(2, 0\)",
        ),
        (lambda: ftl.adaptive_avg_pool(_F[0], (2, 2)), r"feat: expected rank 4 .*got shape \[4, 4, 3\]"),
        (
            lambda: ftl.match_spatial(_F, np.zeros((3, 4, 4, 3))),
            r"teacher_feat: expected shape \[2, \*, \*, \*\] to match student_feat",
        ),
        (
            lambda: ftl.vid(_F, np.zeros((2, 2, 2, 3)), np.zeros(3)),
            (
                r"teacher_feat: expected shape \[2, 4, 4, 3\] to match student_mean, got \[2, 2, 2, 3\]"
                r"\. Pool .* match_spatial before the regressor"
            ),
        ),
        (
            lambda: ftl.vid(_F, _F, np.zeros(4)),
            r"log_scale: expected shape \[3\] \(one per teacher channel\), got \[4\]",
        ),
        (lambda: ftl.vid(np.zeros(3), np.zeros(3), np.zeros(3)), r"student_mean: expected rank >= 2"),
        (lambda: ftl.vid_log_scale_init(3, variance=1e-6), r"variance: expected a value greater than eps"),
        (
            lambda: ftl.ab(_F, np.zeros((2, 4, 4, 5))),
            (
                r"teacher_pre: expected shape \[2, 4, 4, 3\] to match student_pre, got \[2, 4, 4, 5\]"
                r"\. Map the student's pre-activations .* connector"
            ),
        ),
        (
            lambda: ftl.ab_layers([_F, _F], [_F]),
            r"teacher_pres: expected as many maps as student_pres \(at least one\), got 1 and 2",
        ),
        (lambda: ftl.ab_layers([], []), r"teacher_pres: expected as many maps .* got 0 and 0"),
        (
            lambda: ftl.ab_layers([_F, _F], [_F, _F[:1]]),
            r"teacher_pres\[1\]: expected shape \[2, 4, 4, 3\] to match student_pres\[1\]",
        ),
        (lambda: ftl.factor(_F[0]), r"feat: expected rank 4 \[batch, height, width, channels\]"),
        (
            lambda: ftl.factor_transfer(_F, np.zeros((3, 4, 4, 3))),
            r"teacher_factor: expected shape \[2, \*, \*, \*\] to match student_factor",
        ),
        (
            lambda: ftl.factor_transfer(_F.reshape(2, 16, 3), _F),
            r"student_factor: expected rank 4 .*got shape \[2, 16, 3\]",
        ),
        (
            lambda: ftl.paraphraser_reconstruction(_F, _F[..., :2]),
            r"teacher_feat: expected shape \[2, 4, 4, 3\] to match reconstruction, got \[2, 4, 4, 2\]",
        ),
        (
            lambda: ftl.fsp_matrix(_F, np.zeros((1, 4, 4, 3))),
            r"b: expected shape \[2, \*, \*, \*\] to match a",
        ),
        (
            lambda: ftl.fsp([(_F, _F)], [(_F, np.zeros((2, 4, 4, 5)))]),
            (
                r"teacher_pairs\[0\]: FSP matrix \[2, 3, 5\] \[batch, C_a, C_b\] does not match "
                r"student_pairs\[0\]'s \[2, 3, 3\]\. .*same channel counts"
            ),
        ),
        (
            lambda: ftl.fsp([(_F, _F), (_F, _F)], [(_F, _F)]),
            r"teacher_pairs: expected as many pairs as student_pairs \(at least one\), got 1 and 2",
        ),
        (lambda: ftl.fsp([(_F, _F, _F)], [(_F, _F)]), r"student_pairs\[0\]: expected a pair \(a, b\)"),
        (
            lambda: ftl.fsp([(_F, _F)], [(_F, _F[0])]),
            r"teacher_pairs\[0\]\[1\]: expected rank 4 .*got shape \[4, 4, 3\]",
        ),
        (
            lambda: ftl.nst(_F, np.zeros((2, 4, 4))),
            r"teacher_feat: expected rank 4 .*got shape \[2, 4, 4\]",
        ),
        (
            lambda: ftl.nst(_F, np.zeros((1, 4, 4, 3))),
            r"teacher_feat: expected shape \[2, \*, \*, \*\] to match student_feat",
        ),
    ],
)
def test_invalid_inputs_raise(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()

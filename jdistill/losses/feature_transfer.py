"""Feature-map transfer losses of the CRD CIFAR-100 benchmark: VID, AB, FT, FSP, NST.

Pure functions of NHWC arrays (channels last). The trainable parts of these
methods (VID's regressor and per-channel variance, FT's paraphraser and
translator, AB's connector) live elsewhere; these functions take their outputs.

The benchmark's table comes from RepDistiller (github.com/HobbitLong/RepDistiller,
``distiller_zoo/``), which is NCHW. Where its implementation departs from the
paper's formula, we follow the implementation and each docstring says how. Every
loss returns one value per example ([B]). The batch means of :func:`vid`,
:func:`ab_layers`, :func:`factor_transfer`, :func:`paraphraser_reconstruction`,
:func:`fsp` and :func:`nst` are the scalars the reference computes for that
batch (for one layer of VID and NST, which the reference sums over layers).

Spatial sizes: where the reference compares maps of different sizes (FT, FSP,
NST, and VID before its regressor) it adaptive-average-pools the larger map to
the smaller's size; :func:`adaptive_avg_pool` and :func:`match_spatial` do the
same here.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jdistill.losses import _checks

_LAYOUT = "[batch, height, width, channels]"

# torch.nn.functional.normalize's default: x / max(||x||_2, eps). An all-zero
# vector stays zero with a finite value and gradient.
_NORM_EPS = 1e-12

# Full float32 accuracy for the Gram-type contractions (FSP, NST, pooling), whose
# losses are differences of similar sums: at the default precision, float32
# matrix products on recent NVIDIA GPUs may run in TF32, which keeps about three
# significant decimal digits of each input.
_HIGHEST = jax.lax.Precision.HIGHEST

# RepDistiller's ABLoss scales every layer's loss by 3 / 1000.
_AB_SCALE = 3.0 / 1000.0


def _f32(x) -> jax.Array:
    return jnp.asarray(x).astype(jnp.float32)


def _l2_normalise(x, axis) -> jax.Array:
    """``x / max(||x||_2, 1e-12)`` along ``axis``, as ``F.normalize``."""
    sum_sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sum_sq, _NORM_EPS**2))


def _check_maps(a_name: str, a, b_name: str, b) -> None:
    """Both rank 4 (NHWC) with the same batch size; other sizes may differ."""
    _checks.check_rank(a_name, a, 4, _LAYOUT)
    _checks.check_rank(b_name, b, 4, _LAYOUT)
    _checks.check_match(b_name, b, a_name, a, axes=(0,))


# ----------------------------------------------------------------- pooling


def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] averaging weights of 1-D adaptive average pooling.

    Output ``i`` averages inputs ``floor(i * n_in / n_out)`` to
    ``ceil((i + 1) * n_in / n_out) - 1``, PyTorch's bins.
    """
    weights = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -(-((i + 1) * n_in) // n_out)
        weights[i, start:end] = 1.0 / (end - start)
    return weights


def _adaptive_avg_pool(x, out_h: int, out_w: int) -> jax.Array:
    b, h, w, c = x.shape
    if (h, w) == (out_h, out_w):
        return x
    if h % out_h == 0 and w % out_w == 0:
        # Integer ratios: the bins tile the map; a plain mean pool.
        return jnp.mean(x.reshape(b, out_h, h // out_h, out_w, w // out_w, c), axis=(2, 4))
    return jnp.einsum(
        "ph,bhwc,qw->bpqc",
        _pool_matrix(h, out_h),
        x,
        _pool_matrix(w, out_w),
        precision=_HIGHEST,
    )


def adaptive_avg_pool(feat, size) -> jax.Array:
    """Adaptive average pooling of NHWC features to a given spatial size.

    ``out[b, i, j, c] = mean_{h in bin_i(H, H'), w in bin_j(W, W')} feat[b, h, w, c]``
    with ``bin_i(n, n') = [floor(i * n / n'), ceil((i + 1) * n / n'))``, the bins
    of ``torch.nn.functional.adaptive_avg_pool2d``. When ``H' | H`` and
    ``W' | W`` this is mean pooling with window and stride ``(H / H', W / W')``;
    other ratios (bins overlap or differ in size) average with a fixed weight
    matrix. Computed in float32.

    Args:
      feat: [B, H, W, C] features.
      size: ``(H', W')``, positive integers (sizes above ``H``, ``W`` repeat
        rows or columns, as PyTorch does).

    Returns:
      [B, H', W', C] float32 features.

    Raises:
      ValueError: if ``feat`` is not rank 4 or ``size`` is not two positive
        integers.
    """
    _checks.check_rank("feat", feat, 4, _LAYOUT)
    if len(size) != 2 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in size):
        raise ValueError(f"size: expected two positive integers (height, width), got {size!r}")
    return _adaptive_avg_pool(_f32(feat), int(size[0]), int(size[1]))


def _match_spatial(x, y) -> tuple[jax.Array, jax.Array]:
    """Pools whichever of two NHWC maps is larger to the other's (H, W)."""
    (hx, wx), (hy, wy) = x.shape[1:3], y.shape[1:3]
    if (hx, wx) > (hy, wy):
        x = _adaptive_avg_pool(x, hy, wy)
    elif (hx, wx) < (hy, wy):
        y = _adaptive_avg_pool(y, hx, wx)
    return x, y


def match_spatial(student_feat, teacher_feat) -> tuple[jax.Array, jax.Array]:
    """Brings two NHWC maps to the same spatial size, as RepDistiller does.

    The map with the larger height (then width, if the heights are equal) is
    adaptive-average-pooled (:func:`adaptive_avg_pool`) to the other's
    ``(H, W)``; the other is returned unchanged. The reference compares heights
    only and pools to a square ``(H, H)``, the same thing for its square CIFAR
    maps. VID pools its inputs this way *before* its regressor: call this on the
    student and teacher features, then the regressor, then :func:`vid`. FT, FSP
    and NST pool inside the loss, as the reference does.

    Args:
      student_feat: [B, H_s, W_s, C_s] features.
      teacher_feat: [B, H_t, W_t, C_t] features.

    Returns:
      ``(student, teacher)`` float32 features of equal ``(H, W)``.

    Raises:
      ValueError: if either input is not rank 4 or the batch sizes differ.
    """
    _check_maps("student_feat", student_feat, "teacher_feat", teacher_feat)
    return _match_spatial(_f32(student_feat), _f32(teacher_feat))


# --------------------------------------------------------------------- VID


def vid_log_scale_init(channels: int, *, variance=5.0, eps=1e-5) -> jax.Array:
    """Initial ``log_scale`` of :func:`vid` for a given initial variance.

    ``log_scale = log(exp(variance - eps) - 1)``, the inverse of
    ``softplus(log_scale) + eps``; RepDistiller's VIDLoss starts at variance 5.

    Args:
      channels: number of teacher channels ``C``.
      variance: initial per-channel variance, greater than ``eps``.
      eps: the ``eps`` later passed to :func:`vid`.

    Returns:
      [C] float32 array, every entry the same.

    Raises:
      ValueError: if ``variance <= eps``.
    """
    if not variance > eps:
        raise ValueError(f"variance: expected a value greater than eps={eps}, got {variance}")
    value = np.log(np.expm1(np.float64(variance) - np.float64(eps)))
    return jnp.full((channels,), value, jnp.float32)


def vid(student_mean, teacher_feat, log_scale, *, eps=1e-5) -> jax.Array:
    """Variational information distillation: Gaussian NLL of the teacher feature.

    The teacher feature is modelled as Gaussian with mean the regressed student
    feature and a learned variance per teacher channel::

        var_c = softplus(log_scale_c) + eps
        vid_b = mean_{h, w, c} 0.5 * ((t_bhwc - mu_bhwc)^2 / var_c + log var_c)

    Ahn et al. (2019), "Variational Information Distillation for Knowledge
    Transfer". The paper's loss is ``sum_{c, h, w} [log sigma_c + (t - mu)^2 /
    (2 sigma_c^2)]`` with ``sigma_c^2 = softplus(alpha_c) + eps``: the same terms
    (``log sigma_c = 0.5 log var_c``), summed. We follow RepDistiller's VIDLoss,
    which averages them over every element (the batch mean of ``vid_b``) and,
    like the paper, drops the constant ``0.5 log(2 pi)``. Pooling is not done
    here: the reference pools the larger of the two *input* maps before its
    regressor (:func:`match_spatial`), so ``student_mean`` and ``teacher_feat``
    arrive with the same shape. The reference has one regressor and variance
    per layer, for ``feat[1:-1]`` of both networks, and sums the layers' losses.

    Args:
      student_mean: [B, ..., C] predicted mean: the student feature after the
        regressor (RepDistiller: three 1x1 convolutions with ReLUs between).
      teacher_feat: the teacher feature, same shape as ``student_mean``.
      log_scale: [C] unconstrained variance parameters, one per teacher channel
        (see :func:`vid_log_scale_init`).
      eps: variance floor added after the softplus.

    Returns:
      [B] float32 losses; can be negative (it is a log density).

    Raises:
      ValueError: if ``student_mean`` has rank < 2, ``teacher_feat`` has another
        shape, or ``log_scale`` is not [C].
    """
    _checks.check_min_rank("student_mean", student_mean, 2, "[batch, ..., channels]")
    _checks.check_match(
        "teacher_feat",
        teacher_feat,
        "student_mean",
        student_mean,
        hint=(
            "Pool the larger of the student and teacher features with match_spatial before the "
            "regressor, and regress to the teacher's channel count."
        ),
    )
    channels = jnp.shape(student_mean)[-1]
    if jnp.shape(log_scale) != (channels,):
        raise ValueError(
            f"log_scale: expected shape [{channels}] (one per teacher channel), "
            f"got {_checks.fmt_shape(jnp.shape(log_scale))}"
        )
    mu, t = _f32(student_mean), _f32(teacher_feat)
    var = jax.nn.softplus(_f32(log_scale)) + eps
    nll = 0.5 * (jnp.square(t - mu) / var + jnp.log(var))
    return jnp.mean(nll, axis=tuple(range(1, nll.ndim)))


# ---------------------------------------------------------------------- AB


def _ab(s_name: str, student_pre, t_name: str, teacher_pre, margin) -> jax.Array:
    _checks.check_min_rank(s_name, student_pre, 2, "[batch, ...]")
    _checks.check_match(
        t_name,
        teacher_pre,
        s_name,
        student_pre,
        hint="Map the student's pre-activations to the teacher's shape with a connector first.",
    )
    s, t = _f32(student_pre), _f32(teacher_pre)
    # The teacher's neuron is off: push the student below -margin.
    off = jnp.where((s > -margin) & (t <= 0), jnp.square(s + margin), 0.0)
    # The teacher's neuron is on: push the student above +margin.
    on = jnp.where((s <= margin) & (t > 0), jnp.square(s - margin), 0.0)
    return jnp.sum(off + on, axis=tuple(range(1, s.ndim)))


def ab(student_pre, teacher_pre, *, margin=1.0) -> jax.Array:
    """Activation-boundary loss for one layer (per example, unweighted).

    A hinge-squared loss that puts each student pre-activation on the same side
    of zero as the teacher's, at least ``margin`` beyond it::

        ab_b = sum_{h, w, c} [ (s + m)^2 * 1(s > -m and t <= 0)
                             + (s - m)^2 * 1(s <= m and t > 0) ]

    i.e. ``relu(s + m)^2`` where the teacher neuron is off and ``relu(m - s)^2``
    where it is on (the paper's alternative loss, its squared L2 norm per
    example). The indicators carry no gradient. Zero exactly when every
    student value is at or beyond the margin on the teacher's side.

    Heo et al. (2019), "Knowledge Transfer via Distillation of Activation
    Boundaries Formed by Hidden Neurons". This is RepDistiller's
    ``criterion_alternative_l2`` (with its fixed margin 1.0), per example: the
    reference sums over the batch too and divides by it, i.e. takes the batch
    mean of ``ab_b``. Its layer weights and ``3 / 1000`` scale are in
    :func:`ab_layers`.

    Args:
      student_pre: [B, ...] student pre-activations (before the ReLU), mapped to
        the teacher's shape by a connector.
      teacher_pre: teacher pre-activations, same shape.
      margin: ``m``, the distance beyond zero the student is asked to reach.

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: if ``student_pre`` has rank < 2 or the shapes differ.
    """
    return _ab("student_pre", student_pre, "teacher_pre", teacher_pre, margin)


def ab_layers(student_pres: Sequence, teacher_pres: Sequence, *, margin=1.0) -> jax.Array:
    """Activation-boundary loss over several layers, weighted as RepDistiller.

    ``ab_layers_b = (3 / 1000) * sum_{i < n} 2^(i - n + 1) * ab(s_i, t_i)_b``: the
    deepest (last) layer has weight 1 and each shallower one half the next.

    Heo et al. (2019), "Knowledge Transfer via Distillation of Activation
    Boundaries Formed by Hidden Neurons". The weights and the ``3 / 1000``
    factor are RepDistiller's ABLoss, not the paper's formula; we follow the
    reference. Its ABLoss returns the per-layer terms, which its training code
    sums: that sum is the batch mean of ``ab_layers_b``. The reference uses AB
    only in its initialisation stage (training the connector and the student's
    feature layers, ``feat[1:-1]`` of both networks, before the main stage,
    whose AB term is zero).

    Args:
      student_pres: n >= 1 student pre-activation maps, shallowest first, each
        already mapped to its teacher layer's shape by a connector.
      teacher_pres: the n matching teacher pre-activation maps.
      margin: as in :func:`ab`.

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: if the lists are empty or differ in length, or a pair is
        invalid for :func:`ab`.
    """
    n = len(student_pres)
    if n == 0 or len(teacher_pres) != n:
        raise ValueError(
            f"teacher_pres: expected as many maps as student_pres (at least one), "
            f"got {len(teacher_pres)} and {n}"
        )
    total = 0.0
    for i, (s, t) in enumerate(zip(student_pres, teacher_pres)):
        total = total + 2.0 ** (i - n + 1) * _ab(f"student_pres[{i}]", s, f"teacher_pres[{i}]", t, margin)
    return _AB_SCALE * total


# ---------------------------------------------------------------------- FT


def factor(feat, *, power=2) -> jax.Array:
    """RepDistiller's normalised factor: channel mean of ``feat^power``, L2-normalised.

    ``q_b[h, w] = mean_c feat_b[h, w, c]^power`` flattened over ``(h, w)``, then
    ``factor_b = q_b / max(||q_b||_2, 1e-12)``. Computed in float32.

    Kim et al. (2018), "Paraphrasing Complex Network: Network Compression via
    Factor Transfer". The paper normalises the whole flattened factor
    (``vec(F) / ||vec(F)||_2``, every channel kept); RepDistiller's
    FactorTransfer first reduces the channels to ``mean_c F^2`` (an attention
    map) and normalises that. We follow the reference. The power is applied
    without an absolute value, as the reference does (the same for the default
    ``power=2``).

    Args:
      feat: [B, H, W, C] factors (paraphraser or translator outputs).
      power: integer exponent before the channel mean (the reference's ``p1``).

    Returns:
      [B, H * W] float32 factors of unit L2 norm (zero for an all-zero map).

    Raises:
      ValueError: if ``feat`` is not rank 4.
    """
    _checks.check_rank("feat", feat, 4, _LAYOUT)
    x = _f32(feat)
    q = jnp.mean(x**power, axis=-1).reshape(x.shape[0], -1)
    return _l2_normalise(q, axis=-1)


def factor_transfer(student_factor, teacher_factor, *, p=1, power=2) -> jax.Array:
    """Factor-transfer loss: mean L_p distance between normalised factors.

    ``ft_b = mean_{h, w} |factor(s)_b - factor(t)_b|^p`` (:func:`factor`), after
    adaptive-average-pooling the larger map to the smaller's spatial size
    (:func:`match_spatial`). Invariant to scaling either input by a positive
    constant. Channel counts may differ.

    Kim et al. (2018), "Paraphrasing Complex Network: Network Compression via
    Factor Transfer". The paper's loss is the L1 *norm* ``||F_T/||F_T|| -
    F_S/||F_S||||_1`` of whole flattened factors; RepDistiller's FactorTransfer
    (which we follow) takes the *mean* absolute difference (``p2 = 1``) of the
    channel-reduced factors of :func:`factor` over positions and the batch (the
    batch mean of ``ft_b``), pooling as above. For ``p != 1`` we use ``|d|^p``;
    the reference uses ``d^p``, the same for even ``p`` (it only uses
    ``p = 1``). In the reference the student factor is the translator's output
    on the student's ``feat[-2]``, the teacher factor the paraphraser encoder's
    on the teacher's ``feat[-2]``.

    Args:
      student_factor: [B, H_s, W_s, C_s] student factor (translator output).
      teacher_factor: [B, H_t, W_t, C_t] teacher factor (paraphraser encoder
        output).
      p: exponent of the distance (the reference's ``p2``).
      power: exponent of :func:`factor` (the reference's ``p1``).

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: if either input is not rank 4 or the batch sizes differ.
    """
    _check_maps("student_factor", student_factor, "teacher_factor", teacher_factor)
    s, t = _match_spatial(_f32(student_factor), _f32(teacher_factor))
    diff = jnp.abs(factor(s, power=power) - factor(t, power=power))
    return jnp.mean(diff if p == 1 else diff**p, axis=-1)


def paraphraser_reconstruction(reconstruction, teacher_feat) -> jax.Array:
    """Per-example mean squared error of the paraphraser's reconstruction.

    ``rec_b = mean_{all non-batch axes} (reconstruction_b - teacher_feat_b)^2``,
    the loss that trains the paraphraser (an autoencoder on the teacher's
    feature) before factor transfer.

    Kim et al. (2018), "Paraphrasing Complex Network: Network Compression via
    Factor Transfer". The paper writes the squared L2 norm; RepDistiller's
    initialisation stage (``helper/pretrain.py``) uses ``nn.MSELoss``, the mean
    over every element: the batch mean of ``rec_b``. We follow the reference.

    Args:
      reconstruction: [B, ...] the paraphraser's decoder output.
      teacher_feat: the teacher feature it reconstructs, same shape.

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: if ``reconstruction`` has rank < 2 or the shapes differ.
    """
    _checks.check_min_rank("reconstruction", reconstruction, 2, "[batch, ...]")
    _checks.check_match("teacher_feat", teacher_feat, "reconstruction", reconstruction)
    err = optax.squared_error(_f32(reconstruction), _f32(teacher_feat))
    return jnp.mean(err, axis=tuple(range(1, err.ndim)))


# --------------------------------------------------------------------- FSP


def _fsp_matrix(a_name: str, a, b_name: str, b) -> jax.Array:
    _check_maps(a_name, a, b_name, b)
    a, b = _match_spatial(_f32(a), _f32(b))
    positions = a.shape[1] * a.shape[2]
    return jnp.einsum("bhwi,bhwj->bij", a, b, precision=_HIGHEST) / positions


def fsp_matrix(a, b) -> jax.Array:
    """Flow-of-solution-procedure (FSP) matrix between two feature maps.

    ``G_b[i, j] = sum_{h, w} a_b[h, w, i] * b_b[h, w, j] / (H * W)``. When the
    spatial sizes differ, the larger map is first adaptive-average-pooled to the
    smaller's (:func:`match_spatial`), as RepDistiller does; the paper requires
    equal sizes. RepDistiller's matrix is the transpose, ``[C_b, C_a]``, which
    does not change :func:`fsp`.

    Yim et al. (2017), "A Gift from Knowledge Distillation: Fast Optimization,
    Network Minimization and Transfer Learning".

    Args:
      a: [B, H_a, W_a, C_a] features (the reference: the lower layer).
      b: [B, H_b, W_b, C_b] features (the reference: the next layer).

    Returns:
      [B, C_a, C_b] float32 matrices.

    Raises:
      ValueError: if either input is not rank 4 or the batch sizes differ.
    """
    return _fsp_matrix("a", a, "b", b)


def fsp(student_pairs: Sequence, teacher_pairs: Sequence) -> jax.Array:
    """FSP loss: squared distance between student and teacher FSP matrices.

    ``fsp_b = sum_k mean_{i, j} (G(s_k)_b[i, j] - G(t_k)_b[i, j])^2`` with ``G``
    the :func:`fsp_matrix` of the k-th pair of maps.

    Yim et al. (2017), "A Gift from Knowledge Distillation: Fast Optimization,
    Network Minimization and Transfer Learning". The paper sums the squared
    entries (``||G_T - G_S||_2^2``, equal weights over pairs); RepDistiller's FSP
    (which we follow) averages them over the ``C_a * C_b`` entries and the
    batch, one term per pair, and its training code sums the terms: the batch
    mean of ``fsp_b``. Its pairs are consecutive maps ``(feat[k], feat[k + 1])``
    of each network's ``feat[:-1]`` (every feature map; the last entry of
    ``feat`` is the pooled vector), and it uses FSP only in its initialisation
    stage (training the student's feature layers; the main stage's FSP term is
    zero).

    Args:
      student_pairs: K >= 1 pairs ``(a_k, b_k)`` of student NHWC maps.
      teacher_pairs: the K matching teacher pairs. Pair k's teacher channel
        counts must equal the student's (``C_a``, ``C_b``) for the matrices to be
        comparable; spatial sizes may differ.

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: if the lists are empty or differ in length, an entry is not a
        pair, a map is invalid for :func:`fsp_matrix`, or a pair's channel
        counts (or batch size) differ between student and teacher.
    """
    k = len(student_pairs)
    if k == 0 or len(teacher_pairs) != k:
        raise ValueError(
            f"teacher_pairs: expected as many pairs as student_pairs (at least one), "
            f"got {len(teacher_pairs)} and {k}"
        )
    total = 0.0
    for i, (s_pair, t_pair) in enumerate(zip(student_pairs, teacher_pairs)):
        for name, pair in ((f"student_pairs[{i}]", s_pair), (f"teacher_pairs[{i}]", t_pair)):
            if len(pair) != 2:
                raise ValueError(f"{name}: expected a pair (a, b) of feature maps, got {len(pair)} items")
        g_s = _fsp_matrix(f"student_pairs[{i}][0]", s_pair[0], f"student_pairs[{i}][1]", s_pair[1])
        g_t = _fsp_matrix(f"teacher_pairs[{i}][0]", t_pair[0], f"teacher_pairs[{i}][1]", t_pair[1])
        if g_s.shape != g_t.shape:
            raise ValueError(
                f"teacher_pairs[{i}]: FSP matrix {_checks.fmt_shape(g_t.shape)} [batch, C_a, C_b] does "
                f"not match student_pairs[{i}]'s {_checks.fmt_shape(g_s.shape)}. Student and teacher "
                "maps of a pair must have the same channel counts (and batch size)."
            )
        total = total + jnp.mean(optax.squared_error(g_s, g_t), axis=(1, 2))
    return total


# --------------------------------------------------------------------- NST


def _sum_sq_gram_channels(x, y) -> jax.Array:
    """[B] ``sum_{i, j} (x_i . y_j)^2`` over channel vectors; x: [B, P, C_x]."""
    return jnp.sum(jnp.square(jnp.einsum("bpi,bpj->bij", x, y, precision=_HIGHEST)), axis=(1, 2))


def nst(student_feat, teacher_feat) -> jax.Array:
    """Neuron selectivity transfer: MMD between channel activation patterns.

    Each channel's map is flattened over positions and L2-normalised over them
    (``f_c = F[:, :, c] / max(||F[:, :, c]||_2, 1e-12)``); the student's and the
    teacher's channels are two samples compared by the squared MMD with the
    polynomial kernel ``k(x, y) = (x . y)^2`` (degree 2, c = 0)::

        nst_b = mean_{i, j} k(t_i, t_j) + mean_{i, j} k(s_i, s_j)
                - 2 mean_{i, j} k(s_i, t_j)

    The larger map is first adaptive-average-pooled to the smaller's spatial
    size (:func:`match_spatial`). Channel counts may differ. Invariant to
    scaling any channel of either map by a positive constant.

    Huang & Wang (2017), "Like What You Like: Knowledge Distill via Neuron
    Selectivity Transfer". This is the paper's MMD^2 (same 1 / C^2
    normalisation, without its lambda / 2 weight) as RepDistiller's NSTLoss
    computes it (``full_loss=True``), per example: the reference averages over
    the batch too (the batch mean of ``nst_b``) and adds the pooling, which the
    paper does not need. The reference detaches the teacher-teacher term; here no
    gradient is stopped (stop the teacher's yourself). The reference applies it
    to ``feat[1:-1]`` of both networks and sums the layers' losses. Internally
    the kernel sums
    use whichever of the channel Gram ``[C, C]`` or the position Gram
    ``[HW, HW]`` (``sum_ij (s_i . t_j)^2 = <S S^T, T T^T>_F``) is cheaper.

    Args:
      student_feat: [B, H_s, W_s, C_s] student features.
      teacher_feat: [B, H_t, W_t, C_t] teacher features.

    Returns:
      [B] float32 losses (>= 0 up to rounding).

    Raises:
      ValueError: if either input is not rank 4 or the batch sizes differ.
    """
    _check_maps("student_feat", student_feat, "teacher_feat", teacher_feat)
    s, t = _match_spatial(_f32(student_feat), _f32(teacher_feat))
    b, h, w, cs = s.shape
    ct, positions = t.shape[-1], h * w
    s = _l2_normalise(s.reshape(b, positions, cs), axis=1)
    t = _l2_normalise(t.reshape(b, positions, ct), axis=1)
    channel_cost = positions * (cs * cs + ct * ct + cs * ct)
    position_cost = positions * positions * (cs + ct)
    if channel_cost <= position_cost:
        k_ss = _sum_sq_gram_channels(s, s)
        k_tt = _sum_sq_gram_channels(t, t)
        k_st = _sum_sq_gram_channels(s, t)
    else:
        g_s = jnp.einsum("bpi,bqi->bpq", s, s, precision=_HIGHEST)
        g_t = jnp.einsum("bpi,bqi->bpq", t, t, precision=_HIGHEST)
        k_ss = jnp.sum(jnp.square(g_s), axis=(1, 2))
        k_tt = jnp.sum(jnp.square(g_t), axis=(1, 2))
        k_st = jnp.sum(g_s * g_t, axis=(1, 2))
    return k_tt / (ct * ct) + k_ss / (cs * cs) - 2.0 * k_st / (cs * ct)

"""Parity tier: jdistill's losses against torchdistill's (``pip install -e '.[parity]'``, then
``pytest tests/parity``; marker ``parity``).

Identical float32 inputs (fixed seeds, CIFAR-sized: batch 64, 100 classes, ResNet stage maps) go
to a jdistill loss and to the torchdistill 1.1.5 module of the same method
(``torchdistill.losses.mid_level``, called through its io dicts as its configurations call it).
The value and the gradient with respect to each student input must agree to float32 rounding:
``max |jdistill - torchdistill| / max |torchdistill| <= 1e-5`` (CRD: 5e-5, see its test). Maps
are NHWC in jdistill and NCHW in torchdistill; the tests transpose inputs and gradients.
Conventions that differ are mapped explicitly (jdistill's side first):

==================  ==============================================================================
method              mapping
==================  ==============================================================================
KD                  ``T^2 * KDLoss(alpha=0)`` = ``mean(kd)``: torchdistill's soft term alone has no
                    ``T^2`` (only ``alpha CE + beta T^2 KL`` has it)
Hinton              ``mean(hinton(alpha))`` = ``KDLoss(alpha)`` with labels (beta = 1 - alpha)
FitNet              ``MSELoss(reduction='sum')`` (torchdistill's configurations) =
                    ``B * (H W C) * mean(feature_mse)`` (jdistill: per-example means); FT's
                    paraphraser reconstruction (stage 1) is the same MSELoss, same mapping
AT                  ``ATLoss(mode='code')`` = ``mean(attention_transfer)`` (p = 2), summed over two
                    layer pairs; ``mode='paper'`` (per-example L2 norm of the map difference) =
                    ``mean(sqrt(H W * attention_transfer))`` (jdistill: mean square over positions)
SP                  ``SPKDLoss(reduction='batchmean')`` = ``sp``, with torchdistill's row
                    normalisation ``normalize(G, 1)`` replaced by ``normalize(G, p=2, dim=1)``:
                    its ``1`` is ``p`` (L1 rows), not ``dim``; the paper and RepDistiller (and
                    jdistill) use L2 rows. Unmodified, it gives 4.4e-7 where both give 2.6e-5
VID                 ``VIDLoss`` = ``mean(vid)``; torchdistill takes the variance, built here as its
                    ``Regressor4VID`` does: ``log(1 + exp(log_scale)) + eps``
AB                  ``AltActTransferLoss(margin=1, reduction='mean')`` = ``mean(ab)``; with pair
                    weights ``(3 / 1000) 2^(i - n + 1)`` = ``mean(ab_layers)`` (3 layers)
RKD                 ``RKDLoss`` with factors (1, 0), (0, 1), (25, 50) = ``rkd_distance``,
                    ``rkd_angle``, ``rkd``
PKT                 ``PKTLoss`` = ``pkt`` (eps 1e-7 both)
CRD                 ``CRDLoss`` = ``mean(crd)`` over two steps (same contrast indices and banks:
                    ``memory_v1``/``memory_v2`` are jdistill's ``memory_s``/``memory_t``); the
                    updated banks and the constants ``z`` are compared too
DIST                ``DISTLoss`` = ``dist`` (beta, gamma, tau), with torchdistill's Pearson
                    correlation given the authors' eps, ``dot / (|a| |b| + 1e-8)``, as jdistill
                    has it, instead of ``F.cosine_similarity``'s ``max(|a|, 1e-8) max(|b|, 1e-8)``
                    (gradients 9e-6 apart at T = 1 otherwise: the intra-class columns are small)
FSP                 the FSP matrix only: ``FSPLoss.compute_fsp_matrix`` = ``fsp_matrix`` (equal
                    spatial sizes)
==================  ==============================================================================

Not compared, and why:

- FSP loss: torchdistill sums unsquared column norms ``sum_j ||G_s[:, j] - G_t[:, j]||_2`` and
  max-pools between sizes; jdistill follows RepDistiller (mean square, average pooling).
- FT (stage 2): torchdistill L2-normalises the whole flattened factor (``C H W`` values, the
  paper's); jdistill follows RepDistiller's channel-reduced factor ``mean_c F^2``.
- CC: torchdistill's ``CCKDLoss`` is the paper's (kernelised batch correlation matrices); jdistill's
  ``cc`` is RepDistiller's consecutive-pair form.
- DKD, NST, IRG, MiniLM's attention and value relations, SRRL, BAN's CWTM and DKPP, the data-free
  and adversarial losses: torchdistill 1.1.5 has no implementation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from relative_error import assert_close  # tests/parity/

from jdistill import losses

torch = pytest.importorskip("torch", reason="the parity tier needs PyTorch: pip install -e '.[parity]'")
mid_level = pytest.importorskip(
    "torchdistill.losses.mid_level", reason="the parity tier needs torchdistill: pip install -e '.[parity]'"
)

pytestmark = pytest.mark.parity

# max |jdistill - torchdistill| / max |torchdistill|, for values and for each gradient array.
TOLERANCE = 1e-5

# CRD's NCE loss is ill-conditioned in float32 (see test_crd_two_steps).
CRD_TOLERANCE = 5e-5

BATCH, CLASSES = 64, 100


def _normal(seed, *shape, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _relu(x):
    return np.maximum(x, 0.0).astype(np.float32)


def _nchw(x):
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


def _nhwc(x):
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def _unit_rows(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _t(x):
    """A constant (teacher-side) torch tensor."""
    return torch.from_numpy(np.array(x))


def _io(**tensors):
    """torchdistill's io dict: ``{module_path: {'output': tensor}}``."""
    return {path: {"output": tensor} for path, tensor in tensors.items()}


def _pairs(*paths, weights=None):
    """torchdistill's ``*_pairs`` configuration: pair i reads ``paths[i]`` on both sides."""
    weights = weights or [1.0] * len(paths)
    return {
        f"pair{i}": {
            "student": {"io": "output", "path": path},
            "teacher": {"io": "output", "path": path},
            "weight": weight,
        }
        for i, (path, weight) in enumerate(zip(paths, weights))
    }


def _assert_close(what, got, want, tolerance=TOLERANCE):
    assert_close(what, got, want, tolerance, "torchdistill")


def _parity(jax_loss, torch_loss, *student, nchw=(), tolerance=TOLERANCE):
    """Checks value and gradients of two scalar losses of the student's inputs.

    ``student`` are float32 arrays in jdistill's layout; those at the positions in ``nchw`` are
    NHWC maps, transposed for torch (and their torch gradients transposed back).
    """
    value, grads = jax.value_and_grad(jax_loss, argnums=tuple(range(len(student))))(
        *map(jnp.asarray, student)
    )
    leaves = [torch.tensor(_nchw(x) if i in nchw else x, requires_grad=True) for i, x in enumerate(student)]
    reference = torch_loss(*leaves)
    reference.backward()
    _assert_close("value", value, reference.detach().numpy(), tolerance)
    for i, (grad, leaf) in enumerate(zip(grads, leaves)):
        want = leaf.grad.numpy()
        _assert_close(f"gradient {i}", grad, _nhwc(want) if i in nchw else want, tolerance)


# ------------------------------------------------------------------------------------------- logits


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_kd(temperature):
    s, t = _normal(0, BATCH, CLASSES, scale=3.0), _normal(1, BATCH, CLASSES, scale=5.0)
    criterion = mid_level.KDLoss(".", "output", ".", "output", temperature=temperature, alpha=0.0)
    _parity(
        lambda s: jnp.mean(losses.kd(s, t, temperature=temperature)),
        lambda s: temperature**2 * criterion(_io(**{".": s}), _io(**{".": _t(t)})),
        s,
    )


@pytest.mark.parametrize(("temperature", "alpha"), [(4.0, 0.1), (20.0, 0.5)])
def test_hinton(temperature, alpha):
    s, t = _normal(2, BATCH, CLASSES, scale=3.0), _normal(3, BATCH, CLASSES, scale=5.0)
    labels = np.random.default_rng(4).integers(0, CLASSES, BATCH)
    criterion = mid_level.KDLoss(".", "output", ".", "output", temperature=temperature, alpha=alpha)
    _parity(
        lambda s: jnp.mean(losses.hinton(s, t, labels, temperature=temperature, alpha=alpha)),
        lambda s: criterion(_io(**{".": s}), _io(**{".": _t(t)}), _t(labels)),
        s,
    )


class _DISTLossAuthorsEps(mid_level.DISTLoss):
    """torchdistill's DISTLoss with the authors' (and jdistill's) Pearson eps, ``dot / (|a| |b| + eps)``,
    instead of ``F.cosine_similarity``'s ``dot / (max(|a|, eps) max(|b|, eps))``."""

    @staticmethod
    def pearson_correlation(y_s, y_t, eps):
        a, b = y_s - y_s.mean(1, keepdim=True), y_t - y_t.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize(("beta", "gamma"), [(1.0, 0.0), (0.0, 1.0), (2.0, 0.5)])
def test_dist(temperature, beta, gamma):
    s, t = _normal(5, BATCH, CLASSES, scale=3.0), _normal(6, BATCH, CLASSES, scale=5.0)
    criterion = _DISTLossAuthorsEps(".", "output", ".", "output", beta=beta, gamma=gamma, tau=temperature)
    _parity(
        lambda s: losses.dist(s, t, temperature=temperature, beta=beta, gamma=gamma),
        lambda s: criterion(_io(**{".": s}), _io(**{".": _t(t)})),
        s,
    )


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dist_unmodified(temperature):
    """torchdistill's DISTLoss as shipped: only the Pearson eps differs (relative 1e-8 / (|a| |b|), up
    to 5e-5 for the smallest intra-class columns here; 9e-6 measured on the gradient at T = 1)."""
    s, t = _normal(5, BATCH, CLASSES, scale=3.0), _normal(6, BATCH, CLASSES, scale=5.0)
    criterion = mid_level.DISTLoss(".", "output", ".", "output", beta=1.0, gamma=1.0, tau=temperature)
    _parity(
        lambda s: losses.dist(s, t, temperature=temperature),
        lambda s: criterion(_io(**{".": s}), _io(**{".": _t(t)})),
        s,
        tolerance=5e-5,
    )


# ------------------------------------------------------------------------------------- feature maps


@pytest.mark.parametrize("jdistill_loss", [losses.feature_mse, losses.paraphraser_reconstruction])
def test_fitnet_and_paraphraser_mse(jdistill_loss):
    s, t = _normal(7, BATCH, 16, 16, 32), _relu(_normal(8, BATCH, 16, 16, 32))
    criterion = mid_level.SimpleLossWrapper(
        torch.nn.MSELoss(reduction="sum"),
        input={"is_from_teacher": False, "module_path": "regressor", "io": "output"},
        target={"is_from_teacher": True, "module_path": "layer2", "io": "output"},
    )
    elements = np.prod(s.shape[1:])
    _parity(
        lambda s: jnp.sum(jdistill_loss(s, t)) * elements,
        lambda s: criterion(_io(regressor=s), _io(layer2=_t(_nchw(t))), None),
        s,
        nchw=(0,),
    )


def test_attention_transfer_code():
    """Two layer pairs (channels differ between student and teacher), summed as both do."""
    s2, s3 = _relu(_normal(9, BATCH, 16, 16, 32)), _relu(_normal(10, BATCH, 8, 8, 64))
    t2, t3 = _relu(_normal(11, BATCH, 16, 16, 128)), _relu(_normal(12, BATCH, 8, 8, 256))
    criterion = mid_level.ATLoss(_pairs("layer2", "layer3"), mode="code")
    _parity(
        lambda s2, s3: jnp.mean(losses.attention_transfer(s2, t2) + losses.attention_transfer(s3, t3)),
        lambda s2, s3: criterion(_io(layer2=s2, layer3=s3), _io(layer2=_t(_nchw(t2)), layer3=_t(_nchw(t3)))),
        s2,
        s3,
        nchw=(0, 1),
    )


def test_attention_transfer_paper():
    s, t = _relu(_normal(13, BATCH, 8, 8, 64)), _relu(_normal(14, BATCH, 8, 8, 256))
    criterion = mid_level.ATLoss(_pairs("layer3"), mode="paper")
    positions = 8 * 8
    _parity(
        lambda s: jnp.mean(jnp.sqrt(positions * losses.attention_transfer(s, t))),
        lambda s: criterion(_io(layer3=s), _io(layer3=_t(_nchw(t)))),
        s,
        nchw=(0,),
    )


class _SPKDLossL2Rows(mid_level.SPKDLoss):
    """torchdistill's SPKDLoss with the paper's L2 row normalisation: its ``normalize(G, 1)`` passes
    1 as ``p`` (L1 rows), not as ``dim``."""

    def matmul_and_normalize(self, z):
        z = torch.flatten(z, 1)
        return torch.nn.functional.normalize(torch.matmul(z, torch.t(z)), p=2, dim=1)


def test_sp():
    s, t = _relu(_normal(15, BATCH, 8, 8, 64)), _relu(_normal(16, BATCH, 8, 8, 256))
    criterion = _SPKDLossL2Rows("layer3", "layer3", reduction="batchmean")
    _parity(
        lambda s: losses.sp(s, t),
        lambda s: criterion(_io(layer3=s), _io(layer3=_t(_nchw(t)))),
        s,
        nchw=(0,),
    )


def test_vid():
    """Gradients with respect to the regressed mean and the variance parameter."""
    eps = 1e-5
    mean, t = _normal(17, BATCH, 16, 16, 64), _relu(_normal(18, BATCH, 16, 16, 64))
    log_scale = np.asarray(losses.vid_log_scale_init(64, eps=eps)) + _normal(19, 64, scale=0.5)
    criterion = mid_level.VIDLoss(_pairs("layer2"))

    def torch_loss(mean, log_scale):
        variance = torch.log(1.0 + torch.exp(log_scale)) + eps  # torchdistill's Regressor4VID
        return criterion({"layer2": {"output": (mean, variance.view(1, -1, 1, 1))}}, _io(layer2=_t(_nchw(t))))

    _parity(
        lambda mean, log_scale: jnp.mean(losses.vid(mean, t, log_scale, eps=eps)),
        torch_loss,
        mean,
        log_scale,
        nchw=(0,),
    )


def test_ab():
    s, t = _normal(20, BATCH, 16, 16, 32), _normal(21, BATCH, 16, 16, 32)
    criterion = mid_level.AltActTransferLoss(_pairs("layer2"), margin=1.0, reduction="mean")
    _parity(
        lambda s: jnp.mean(losses.ab(s, t, margin=1.0)),
        lambda s: criterion(_io(layer2=s), _io(layer2=_t(_nchw(t)))),
        s,
        nchw=(0,),
    )


def test_ab_layers():
    shapes = [(32, 32, 16), (16, 16, 32), (8, 8, 64)]
    students = [_normal(22 + i, BATCH, *shape) for i, shape in enumerate(shapes)]
    teachers = [_normal(25 + i, BATCH, *shape) for i, shape in enumerate(shapes)]
    paths = ["layer1", "layer2", "layer3"]
    n = len(paths)
    weights = [3.0 / 1000.0 * 2.0 ** (i - n + 1) for i in range(n)]
    criterion = mid_level.AltActTransferLoss(_pairs(*paths, weights=weights), margin=1.0, reduction="mean")
    teacher_io = _io(**{path: _t(_nchw(t)) for path, t in zip(paths, teachers)})
    _parity(
        lambda *s: jnp.mean(losses.ab_layers(s, teachers)),
        lambda *s: criterion(_io(**dict(zip(paths, s))), teacher_io),
        *students,
        nchw=(0, 1, 2),
    )


def test_fsp_matrix():
    """The FSP matrix (equal spatial sizes), reduced against a fixed random cotangent."""
    a, b = _relu(_normal(28, BATCH, 16, 16, 32)), _relu(_normal(29, BATCH, 16, 16, 32))
    cotangent = _normal(30, BATCH, 32, 32)
    _parity(
        lambda a, b: jnp.sum(losses.fsp_matrix(a, b) * cotangent),
        lambda a, b: torch.sum(mid_level.FSPLoss.compute_fsp_matrix(a, b) * _t(cotangent)),
        a,
        b,
        nchw=(0, 1),
    )


# --------------------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize(
    ("distance_weight", "angle_weight"),
    [(1.0, 0.0), (0.0, 1.0), (25.0, 50.0)],
    ids=["distance", "angle", "rkd"],
)
def test_rkd(distance_weight, angle_weight):
    s, t = _normal(31, BATCH, 64), _normal(32, BATCH, 256)
    criterion = mid_level.RKDLoss("fc", "fc", distance_weight, angle_weight, reduction="mean")
    _parity(
        lambda s: losses.rkd(s, t, distance_weight=distance_weight, angle_weight=angle_weight),
        lambda s: criterion(_io(fc=s), _io(fc=_t(t))),
        s,
    )


def test_pkt():
    s, t = _relu(_normal(33, BATCH, 64)), _relu(_normal(34, BATCH, 256))
    criterion = mid_level.PKTLoss("fc", "output", "fc", "output", eps=1e-7)
    _parity(lambda s: losses.pkt(s, t), lambda s: criterion(_io(fc=s), _io(fc=_t(t))), s)


def test_crd_two_steps():
    """Two steps of one CRD state: the first sets the normalisation constants, the second reuses
    them and reads the banks the first updated. Gradients with respect to both embeddings."""
    num_data, dim, negatives = 2000, 128, 1024
    rng = np.random.default_rng(35)
    dataset_labels = rng.integers(0, CLASSES, num_data)
    layout = losses.class_layout(dataset_labels, CLASSES)
    memory_s = np.asarray(losses.crd_init_memory(jax.random.key(36), num_data, dim))
    memory_t = np.asarray(losses.crd_init_memory(jax.random.key(37), num_data, dim))
    criterion = mid_level.CRDLoss(
        "normalizer", "empty", "normalizer", input_size=dim, output_size=num_data,
        num_negative_samples=negatives, num_samples=num_data, temperature=0.07, momentum=0.5, eps=1e-7,
    )  # fmt: skip
    with torch.no_grad():
        criterion.memory_v1.copy_(_t(memory_s))  # updated with the student's embeddings
        criterion.memory_v2.copy_(_t(memory_t))
    z_s = z_t = jnp.float32(-1.0)
    order = rng.permutation(num_data)
    for step in range(2):
        index = order[step * BATCH : (step + 1) * BATCH]
        indices = np.asarray(
            losses.crd_negatives(jax.random.key(38 + step), dataset_labels[index], index, *layout, negatives)
        )
        s, t = _unit_rows(_normal(40 + step, BATCH, dim)), _unit_rows(_normal(42 + step, BATCH, dim))
        state = (memory_s, memory_t, indices, z_s, z_t)

        def jax_loss(s, t):
            return jnp.mean(losses.crd(s, t, *state, num_data=num_data)[0])

        def torch_loss(s, t):
            extra = {"pos_idx": _t(indices[:, 0]).long(), "contrast_idx": _t(indices).long()}
            loss = criterion({"normalizer": {"output": s}, "empty": {"input": extra}}, _io(normalizer=t))
            return loss.reshape(())  # torchdistill returns shape [1]

        # Each negative's term is log(1 - x), x ~ 1e-3, taken (as the reference does) as the log of a
        # float32 ratio near 1: a relative rounding error of ~6e-5 per term, ~1e-5 left in the sum.
        # Against a float64 evaluation of the first step: jdistill 4e-6, torchdistill 9e-6.
        _parity(jax_loss, torch_loss, s, t, tolerance=CRD_TOLERANCE)
        _, new_state = losses.crd(s, t, *state, num_data=num_data)
        memory_s, memory_t, z_s, z_t = (np.asarray(x) for x in new_state)
        _assert_close(f"step {step}: student bank", memory_s, criterion.memory_v1.numpy())
        _assert_close(f"step {step}: teacher bank", memory_t, criterion.memory_v2.numpy())
        _assert_close(f"step {step}: z_s", z_s, criterion.params[2].detach().numpy())
        _assert_close(f"step {step}: z_t", z_t, criterion.params[3].detach().numpy())

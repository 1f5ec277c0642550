"""Methods on intermediate feature maps: FitNet, AT, SP, VID, AB, FT, FSP, NST.

Layer options default to the CRD/RepDistiller benchmark's choices on the CIFAR models
(``stage1`` ... are the stage outputs after their final ReLU, ``stageK_pre`` before it):
FitNet the second stage, AT/VID/NST every stage, SP/FT the last stage, AB every stage before its
ReLU, FSP consecutive pairs of ``stem`` and the stages. Maps of different sizes (the
cross-architecture pairs) are compared as the reference does: AT, VID, NST and FT pool the larger
to the smaller's size; FitNet's and AB's connectors change the resolution.
"""

import dataclasses
import itertools
from typing import ClassVar

import jax
from flax import nnx

from jdistill import losses
from jdistill.methods.base import Method, as_pairs, paired_stages, stage_names
from jdistill.methods.modules import ConvRegressor, Factor, VIDRegressor
from jdistill.methods.registry import register


def _layers(method, layers, student_shapes, teacher_shapes):
    return as_pairs(layers) if layers is not None else paired_stages(method, student_shapes, teacher_shapes)


def _last_stage(shapes) -> str:
    names = stage_names(shapes)
    return names[-1] if names else "embedding"


def _check_maps(method: str, pairs, student_shapes, teacher_shapes, *, same_channels: bool = False):
    for s_name, t_name in pairs:
        s, t = student_shapes[s_name], teacher_shapes[t_name]
        ok = len(s) == 3 and len(t) == 3 and (not same_channels or s[-1] == t[-1])
        if not ok:
            need = "NHWC maps with the same channels" if same_channels else "NHWC maps"
            raise ValueError(
                f"{method}: student feature {s_name!r} {list(s)} and teacher feature {t_name!r} {list(t)} "
                f"must be {need}"
            )


@dataclasses.dataclass(frozen=True)
class _LayerPairs(Method):
    """A method that reads ``layers``: ``(student name, teacher name)`` pairs, by default every
    stage of both models (:meth:`_default_pairs`)."""

    layers: tuple[tuple[str, str], ...] | None = None

    def __post_init__(self):  # options from JSON arrive as lists
        object.__setattr__(self, "layers", as_pairs(self.layers))

    def _default_pairs(self, student_shapes, teacher_shapes):
        return paired_stages(self.name, student_shapes, teacher_shapes)

    def _pairs(self, student_shapes, teacher_shapes):
        return self.layers if self.layers is not None else self._default_pairs(student_shapes, teacher_shapes)

    def features(self, student_shapes, teacher_shapes):
        pairs = self._pairs(student_shapes, teacher_shapes)
        return tuple(s for s, _ in pairs), tuple(t for _, t in pairs)


@register
@dataclasses.dataclass(frozen=True)
class FeatureHint(Method):
    """FitNets (Romero et al. 2015): MSE between a teacher feature and the student feature passed
    through a regressor (a convolution, BatchNorm and ReLU for maps; linear for vectors of other
    sizes). Default layer: ``stage2`` on staged models (the benchmark's hint layer), else
    ``embedding``. Benchmark weight 100."""

    student_layer: str | None = None
    teacher_layer: str | None = None
    name = "fitnet"
    default_weights: ClassVar = {"fitnet": 100.0}

    def _names(self, student_shapes, teacher_shapes):
        default_s = "stage2" if "stage2" in student_shapes else "embedding"
        default_t = "stage2" if "stage2" in teacher_shapes else "embedding"
        return self.student_layer or default_s, self.teacher_layer or default_t

    def features(self, student_shapes, teacher_shapes):
        s, t = self._names(student_shapes, teacher_shapes)
        return (s,), (t,)

    def modules(self, student_shapes, teacher_shapes, dataset, rngs):
        s, t = self._names(student_shapes, teacher_shapes)
        s_shape, t_shape = student_shapes[s], teacher_shapes[t]
        if len(s_shape) == 1 and s_shape == t_shape:
            return {}
        return {"connector": ConvRegressor(s_shape, t_shape, rngs=rngs)}

    def loss(self, student, teacher, batch, modules, hparams):
        s, t = self._names(student[1], teacher[1])
        feature = student[1][s]
        if "connector" in modules:
            feature = modules["connector"](feature)
        return {"fitnet": losses.feature_mse(feature, teacher[1][t])}


@register
@dataclasses.dataclass(frozen=True)
class AttentionMaps(_LayerPairs):
    """Zagoruyko & Komodakis 2017: attention transfer on pairs of NHWC maps (``layers``:
    ``(student name, teacher name)`` pairs; default every stage), summed over the pairs; of two
    maps of different sizes the larger is average-pooled to the smaller's (``match_spatial``, as
    RepDistiller's ``Attention.at_loss``). Benchmark weight 1000."""

    name = "at"
    default_weights: ClassVar = {"at": 1000.0}

    def modules(self, student_shapes, teacher_shapes, dataset, rngs):
        _check_maps(self.name, self._pairs(student_shapes, teacher_shapes), student_shapes, teacher_shapes)
        return {}

    def loss(self, student, teacher, batch, modules, hparams):
        pairs = self._pairs(student[1], teacher[1])
        maps = (losses.match_spatial(student[1][s], teacher[1][t]) for s, t in pairs)
        return {"at": sum(losses.attention_transfer(s, t) for s, t in maps)}


@register
@dataclasses.dataclass(frozen=True)
class SimilarityPreserving(Method):
    """Tung & Mori 2019 (SP): match the batch's pairwise similarity matrices of one feature
    (default the last stage). Benchmark weight 3000."""

    student_layer: str | None = None
    teacher_layer: str | None = None
    name = "sp"
    default_weights: ClassVar = {"sp": 3000.0}

    def features(self, student_shapes, teacher_shapes):
        return (self.student_layer or _last_stage(student_shapes),), (
            self.teacher_layer or _last_stage(teacher_shapes),
        )

    def loss(self, student, teacher, batch, modules, hparams):
        (s,), (t,) = self.features(student[1], teacher[1])
        return {"sp": losses.sp(student[1][s], teacher[1][t])}


@register
@dataclasses.dataclass(frozen=True)
class VariationalInformation(_LayerPairs):
    """Ahn et al. 2019 (VID): the teacher's map under a Gaussian whose mean a small regressor
    predicts from the student's map and whose per-channel variance is learned, on every stage
    pair (negative log-likelihood, summed over pairs). Of two maps of different sizes the larger
    is average-pooled to the smaller's before the regressor (``match_spatial``, as RepDistiller's
    ``VIDLoss.forward``). Benchmark weight 1."""

    name = "vid"
    default_weights: ClassVar = {"vid": 1.0}

    def modules(self, student_shapes, teacher_shapes, dataset, rngs):
        pairs = self._pairs(student_shapes, teacher_shapes)
        _check_maps(self.name, pairs, student_shapes, teacher_shapes)
        regressors = [VIDRegressor(student_shapes[s][-1], teacher_shapes[t][-1], rngs=rngs) for s, t in pairs]
        return {"regressors": nnx.List(regressors)}

    def loss(self, student, teacher, batch, modules, hparams):
        pairs = self._pairs(student[1], teacher[1])
        total = 0.0
        for (s, t), regressor in zip(pairs, modules["regressors"]):
            s_map, t_map = losses.match_spatial(student[1][s], teacher[1][t])
            total = total + losses.vid(regressor(s_map), t_map, regressor.log_scale[...])
        return {"vid": total}


def _is_body(path: tuple[str, ...]) -> bool:
    """A student parameter outside its classifier (``head``): what the benchmark's
    initialisation stages train as the student's "feature modules"."""
    return len(path) > 1 and path[0] == "model" and path[1] != "head"


@register
@dataclasses.dataclass(frozen=True)
class ActivationBoundaries(_LayerPairs):
    """Heo et al. 2019 (AB): in a ``init_epochs`` initialisation stage, the student's body and
    the connectors are trained so that the student's pre-ReLU stage outputs fall on the same side
    of zero as the teacher's (margin 1); training then uses the hard labels only, as in the
    benchmark (its AB term is 0 after the initialisation). As RepDistiller's ``Connector``: a
    stage whose student and teacher maps have the same shape is compared directly, another passes
    through a convolution (strided, transposed where the student's map is half the teacher's) and
    BatchNorm (:class:`~jdistill.methods.modules.ConvRegressor` without its ReLU)."""

    margin: float = 1.0
    init_epochs: int = 30
    name = "ab"
    default_weights: ClassVar = {}
    init_weights: ClassVar = {"ab": 1.0}

    def _default_pairs(self, student_shapes, teacher_shapes):
        return tuple(
            (f"{s}_pre", f"{t}_pre") for s, t in paired_stages(self.name, student_shapes, teacher_shapes)
        )

    def modules(self, student_shapes, teacher_shapes, dataset, rngs):
        pairs = self._pairs(student_shapes, teacher_shapes)
        _check_maps(self.name, pairs, student_shapes, teacher_shapes)
        connectors = {  # keyed by the pair's position
            str(i): ConvRegressor(student_shapes[s], teacher_shapes[t], relu=False, rngs=rngs)
            for i, (s, t) in enumerate(pairs)
            if student_shapes[s] != teacher_shapes[t]
        }
        return {"connectors": nnx.Dict(connectors)} if connectors else {}

    def loss(self, student, teacher, batch, modules, hparams):
        return {}

    def init_loss(self, student, teacher, batch, modules, hparams):
        pairs = self._pairs(student[1], teacher[1])
        connectors = modules.get("connectors", {})
        mapped = [
            connectors[str(i)](student[1][s]) if str(i) in connectors else student[1][s]
            for i, (s, _) in enumerate(pairs)
        ]
        return {"ab": losses.ab_layers(mapped, [teacher[1][t] for _, t in pairs], margin=self.margin)}

    def init_trains(self, path):
        return _is_body(path) or path[:2] == ("extras", self.name)

    def frozen(self, path):  # the connectors serve the initialisation stage only
        return path[:2] == ("extras", self.name)


@register
@dataclasses.dataclass(frozen=True)
class FactorTransfer(Method):
    """Kim et al. 2018 (FT): a paraphraser learns, in a ``init_epochs`` initialisation stage, to
    reconstruct the teacher's last-stage map through a factor of ``rate`` x its channels; then a
    translator on the student's last-stage map is trained to produce the same (L2-normalised)
    factor, with the paraphraser frozen. Benchmark weight 200. The initialisation stage runs at
    ``init_learning_rate`` (``None``: the run's rate); its default 0.01 is RepDistiller's for
    ResNet and WRN students (``helper/pretrain.py``; other students there use the run's rate,
    which ``jdistill.recipes`` sets)."""

    student_layer: str | None = None
    teacher_layer: str | None = None
    rate: float = 0.5
    init_epochs: int = 30
    init_learning_rate: float | None = 0.01
    name = "ft"
    default_weights: ClassVar = {"ft": 200.0}
    init_weights: ClassVar = {"ft_reconstruction": 1.0}

    def features(self, student_shapes, teacher_shapes):
        return (self.student_layer or _last_stage(student_shapes),), (
            self.teacher_layer or _last_stage(teacher_shapes),
        )

    def modules(self, student_shapes, teacher_shapes, dataset, rngs):
        (s,), (t,) = self.features(student_shapes, teacher_shapes)
        _check_maps(self.name, ((s, t),), student_shapes, teacher_shapes)
        factor = int(teacher_shapes[t][-1] * self.rate)
        return {
            "paraphraser": Factor(teacher_shapes[t][-1], factor, decode=True, bn=False, rngs=rngs),
            "translator": Factor(student_shapes[s][-1], factor, decode=False, bn=True, rngs=rngs),
        }

    def loss(self, student, teacher, batch, modules, hparams):
        (s,), (t,) = self.features(student[1], teacher[1])
        factor_t = jax.lax.stop_gradient(modules["paraphraser"].encode(teacher[1][t]))
        factor_s = modules["translator"].encode(student[1][s])
        return {"ft": losses.factor_transfer(factor_s, factor_t)}

    def init_loss(self, student, teacher, batch, modules, hparams):
        (_,), (t,) = self.features(student[1], teacher[1])
        paraphraser = modules["paraphraser"]
        reconstruction = paraphraser.decode(paraphraser.encode(teacher[1][t]))
        return {"ft_reconstruction": losses.paraphraser_reconstruction(reconstruction, teacher[1][t])}

    def init_trains(self, path):
        return path[:3] == ("extras", self.name, "paraphraser")

    def frozen(self, path):
        return path[:3] == ("extras", self.name, "paraphraser")


@register
@dataclasses.dataclass(frozen=True)
class FlowOfSolution(Method):
    """Yim et al. 2017 (FSP): in a ``init_epochs`` initialisation stage the student's body learns
    to match the teacher's FSP (Gram) matrices between consecutive maps (``stem`` and each stage);
    training then uses the hard labels only, as in the benchmark. The paired maps must have the
    same channel counts in both models. Initialisation weight 1, as RepDistiller's
    ``helper/pretrain.py`` sums the FSP terms unweighted (the benchmark's ``-b 50`` multiplies the
    main stage's FSP term, which is 0)."""

    layers: tuple[str, ...] | None = None
    init_epochs: int = 30
    name = "fsp"
    default_weights: ClassVar = {}
    init_weights: ClassVar = {"fsp": 1.0}

    def _names(self, student_shapes, teacher_shapes):
        if self.layers is not None:
            return tuple(self.layers)
        stages = paired_stages(self.name, student_shapes, teacher_shapes)
        return ("stem", *(s for s, _ in stages))

    def features(self, student_shapes, teacher_shapes):
        names = self._names(student_shapes, teacher_shapes)
        return names, names

    def modules(self, student_shapes, teacher_shapes, dataset, rngs):
        names = self._names(student_shapes, teacher_shapes)
        _check_maps(self.name, [(n, n) for n in names], student_shapes, teacher_shapes, same_channels=True)
        return {}

    def loss(self, student, teacher, batch, modules, hparams):
        return {}

    def init_loss(self, student, teacher, batch, modules, hparams):
        names = self._names(student[1], teacher[1])
        consecutive = list(itertools.pairwise(names))
        return {
            "fsp": losses.fsp(
                [(student[1][a], student[1][b]) for a, b in consecutive],
                [(teacher[1][a], teacher[1][b]) for a, b in consecutive],
            )
        }

    def init_trains(self, path):
        return _is_body(path)


@register
@dataclasses.dataclass(frozen=True)
class NeuronSelectivity(_LayerPairs):
    """Huang & Wang 2017 (NST): maximum mean discrepancy with a polynomial kernel between the
    distributions of the (spatially normalised) channel activations, on every stage pair, summed.
    Benchmark weight 50."""

    name = "nst"
    default_weights: ClassVar = {"nst": 50.0}

    def modules(self, student_shapes, teacher_shapes, dataset, rngs):
        _check_maps(self.name, self._pairs(student_shapes, teacher_shapes), student_shapes, teacher_shapes)
        return {}

    def loss(self, student, teacher, batch, modules, hparams):
        pairs = self._pairs(student[1], teacher[1])
        return {"nst": sum(losses.nst(student[1][s], teacher[1][t]) for s, t in pairs)}

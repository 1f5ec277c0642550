"""Distillation methods: each declares the features it reads, the trainable modules it adds, and
returns named loss terms. The trainer sums ``weight[term] * mean(term)`` and logs every term.

A method is a small frozen dataclass with
- ``name``: what ``--method`` calls it;
- ``default_weights``: ``{term: weight}`` for every term ``loss`` returns;
- ``modules(student_shapes, teacher_shapes, rngs)``: extra trainable modules (may be empty);
  the shapes are ``{feature name: shape without batch}`` for each model;
- ``loss(student, teacher, labels, modules, hparams)``: ``{term: per-example [B] or scalar}``,
  where ``student`` and ``teacher`` are ``(logits, features)`` and the teacher's outputs are
  already outside the gradient.

Add a method by writing such a class and registering it in ``METHODS``.
"""

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from jdistill import losses
from jdistill.data import UNLABELLED
from jdistill.models import Connector, Output

Shapes = Mapping[str, tuple[int, ...]]


def _feature(shapes: Shapes, name: str, who: str) -> tuple[int, ...]:
    if name not in shapes:
        raise ValueError(f"the {who} model has no feature {name!r}; its features are: {', '.join(shapes)}")
    return shapes[name]


@dataclasses.dataclass(frozen=True)
class HardLabels:
    """Cross-entropy with the true labels, averaged over the labelled examples of the batch
    (label ``UNLABELLED`` = -1 marks an image of the transfer set without a label)."""

    name: str = "ce"
    default_weights: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"ce": 1.0})

    def modules(self, student_shapes: Shapes, teacher_shapes: Shapes, rngs: nnx.Rngs) -> dict:
        return {}

    def loss(self, student: Output, teacher: Output | None, labels, modules, hparams) -> dict:
        labelled = labels != UNLABELLED
        ce = losses.cross_entropy(student[0], jnp.where(labelled, labels, 0))
        # Scaled so that the trainer's batch mean is the mean over labelled examples.
        return {"ce": jnp.where(labelled, ce, 0.0) * labels.shape[0] / jnp.maximum(labelled.sum(), 1)}


@dataclasses.dataclass(frozen=True)
class SoftTargets:
    """Hinton et al. 2015: ``T^2 KL(softmax(t/T) || softmax(s/T))`` at ``hparams["temperature"]``."""

    name: str = "kd"
    default_weights: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"kd": 1.0})

    def modules(self, student_shapes: Shapes, teacher_shapes: Shapes, rngs: nnx.Rngs) -> dict:
        return {}

    def loss(self, student: Output, teacher: Output, labels, modules, hparams) -> dict:
        return {"kd": losses.kd(student[0], teacher[0], temperature=hparams["temperature"])}


@dataclasses.dataclass(frozen=True)
class FeatureHint:
    """FitNets (Romero et al. 2015): MSE between a teacher feature and the student feature,
    through a connector when their shapes differ."""

    student_layer: str = "embedding"
    teacher_layer: str = "embedding"
    name: str = "fitnet"
    default_weights: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"fitnet": 1.0})

    def modules(self, student_shapes: Shapes, teacher_shapes: Shapes, rngs: nnx.Rngs) -> dict:
        s = _feature(student_shapes, self.student_layer, "student")
        t = _feature(teacher_shapes, self.teacher_layer, "teacher")
        return {} if s == t else {"connector": Connector(s, t, rngs=rngs)}

    def loss(self, student: Output, teacher: Output, labels, modules, hparams) -> dict:
        feature = student[1][self.student_layer]
        if "connector" in modules:
            feature = modules["connector"](feature)
        return {"fitnet": losses.feature_mse(feature, teacher[1][self.teacher_layer])}


@dataclasses.dataclass(frozen=True)
class AttentionMaps:
    """Zagoruyko & Komodakis 2017: attention transfer on pairs of NHWC feature maps
    (``layers``: ``(student name, teacher name)`` pairs), summed over the pairs."""

    layers: tuple[tuple[str, str], ...] = (("conv1", "conv1"), ("conv2", "conv2"))
    name: str = "at"
    default_weights: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"at": 1000.0})

    def __post_init__(self):  # options from JSON arrive as lists
        object.__setattr__(self, "layers", tuple(tuple(pair) for pair in self.layers))

    def modules(self, student_shapes: Shapes, teacher_shapes: Shapes, rngs: nnx.Rngs) -> dict:
        for s_name, t_name in self.layers:
            s, t = _feature(student_shapes, s_name, "student"), _feature(teacher_shapes, t_name, "teacher")
            if len(s) != 3 or len(t) != 3 or s[:2] != t[:2]:
                raise ValueError(
                    f"at: student feature {s_name!r} {list(s)} and teacher feature "
                    f"{t_name!r} {list(t)} must be NHWC maps of the same height and width"
                )
        return {}

    def loss(self, student: Output, teacher: Output, labels, modules, hparams) -> dict:
        return {"at": sum(losses.attention_transfer(student[1][s], teacher[1][t]) for s, t in self.layers)}


@dataclasses.dataclass(frozen=True)
class Relational:
    """Park et al. 2019 (RKD): distance and angle relations between the batch's embeddings."""

    layer: str = "embedding"
    name: str = "rkd"
    default_weights: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"rkd_distance": 25.0, "rkd_angle": 50.0}
    )

    def modules(self, student_shapes: Shapes, teacher_shapes: Shapes, rngs: nnx.Rngs) -> dict:
        _feature(student_shapes, self.layer, "student")
        _feature(teacher_shapes, self.layer, "teacher")
        return {}

    def loss(self, student: Output, teacher: Output, labels, modules, hparams) -> dict:
        s = student[1][self.layer].reshape(student[0].shape[0], -1)
        t = teacher[1][self.layer].reshape(teacher[0].shape[0], -1)
        return {"rkd_distance": losses.rkd_distance(s, t), "rkd_angle": losses.rkd_angle(s, t)}


METHODS = {cls().name: cls for cls in (HardLabels, SoftTargets, FeatureHint, AttentionMaps, Relational)}


def build_method(name: str, options: Mapping[str, object] | None = None):
    """The method ``name`` with ``options`` set on its fields (e.g. layer names)."""
    cls = METHODS[name]
    fields = {f.name for f in dataclasses.fields(cls)} - {"name", "default_weights"}
    unknown = sorted(set(options or {}) - fields)
    if unknown:
        raise ValueError(
            f"method {name!r} has no option {', '.join(unknown)}; its options are: "
            f"{', '.join(sorted(fields)) or 'none'}"
        )
    return cls(**(options or {}))


def parse_methods(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"kd+fitnet"`` -> ``("ce", "kd", "fitnet")``: hard labels are always part of the objective
    (set ``--weight ce=0`` to train on soft targets alone)."""
    names = spec.split("+") if isinstance(spec, str) else list(spec)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {'+'.join(unknown)!r}; built-in methods: {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"method {'+'.join(names)!r} names a method twice")
    return tuple(dict.fromkeys(["ce", *names]))


def default_weights(methods) -> dict[str, float]:
    """The methods' default term weights, merged."""
    return {term: w for m in methods for term, w in m.default_weights.items()}


def resolve_weights(methods, overrides: Mapping[str, float]) -> dict[str, float]:
    """Default weights with ``overrides`` applied; an override for a term no method returns is
    an error (a typo must not be silently ignored)."""
    weights = default_weights(methods)
    unknown = sorted(set(overrides) - set(weights))
    if unknown:
        raise ValueError(
            f"--weight names unknown term(s) {', '.join(unknown)}; the terms of this "
            f"objective are: {', '.join(weights)}"
        )
    return {**weights, **{k: float(v) for k, v in overrides.items()}}


def feature_shapes(model: nnx.Module, input_shape) -> dict[str, tuple[int, ...]]:
    """``{feature name: shape without batch}`` of ``model``, found by abstract evaluation."""
    shapes = jax.eval_shape(lambda x: model(x)[1], jax.ShapeDtypeStruct((1, *input_shape), "float32"))
    return {k: tuple(v.shape[1:]) for k, v in shapes.items()}

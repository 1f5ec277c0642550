"""Distillation methods by name, and the helpers the trainer uses to combine them.

See :mod:`jdistill.methods.base` for what a method declares. Add one by subclassing
:class:`Method` and decorating it with :func:`register`.
"""

import dataclasses
from collections.abc import Mapping

import jax
from flax import nnx

from jdistill.methods.base import Method, Shapes, paired_stages, stage_names
from jdistill.methods.registry import METHODS, register

# Importing the families registers their methods.
from jdistill.methods import logits, feature_maps, embedding, born_again, graph, attention, representation  # noqa: F401  isort: skip


def build_method(name: str, options: Mapping[str, object] | None = None) -> Method:
    """The method ``name`` with ``options`` set on its fields (layer names, temperatures...)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; built-in methods: {', '.join(METHODS)}")
    cls = METHODS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
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
    """The methods' default term weights (training and initialisation terms), merged."""
    return {term: w for m in methods for term, w in {**m.default_weights, **m.init_weights}.items()}


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


def check_features(methods, student_shapes: Shapes, teacher_shapes: Shapes) -> None:
    """Every feature the methods read exists, or a ValueError names it and lists the model's."""
    for method in methods:
        wanted_s, wanted_t = method.features(student_shapes, teacher_shapes)
        for who, wanted, shapes in (
            ("student", wanted_s, student_shapes),
            ("teacher", wanted_t, teacher_shapes),
        ):
            for name in wanted:
                if name not in shapes:
                    raise ValueError(
                        f"{method.name}: the {who} model has no feature {name!r}; its features are: "
                        f"{', '.join(shapes)}"
                    )


def feature_shapes(model: nnx.Module, input_shape) -> dict[str, tuple[int, ...]]:
    """``{feature name: shape without batch}`` of ``model``, found by abstract evaluation."""
    shapes = jax.eval_shape(lambda x: model(x)[1], jax.ShapeDtypeStruct((1, *input_shape), "float32"))
    return {k: tuple(v.shape[1:]) for k, v in shapes.items()}


__all__ = [
    "METHODS",
    "Method",
    "Shapes",
    "build_method",
    "check_features",
    "default_weights",
    "feature_shapes",
    "paired_stages",
    "parse_methods",
    "register",
    "resolve_weights",
    "stage_names",
]

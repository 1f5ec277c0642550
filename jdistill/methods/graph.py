"""Graph-based methods: instance relationship graph distillation (IRG)."""

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from jdistill import losses
from jdistill.methods.base import Method, stage_names
from jdistill.methods.registry import register


def _default_layers(student_shapes, teacher_shapes) -> tuple[str, str]:
    """One layer before ``embedding`` that both models have, then ``embedding``: LeNet-5's
    ``fc1``; an MLP's ``hidden1`` when it has a second hidden layer (with one, ``hidden1`` is
    the embedding); else the second-to-last stage (``stageK`` / ``convK``) of both models: the
    last stage is what the embedding pools."""
    shared = student_shapes.keys() & teacher_shapes.keys()
    if "fc1" in shared:
        return "fc1", "embedding"
    if "hidden2" in shared:
        return "hidden1", "embedding"
    stages = stage_names(student_shapes)
    if len(stages) >= 2 and stages[-2] in teacher_shapes:
        return stages[-2], "embedding"
    raise ValueError(
        "irg: found no layer before the embedding in both models; name the layers with "
        '--method-option \'irg.layers=["LAYER", "embedding"]\''
    )


@register
@dataclasses.dataclass(frozen=True)
class InstanceRelationshipGraph(Method):
    """Liu et al. 2019 (IRG): vertices on the logits (``irg_vertex``: mean squared difference,
    weight 0.1), edges on each of ``layers`` (``irg_edge``: squared distances between the
    batch's instances over their maximum, mean over layers, weight 5) and the transformation
    between consecutive ``layers`` (``irg_transformation``: each instance's squared distance
    between the two layers, over the batch maximum, weight 5). ``layers`` are read under the
    same names from both models, earlier first (default: one layer before ``embedding``, then
    ``embedding``; see ``_default_layers``). A model's two layers are brought to one size by
    parameter-free pooling (``losses.irg_match_sizes``), so IRG adds no trainable module.
    Weights: those of the widely used re-implementation of the authors' code."""

    layers: tuple[str, ...] | None = None
    name = "irg"
    default_weights: ClassVar = {"irg_vertex": 0.1, "irg_edge": 5.0, "irg_transformation": 5.0}

    def __post_init__(self):
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
            if not self.layers:
                raise ValueError("irg: layers must name at least one feature")

    def _layers(self, student_shapes, teacher_shapes) -> tuple[str, ...]:
        return self.layers or _default_layers(student_shapes, teacher_shapes)

    def features(self, student_shapes, teacher_shapes):
        layers = self._layers(student_shapes, teacher_shapes)
        return layers, layers

    def loss(self, student, teacher, batch, modules, hparams):
        layers = self._layers(student[1], teacher[1])  # the features dicts have the shapes' keys
        s = [student[1][name] for name in layers]
        t = [teacher[1][name] for name in layers]
        edge = jnp.mean(jnp.stack([losses.irg_edge(a, b) for a, b in zip(s, t)]))
        transformations = [
            losses.irg_transformation(
                *losses.irg_match_sizes(s[k], s[k + 1]), *losses.irg_match_sizes(t[k], t[k + 1])
            )
            for k in range(len(layers) - 1)
        ]
        return {
            "irg_vertex": losses.irg_vertex(student[0], teacher[0]),
            "irg_edge": edge,
            # With one layer there is no transformation: the term is 0.
            "irg_transformation": jnp.mean(jnp.stack(transformations)) if transformations else jnp.zeros(()),
        }

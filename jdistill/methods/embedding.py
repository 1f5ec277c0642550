"""Methods on the pooled embedding: RKD, PKT, CC and CRD (with its memory bank)."""

import dataclasses
from typing import ClassVar

import jax
import numpy as np

from jdistill import losses
from jdistill.data import UNLABELLED
from jdistill.methods.base import Method
from jdistill.methods.modules import ContrastMemory, Embed
from jdistill.methods.registry import register


def _flat(x):
    return x.reshape(x.shape[0], -1)


def _size(shape) -> int:
    return int(np.prod(shape))


@register
@dataclasses.dataclass(frozen=True)
class Relational(Method):
    """Park et al. 2019 (RKD): distance and angle relations between the batch's embeddings,
    weights 25 and 50 (the benchmark's beta of 1 times the paper's weights)."""

    layer: str = "embedding"
    name = "rkd"
    default_weights: ClassVar = {"rkd_distance": 25.0, "rkd_angle": 50.0}

    def features(self, student_shapes, teacher_shapes):
        return (self.layer,), (self.layer,)

    def loss(self, student, teacher, batch, modules, hparams):
        s, t = _flat(student[1][self.layer]), _flat(teacher[1][self.layer])
        return {"rkd_distance": losses.rkd_distance(s, t), "rkd_angle": losses.rkd_angle(s, t)}


@register
@dataclasses.dataclass(frozen=True)
class ProbabilisticTransfer(Method):
    """Passalis & Tefas 2018 (PKT): match the conditional probability distributions that the
    cosine similarities of the batch's embeddings define. Benchmark weight 30000."""

    layer: str = "embedding"
    name = "pkt"
    default_weights: ClassVar = {"pkt": 30000.0}

    def features(self, student_shapes, teacher_shapes):
        return (self.layer,), (self.layer,)

    def loss(self, student, teacher, batch, modules, hparams):
        return {"pkt": losses.pkt(_flat(student[1][self.layer]), _flat(teacher[1][self.layer]))}


@register
@dataclasses.dataclass(frozen=True)
class CorrelationCongruence(Method):
    """Peng et al. 2019 (CC): both embeddings pass through a trainable linear map to ``dim``, and
    the correlation between the batch's embeddings is matched. Benchmark weight 0.02."""

    layer: str = "embedding"
    dim: int = 128
    name = "cc"
    default_weights: ClassVar = {"cc": 0.02}

    def features(self, student_shapes, teacher_shapes):
        return (self.layer,), (self.layer,)

    def modules(self, student_shapes, teacher_shapes, dataset, rngs):
        return {
            "embed_s": Embed(_size(student_shapes[self.layer]), self.dim, normalise=False, rngs=rngs),
            "embed_t": Embed(_size(teacher_shapes[self.layer]), self.dim, normalise=False, rngs=rngs),
        }

    def loss(self, student, teacher, batch, modules, hparams):
        s = modules["embed_s"](student[1][self.layer])
        t = modules["embed_t"](teacher[1][self.layer])
        return {"cc": losses.cc(s, t)}


@register
@dataclasses.dataclass(frozen=True)
class Contrastive(Method):
    """Tian et al. 2020 (CRD): student and teacher embeddings are mapped to ``dim`` and
    L2-normalised; each is scored against its own image and ``num_negatives`` images of other
    classes in the other side's memory bank, and an NCE loss (temperature ``nce_temperature``)
    tells the positive from the negatives. After the step each bank's rows for the batch move
    to the new embeddings with ``momentum``. Benchmark: dim 128, 16384 negatives, T 0.07,
    momentum 0.5, weight 0.8. The banks are state carried by the step (replicated over devices).
    Negatives are drawn with replacement unless ``with_replacement=False`` (RepDistiller's way)."""

    layer: str = "embedding"
    dim: int = 128
    num_negatives: int = 16384
    nce_temperature: float = 0.07
    momentum: float = 0.5
    # RepDistiller draws an example's negatives without replacement (a sort of B x N random keys
    # per step); with replacement (the default here) costs O(B K) and leaves the expected loss
    # unchanged.
    with_replacement: bool = True
    name = "crd"
    default_weights: ClassVar = {"crd": 0.8}

    def features(self, student_shapes, teacher_shapes):
        return (self.layer,), (self.layer,)

    def modules(self, student_shapes, teacher_shapes, dataset, rngs):
        labels = dataset.y_train
        if (labels == UNLABELLED).any():
            raise ValueError("crd: draws negatives from other classes, so every training image needs a label")
        if len(np.unique(labels)) < 2:
            raise ValueError("crd: draws negatives from other classes; the training set has only one class")
        return {
            "embed_s": Embed(_size(student_shapes[self.layer]), self.dim, normalise=True, rngs=rngs),
            "embed_t": Embed(_size(teacher_shapes[self.layer]), self.dim, normalise=True, rngs=rngs),
            "memory": ContrastMemory(labels, self.dim, rngs=rngs),
        }

    def loss(self, student, teacher, batch, modules, hparams):
        memory = modules["memory"]
        num_data = memory.memory_s.shape[0]
        s = modules["embed_s"](student[1][self.layer])
        t = modules["embed_t"](teacher[1][self.layer])
        indices = losses.crd_negatives(
            batch["key"],
            batch["label"],
            batch["index"],
            memory.class_order[...],
            memory.class_start[...],
            memory.class_count[...],
            self.num_negatives,
            replace=self.with_replacement,
        )
        scores_s, scores_t = losses.crd_scores(
            s, t, memory.memory_s[...], memory.memory_t[...], indices, nce_temperature=self.nce_temperature
        )
        z_s = losses.crd_partition(jax.lax.stop_gradient(scores_s), memory.z_s[...], num_data)
        z_t = losses.crd_partition(jax.lax.stop_gradient(scores_t), memory.z_t[...], num_data)
        crd = losses.crd_nce(scores_s / z_s, num_data=num_data) + losses.crd_nce(
            scores_t / z_t, num_data=num_data
        )
        # The memory moves after the scores are taken, with the embeddings outside the gradient.
        memory.z_s[...], memory.z_t[...] = z_s, z_t
        memory.memory_s[...] = losses.crd_update_memory(
            memory.memory_s[...], jax.lax.stop_gradient(s), batch["index"], momentum=self.momentum
        )
        memory.memory_t[...] = losses.crd_update_memory(
            memory.memory_t[...], jax.lax.stop_gradient(t), batch["index"], momentum=self.momentum
        )
        return {"crd": crd}

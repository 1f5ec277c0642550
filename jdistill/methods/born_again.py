"""Born-again networks' ablations (Furlanello et al. 2018): CWTM and DKPP.

The plain born-again objective needs no method of its own: it is ``kd`` at temperature 1 without
hard labels (``--method kd --weight ce=0 --weight kd=1 --temperature 1``), with a teacher of the
student's own architecture.
"""

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from jdistill import losses
from jdistill.data import UNLABELLED
from jdistill.methods.base import Method
from jdistill.methods.registry import register


@register
@dataclasses.dataclass(frozen=True)
class ConfidenceWeighted(Method):
    """CWTM: cross-entropy with the labels, each example weighted by the teacher's top probability
    (weights normalised over the batch); use with ``--weight ce=0``. Examples without a label
    (``UNLABELLED``) contribute nothing (the weights are still normalised over the whole batch)."""

    name = "cwtm"
    default_weights: ClassVar = {"cwtm": 1.0}

    def loss(self, student, teacher, batch, modules, hparams):
        labels = batch["label"]
        labelled = labels != UNLABELLED
        per_example = losses.ban_cwtm(student[0], teacher[0], jnp.where(labelled, labels, 0))
        return {"cwtm": jnp.where(labelled, per_example, 0.0)}


@register
@dataclasses.dataclass(frozen=True)
class PermutedDarkKnowledge(Method):
    """DKPP: soft targets at ``hparams["temperature"]`` (the paper's T = 1) from the teacher's
    distribution with its top class kept and the other probabilities shuffled, newly at every
    step; use with ``--weight ce=0``."""

    name = "dkpp"
    default_weights: ClassVar = {"dkpp": 1.0}

    def loss(self, student, teacher, batch, modules, hparams):
        return {
            "dkpp": losses.ban_dkpp(
                student[0], teacher[0], key=batch["key"], temperature=hparams["temperature"]
            )
        }

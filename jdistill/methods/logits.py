"""Methods on the logits: hard labels, soft targets (KD), decoupled KD (DKD), DIST."""

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from jdistill import losses
from jdistill.data import UNLABELLED
from jdistill.methods.base import Method
from jdistill.methods.registry import register


@register
@dataclasses.dataclass(frozen=True)
class HardLabels(Method):
    """Cross-entropy with the true labels, averaged over the labelled examples of the batch
    (label ``UNLABELLED`` = -1 marks an image of the transfer set without a label)."""

    name = "ce"
    default_weights: ClassVar = {"ce": 1.0}

    def loss(self, student, teacher, batch, modules, hparams):
        labels = batch["label"]
        labelled = labels != UNLABELLED
        ce = losses.cross_entropy(student[0], jnp.where(labelled, labels, 0))
        # Scaled so that the trainer's batch mean is the mean over labelled examples.
        return {"ce": jnp.where(labelled, ce, 0.0) * labels.shape[0] / jnp.maximum(labelled.sum(), 1)}


@register
@dataclasses.dataclass(frozen=True)
class SoftTargets(Method):
    """Hinton et al. 2015: ``T^2 KL(softmax(t/T) || softmax(s/T))`` at ``hparams["temperature"]``.
    The CIFAR benchmark weighs it 0.9 against 0.1 for the hard labels (see ``recipes``)."""

    name = "kd"
    default_weights: ClassVar = {"kd": 1.0}

    def loss(self, student, teacher, batch, modules, hparams):
        return {"kd": losses.kd(student[0], teacher[0], temperature=hparams["temperature"])}


@register
@dataclasses.dataclass(frozen=True)
class Decoupled(Method):
    """Zhao et al. 2022 (DKD): target-class KD (``dkd_tckd``, weight alpha = 1) and non-target-class
    KD (``dkd_nckd``, weight beta: 8; the recipe's per pair, ``jdistill.recipes.dkd_beta``: 8 for
    resnet32x4 -> resnet8x4, 2 for pairs of thin CIFAR ResNets, 6 for the wrn and vgg pairs) at
    ``hparams["temperature"]``, both scaled by a ramp that rises to 1 over ``warmup_epochs`` in
    ``ramp_increments`` equal steps,
    ``min((floor(e * n / warmup_epochs) + 1) / n, 1)`` with ``e`` the (fractional) epoch from 0 and
    ``n = ramp_increments``; None: one increment per epoch, ``n = warmup_epochs``, which is
    mdistiller's ``DKD.forward_train`` (``min(epoch / 20, 1)``, the epoch counted from 1: 1/20 in
    the first epoch, 1 from the 20th of 240 in the benchmark). A schedule shortened to E epochs
    keeps the benchmark's ramp with ``warmup_epochs = 20 E / 240`` and ``ramp_increments = 20``
    (``jdistill.recipes``); one increment per epoch would there jump from 0.6 to 1 within two."""

    warmup_epochs: float = 20.0
    ramp_increments: int | None = None
    name = "dkd"
    default_weights: ClassVar = {"dkd_tckd": 1.0, "dkd_nckd": 8.0}

    def __post_init__(self):
        n = self.ramp_increments
        if n is not None and (not isinstance(n, (int, float)) or isinstance(n, bool) or n < 1 or n % 1):
            raise ValueError(f"dkd: ramp_increments must be a whole number >= 1, got {self.ramp_increments}")

    def loss(self, student, teacher, batch, modules, hparams):
        labels = jnp.maximum(batch["label"], 0)
        tckd, nckd = losses.dkd_terms(student[0], teacher[0], labels, temperature=hparams["temperature"])
        ramp = self.ramp(batch["epoch"])
        return {"dkd_tckd": ramp * tckd, "dkd_nckd": ramp * nckd}

    def ramp(self, epoch):
        """The weight of both terms at the fractional ``epoch`` (0-based)."""
        if self.warmup_epochs <= 0:
            return 1.0
        increments = self.ramp_increments or self.warmup_epochs
        increment = jnp.floor(epoch / (self.warmup_epochs / increments)) + 1.0
        return jnp.minimum(increment / increments, 1.0)


@register
@dataclasses.dataclass(frozen=True)
class Dist(Method):
    """Huang et al. 2022 (DIST): inter-class (``dist_inter``) and intra-class (``dist_intra``)
    relations of the probabilities, each ``1 - Pearson correlation``, at ``hparams["temperature"]``.
    Weights 2 and 2: the authors' CIFAR recipe (``dist_cifar.yaml``: ``kd_loss_weight`` 2 times
    ``DIST(beta=1, gamma=1, tau=4)``)."""

    name = "dist"
    default_weights: ClassVar = {"dist_inter": 2.0, "dist_intra": 2.0}

    def loss(self, student, teacher, batch, modules, hparams):
        inter, intra = losses.dist_terms(student[0], teacher[0], temperature=hparams["temperature"])
        return {"dist_inter": inter, "dist_intra": intra}

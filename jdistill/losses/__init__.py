"""Distillation losses: pure functions of arrays, usable under jit, vmap, grad.

Logits (:mod:`jdistill.losses.logits`):
  - ``cross_entropy(logits, labels)`` -> [B]
  - ``kd(student_logits, teacher_logits, *, temperature)`` -> [B]
  - ``hinton(student_logits, teacher_logits, labels, *, temperature, alpha)``
    -> [B]

Features (:mod:`jdistill.losses.features`):
  - ``feature_mse(student_feat, teacher_feat)`` -> [B]
  - ``attention_map(feat, *, p=2)`` -> [B, H * W]
  - ``attention_transfer(student_feat, teacher_feat, *, p=2)`` -> [B]

Relational (:mod:`jdistill.losses.relational`):
  - ``rkd_distance(student_emb, teacher_emb)`` -> scalar
  - ``rkd_angle(student_emb, teacher_emb)`` -> scalar
  - ``rkd(student_emb, teacher_emb, *, distance_weight=25.0,
    angle_weight=50.0)`` -> scalar

Decoupled and relation-of-probabilities (:mod:`jdistill.losses.decoupled`):
  - ``dkd_terms(student_logits, teacher_logits, labels, *, temperature)`` -> ([B], [B])
  - ``dkd(..., *, temperature, alpha, beta)`` -> [B]
  - ``dist_terms(student_logits, teacher_logits, *, temperature)``, ``dist(...)`` -> scalars

Batch similarity (:mod:`jdistill.losses.similarity`):
  - ``sp(student_feat, teacher_feat)`` -> scalar
  - ``cc(student_emb, teacher_emb)`` -> scalar
  - ``pkt(student_emb, teacher_emb)`` -> scalar

Contrastive (:mod:`jdistill.losses.contrastive`): CRD's scores, NCE loss, memory update and
negative sampling (``crd_scores``, ``crd_partition``, ``crd_normalise``, ``crd_nce``,
``crd_update_memory``, ``crd_init_memory``, ``class_layout``, ``crd_negatives``, ``crd``).

Feature maps (:mod:`jdistill.losses.feature_transfer`): ``vid``, ``ab``, ``ab_layers``,
``factor``, ``factor_transfer``, ``paraphraser_reconstruction``, ``fsp_matrix``, ``fsp``,
``nst``, ``adaptive_avg_pool``, ``match_spatial``.

Adversarial (:mod:`jdistill.losses.adversarial`): data-free games ``dfad``, ``dfad_generator``,
``dafl_one_hot``, ``dafl_information_entropy``, ``dafl_activation``, ``dafl_generator``,
``zskt_belief``, ``zskt_generator``; discriminator objectives ``discriminator_loss``,
``fooling_loss`` (``objective="bce" | "least_squares" | "hinge"``), ``gradient_penalty``;
online ``mutual_learning`` -> [peers, B].

All losses compute in float32 whatever the input dtype and return float32.
They do not stop gradients: stop the teacher's yourself when it is frozen.
Shape errors raise ``ValueError`` at trace time, naming the argument.
"""

from jdistill.losses.adversarial import (
    dafl_activation,
    dafl_generator,
    dafl_information_entropy,
    dafl_one_hot,
    dfad,
    dfad_generator,
    discriminator_loss,
    fooling_loss,
    gradient_penalty,
    mutual_learning,
    zskt_belief,
    zskt_generator,
)
from jdistill.losses.contrastive import (
    class_layout,
    crd,
    crd_init_memory,
    crd_nce,
    crd_negatives,
    crd_normalise,
    crd_partition,
    crd_scores,
    crd_update_memory,
)
from jdistill.losses.decoupled import dist, dist_terms, dkd, dkd_terms
from jdistill.losses.feature_transfer import (
    ab,
    ab_layers,
    adaptive_avg_pool,
    factor,
    factor_transfer,
    fsp,
    fsp_matrix,
    match_spatial,
    nst,
    paraphraser_reconstruction,
    vid,
    vid_log_scale_init,
)
from jdistill.losses.features import attention_map, attention_transfer, feature_mse
from jdistill.losses.logits import cross_entropy, hinton, kd
from jdistill.losses.relational import rkd, rkd_angle, rkd_distance
from jdistill.losses.similarity import cc, pkt, sp

__all__ = [
    "ab",
    "ab_layers",
    "adaptive_avg_pool",
    "attention_map",
    "attention_transfer",
    "cc",
    "class_layout",
    "crd",
    "crd_init_memory",
    "crd_nce",
    "crd_negatives",
    "crd_normalise",
    "crd_partition",
    "crd_scores",
    "crd_update_memory",
    "cross_entropy",
    "dafl_activation",
    "dafl_generator",
    "dafl_information_entropy",
    "dafl_one_hot",
    "dfad",
    "dfad_generator",
    "discriminator_loss",
    "dist",
    "dist_terms",
    "dkd",
    "dkd_terms",
    "factor",
    "factor_transfer",
    "feature_mse",
    "fooling_loss",
    "fsp",
    "fsp_matrix",
    "gradient_penalty",
    "hinton",
    "kd",
    "match_spatial",
    "mutual_learning",
    "nst",
    "paraphraser_reconstruction",
    "pkt",
    "rkd",
    "rkd_angle",
    "rkd_distance",
    "sp",
    "vid",
    "vid_log_scale_init",
    "zskt_belief",
    "zskt_generator",
]

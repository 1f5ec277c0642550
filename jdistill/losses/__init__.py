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

Instance relationship graph (:mod:`jdistill.losses.graph`): ``irg_vertex`` -> [B];
``irg_edge``, ``irg_transformation``, ``irg`` -> scalars; ``irg_edge_matrix``, ``irg_match_sizes``.

Transformer attention (:mod:`jdistill.losses.attention`): ``attention_kl(student_attn,
teacher_attn, *, head_map=None)`` and MiniLM's ``value_relation(student_values, teacher_values,
*, head_map=None)`` -> [B]; ``map_heads``, ``value_relation_logits``.

Logic rules (:mod:`jdistill.losses.rules`): ``rule_teacher(student_logits, rule_satisfaction, *,
C, rule_weights)`` -> [B, K] probabilities, ``rule_distillation(...)`` -> [B], ``imitation_weight``.

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

Born-again networks (:mod:`jdistill.losses.born_again`): ``ban_cwtm(student_logits,
teacher_logits, labels)`` -> [B], ``ban_dkpp(..., *, key, temperature=1)`` -> [B],
``permute_dark_knowledge(teacher_logits, *, key)`` -> [B, C], ``ensemble_probabilities(logits)``
-> [B, C].

Generative latent mapping (:mod:`jdistill.losses.generative`): a VAE's ``gaussian_kl(mean,
log_variance)``, ``bernoulli_nll(logits, targets)``, ``negative_elbo(...)`` and the student's
``latent_regression(predicted_latent, teacher_latent)``, ``decoder_distillation(student_logits,
teacher_logits)`` -> [B].

Representation mapping (:mod:`jdistill.losses.representation`): ``embedding_l2``, ``embedding_cosine``
-> [B]; SRRL's ``teacher_head_regression(projected_student, teacher_logits, head_kernel, head_bias)``
-> [B]. Temperature (:mod:`jdistill.losses.temperature`): ``softened_probabilities(logits, *,
temperature)``, ``entropy(probs, *, normalise=False)``.

Language-model tokens (:mod:`jdistill.losses.tokens`): on [B, T, V] logits with a [B, T] mask,
``forward_kl``, ``reverse_kl``, ``jsd`` (``beta``, TRL's convention), ``skew_forward_kl``,
``skew_reverse_kl`` (``alpha``), ``tvd`` (``*, mask=None, temperature=1.0,
reduction="token_mean" | "sequence_mean" | "sum" | "none"``, no ``T^2``) -> scalar or [B, T];
``token_sums``, ``sequence_sums`` -> (sum, count); a top-k teacher ``top_k_teacher(teacher_logits,
k)`` -> ([B, T, k], [B, T, k]) and ``sparse_forward_kl``, ``sparse_reverse_kl``, ``sparse_jsd``,
``sparse_skew_forward_kl``, ``sparse_skew_reverse_kl``, ``sparse_tvd`` (``mode="tail" |
"renormalised"``); ``chunked(divergence, student_hidden, student_head, teacher_hidden, teacher_head,
*, chunk_size, ...)``, the same from hidden states without [B, T, V] logits.

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
from jdistill.losses.attention import attention_kl, map_heads, value_relation, value_relation_logits
from jdistill.losses.born_again import ban_cwtm, ban_dkpp, ensemble_probabilities, permute_dark_knowledge
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
from jdistill.losses.generative import (
    bernoulli_nll,
    decoder_distillation,
    gaussian_kl,
    latent_regression,
    negative_elbo,
)
from jdistill.losses.graph import (
    irg,
    irg_edge,
    irg_edge_matrix,
    irg_match_sizes,
    irg_transformation,
    irg_vertex,
)
from jdistill.losses.logits import cross_entropy, hinton, kd
from jdistill.losses.relational import rkd, rkd_angle, rkd_distance
from jdistill.losses.representation import embedding_cosine, embedding_l2, teacher_head_regression
from jdistill.losses.rules import imitation_weight, rule_distillation, rule_teacher
from jdistill.losses.similarity import cc, pkt, sp
from jdistill.losses.temperature import entropy, softened_probabilities
from jdistill.losses.tokens import (
    chunked,
    forward_kl,
    jsd,
    reverse_kl,
    sequence_sums,
    skew_forward_kl,
    skew_reverse_kl,
    sparse_forward_kl,
    sparse_jsd,
    sparse_reverse_kl,
    sparse_skew_forward_kl,
    sparse_skew_reverse_kl,
    sparse_tvd,
    token_sums,
    top_k_teacher,
    tvd,
)

__all__ = [
    "ab",
    "ab_layers",
    "adaptive_avg_pool",
    "attention_kl",
    "attention_map",
    "attention_transfer",
    "ban_cwtm",
    "ban_dkpp",
    "bernoulli_nll",
    "cc",
    "chunked",
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
    "decoder_distillation",
    "dfad",
    "dfad_generator",
    "discriminator_loss",
    "dist",
    "dist_terms",
    "dkd",
    "dkd_terms",
    "embedding_cosine",
    "embedding_l2",
    "ensemble_probabilities",
    "entropy",
    "factor",
    "factor_transfer",
    "feature_mse",
    "fooling_loss",
    "forward_kl",
    "fsp",
    "fsp_matrix",
    "gaussian_kl",
    "gradient_penalty",
    "hinton",
    "imitation_weight",
    "irg",
    "irg_edge",
    "irg_edge_matrix",
    "irg_match_sizes",
    "irg_transformation",
    "irg_vertex",
    "jsd",
    "kd",
    "latent_regression",
    "map_heads",
    "match_spatial",
    "mutual_learning",
    "negative_elbo",
    "nst",
    "paraphraser_reconstruction",
    "permute_dark_knowledge",
    "pkt",
    "reverse_kl",
    "rkd",
    "rkd_angle",
    "rkd_distance",
    "rule_distillation",
    "rule_teacher",
    "sequence_sums",
    "skew_forward_kl",
    "skew_reverse_kl",
    "softened_probabilities",
    "sp",
    "sparse_forward_kl",
    "sparse_jsd",
    "sparse_reverse_kl",
    "sparse_skew_forward_kl",
    "sparse_skew_reverse_kl",
    "sparse_tvd",
    "teacher_head_regression",
    "token_sums",
    "top_k_teacher",
    "tvd",
    "value_relation",
    "value_relation_logits",
    "vid",
    "vid_log_scale_init",
    "zskt_belief",
    "zskt_generator",
]

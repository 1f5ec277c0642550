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

All losses compute in float32 whatever the input dtype and return float32.
They do not stop gradients: stop the teacher's yourself when it is frozen.
Shape errors raise ``ValueError`` at trace time, naming the argument.
"""

from jdistill.losses.features import attention_map, attention_transfer, feature_mse
from jdistill.losses.logits import cross_entropy, hinton, kd
from jdistill.losses.relational import rkd, rkd_angle, rkd_distance

__all__ = [
    "attention_map",
    "attention_transfer",
    "cross_entropy",
    "feature_mse",
    "hinton",
    "kd",
    "rkd",
    "rkd_angle",
    "rkd_distance",
]

"""Connectors: trainable regressors that map a student feature to a teacher feature's shape.

FitNets (Romero et al. 2015) call them regressors. A [B, D] feature gets a linear map; an
NHWC map gets a 1x1 convolution over channels (the spatial size must already agree). Their
parameters train with the student.
"""

from collections.abc import Sequence

import jax
from flax import nnx


class Connector(nnx.Module):
    """``student_shape -> teacher_shape`` (shapes without the batch axis)."""

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int], *, rngs: nnx.Rngs):
        student_shape, teacher_shape = tuple(student_shape), tuple(teacher_shape)
        if len(student_shape) != len(teacher_shape) or len(student_shape) not in (1, 3):
            raise ValueError(
                f"Connector: student and teacher features must both be vectors [D] or both maps "
                f"[H, W, C]; got student {list(student_shape)} and teacher {list(teacher_shape)}"
            )
        if len(student_shape) == 3 and student_shape[:2] != teacher_shape[:2]:
            raise ValueError(
                f"Connector: a 1x1 convolution cannot change the spatial size; student feature is "
                f"{list(student_shape)}, teacher feature is {list(teacher_shape)} (H, W must match)"
            )
        if len(student_shape) == 1:
            self.map = nnx.Linear(student_shape[0], teacher_shape[0], rngs=rngs)
        else:
            self.map = nnx.Conv(student_shape[-1], teacher_shape[-1], (1, 1), rngs=rngs)

    def __call__(self, feature: jax.Array) -> jax.Array:
        return self.map(feature)

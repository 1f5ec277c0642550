"""Jitted, data-parallel training: teacher training and distillation share one loop.

- :func:`fit` runs a whole configuration (:class:`RunConfig`) into a run directory.
- :func:`make_train_step` / :func:`make_eval_step` are the pure jitted steps, for your own loop.
- :data:`METHODS` holds the distillation methods (named loss terms).
"""

from jdistill.methods import METHODS, parse_methods, resolve_weights
from jdistill.train.config import RunConfig
from jdistill.train.loop import Setup, Teacher, fit, load_teacher, prepare
from jdistill.train.parallel import make_mesh
from jdistill.train.rundir import RunDir
from jdistill.train.state import Trainable, TrainState, create_state, split_module
from jdistill.train.steps import make_eval_step, make_train_step, teacher_forward

__all__ = [
    "METHODS",
    "RunConfig",
    "RunDir",
    "Setup",
    "Teacher",
    "TrainState",
    "Trainable",
    "create_state",
    "fit",
    "load_teacher",
    "make_eval_step",
    "make_mesh",
    "make_train_step",
    "parse_methods",
    "prepare",
    "resolve_weights",
    "split_module",
    "teacher_forward",
]

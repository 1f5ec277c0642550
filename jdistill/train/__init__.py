"""One training engine: every training form is a :class:`Game` of :class:`Player` s and
:class:`Move` s, played by :func:`fit` on a data-parallel mesh.

- :func:`fit` plays a game (or a configuration such as :class:`RunConfig`, which builds its game)
  into a run directory: sharding, PRNG, evaluation, checkpoints, resumption, metrics, summary.
- :mod:`jdistill.train.distill`: teacher training and distillation with the method registry
  (:class:`RunConfig`); the adversarial and generative forms live in :mod:`jdistill.adversarial`
  and :mod:`jdistill.generative`.
- :class:`Optimizer`: one optimizer configuration for every player, on optax.
"""

from jdistill.methods import METHODS, parse_methods, resolve_weights
from jdistill.train import teacher_cache
from jdistill.train.config import RunConfig
from jdistill.train.distill import Teacher, build, load_teacher, teacher_forward
from jdistill.train.evaluate import ClassifierEvaluator
from jdistill.train.fit import fit, fit_cohort
from jdistill.train.game import Game, Hooks, Move, Phase, View
from jdistill.train.optim import Optimizer
from jdistill.train.parallel import make_mesh
from jdistill.train.player import Frozen, Player, Stacked, Trainable, split_module
from jdistill.train.rundir import RunDir
from jdistill.train.sources import DataSource, NoiseSource

__all__ = [
    "METHODS",
    "ClassifierEvaluator",
    "DataSource",
    "Frozen",
    "Game",
    "Hooks",
    "Move",
    "NoiseSource",
    "Optimizer",
    "Phase",
    "Player",
    "RunConfig",
    "RunDir",
    "Stacked",
    "Teacher",
    "Trainable",
    "View",
    "build",
    "fit",
    "fit_cohort",
    "load_teacher",
    "make_mesh",
    "parse_methods",
    "resolve_weights",
    "split_module",
    "teacher_cache",
    "teacher_forward",
]

"""What a training form is: players, the moves of one round, phases, the frozen teachers, the batch
source, the evaluation. :func:`jdistill.train.fit` plays any :class:`Game`.

A round (one "step" of the run) plays the current phase's moves in order. A :class:`Move` updates
one player on a pure loss of a :class:`View`: the players' current values (the moving player's
parameters are the ones differentiated), the frozen teachers, the round's batch and keys, and the
game's traced hyperparameters. ``repeats`` plays the move several times in a row, on the round's
batch or (``fresh_batch``) on a new batch each time.

Randomness: every number drawn in round ``r`` of a run seeded ``s`` comes from
``fold_in(key(s), r)`` folded with a stream: :data:`MODEL` (dropout, a VAE's sampling) or
:data:`LOSS` (a loss's own sampling); the batches' numbers come from the data seed ``d`` (the
game's ``data_seed``, by default ``s``): ``fold_in(fold_in(key(d), r), BATCH)`` (augmentation,
generator noise; a fresh batch of move ``m``, repeat ``j`` folds in ``m + 1`` and ``j`` as well),
and the data order of epoch ``e`` is a permutation drawn from ``fold_in(key(d), e)``. A resumed
run draws the same numbers as an uninterrupted one. After its ``k``-th restart
(:attr:`Hooks.restart`) a run's round keys, both ``fold_in(key(s), r)`` and ``fold_in(key(d), r)``,
are folded with :data:`RESTART` and then ``k``: new noise and new augmentations, the same data order.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jdistill.train.optim import Optimizer
from jdistill.train.player import Frozen, Player, Stacked, rest_of

MODEL, BATCH, LOSS, RESTART = 0, 1, 2, 3


def round_key(seed, round_index, restart: int = 0) -> jax.Array:
    key = jax.random.fold_in(jax.random.key(seed), round_index)
    return jax.random.fold_in(jax.random.fold_in(key, RESTART), restart) if restart else key


@dataclasses.dataclass(frozen=True)
class Move:
    """``player`` takes ``repeats`` optimizer steps on ``loss(view) -> (objective, metrics)``;
    its metrics are logged as ``prefix + name`` (means over the repeats), with its learning
    rate as ``prefix + "learning_rate"``."""

    player: str
    loss: Callable[["View"], tuple[jax.Array, dict]]
    repeats: int = 1
    fresh_batch: bool = False
    prefix: str = ""


@dataclasses.dataclass(frozen=True)
class Phase:
    """``epochs`` of rounds of ``moves``. ``optimizers`` are installed fresh when the phase starts
    (after an earlier phase: the first phase's are the players' own), e.g. the initialisation
    stage of AB/FT/FSP trains part of the student, then training starts with a new optimizer."""

    name: str
    epochs: int
    moves: tuple[Move, ...]
    optimizers: Mapping[str, Optimizer] = dataclasses.field(default_factory=dict)

    def start(self, players: Mapping[str, Player]) -> dict[str, Player]:
        """``players`` with this phase's optimizers installed, fresh."""
        return {**players, **{n: players[n].with_optimizer(o) for n, o in self.optimizers.items()}}


@dataclasses.dataclass(frozen=True)
class Hooks:
    """What a form adds to the loop, each given the :class:`~jdistill.train.RunDir`:
    ``round(players, rounds_done, run)`` every ``every`` rounds, ``epoch(players, epoch, run) ->
    extra metrics`` after each epoch (1-based), ``end(players, run)`` when training ends.

    ``restart(record) -> reason or None``, asked after each epoch's metrics record (before its
    checkpoint) while fewer than ``restarts`` restarts were made: a reason sends the run back to its
    last checkpoint (or its start), to play on with new randomness (:func:`round_key`), e.g. a
    data-free generator that collapsed into one class (the DAFL authors' remedy). The metrics after
    that checkpoint are dropped, the restart is logged in the run directory's ``restarts.jsonl``
    and its count is saved in the checkpoints, so that a resumed run stays exact."""

    every: int = 0
    round: Callable | None = None
    epoch: Callable | None = None
    end: Callable | None = None
    restart: Callable[[dict], str | None] | None = None
    restarts: int = 0


@dataclasses.dataclass(frozen=True)
class Game:
    """A training form, at step 0.

    ``config``: the dataclass saved as ``config.json``; ``players``: ``{name: Player}`` with the
    first phase's optimizers; ``source``: the batches (:mod:`jdistill.train.sources`);
    ``teachers``: frozen models; ``frozen_outputs(teachers, images)``: what the teachers say of a
    batch, computed once for the whole training set when the batches are not augmented (else in
    every round), given to the moves as ``batch["frozen"]``, or read from ``frozen_cache`` (one row
    per training example, from a teacher cache on disk); ``hparams``: traced values (loss
    weights, temperature) passed to every round; ``evaluate(players, teachers, mesh) -> metrics``
    (players and teachers on the mesh), logged under ``eval_prefix`` (``test/``; ``val/`` when
    the evaluation set is held-out training data); ``data_seed``: the seed of the batches (default:
    ``seed``); ``traced_fields``: the fields of ``config`` that reach the rounds only through
    ``hparams``, so that runs differing in them can train together (:mod:`jdistill.train.cohort`);
    ``summary``: fixed fields of ``summary.json``, which also takes the last line's metrics that
    start with ``summary_prefixes`` and, if ``best`` names a metric, its best value and epoch.
    """

    config: Any
    players: Mapping[str, Player]
    phases: tuple[Phase, ...]
    source: Any
    seed: int
    evaluate: Callable | None = None
    teachers: Mapping[str, Frozen] = dataclasses.field(default_factory=dict)
    frozen_outputs: Callable | None = None
    frozen_cache: Any = None
    compute_dtype: Any = None  # e.g. jnp.bfloat16: the moves' forward and backward passes (View.module)
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    hooks: Hooks = Hooks()
    eval_every: int = 1
    checkpoint_every: int = 1
    label: str = ""
    unit: str = "img"
    summary: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    summary_prefixes: tuple[str, ...] = ("test/",)
    best: str | None = "test/accuracy"
    eval_prefix: str = "test/"  # of evaluate()'s metrics; "val/" for held-out training data
    data_seed: int | None = None  # of the data order and the batches' randomness; None: ``seed``
    traced_fields: tuple[str, ...] = ()  # configuration fields that reach the rounds only through hparams

    def __post_init__(self):
        for phase in self.phases:
            for move in phase.moves:
                if move.player not in self.players:
                    raise ValueError(f"phase {phase.name!r} moves an unknown player {move.player!r}")
                if move.fresh_batch and not hasattr(self.source, "fresh"):
                    raise ValueError(
                        f"a move of {move.player!r} wants fresh batches, which the data set cannot give"
                    )

    @property
    def data_seed_or_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    @property
    def epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def phase_at(self, epoch: int) -> tuple[int, Phase]:
        """The index and phase of the 0-based ``epoch``."""
        for index, phase in enumerate(self.phases):
            if epoch < phase.epochs:
                return index, phase
            epoch -= phase.epochs
        raise ValueError(f"epoch {epoch} is past the game's end")

    def first_epoch(self, phase_index: int) -> int:
        return sum(p.epochs for p in self.phases[:phase_index])

    def players_in_phase(self, phase_index: int) -> dict[str, Player]:
        """The players as they are structured during ``phase_index`` (its optimizers installed)."""
        players = dict(self.players)
        for phase in self.phases[1 : phase_index + 1]:
            players = phase.start(players)
        return players


class View:
    """What a move's loss sees. ``module(name)`` is a player as an ``nnx`` module (a
    :class:`Stacked` for stacked players), the moving player with the parameters being
    differentiated; ``teacher(name)`` a frozen model; ``batch``, ``hparams``; ``key(stream)``;
    ``round`` (traced index), ``repeat``, ``epoch`` (fractional epochs into the phase).

    With a ``compute_dtype`` (mixed precision), ``module`` gives the players' layers computing in it
    (:func:`computing_in`): their forward and backward passes run in it, while the gradients reach
    the float32 parameters through the layers' casts."""

    def __init__(self, players, mover, params, teachers, batch, hparams, rkey, round_index, repeat, epoch,
                 compute_dtype=None):  # fmt: skip
        self.players, self.mover, self.params, self.teachers = players, mover, params, teachers
        self.batch, self.hparams, self.rkey = batch, hparams, rkey
        self.round, self.repeat, self.epoch = round_index, repeat, epoch
        self.compute_dtype = compute_dtype
        self._modules = {}

    def module(self, name: str):
        if name not in self._modules:
            player = self.players[name]
            params = self.params if name == self.mover else player.params
            if player.stacked:
                if self.compute_dtype is not None:
                    raise ValueError("stacked players compute in float32 only")
                self._modules[name] = Stacked(player.graphdef, params, player.rest)
            else:
                self._modules[name] = computing_in(
                    nnx.merge(player.graphdef, params, player.rest), self.compute_dtype
                )
        return self._modules[name]

    def teacher(self, name: str = "teacher") -> nnx.Module:
        return self.teachers[name].module()

    def key(self, stream: int) -> jax.Array:
        return jax.random.fold_in(self.rkey, stream)

    def new_rest(self):
        """The moving player's non-parameter variables after the loss's forward passes."""
        module = self._modules.get(self.mover)
        if module is None:
            return self.players[self.mover].rest
        return module.rest if isinstance(module, Stacked) else rest_of(module)


def computing_in(module: nnx.Module, dtype) -> nnx.Module:
    """``module`` with every Flax layer in it (those with ``dtype`` and ``param_dtype``: Linear,
    Conv, BatchNorm, LayerNorm, ...) computing in ``dtype`` (``None``: unchanged). Each layer casts
    its float32 parameters and its input to ``dtype``; BatchNorm reduces in float32 and keeps its
    float32 statistics."""
    if dtype is not None:
        for _, layer in nnx.iter_modules(module):
            if hasattr(layer, "dtype") and hasattr(layer, "param_dtype"):
                layer.dtype = dtype
    return module


def epoch_fraction(round_index, phase_first_round: int, rounds_per_epoch: int) -> jax.Array:
    """Epochs into the phase at ``round_index`` (fractional, traced)."""
    return round_index.astype(jnp.float32) / rounds_per_epoch - phase_first_round / rounds_per_epoch

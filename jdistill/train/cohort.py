"""Several runs of one game trained in one compiled step.

Runs that differ only in their seeds, or in configuration fields the rounds read as traced
hyperparameters (a :class:`~jdistill.train.game.Game`'s ``traced_fields``: the temperature and the
loss weights of distillation), have players of identical structure. A :class:`Cohort` stacks
their players on a leading axis and :func:`~jdistill.train.rounds.make_rounds` ``vmap`` s the round
over it: one dispatch, one compiled program, larger batched operations. What no member's own
values reach is computed once: the frozen teacher's outputs on a batch that every member shares
(members with one data seed see the same batches), or on the whole training set when the batches
are not augmented. Each member keeps its own run directory, with the metrics, checkpoints and
summary a single run with its configuration writes (equal up to float rounding: batched
operations may round differently). :func:`jdistill.train.fit_cohort` trains one.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jdistill.train.game import Game
from jdistill.train.rundir import identity


@dataclasses.dataclass(frozen=True)
class Axes:
    """The ``vmap`` axes of a cohort's data order and seeds: 0 where the members' values differ,
    ``None`` where they share one."""

    order: int | None
    seeds: dict


@dataclasses.dataclass(frozen=True)
class Cohort:
    """``games`` (one per member, each built from its own configuration) played together; the
    first is the lead, whose teachers, data, phases and evaluation every member shares. One game
    is a plain run, not vmapped."""

    games: tuple[Game, ...]

    def __post_init__(self):
        if not self.games:
            raise ValueError("a cohort needs at least one run")
        lead = self.lead
        allowed = {"seed", "data_seed", *lead.traced_fields}
        for game in self.games[1:]:
            ours, theirs = identity(lead.config), identity(game.config)
            differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
            if type(game.config) is not type(lead.config) or set(differ) - allowed:
                what = ", ".join(sorted(set(differ) - allowed)) or type(game.config).__name__
                raise ValueError(
                    f"runs trained together may differ only in {', '.join(sorted(allowed))}; these differ "
                    f"in {what}: train them separately"
                )
            if (game.eval_every, game.checkpoint_every) != (lead.eval_every, lead.checkpoint_every):
                raise ValueError("runs trained together evaluate and checkpoint at the same epochs")
            if _shapes(game.players) != _shapes(lead.players) or _shapes(game.hparams) != _shapes(
                lead.hparams
            ):
                raise ValueError("runs trained together need players and hyperparameters of one structure")

        if getattr(lead.source, "streamed", False) and self.axes is not None and self.axes.order is not None:
            raise ValueError(
                "runs on a streamed data set train together only on one stream: give them one --data-seed"
            )

    @property
    def lead(self) -> Game:
        return self.games[0]

    @property
    def vmapped(self) -> bool:
        return len(self.games) > 1

    @property
    def axes(self) -> Axes | None:
        """``make_rounds``' ``members``: ``None`` for a plain run."""
        if not self.vmapped:
            return None
        differ = lambda values: 0 if len(set(values)) > 1 else None
        data = differ(g.data_seed_or_seed for g in self.games)
        return Axes(order=data, seeds={"seed": differ(g.seed for g in self.games), "data_seed": data})

    def seeds(self) -> dict | None:
        """The rounds' ``seeds`` argument: each member's seed and data seed (one value where they
        share it); ``None`` for a plain run (its seeds are compiled in)."""
        if not self.vmapped:
            return None
        axes = self.axes.seeds
        values = {
            "seed": [g.seed for g in self.games],
            "data_seed": [g.data_seed_or_seed for g in self.games],
        }
        return {k: jnp.asarray(v if axes[k] == 0 else v[0], jnp.int32) for k, v in values.items()}

    def order(self, epoch: int):
        """The data order of ``epoch``: each member's (stacked) where their data seeds differ."""
        source = self.lead.source
        if not self.vmapped or self.axes.order is None:
            return source.order(self.lead.data_seed_or_seed, epoch)
        return jnp.stack([source.order(g.data_seed_or_seed, epoch) for g in self.games])

    def hparams(self) -> dict:
        """The hyperparameters, stacked over the members."""
        if not self.vmapped:
            return dict(self.lead.hparams)
        return jax.tree.map(lambda *v: jnp.stack(v), *(dict(g.hparams) for g in self.games))

    def stack(self, members: list) -> dict:
        """Each member's players (the same structure) as one dictionary of stacked players, with the
        lead's static fields (graph definitions, optimizers)."""
        if not self.vmapped:
            return members[0]
        structure = jax.tree.structure(members[0])
        leaves = zip(*(jax.tree.leaves(m) for m in members))
        return jax.tree.unflatten(structure, [jnp.stack(xs) for xs in leaves])

    def member(self, players: dict, index: int) -> dict:
        """Member ``index``'s players out of the stacked ones."""
        return jax.tree.map(lambda a: a[index], players) if self.vmapped else players

    def start_phase(self, phase_index: int, players: dict) -> dict:
        """The players with phase ``phase_index``'s fresh optimizers installed, member by member."""
        phase = self.lead.phases[phase_index]
        return self.stack([phase.start(self.member(players, i)) for i in range(len(self.games))])


def _shapes(tree) -> list:
    return [
        (jax.tree_util.keystr(path), np.shape(leaf))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    ]

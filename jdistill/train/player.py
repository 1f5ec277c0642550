"""A player: one learner of a game, as a pytree of arrays with its graph definition and optimizer
as static fields, so that whole dictionaries of players go through ``jit``, ``scan`` and orbax.

A stacked player holds K modules of one architecture (peers), each leaf stacked on a leading
axis: ``vmap`` runs them together, and the optimizer state is K independent states (the update
is vmapped too, so even global-norm clipping stays per peer).
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jdistill.train import optim


class Trainable(nnx.Module):
    """A classifier player's module: the ``model`` and the methods' extra modules (connectors,
    embeddings), keyed by method name, updated together by one optimizer."""

    def __init__(self, model: nnx.Module, extras: Mapping[str, Mapping[str, nnx.Module]] = {}):
        self.model = model
        self.extras = nnx.Dict({name: nnx.Dict(dict(mods)) for name, mods in extras.items()})


def split_module(module: nnx.Module):
    """``module -> (graphdef, params, rest)`` with params and rest as pure dicts."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def rest_of(module: nnx.Module):
    """The non-parameter variables of ``module`` (batch statistics, memory banks) as a pure dict."""
    return nnx.to_pure_dict(nnx.split(module, nnx.Param, ...)[2])


# Fields a player gained after its checkpoints were first written, with the date each came: an
# unused one is None, and a checkpoint written before it restores without it (checkpoint.restore).
# A new field goes here, or changes what every unfinished run's checkpoint must hold.
LATER_FIELDS = ("average",)  # 2026-11-30 (the parameter average, ``ema_decay``)


@flax.struct.dataclass
class Player:
    """``params`` (trained), ``rest`` (other variables), ``opt_state`` and ``step`` (updates since
    the optimizer was made; the schedule's step); static: ``graphdef``, ``optimizer`` and
    ``stacked`` (K > 0 for K stacked peers, 0 for one module). ``average``: the debiased moving
    average of ``params`` when the optimizer has an ``ema_decay`` (:func:`optim.averaged`; it
    starts again with the optimizer), else None."""

    params: Any
    rest: Any
    opt_state: optax.OptState
    step: jax.Array
    graphdef: nnx.GraphDef = flax.struct.field(pytree_node=False)
    optimizer: optim.Optimizer = flax.struct.field(pytree_node=False)
    stacked: int = flax.struct.field(pytree_node=False, default=0)
    average: Any = None

    @classmethod
    def create(cls, module: nnx.Module, optimizer: optim.Optimizer) -> "Player":
        graphdef, params, rest = split_module(module)
        return cls(params, rest, None, None, graphdef, optimizer).with_optimizer(optimizer)

    @classmethod
    def stack(cls, modules: Sequence[nnx.Module], optimizer: optim.Optimizer) -> "Player":
        """K modules of one architecture as one stacked player."""
        graphdefs, params, rests = zip(*(split_module(m) for m in modules))
        stack = lambda *xs: jnp.stack(xs)
        player = cls(
            jax.tree.map(stack, *params),
            jax.tree.map(stack, *rests),
            None,
            None,
            graphdefs[0],
            optimizer,
            stacked=len(modules),
        )
        return player.with_optimizer(optimizer)

    def with_optimizer(self, optimizer: optim.Optimizer) -> "Player":
        """This player with a fresh state of ``optimizer`` (step 0; the average, if any, at the
        parameters)."""
        init = optimizer.transformation().init
        opt_state = jax.vmap(init)(self.params) if self.stacked else init(self.params)
        average = None if optimizer.ema_decay is None else jax.tree.map(jnp.copy, self.params)
        return self.replace(
            optimizer=optimizer, opt_state=opt_state, step=jnp.zeros((), jnp.int32), average=average
        )

    def module(self, params=None) -> nnx.Module:
        """The module, with ``params`` in place of the player's own if given (one module only)."""
        if self.stacked:
            raise ValueError("a stacked player has no single module; use Stacked")
        return nnx.merge(self.graphdef, self.params if params is None else params, self.rest)

    def update(self, grads, rest) -> tuple["Player", jax.Array]:
        """One optimizer step on ``grads``, with the non-parameter variables ``rest`` after the
        forward pass; returns the player and the (mean) learning rate of the step."""
        tx = self.optimizer.transformation()
        learning_rate = jnp.mean(self.optimizer.learning_rate_at(self.opt_state, self.step))
        if self.stacked:
            updates, opt_state = jax.vmap(tx.update)(grads, self.opt_state, self.params)
        else:
            updates, opt_state = tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        if self.optimizer.max_norm is not None:
            params = optim.max_norm(params, self.optimizer.max_norm)
        average = self.average
        if self.optimizer.ema_decay is not None:
            average = optim.averaged(average, params, self.optimizer.ema_decay, self.step + 1)
        player = self.replace(
            params=params, rest=rest, opt_state=opt_state, step=self.step + 1, average=average
        )
        return player, learning_rate


class Stacked:
    """Stacked modules inside a loss: ``stacked(fn, *args, in_axes=...)`` runs ``fn(module, *args)``
    for every module under ``vmap`` and keeps the variables it changed (:attr:`rest`)."""

    def __init__(self, graphdef: nnx.GraphDef, params, rest):
        self.graphdef, self.params, self.rest = graphdef, params, rest

    def __call__(self, fn: Callable, *args, in_axes=None):
        def one(params, rest, *a):
            module = nnx.merge(self.graphdef, params, rest)
            return fn(module, *a), rest_of(module)

        axes = (0, 0, *(in_axes if in_axes is not None else (None,) * len(args)))
        out, self.rest = jax.vmap(one, in_axes=axes)(self.params, self.rest, *args)
        return out


@flax.struct.dataclass
class Frozen:
    """A model held fixed (a teacher): ``params`` and ``rest`` as pure dicts, ``graphdef`` static."""

    graphdef: nnx.GraphDef = flax.struct.field(pytree_node=False)
    params: Any = None
    rest: Any = None

    @property
    def variables(self) -> tuple:
        return self.params, self.rest

    def module(self, params=None) -> nnx.Module:
        """The model, with ``params`` in place of its own if given (e.g. traced under jit)."""
        return nnx.merge(self.graphdef, self.params if params is None else params, self.rest)

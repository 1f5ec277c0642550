"""Training state as a pytree of plain arrays, and the module that holds a student's extras."""

from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx


class Trainable(nnx.Module):
    """What a run trains: the model and the methods' extra modules (connectors, embeddings),
    keyed by method name. Its parameters are updated together by one optimizer."""

    def __init__(self, model: nnx.Module, extras: Mapping[str, Mapping[str, nnx.Module]]):
        self.model = model
        self.extras = nnx.Dict({name: nnx.Dict(dict(mods)) for name, mods in extras.items()})


@flax.struct.dataclass
class TrainState:
    """``params``: trainable leaves; ``rest``: other model variables (e.g. batch statistics),
    both as pure dicts of arrays; ``seed``: the run's seed, from which every step derives its
    PRNG keys by ``fold_in(key(seed), step)`` so that a resumed run draws the same numbers."""

    step: jax.Array
    params: Any
    rest: Any
    opt_state: optax.OptState
    seed: jax.Array


def split_module(module: nnx.Module):
    """``module -> (graphdef, params, rest)`` with params and rest as pure dicts."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def create_state(module: nnx.Module, tx: optax.GradientTransformation, seed: int):
    """``(graphdef, TrainState)`` for ``module`` at step 0."""
    graphdef, params, rest = split_module(module)
    return graphdef, TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt_state=tx.init(params),
        seed=jnp.asarray(seed, jnp.int32),
    )

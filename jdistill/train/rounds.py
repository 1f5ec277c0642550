"""The jitted rounds of a game: ``k`` consecutive rounds of a phase in one call, a ``lax.scan``
(batch gather, augmentation and the frozen teachers' outputs inside), each round playing the
phase's moves in order. The players are donated; the teachers and the data never are.

One round per call is compiled without a loop. That matters on the CPU: XLA's CPU compiler
leaves the convolutions of a loop body in layouts its fast convolution library cannot take, so
inside a loop a conv layer's gradient step ran 28-59x slower here
(``benchmarks/loop_convolutions.py``), and the generic emitter's results differ from the unlooped
ones by float rounding. On the CPU there is no dispatch overhead to save: keep
``steps_per_call=1`` there; it is for accelerators.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jdistill.train.game import BATCH, Game, Move, View, epoch_fraction, round_key
from jdistill.train.parallel import DATA_AXIS


def play(players: dict, move: Move, view_args: tuple, compute_dtype=None) -> tuple[dict, dict]:
    """One optimizer step of ``move.player`` on ``move.loss`` (its passes in ``compute_dtype`` if
    given); returns the players and the step's metrics (with the learning rate)."""
    player = players[move.player]

    def objective(params):
        view = View(players, move.player, params, *view_args, compute_dtype=compute_dtype)
        total, metrics = move.loss(view)
        return total, (metrics, view.new_rest())

    (_, (metrics, rest)), grads = jax.value_and_grad(objective, has_aux=True)(player.params)
    player, learning_rate = player.update(grads, rest)
    return {**players, move.player: player}, {**metrics, "learning_rate": learning_rate}


def _mean(results: list[dict]) -> dict:
    if len(results) == 1:
        return results[0]
    return {k: sum(r[k] for r in results) / len(results) for k in results[0]}


def make_rounds(
    game: Game,
    phase_index: int,
    count: int,
    mesh,
    *,
    cached: bool,
    owners: dict,
    members=None,
    restart: int = 0,
):
    """``rounds(players, teachers, data, order, epoch_first_round, first_round, hparams, seeds=None)
    -> (players, metrics {name: [count]})``, jitted, for ``count`` rounds of phase ``phase_index``;
    ``data``: the source's arrays, or for a streamed source the call's raw batches ``[count, batch,
    ...]``.
    ``cached``: the frozen outputs are in ``data["frozen"]`` (one row per training example).
    ``owners`` is filled with ``{metric name: player}`` while tracing. ``seeds``: ``{"seed",
    "data_seed"}`` as arrays (default: the game's). ``restart``: the run's restarts so far, folded
    into its round keys (:func:`~jdistill.train.game.round_key`); static, so each restart compiles
    the rounds once more (at most ``Hooks.restarts`` times in a run).

    ``members`` (a :class:`~jdistill.train.cohort.Cohort`'s ``axes``): the rounds of several runs
    at once, ``vmap`` over the players, the hyperparameters and the seeds (the data order with the
    data seed); what does not depend on a batched value, such as the teacher's outputs on a batch
    every member shares, is computed once. Metrics are then ``[count, members]``."""
    phase, source = game.phases[phase_index], game.source
    per_epoch = source.steps_per_epoch
    phase_first_round = game.first_epoch(phase_index) * per_epoch
    sharded = NamedSharding(mesh, P(DATA_AXIS))
    constrain = lambda tree: jax.lax.with_sharding_constraint(tree, sharded)

    def one_round(players, teachers, data, order, epoch_first_round, r, hparams, seeds):
        rkey = round_key(seeds["seed"], r, restart)
        data_key = round_key(seeds["data_seed"], r, restart)
        indices = None if order is None else order[r - epoch_first_round]
        batch = source.batch(data, indices, jax.random.fold_in(data_key, BATCH))
        if game.frozen_outputs is not None:
            if cached:
                batch["frozen"] = jax.tree.map(lambda a: a[indices], data["frozen"])
            else:
                batch["frozen"] = game.frozen_outputs(teachers, batch["image"])
        if game.compute_dtype is not None:
            batch["image"] = batch["image"].astype(game.compute_dtype)
        batch = constrain(batch)
        epoch = epoch_fraction(r, phase_first_round, per_epoch)
        metrics = {}
        for m, move in enumerate(phase.moves):
            results = []
            for j in range(move.repeats):
                move_batch = batch
                if move.fresh_batch:
                    key = jax.random.fold_in(
                        jax.random.fold_in(jax.random.fold_in(data_key, BATCH), m + 1), j
                    )
                    move_batch = constrain(source.fresh(key))
                view_args = (teachers, move_batch, hparams, rkey, r, j, epoch)
                players, result = play(players, move, view_args, game.compute_dtype)
                results.append(result)
            for name, value in _mean(results).items():
                metrics[move.prefix + name] = value
                owners[move.prefix + name] = move.player
        return players, metrics

    if members is not None:
        one_round = jax.vmap(one_round, in_axes=(0, None, None, members.order, None, None, 0, members.seeds))

    streamed = getattr(source, "streamed", False)

    def rounds(players, teachers, data, order, epoch_first_round, first_round, hparams, seeds=None):
        if seeds is None:
            seeds = {"seed": game.seed, "data_seed": game.data_seed_or_seed}

        def body(p, j):
            # a streamed source's data are the call's raw batches [count, batch, ...]: round j's row
            round_data = jax.tree.map(lambda a: a[j], data) if streamed else data
            return one_round(
                p, teachers, round_data, order, epoch_first_round, first_round + j, hparams, seeds
            )

        if count == 1:  # no loop: XLA's CPU compiler leaves convolutions inside loops unoptimised
            players, metrics = body(players, jnp.int32(0))
            return players, jax.tree.map(lambda m: m[None], metrics)
        return jax.lax.scan(body, players, jnp.arange(count, dtype=jnp.int32))

    return jax.jit(rounds, donate_argnums=0)


CACHE_LIMIT = 1 << 30  # bytes of frozen outputs kept on each device at most


def cache_frozen_outputs(game: Game, teachers, mesh) -> dict | None:
    """The frozen teachers' outputs on every training image: the game's ``frozen_cache`` if it has
    one, else computed once in batches of the training batch size (as the rounds would), when the
    batches are not augmented; ``None`` when they are, or when the outputs would take more than
    :data:`CACHE_LIMIT` bytes (the rounds compute them)."""
    source = game.source
    if game.frozen_cache is not None:
        return game.frozen_cache
    if game.frozen_outputs is None or source.augmented:
        return None
    images = source.images()
    n, batch = len(images), source.batch_size
    one = jax.eval_shape(
        game.frozen_outputs, teachers, jax.ShapeDtypeStruct((1, *images.shape[1:]), images.dtype)
    )
    if n * sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(one)) > CACHE_LIMIT:
        return None
    padded = np.concatenate([images, np.zeros(((-n) % batch, *images.shape[1:]), images.dtype)])
    sharded = NamedSharding(mesh, P(DATA_AXIS))
    # replicated outputs: every process can read them back, not only its own devices' part
    forward = jax.jit(game.frozen_outputs, out_shardings=NamedSharding(mesh, P()))
    parts = [
        jax.device_get(forward(teachers, jax.device_put(padded[i : i + batch], sharded)))
        for i in range(0, len(padded), batch)
    ]
    return jax.tree.map(lambda *xs: np.concatenate(xs)[:n], *parts)


def round_batch(game: Game, round_index: int = 0) -> dict:
    """The batch of round ``round_index`` of the first epoch, as the rounds make it (with the
    frozen teachers' outputs), outside the loop: for inspecting a game and testing its moves."""
    r = jnp.int32(round_index)
    order = game.source.order(game.data_seed_or_seed, 0)
    indices = None if order is None else order[round_index]
    batch = game.source.batch(
        game.source.arrays(), indices, jax.random.fold_in(round_key(game.data_seed_or_seed, r), BATCH)
    )
    if game.frozen_outputs is not None:
        batch["frozen"] = game.frozen_outputs(dict(game.teachers), batch["image"])
    return batch


def play_move(game: Game, players: dict, move: Move, batch: dict, *, round_index: int = 0, repeat: int = 0):
    """``(players, metrics)`` after one step of ``move`` on ``batch`` in round ``round_index``, with
    the game's teachers, hyperparameters and keys, outside the loop (not jitted; jit it to time it)."""
    r = jnp.int32(round_index)
    view_args = (
        dict(game.teachers),
        batch,
        dict(game.hparams),
        round_key(game.seed, r),
        r,
        repeat,
        jnp.float32(0),
    )
    return play(dict(players), move, view_args, game.compute_dtype)

"""The one training loop: every form (teacher training, distillation, adversarial KD, data-free
games, online peers, generative mapping) is a :class:`~jdistill.train.game.Game` played by
:func:`fit`, which owns the mesh and sharding, the rounds' PRNG keys, evaluation, the non-finite
rule, progress, ``metrics.jsonl``, orbax checkpoints of every player, exact resumption and the
summary."""

import contextlib
import functools
import sys
import time
import warnings

import jax
import numpy as np

from jdistill.train import checkpoint, distributed, parallel
from jdistill.train.cohort import Cohort
from jdistill.train.events import EventWriter, epoch_line, is_terminal
from jdistill.train.game import Game
from jdistill.train.lock import run_lock
from jdistill.train.provenance import provenance
from jdistill.train.rounds import cache_frozen_outputs, make_rounds
from jdistill.train.rundir import RunDir


def fit(
    game,
    out_dir,
    *,
    dataset=None,
    devices=None,
    progress: bool = True,
    label: str | None = None,
    steps_per_call: int = 1,
    shard_teachers: bool = False,
) -> dict:
    """Play ``game`` (a :class:`Game`, or a configuration whose ``build(dataset)`` makes one)
    into the run directory ``out_dir`` on ``devices`` (default: all; the batch is split over
    them, the players and teachers replicated), resuming from its last checkpoint if it holds
    the same configuration; a finished run returns its summary. ``steps_per_call`` rounds run in
    one jitted call (the same metrics as one at a time). ``shard_teachers``: each device holds
    1/N of the frozen teachers' variables (:func:`~jdistill.train.parallel.fully_sharded`) instead
    of all of them; the same results. Returns the summary.

    Under ``jax.distributed`` (:mod:`jdistill.train.distributed`) every process calls ``fit`` with
    the same arguments; the mesh spans all their devices and process 0 writes the directory."""
    options = dict(devices=devices, progress=progress, label=label, steps_per_call=steps_per_call)
    return fit_cohort([game], [out_dir], dataset=dataset, shard_teachers=shard_teachers, **options)[0]


def fit_cohort(
    games,
    out_dirs,
    *,
    dataset=None,
    devices=None,
    progress: bool = True,
    label: str | None = None,
    steps_per_call: int = 1,
    shard_teachers: bool = False,
) -> list[dict]:
    """Play several runs of one game, differing only in their seeds or traced hyperparameters
    (:mod:`jdistill.train.cohort`), in one compiled step, each into its own run directory of
    ``out_dirs``, as :func:`fit` plays one; their summaries, in order. Finished runs are not
    played again; the others resume together from the last epoch all of them have checkpointed."""
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be a positive integer, got {steps_per_call}")
    if len(games) != len(out_dirs) or len({RunDir(d).path.resolve() for d in out_dirs}) != len(out_dirs):
        raise ValueError("each run trained together needs its own run directory")
    runs = [RunDir(d) for d in out_dirs]
    configs = [g.config if isinstance(g, Game) else g for g in games]
    summaries = {i: runs[i].summary() for i in range(len(runs)) if runs[i].finished(configs[i])}
    todo = [i for i in range(len(runs)) if i not in summaries]
    if todo:
        cohort = Cohort(
            tuple(g if isinstance(g, Game) else g.build(dataset) for g in (games[i] for i in todo))
        )
        mesh = parallel.make_mesh(devices)
        parallel.check_batch_size(cohort.lead.source.batch_size, mesh)
        if cohort.lead.hooks.restarts and (
            len(cohort.games) > 1 or getattr(cohort.lead.source, "streamed", False)
        ):
            raise ValueError(
                "restarting a run from its checkpoint (restarts) works for one run on an in-memory "
                "data set, not for runs trained together or a streamed data set"
            )
        with contextlib.ExitStack() as held:

            def claim() -> list[bool]:
                finished = []
                for game, run in zip(cohort.games, (runs[i] for i in todo)):
                    run.make()  # after the build and the checks: a run that cannot start writes nothing
                    held.enter_context(run_lock(run.path))
                    finished.append(run.finished(game.config))  # by another process meanwhile
                    if not finished[-1]:
                        run.claim(game.config, provenance(mesh))
                return finished

            finished = distributed.on_primary(claim, "claiming the run directory")
            if not distributed.is_primary():
                finished = [run.finished(g.config) for g, run in zip(cohort.games, (runs[i] for i in todo))]
            playing = [(i, g) for i, g, done in zip(todo, cohort.games, finished) if not done]
            summaries.update({i: runs[i].summary() for i, done in zip(todo, finished) if done})
            if playing:
                if len(playing) < len(todo):  # some finished by another process meanwhile
                    cohort = Cohort(tuple(g for _, g in playing))
                played = _play(cohort, [runs[i] for i, _ in playing], mesh, progress, label, steps_per_call,
                               shard_teachers)  # fmt: skip
                summaries.update(zip((i for i, _ in playing), played))
    return [summaries[i] for i in range(len(runs))]


def _play(
    cohort: Cohort,
    runs: list[RunDir],
    mesh,
    progress: bool,
    label: str | None,
    steps_per_call: int,
    shard_teachers: bool,
) -> list[dict]:
    """The rounds, evaluations and checkpoints of ``cohort`` (one run, or several vmapped) in the
    claimed ``runs`` from their last readable checkpoint; their summaries. Process 0 alone writes
    files other than checkpoints."""
    from tqdm.auto import tqdm  # here: importing jdistill.train needs no tqdm (a benchmark machine's)

    primary = distributed.is_primary()
    game, members = cohort.lead, range(len(runs))
    replicated = parallel.replicated(mesh)
    teachers = dict(game.teachers)
    teachers = parallel.place(
        teachers, parallel.fully_sharded(teachers, mesh) if shard_teachers else replicated
    )
    data = game.source.arrays()
    frozen = cache_frozen_outputs(game, teachers, mesh)
    if frozen is not None:
        data["frozen"] = frozen
    data, hparams, seeds = parallel.place((data, cohort.hparams(), cohort.seeds()), replicated)

    streamed = getattr(game.source, "streamed", False)
    restarts_allowed = game.hooks.restarts if game.hooks.restart else 0
    managers, start, restored, restart = _restore(cohort, runs, replicated, streamed, restarts_allowed > 0)
    # the start, kept for a restart before the first checkpoint (training donates the players' buffers)
    fresh = _copy(restored[0]) if restarts_allowed and start == 0 else None
    players = parallel.place(cohort.stack(restored), replicated)
    stream = game.source.stream(game.data_seed_or_seed, start) if streamed else None
    if primary:
        for run in runs:
            run.keep_metrics_until(start)
            run.keep_restarts_until(restart)

    owners = {}
    compiled = functools.cache(
        lambda phase, count, restart: make_rounds(
            game, phase, count, mesh, cached=frozen is not None, owners=owners, members=cohort.axes,
            restart=restart,
        )
    )  # fmt: skip
    per_epoch = game.source.steps_per_epoch
    unit = (game.source.batch_size if game.unit == "img" else 1) * len(runs)
    label = label or game.label
    labels = [label] if len(runs) == 1 else [f"{label} {run.path.name}" for run in runs]
    lines = progress and not is_terminal()  # a log file gets one line per epoch, not a bar
    bar = tqdm(
        total=game.epochs * per_epoch * unit,
        initial=start * per_epoch * unit,
        unit=game.unit,
        unit_scale=game.unit == "img",
        desc=label if len(runs) == 1 else f"{label} x{len(runs)}",
        disable=not progress or lines or not primary,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    with contextlib.ExitStack() as writers:
        events = [writers.enter_context(EventWriter(run.path, start, write=primary)) for run in runs]
        epoch = start
        while epoch < game.epochs:
            started = time.perf_counter()
            phase_index, phase = game.phase_at(epoch)
            if phase_index and epoch == game.first_epoch(phase_index):
                players = parallel.place(cohort.start_phase(phase_index, players), replicated)
            first = epoch * per_epoch
            order = cohort.order(epoch)
            results = []
            for begin, count in _calls(first, per_epoch, steps_per_call, game.hooks.every):
                if stream is not None:  # this process's part of the call's batches, made global
                    data = parallel.from_processes(stream.take(count), mesh, axis=1)
                players, metrics = compiled(phase_index, count, restart)(
                    players, teachers, data, order, first, begin, hparams, seeds
                )
                results.append(metrics)
                bar.update(count * unit)
                if game.hooks.round and game.hooks.every and (begin + count) % game.hooks.every == 0:
                    for i in members:
                        game.hooks.round(cohort.member(players, i), begin + count, runs[i])
            per_step = {k: np.concatenate([r[k] for r in jax.device_get(results)]) for k in results[0]}
            per_member = [
                {k: v[:, i] for k, v in per_step.items()} if cohort.vmapped else per_step for i in members
            ]
            for i in members:
                _check_finite(per_member[i], phase, owners, first, epoch, managers[i], runs[i])
            seconds = time.perf_counter() - started
            last = epoch + 1 == game.epochs
            evaluate = game.evaluate is not None and ((epoch + 1) % game.eval_every == 0 or last)
            for i in members:
                mine = cohort.member(players, i)
                extra = game.hooks.epoch(mine, epoch + 1, runs[i]) if game.hooks.epoch else {}
                test = evaluation(game, mine, teachers, mesh) if evaluate else {}
                train = {k: float(v.mean()) for k, v in per_member[i].items()}
                record = runs[i].append_epoch(
                    epoch + 1, first + per_epoch, seconds, train, test, game.eval_prefix, stage=phase.name,
                    write=primary, **extra,
                )  # fmt: skip
                events[i].write(record)
                if lines and primary:
                    print(epoch_line(labels[i], game.epochs, record), file=sys.stderr, flush=True)
                if test and i == 0:
                    bar.set_postfix(epoch=epoch + 1, **{k: f"{v:.4f}" for k, v in list(test.items())[:1]})
            reason = game.hooks.restart(record) if restart < restarts_allowed else None
            if reason:  # one run (fit_cohort refuses restarts for several): back to its last checkpoint
                restart += 1
                epoch = managers[0].latest_step() or 0
                if epoch:  # the structure from shapes: the game's own arrays were donated to training
                    like = {**game.players_in_phase(game.phase_at(epoch - 1)[0]), RESTARTS: np.int32(0)}
                    like = jax.tree.map(
                        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), like
                    )
                    state = dict(checkpoint.restore(managers[0], like, epoch))
                    del state[RESTARTS]
                else:
                    state = _copy(fresh)
                players = parallel.place(cohort.stack([state]), replicated)
                if primary:
                    _log_restart(runs[0], restart, restarts_allowed, record, epoch, reason, per_epoch)
                bar.update((epoch - record["epoch"]) * per_epoch * unit)
                continue
            if (epoch + 1) % game.checkpoint_every == 0 or last:
                for i in members:
                    state = cohort.member(players, i)
                    if stream is not None:  # at an epoch's end: the stream's next batch opens epoch + 1
                        state = {**state, STREAM: _stream_position(stream.get_state())}
                    if restarts_allowed:
                        state = {**state, RESTARTS: np.asarray(restart, np.int32)}
                    checkpoint.save(managers[i], epoch + 1, state)
                fresh = None  # a restart now goes back to a checkpoint, never to the start
            epoch += 1
    bar.close()
    if stream is not None:
        stream.close()
    for i in members:
        if game.hooks.end:
            game.hooks.end(cohort.member(players, i), runs[i])
    summaries = [_write_summary(run, g, mesh) if primary else None for run, g in zip(runs, cohort.games)]
    distributed.barrier("summary written")
    return summaries if primary else [run.summary() for run in runs]


STREAM = "_stream"  # the checkpoint's entry of a streamed run's input position, beside the players
RESTARTS = "_restarts"  # the checkpoint's entry of a run's restarts so far, where it may restart


def _copy(tree):
    return jax.tree.map(lambda a: a.copy() if isinstance(a, jax.Array) else a, tree)


def _log_restart(run: RunDir, restart: int, allowed: int, record: dict, back: int, reason: str,
                 per_epoch: int) -> None:  # fmt: skip
    """Name a restart on standard error and in ``restarts.jsonl``; drop the metrics after ``back``."""
    run.keep_metrics_until(back)
    run.append_restart({"restart": restart, "epoch": record["epoch"], "step": record["step"],
                        "back_to_epoch": back, "back_to_step": back * per_epoch, "reason": reason})  # fmt: skip
    where = f"its checkpoint of step {back * per_epoch}" if back else "its start"
    print(f"{run.path.name}: {reason} at step {record['step']}; restart {restart} of {allowed}: back to {where}, "
          "with new randomness", file=sys.stderr, flush=True)  # fmt: skip


def _stream_position(state: dict) -> dict:
    """A stream's position (:meth:`~jdistill.data.streaming.BatchStream.get_state`) as arrays."""
    return {"epoch": np.asarray(state["epoch"], np.int32), "round": np.asarray(state["round"], np.int32)}


def evaluation(game: Game, players, teachers, mesh) -> dict:
    """``game.evaluate`` of ``players``, then again with each player that keeps a moving average of
    its parameters (``ema_decay``) evaluated at that average (with its own other variables, such as
    batch statistics), under ``ema/``."""
    metrics = game.evaluate(players, teachers, mesh)
    averaged = {name: p.replace(params=p.average) for name, p in players.items() if p.average is not None}
    if averaged:
        at_average = game.evaluate({**players, **averaged}, teachers, mesh)
        metrics |= {f"ema/{k}": v for k, v in at_average.items()}
    return metrics


def _like_at(game: Game, replicated, streamed: bool, restarts: bool):
    """``like(epoch)``: the structure of the game's checkpoint of ``epoch`` (its value at step 0)."""

    def like(epoch):
        state = dict(parallel.place(game.players_in_phase(game.phase_at(max(epoch - 1, 0))[0]), replicated))
        if streamed:
            state[STREAM] = parallel.place(_stream_position({"epoch": 0, "round": 0}), replicated)
        if restarts:
            state[RESTARTS] = parallel.place(np.asarray(0, np.int32), replicated)
        return state

    return like


def _restore(cohort: Cohort, runs: list[RunDir], replicated, streamed: bool, restarts: bool):
    """``(managers, epoch, players of each run, restarts)``: each run's players at the last epoch
    that every run has a readable checkpoint of (0: fresh). A run that checkpointed later epochs (a
    cohort stopped while saving) drops them, as they will be trained again. A streamed run's
    checkpoints also hold the input stream's position, which must be the start of the epoch after
    them; a run that may restart (one run), its restarts so far."""
    like_at = [_like_at(g, replicated, streamed, restarts) for g in cohort.games]
    latest = [checkpoint.restore_latest_readable(run.path, like) for run, like in zip(runs, like_at)]
    managers = [mngr for mngr, _, _ in latest]
    start = min(epoch for _, epoch, _ in latest)
    players = []
    for (mngr, epoch, state), like in zip(latest, like_at):
        if epoch > start:
            state = checkpoint.restore(mngr, like(start), start) if start else like(0)
            for later in [e for e in mngr.all_steps() if e > start]:
                mngr.delete(later)
        state = dict(state)
        if streamed:
            position = {k: int(v) for k, v in state.pop(STREAM).items()}
            if start and position != {"epoch": start, "round": 0}:
                raise ValueError(
                    f"the checkpoint of epoch {start} in {mngr.directory} holds the input stream at "
                    f"{position}, not at the start of epoch {start + 1}: it cannot resume exactly"
                )
        made = int(state.pop(RESTARTS)) if restarts else 0
        players.append(state)
    return managers, start, players, made


def _calls(first: int, per_epoch: int, steps_per_call: int, every: int) -> list[tuple[int, int]]:
    """``(first round, count)`` of each call in an epoch: ``steps_per_call`` rounds at a time,
    cut where a round hook is due."""
    cuts = set(range(first, first + per_epoch, steps_per_call)) | {first + per_epoch}
    if every:
        cuts |= {r for r in range(first + 1, first + per_epoch) if r % every == 0}
    cuts = sorted(cuts)
    return [(a, b - a) for a, b in zip(cuts, cuts[1:])]


def _check_finite(per_step, phase, owners, first_round, epoch, mngr, run) -> None:
    """Stop at the first round with a non-finite metric, naming the round, the player and a
    term before the total it makes up; the last good checkpoint stays."""
    totals = {move.prefix + "loss" for move in phase.moves}
    names = sorted(per_step, key=lambda n: n in totals)  # stable: the terms before the totals
    bad = [(i, n) for n in names for i in np.flatnonzero(~np.isfinite(per_step[n]))[:1]]
    if bad:
        i, name = min(bad, key=lambda b: b[0])  # the earliest round; within it, a term first
        raise FloatingPointError(
            f"non-finite {name} at step {first_round + i + 1} (epoch {epoch + 1}) of player {owners[name]}; "
            f"stopped; the last good checkpoint (epoch {mngr.latest_step() or 0}) is kept in {run.path}"
        )


def _write_summary(run: RunDir, game: Game, mesh) -> dict:
    lines = run.metrics()
    summary = {
        **game.summary,
        "devices": mesh.size,
        "train_seconds": round(sum(m["seconds"] for m in lines), 2),
        **{k: v for k, v in lines[-1].items() if k.startswith(game.summary_prefixes)},
    }
    final_phase = game.phases[-1].name
    scored = [m for m in lines if m.get("stage", final_phase) == final_phase and game.best in m]
    if scored:
        best = max(scored, key=lambda m: m[game.best])
        summary[game.best.replace("/", "/best_", 1)] = best[game.best]
        summary["best_epoch"] = best["epoch"]
    run.write_summary(summary)
    return summary


def deprecated_run(name: str):
    """``name(config, out_dir, **options)`` as jdistill 0.1 had it: a warning, then :func:`fit`."""

    def run(config, out_dir, **options) -> dict:
        warnings.warn(
            f"{name} is deprecated; use jdistill.train.fit(config, out_dir)", DeprecationWarning, stacklevel=2
        )
        return fit(config, out_dir, **options)

    return run

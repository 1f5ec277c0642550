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
from tqdm.auto import tqdm

from jdistill.train import checkpoint, distributed, parallel
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
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be a positive integer, got {steps_per_call}")
    run = RunDir(out_dir)
    if run.finished(game.config if isinstance(game, Game) else game):
        return run.summary()
    if not isinstance(game, Game):
        game = game.build(dataset)
    mesh = parallel.make_mesh(devices)
    parallel.check_batch_size(game.source.batch_size, mesh)
    with contextlib.ExitStack() as held:

        def claim() -> bool:
            run.make()  # after the build and the checks: a configuration that cannot start writes nothing
            held.enter_context(run_lock(run.path))
            if run.finished(game.config):  # by another process meanwhile
                return True
            run.claim(game.config, provenance(mesh))
            return False

        finished = distributed.on_primary(claim, "claiming the run directory")
        if finished or (not distributed.is_primary() and run.finished(game.config)):
            return run.summary()
        return _play(game, run, mesh, progress, label, steps_per_call, shard_teachers)


def _play(
    game: Game,
    run: RunDir,
    mesh,
    progress: bool,
    label: str | None,
    steps_per_call: int,
    shard_teachers: bool,
) -> dict:
    """The rounds, evaluations and checkpoints of ``game`` in the claimed ``run`` from its last
    readable checkpoint; its summary. Process 0 alone writes files other than checkpoints."""
    primary = distributed.is_primary()
    replicated = parallel.replicated(mesh)
    teachers = dict(game.teachers)
    teachers = parallel.place(
        teachers, parallel.fully_sharded(teachers, mesh) if shard_teachers else replicated
    )
    data = game.source.arrays()
    frozen = cache_frozen_outputs(game, teachers, mesh)
    if frozen is not None:
        data["frozen"] = frozen
    data, hparams = parallel.place((data, dict(game.hparams)), replicated)

    mngr, start, players = checkpoint.restore_latest_readable(
        run.path,
        lambda epoch: parallel.place(game.players_in_phase(game.phase_at(max(epoch - 1, 0))[0]), replicated),
    )
    if primary:
        run.keep_metrics_until(start)

    owners = {}
    compiled = functools.cache(
        lambda phase, count: make_rounds(game, phase, count, mesh, cached=frozen is not None, owners=owners)
    )
    per_epoch = game.source.steps_per_epoch
    unit = game.source.batch_size if game.unit == "img" else 1
    lines = progress and not is_terminal()  # a log file gets one line per epoch, not a bar
    bar = tqdm(
        total=game.epochs * per_epoch * unit,
        initial=start * per_epoch * unit,
        unit=game.unit,
        unit_scale=game.unit == "img",
        desc=label or game.label,
        disable=not progress or lines or not primary,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    with EventWriter(run.path, start, write=primary) as events:
        for epoch in range(start, game.epochs):
            started = time.perf_counter()
            phase_index, phase = game.phase_at(epoch)
            if phase_index and epoch == game.first_epoch(phase_index):
                players = parallel.place(phase.start(players), replicated)
            first = epoch * per_epoch
            order = game.source.order(game.seed, epoch)
            results = []
            for begin, count in _calls(first, per_epoch, steps_per_call, game.hooks.every):
                players, metrics = compiled(phase_index, count)(
                    players, teachers, data, order, first, begin, hparams
                )
                results.append(metrics)
                bar.update(count * unit)
                if game.hooks.round and game.hooks.every and (begin + count) % game.hooks.every == 0:
                    game.hooks.round(players, begin + count, run)
            per_step = {k: np.concatenate([r[k] for r in jax.device_get(results)]) for k in results[0]}
            _check_finite(per_step, phase, owners, first, epoch, mngr, run)
            train = {k: float(v.mean()) for k, v in per_step.items()}
            seconds = time.perf_counter() - started
            last = epoch + 1 == game.epochs
            extra = game.hooks.epoch(players, epoch + 1, run) if game.hooks.epoch else {}
            evaluate = game.evaluate is not None and ((epoch + 1) % game.eval_every == 0 or last)
            test = game.evaluate(players, teachers, mesh) if evaluate else {}
            record = run.append_epoch(
                epoch + 1,
                first + per_epoch,
                seconds,
                train,
                test,
                game.eval_prefix,
                stage=phase.name,
                write=primary,
                **extra,
            )
            events.write(record)
            if lines and primary:
                print(epoch_line(label or game.label, game.epochs, record), file=sys.stderr, flush=True)
            if test:
                bar.set_postfix(epoch=epoch + 1, **{k: f"{v:.4f}" for k, v in list(test.items())[:1]})
            if (epoch + 1) % game.checkpoint_every == 0 or last:
                checkpoint.save(mngr, epoch + 1, players)
    bar.close()
    if game.hooks.end:
        game.hooks.end(players, run)
    summary = _write_summary(run, game, mesh) if primary else None
    distributed.barrier("summary written")
    return summary if primary else run.summary()


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

"""Declarative experiments: a script declares its runs, its table and its plots as an
:class:`Experiment`; :func:`main` gives every experiment the same options (``--out``,
``--data-dir``, ``--seeds``, ``--smoke``, ``--validate``, ``--steps-per-call``,
``--checkpoint-every``, ``--quiet``), plays the runs in order with :func:`jdistill.train.fit` (a
finished run is read back, an interrupted one resumes from its last checkpoint) and writes
``results.json`` and ``table.md`` beside the plots.

A run is a directory under ``--out`` and the configuration played there; runs that share a
``row`` (one per seed) form a row of the table. ``--smoke`` keeps the first examples of the data
and applies the experiment's ``smoke`` overrides to every configuration that has those fields;
``--validate`` evaluates every run on a held-out part of the training set
(``holdout_fraction``) instead of the test set. Paper numbers live in a JSON file beside the
script (:func:`paper_numbers`).
"""

import argparse
import dataclasses
import json
import pathlib
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jdistill.cli_games import STEPS_PER_CALL_HELP, add_process_options, start_processes
from jdistill.cli_options import OneLineParser, one_line_warnings
from jdistill.train import distributed, groups


@dataclasses.dataclass(frozen=True)
class Options:
    """What the command line asked for: ``args`` holds the experiment's own options too;
    ``dataset`` is the data as the runs get it (cut by ``--smoke``; each run holds out its
    validation part itself)."""

    out: pathlib.Path
    data_dir: str | None
    seeds: tuple[int, ...]
    smoke: bool
    validate: bool
    quiet: bool
    args: argparse.Namespace
    dataset: Any = None
    holdout_fraction: float = 0.0  # of the training set, held out under --validate
    steps_per_call: int = 1  # rounds per jitted call (fit's)
    checkpoint_every: int | None = None  # epochs between every run's checkpoints; None: each run's own


@dataclasses.dataclass(frozen=True)
class Run:
    """``config`` played into ``--out``/``name``; ``row`` is the table row it counts in (None: a
    run that others need, such as a teacher). ``before()``, if given, is called on process 0 just
    before the run is played (or read back), every time: something the run reads that an earlier
    run makes, such as a teacher's output cache; it should do nothing when that exists."""

    name: str
    config: Any
    row: str | None = None
    before: Callable[[], Any] | None = None


@dataclasses.dataclass(frozen=True)
class Experiment:
    """``runs(options)`` lists the runs in the order they are played (a teacher before its
    students); ``table(results, options)`` renders the table from ``results`` (row -> the
    summaries of its runs, in order); ``plots(results, options)`` writes figures under
    ``options.out``. ``add_options(parser)`` adds the experiment's own options. ``data(dataset,
    options)`` makes the data every run gets from the loaded one (a subset, say); with
    ``dataset=None`` nothing is loaded and ``data(None, options)`` makes it (from the experiment's
    own options, say). ``measure(run_dir, options)`` returns numbers of a finished table run beyond
    its summary, kept beside it in ``results.json``."""

    doc: str
    dataset: str | None
    runs: Callable[[Options], Iterable[Run]]
    table: Callable[[Mapping[str, list[dict]], Options], str]
    plots: Callable[[Mapping[str, list[dict]], Options], None] | None = None
    add_options: Callable[[argparse.ArgumentParser], None] | None = None
    seeds: int = 3
    smoke: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"epochs": 1, "batch_size": 64})
    smoke_examples: tuple[int, int] = (512, 200)
    holdout_fraction: float = 1 / 6
    default_out: str | None = None
    data: Callable[[Any, Options], Any] | None = None
    measure: Callable[[pathlib.Path, Options], dict] | None = None


def paper_numbers(script: str) -> dict:
    """The published numbers that the experiment ``script`` (its ``__file__``) compares
    against, from the JSON file beside it (``<script>.paper.json``)."""
    path = pathlib.Path(script).with_suffix(".paper.json")
    return json.loads(path.read_text())


def deprecated_option(parser, old: str, replacement: str, **sets) -> None:
    """``old`` (an option of the script before the runner, taking no value) still works: it sets
    ``sets`` on the parsed options and warns in one line to use ``replacement``."""

    class Deprecated(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"{parser.prog}: warning: {old} is deprecated; use {replacement}", file=sys.stderr)
            for name, value in sets.items():
                setattr(namespace, name, value)

    parser.add_argument(old, nargs=0, action=Deprecated, help=argparse.SUPPRESS)


def parser_for(experiment: Experiment) -> argparse.ArgumentParser:
    """The experiment's command line: the shared options, then its own."""
    parser = OneLineParser(
        description=experiment.doc.split("\n\n")[0],
        epilog="Re-running the same command resumes interrupted runs and reads back finished ones.",
    )
    parser.add_argument(
        "--out",
        required=experiment.default_out is None,
        default=experiment.default_out,
        help="where every run directory, results.json, table.md and the plots go",
    )
    parser.add_argument(
        "--data-dir", default=None, help="the data set's files; see 'jdistill train-teacher --help'"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[experiment.seeds],
        metavar="N",
        help=f"seeds per row: N for seeds 0..N-1, several for those seeds (default {experiment.seeds})",
    )
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        metavar="K",
        help="with a count N (--seeds N): seeds K..K+N-1, e.g. --seeds 1 --first-seed 2 for seed 2 alone",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"the first {experiment.smoke_examples[0]} training and {experiment.smoke_examples[1]} test "
        f"examples, one seed{''.join(f', {k}={v}' for k, v in experiment.smoke.items())}: tests the pipeline",
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="evaluate on a held-out fraction of the training set (--holdout) instead of the test set (for "
        "choosing anything)",
    )
    parser.add_argument(
        "--holdout",
        type=float,
        default=experiment.holdout_fraction,
        metavar="FRACTION",
        help=f"the fraction of the training set that --validate holds out (default "
        f"{experiment.holdout_fraction:.3g})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--steps-per-call", type=int, default=1, metavar="K", help=STEPS_PER_CALL_HELP)
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="every run saves its checkpoint every N epochs (and at its end) instead of its own cadence "
        "(mostly every epoch): fewer saves where epochs take a fraction of a second, as on an accelerator; "
        "an interrupted run loses at most N epochs, and data-free restarts go back that far",
    )
    add_process_options(parser)
    if experiment.add_options:
        experiment.add_options(parser)
    return parser


def options_from(experiment: Experiment, args: argparse.Namespace) -> Options:
    if args.first_seed and len(args.seeds) > 1:
        raise ValueError("--first-seed goes with a count of seeds (--seeds N), not with a list of them")
    if args.first_seed < 0:
        raise ValueError(f"--first-seed must be at least 0, got {args.first_seed}")
    first, count = args.first_seed, args.seeds[0]
    seeds = tuple(range(first, first + count)) if len(args.seeds) == 1 else tuple(args.seeds)
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise ValueError(
            f"--seeds: a count of at least 1 or distinct seeds >= 0, got {' '.join(map(str, args.seeds))}"
        )
    if not 0 < args.holdout < 1:
        raise ValueError(f"--holdout must be a fraction in (0, 1), got {args.holdout:g}")
    if args.steps_per_call < 1:
        raise ValueError(f"--steps-per-call must be a positive integer, got {args.steps_per_call}")
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be a positive integer, got {args.checkpoint_every}")
    return Options(
        out=pathlib.Path(args.out).absolute(),
        data_dir=args.data_dir,
        seeds=seeds[:1] if args.smoke else seeds,
        smoke=args.smoke,
        validate=args.validate,
        quiet=args.quiet,
        args=args,
        holdout_fraction=args.holdout,
        steps_per_call=args.steps_per_call,
        checkpoint_every=args.checkpoint_every,
    )


def adjusted(config, experiment: Experiment, options: Options):
    """``config`` with the smoke overrides (fields it has), ``--checkpoint-every`` (where it has
    the field) and, under ``--validate``, the held-out fraction."""
    fields = groups.flat(config)
    changes = {k: v for k, v in experiment.smoke.items() if k in fields} if options.smoke else {}
    if options.checkpoint_every is not None and "checkpoint_every" in fields:
        changes["checkpoint_every"] = options.checkpoint_every
    if options.validate:
        if "holdout_fraction" not in fields:
            raise ValueError(f"--validate: {type(config).__name__} runs cannot hold out training data")
        changes["holdout_fraction"] = options.holdout_fraction
    if not changes:
        return config
    return config.replace(**changes) if hasattr(config, "replace") else dataclasses.replace(config, **changes)


def training_data(experiment: Experiment, options: Options):
    """The data the runs train on: ``options.dataset`` without its held-out part under ``--validate``."""
    return options.dataset.holdout(options.holdout_fraction) if options.validate else options.dataset


def with_data(experiment: Experiment, options: Options) -> Options:
    """``options`` with the data every run gets: the experiment's data set loaded from
    ``--data-dir``, cut by ``--smoke``, then made by its ``data`` if it has one."""
    from jdistill.data import load_dataset

    dataset = experiment.dataset and load_dataset(experiment.dataset, options.data_dir)
    if options.smoke and dataset is not None:
        dataset = dataset.first(*experiment.smoke_examples)
    if experiment.data:
        dataset = experiment.data(dataset, options)
    return dataclasses.replace(options, dataset=dataset)


def planned_runs(experiment: Experiment, options: Options) -> list[Run]:
    """Every run of the command, in order, with its configuration as it will be played
    (:func:`adjusted`): all of them made, and so checked, before the first run starts."""
    return [
        dataclasses.replace(run, config=adjusted(run.config, experiment, options))
        for run in experiment.runs(options)
    ]


def play(experiment: Experiment, options: Options) -> dict[str, list[dict]]:
    """Every run of the experiment, in order; the summaries of the table's rows."""
    from jdistill.train import fit

    results: dict[str, list[dict]] = {}
    for run in planned_runs(experiment, options):
        if run.before is not None:
            distributed.on_primary(run.before, f"before {run.name}")
        summary = fit(
            run.config,
            options.out / run.name,
            dataset=options.dataset,
            progress=not options.quiet,
            label=run.name,
            steps_per_call=options.steps_per_call,
        )
        if run.row is not None:
            measured = experiment.measure(options.out / run.name, options) if experiment.measure else {}
            config = json.loads(json.dumps(groups.flat(run.config)))
            results.setdefault(run.row, []).append({"run": run.name, "config": config, **summary, **measured})
    return results


def main(experiment: Experiment, argv: list[str] | None = None) -> dict[str, list[dict]]:
    """Run ``experiment`` from the command line ``argv``; bad input is one line on standard error."""
    args = parser_for(experiment).parse_args(argv)
    started = time.perf_counter()
    out = pathlib.Path(args.out).absolute()
    prog = pathlib.Path(sys.argv[0]).name
    with one_line_warnings(prog):
        try:
            start_processes(args)
            options = with_data(experiment, options_from(experiment, args))
            options.out.mkdir(parents=True, exist_ok=True)
            results = play(experiment, options)
            table = experiment.table(results, options)
            if experiment.plots and distributed.is_primary():
                experiment.plots(results, options)
        except (ValueError, OSError, distributed.StoppedOnProcess0) as e:
            sys.exit(f"{prog}: error: {e}")
        except KeyboardInterrupt:
            sys.exit(f"interrupted; the same command resumes from the last checkpoints in {out}")
    if not distributed.is_primary():
        return results
    (options.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (options.out / "table.md").write_text(table)
    print(table)
    print(
        f"Wrote {options.out}/table.md and results.json ({time.perf_counter() - started:.0f} s).",
        file=sys.stderr,
    )
    return results

"""The ``jdistill`` command: ``demo``, ``train-teacher``, ``distill``, ``models``, and the adversarial
``data-free``, ``adversarial-kd`` and ``online``; ``temperature`` shows what T does to a teacher's
probabilities."""

import argparse
import json
import pathlib
import sys
import time

from jdistill.cli_games import DATA_DIR_HELP, DATASET_HELP, add_run_options, start, start_cohort
from jdistill.cli_options import (
    DeprecatedAlias,
    OneLineParser,
    add_config_options,
    given_values,
    one_line_warnings,
    parse_weights,
)


def _parse_method_options(items: list[str]) -> dict[str, dict]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, field = key.partition(".")
        if not (sep and dot and method and field):
            raise ValueError(
                "--method-option expects METHOD.FIELD=VALUE (e.g. fitnet.student_layer=hidden1), "
                f"got {item!r}"
            )
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass  # a plain string such as a layer name
        options.setdefault(method, {})[field] = value
    return options


def _add_training_options(parser: argparse.ArgumentParser, command: str) -> None:
    from jdistill.presets import PRESETS
    from jdistill.train.config import RunConfig

    distill = command == "distill"
    parser.add_argument(
        "--preset",
        default=None,
        choices=(*PRESETS, "none"),
        help="a named recipe whose values the options given override: "
        + "; ".join(f"'{name}' = {p.description}" for name, p in PRESETS.items())
        + ". Default: 'crd' for cifar10 and cifar100, none otherwise (npz too)",
    )
    parser.add_argument(
        "--recipe", dest="preset", action=DeprecatedAlias, replacement="--preset", help=argparse.SUPPRESS
    )
    add_config_options(
        parser,
        RunConfig,
        skip=()
        if distill
        else ("teacher", "methods", "weights", "method_options", "temperature", "teacher_cache"),
        listed=("model", "dataset", *(("teacher", "methods") if distill else ())),
        flags={"methods": "--method", "weights": "--weight", "method_options": "--method-option"},
        parsers={"methods": str, "weights": "append", "method_options": "append"},
        aliases={"--lr": "learning_rate", **({"--student": "model"} if distill else {})},
    )
    add_run_options(parser, data_dir=False, teacher=distill)
    together = parser.add_argument_group(
        "several runs in one compiled step (vmap; each run in its own directory under --out)"
    )
    together.add_argument(
        "--seeds",
        default=None,
        metavar="S,S,...",
        help="train one run per seed at once, into --out/seedS (each the run --seed S would give)",
    )
    if distill:
        together.add_argument(
            "--sweep",
            action="append",
            default=[],
            metavar="NAME=V,V,...",
            help="train one run per value at once: temperature=1,4,8 or weight.TERM=0.5,0.9 (a term's "
            "weight); repeatable (every combination), with --seeds too; into --out/NAMEV",
        )


def _numbers(option: str, text: str, kind=float) -> list:
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or len(set(values)) != len(values):
        raise ValueError(f"{option} expects distinct comma-separated numbers, got {text!r}")
    return values


def cohort_runs(config, seeds: str | None, sweeps: list[str]) -> list[tuple[str, object]]:
    """``(directory name, configuration)`` of each run of ``--seeds`` and ``--sweep`` (every
    combination): ``seed3``, ``temperature4``, ``seed3-weight.kd0.5``."""
    runs = [("", config)]
    if seeds is not None:
        runs = [(f"seed{s}", config.replace(seed=s)) for s in _numbers("--seeds", seeds, int)]
    for sweep in sweeps:
        name, _, values = sweep.partition("=")
        if name == "temperature":
            change = lambda c, v: c.replace(temperature=v)
        elif name.startswith("weight.") and name[7:]:
            change = lambda c, v, term=name[7:]: c.replace(weights={**c.distill.weights, term: v})
        else:
            raise ValueError(f"--sweep expects temperature=V,V or weight.TERM=V,V, got {sweep!r}")
        runs = [
            (f"{label}-{name}{v:g}".lstrip("-"), change(c, v))
            for label, c in runs
            for v in _numbers(f"--sweep {name}", values)
        ]
    return runs


def run_config(args, command: str):
    """The :class:`RunConfig` of a ``train-teacher`` or ``distill`` command line, and where each of
    its values came from: the defaults, the preset (given or the data set's), the options given."""
    from jdistill.methods import parse_methods
    from jdistill.presets import Context, default_preset, preset_values
    from jdistill.train import RunConfig, RunDir

    given = given_values(args, RunConfig)
    for name in ("model", "dataset"):
        if name not in given:
            raise ValueError(f"--{name} is required")
    if command == "distill":
        if "teacher" not in given or "methods" not in given:
            raise ValueError("--teacher and --method are required")
        given["methods"] = parse_methods(given["methods"])
    given["weights"] = parse_weights(given.get("weights", []))
    given["method_options"] = _parse_method_options(given.get("method_options", []))
    preset = args.preset or default_preset(given["dataset"])
    preset = None if preset == "none" else preset
    values = {}
    if preset:
        teacher = given.get("teacher")
        context = Context(
            given["model"],
            given.get("methods", ("ce",)),
            RunDir(teacher).config().model.name if teacher else None,
            given.get("epochs"),
            given.get("batch_size"),
        )
        values = preset_values(preset, context)
        if given.get("schedule", "step") != "step" and "lr_milestones" not in given:
            values.pop("lr_milestones", None)  # the preset's step schedule is replaced
    if "epochs" not in {**values, **given}:
        raise ValueError("--epochs is required without a preset")
    merged = {**values, **given}
    merged["weights"] = {**values.get("weights", {}), **given["weights"]}
    merged["method_options"] = {
        name: {**values.get("method_options", {}).get(name, {}), **given["method_options"].get(name, {})}
        for name in {**values.get("method_options", {}), **given["method_options"]}
    }
    origin = f"preset {preset}"
    sources = {name: "given" if name in given else origin for name in merged}
    for name in ("weights", "method_options"):
        from_preset, from_command = bool(values.get(name)), bool(given[name])
        if from_preset or from_command:
            sources[name] = " and ".join([origin] * from_preset + ["given"] * from_command)
        else:
            sources.pop(name)
    return RunConfig(**merged), sources


def cmd_train(args) -> None:
    config, sources = run_config(args, args.command)
    if args.seeds is None and not getattr(args, "sweep", []):
        _report(args.out, start(args, config, sources))
        return
    if args.seeds is not None and sources.get("seed") == "given":
        raise ValueError("give --seed or --seeds, not both")
    runs = cohort_runs(config, args.seeds, getattr(args, "sweep", []))
    for name, summary in zip((n for n, _ in runs), start_cohort(args, runs, sources)):
        _report(str(pathlib.Path(args.out) / name), summary)


def cmd_cache_teacher(args) -> None:
    from jdistill.train import RunConfig, load_teacher, teacher_cache
    from jdistill.train.distill import prepare_dataset
    from jdistill.train.sources import DataSource

    excluded = tuple(int(c) for c in args.exclude_classes.split(",") if c.strip())
    config = RunConfig(model="-", dataset=args.dataset, data_dir=args.data_dir, epochs=1,
                       teacher=args.teacher, holdout_fraction=args.holdout_fraction,
                       exclude_classes=excluded)  # fmt: skip
    dataset = prepare_dataset(config)
    images = DataSource(dataset, 1).images()
    manifest = teacher_cache.write(
        load_teacher(args.teacher, dataset), args.teacher, images, args.out, features=tuple(args.feature),
        top_k=args.top_k, dtype=args.dtype,
    )  # fmt: skip
    print(json.dumps(manifest, indent=2))


def cmd_cache_lm_teacher(args) -> None:
    from jdistill.lm import teacher_cache

    manifest = teacher_cache.write(args.teacher, args.out, top_k=args.top_k, temperature=args.temperature,
                                   dtype=args.dtype)  # fmt: skip
    print(json.dumps(manifest, indent=2))


def cmd_write_records(args) -> None:
    from jdistill.data import load_dataset
    from jdistill.data.records import write_dataset

    write_dataset(load_dataset(args.dataset, args.data_dir), args.out)
    print(f"wrote {args.out}/train and {args.out}/test; train with --dataset records --data-dir {args.out}")


def _report(out: str, summary: dict) -> None:
    """The summary on standard output and the run's learning curves beside its metrics."""
    from jdistill.report import plot_run
    from jdistill.train import RunDir, distributed

    print(json.dumps(summary, indent=2))
    if distributed.is_primary() and RunDir(out).metrics_file.exists():
        print(f"learning curves: {plot_run(out)}", file=sys.stderr)


def cmd_models(args) -> None:
    import jax
    from flax import nnx

    from jdistill.models import MODELS, count_params, create_model, native_input_shape

    width = max(map(len, MODELS))
    for name in MODELS:
        shape = (
            tuple(int(d) for d in args.input_shape.split("x"))
            if args.input_shape
            else native_input_shape(name)
        )

        def build(name=name, shape=shape):
            return create_model(name, shape, args.num_classes, rngs=nnx.Rngs(0))

        try:
            model = nnx.eval_shape(build)  # shapes only: instant even for ResNet50
        except ValueError as e:
            print(f"{name:{width}s} {'-':>12}  ({e})")
            continue
        line = f"{name:{width}s} {count_params(model):>12,}  {'x'.join(map(str, shape))}"
        if args.features:
            images = jax.ShapeDtypeStruct((1, *shape), "float32")
            shapes = jax.eval_shape(lambda x, build=build: build()(x)[1], images)
            line += "  " + ", ".join(f"{k} {'x'.join(map(str, v.shape[1:]))}" for k, v in shapes.items())
        print(line)


def cmd_demo(args) -> None:
    from jdistill.demo import run_demo

    started = time.perf_counter()
    out = args.out or time.strftime("runs/demo-%Y%m%d-%H%M%S")
    table = run_demo(out, seeds=args.seeds, progress=not args.quiet)
    print()
    print(table)
    print(
        f"Wrote {out}/table.md, results.jsonl, learning_curves.png and one run directory per run "
        f"({time.perf_counter() - started:.0f} s)."
    )


def build_parser() -> argparse.ArgumentParser:
    from jdistill.methods import METHODS

    parser = OneLineParser(prog="jdistill", description="Knowledge distillation in JAX/Flax.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "demo",
        help="teacher, student alone and distilled students on bundled digits (~2 min)",
        description="Train a teacher, a student alone and distilled students on scikit-learn's "
        "digits (no download) and print a table; see jdistill/demo.py.",
    )
    p.add_argument("--out", default=None, help="output directory (default runs/demo-TIMESTAMP)")
    p.add_argument("--seeds", type=int, default=5, help="seeds per student row (at least 3 for a spread)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    from jdistill.cli_games import add_parsers

    add_parsers(sub)

    from jdistill import temperature

    temperature.add_parser(sub)

    p = sub.add_parser(
        "train-teacher",
        help="train a model on hard labels (a teacher, or a baseline)",
        description="Train a model with cross-entropy; its run directory can then be "
        "passed to 'jdistill distill --teacher'.",
    )
    _add_training_options(p, "train-teacher")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "distill",
        help="train a student from a finished teacher run",
        description="Distil a teacher into a student. The objective is the weighted sum of "
        "the named loss terms of the chosen methods, always including 'ce' "
        f"(hard labels; --weight ce=0 removes it). Built-in methods: {', '.join(METHODS)}; each method's "
        "terms and default weights are in the README; 'jdistill models --features' lists the features "
        "that --method-option layers name.",
    )
    _add_training_options(p, "distill")
    p.set_defaults(func=cmd_train)

    from jdistill.train.config import DTYPES

    p = sub.add_parser(
        "cache-teacher",
        help="write a finished teacher's outputs on a training set to disk, for distill --teacher-cache",
        description="Run the teacher once over the training images (un-augmented, normalised as a run sees "
        "them, after --holdout-fraction and --exclude-classes) and write its logits (or their top k) and the "
        "named features to --out with a manifest of the teacher's and the data's fingerprints; "
        "'jdistill distill --teacher-cache OUT' then reads them instead of running the teacher.",
    )
    p.add_argument("--teacher", required=True, help="run directory of a finished 'train-teacher' run")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument(
        "--holdout-fraction", type=float, default=0.0, help="as the distillation run's (default 0)"
    )
    p.add_argument(
        "--exclude-classes", default="", help="as the distillation run's, e.g. 3 or 3,5 (default none)"
    )
    p.add_argument(
        "--feature", action="append", default=[], help="a teacher feature to keep too (repeatable)"
    )
    p.add_argument("--top-k", type=int, default=None, help="keep the k largest log-probabilities per example")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="stored dtype")
    p.add_argument("--out", required=True, help="the cache directory")
    p.set_defaults(func=cmd_cache_teacher)

    p = sub.add_parser(
        "cache-lm-teacher",
        help="write a finished language model's top-k tokens on its training sequences, for lm --teacher-cache",
        description="Run a finished 'jdistill lm' teacher once over its corpus's training sequences and write "
        "its k most probable next tokens and their log-probabilities at --temperature (2 k numbers per token "
        "instead of the vocabulary) to --out, with a manifest of the teacher's and the sequences' "
        "fingerprints; 'jdistill lm --teacher DIR --teacher-cache OUT' then reads them instead of running "
        "the teacher.",
    )
    p.add_argument("--teacher", required=True, help="run directory of a finished 'jdistill lm' run")
    p.add_argument("--top-k", type=int, required=True, help="tokens kept per position")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="softmax temperature of the log-probabilities, as the distillation run's (default 1)")  # fmt: skip
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="stored dtype of the log-probabilities")
    p.add_argument("--out", required=True, help="the cache directory")
    p.set_defaults(func=cmd_cache_lm_teacher)

    p = sub.add_parser(
        "write-records",
        help="write a data set as record files, to be streamed from disk (--dataset records)",
        description="Write a data set's training and test splits as memory-mapped record directories "
        "(OUT/train, OUT/test: images.npy, labels.npy, manifest.json; uint8 where the images are whole "
        "multiples of 1/255, else float32) with its normalisation; 'jdistill train-teacher --dataset records "
        "--data-dir OUT' then streams them from disk instead of holding them in memory.",
    )
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument("--out", required=True, help="the directory of the two record directories")
    p.set_defaults(func=cmd_write_records)

    p = sub.add_parser(
        "models",
        help="list built-in models with their parameter counts",
        description="List every built-in model with its number of trainable parameters.",
    )
    p.add_argument("--num-classes", type=int, default=10, help="number of classes")
    p.add_argument(
        "--input-shape",
        default=None,
        help="input image shape HxWxC for every model (default: 32x32x3 for the CIFAR zoo, 28x28x1 "
        "otherwise)",
    )
    p.add_argument("--features", action="store_true", help="also list each model's named features and shapes")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from jdistill.train.distributed import StoppedOnProcess0

    try:
        with one_line_warnings(f"jdistill {args.command}"):
            args.func(args)
    # OSError: FileNotFoundError, a read-only directory, ...
    except (ValueError, OSError, FloatingPointError, StoppedOnProcess0) as e:
        sys.exit(f"jdistill {args.command}: error: {e}")
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        where = f"; the same command resumes from the last checkpoint in {out}" if out else ""
        sys.exit(f"jdistill {args.command}: interrupted{where}")

"""The ``jdistill`` command: ``demo``, ``train-teacher``, ``distill``, ``models``, and the adversarial
``data-free``, ``adversarial-kd`` and ``online``; ``temperature`` shows what T does to a teacher's
probabilities."""

import argparse
import json
import sys
import time
import warnings

from jdistill.cli_games import DATASET_HELP, add_run_options

# Defaults outside the CIFAR benchmark's recipe (see jdistill.recipes for the recipe's).
PLAIN_DEFAULTS = {
    "batch_size": 128,
    "optimizer": "sgd",
    "lr": 0.05,
    "schedule": "cosine",
    "momentum": 0.9,
    "weight_decay": 0.0,
    "max_shift": 0,
    "hflip": False,
    "lr_milestones": "",
    "temperature": 4.0,
}


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    add_run_options(p)
    p.add_argument(
        "--recipe",
        choices=("crd", "none"),
        default=None,
        help="default settings: 'crd' = the CRD/RepDistiller CIFAR-100 benchmark's (240 epochs, batch 64, "
        "SGD 0.9, wd 5e-4, lr 0.05 or 0.01 for MobileNetV2/ShuffleNet x batch/64, x0.1 at 150/180/210, "
        "crop+flip, the benchmark's loss weights); default for cifar10 and cifar100, 'none' otherwise (npz too). "
        "Options given explicitly override it",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="passes over the training set (required without a recipe); under the crd recipe (240 by default) "
        "the milestones, DKD's ramp and the initialisation stages scale with it: the option to shorten a run",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order, dropout, jitter")
    p.add_argument("--batch-size", type=int, default=None, help="global batch, split over all devices (128)")
    p.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        default=None,
        help="sgd (momentum, coupled weight decay; Nesterov without a recipe) or adam (decoupled weight decay)",
    )
    p.add_argument("--lr", type=float, default=None, help="base learning rate (0.05)")
    p.add_argument(
        "--schedule",
        choices=("cosine", "constant", "step"),
        default=None,
        help="learning-rate schedule over the whole run (cosine; step: x0.1 at --lr-milestones)",
    )
    p.add_argument("--lr-milestones", default=None, help="comma-separated epochs of the step schedule")
    p.add_argument("--momentum", type=float, default=None, help="SGD momentum (0.9)")
    p.add_argument("--weight-decay", type=float, default=None, help="weight decay (0)")
    p.add_argument(
        "--max-shift",
        type=int,
        default=None,
        help="random translation of each training image by up to this many pixels (input jitter; "
        "4 = the benchmark's random crop with 4-pixel padding)",
    )
    p.add_argument(
        "--hflip", action=argparse.BooleanOptionalAction, default=None, help="random horizontal flips"
    )
    p.add_argument(
        "--warmup-epochs", type=int, default=0, help="linear learning-rate warm-up from 0 over N epochs"
    )
    p.add_argument(
        "--max-norm",
        type=float,
        default=None,
        help="cap the L2 norm of each unit's incoming weights after every update (max-norm constraint)",
    )
    p.add_argument(
        "--clip-norm",
        type=float,
        default=None,
        help="clip the gradient to this global norm before each update",
    )
    p.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.0,
        help="evaluate on this fraction of the training set, held out (fixed), instead of the test set: "
        "for choosing hyperparameters without touching the test set",
    )
    p.add_argument(
        "--exclude-classes",
        default="",
        help="comma-separated classes removed from the training (transfer) set, e.g. 3",
    )
    p.add_argument(
        "--labelled-fraction",
        type=float,
        default=1.0,
        help="keep the labels of this fraction of the training set (stratified, fixed); "
        "teacher runs train on those, distillation on every image",
    )
    p.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        help="replace this fraction of the training labels by a random other class (symmetric noise, "
        "fixed seed); the test labels stay clean",
    )
    p.add_argument("--checkpoint-every", type=int, default=1, help="save a checkpoint every N epochs")
    p.add_argument(
        "--init",
        choices=("flax", "torch"),
        default="flax",
        help="the model's initialisation: flax (LeCun-normal kernels, zero biases) or torch (PyTorch's "
        "defaults: kernels and biases U(+-1/sqrt(fan_in))); default: flax",
    )
    p.add_argument(
        "--eval-every", type=int, default=1, help="evaluate on the test set every N epochs (and at the end)"
    )


def _parse_weights(items: list[str]) -> dict[str, float]:
    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise SystemExit(f"jdistill: --weight expects NAME=NUMBER (e.g. kd=0.9), got {item!r}")
    return weights


def _parse_method_options(items: list[str]) -> dict[str, dict]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, field = key.partition(".")
        if not (sep and dot and method and field):
            raise SystemExit(
                f"jdistill: --method-option expects METHOD.FIELD=VALUE (e.g. fitnet.student_layer=hidden1), "
                f"got {item!r}"
            )
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass  # a plain string such as a layer name
        options.setdefault(method, {})[field] = value
    return options


def _parse_classes(text: str) -> tuple[int, ...]:
    return _parse_ints(text, "--exclude-classes")


def _settings(args, model: str, methods=("ce",), teacher_model=None) -> dict:
    """RunConfig fields from the recipe (or the plain defaults) with the explicit options on top."""
    from jdistill.recipes import RECIPE_DATASETS, crd_benchmark

    recipe = args.recipe or ("crd" if args.dataset in RECIPE_DATASETS else "none")
    if recipe == "none":
        if args.epochs is None:
            raise SystemExit("jdistill: --epochs is required without a recipe")
        base = {**PLAIN_DEFAULTS, "epochs": args.epochs, "weights": {}, "method_options": {}}
    else:
        fields = crd_benchmark(
            model,
            methods,
            teacher_model=teacher_model,
            epochs=args.epochs or 240,
            batch_size=args.batch_size or 64,
        )
        base = {
            **fields,
            "lr": fields.pop("learning_rate"),
            "lr_milestones": ",".join(map(str, fields["lr_milestones"])),
        }
    given = {k for k in base if getattr(args, k, None) is not None}
    value = {k: getattr(args, k) if k in given else base.get(k) for k in base}
    origin = "default" if recipe == "none" else f"recipe {recipe}"
    schedule = value["schedule"]
    config = dict(
        epochs=value["epochs"],
        batch_size=value["batch_size"],
        optimizer=value["optimizer"],
        learning_rate=value["lr"],
        schedule=schedule,
        lr_milestones=_parse_ints(value["lr_milestones"], "--lr-milestones") if schedule == "step" else (),
        momentum=value["momentum"],
        weight_decay=value["weight_decay"],
        max_shift=value["max_shift"],
        hflip=value["hflip"],
        temperature=value["temperature"],
    )
    if recipe == "crd":
        config["nesterov"] = False
    renamed = {"learning_rate": "lr"}
    sources = {k: "given" if renamed.get(k, k) in given else origin for k in config}
    sources.update(nesterov=origin, weights=origin, method_options=origin)
    return config, base["weights"], base["method_options"], sources


def _parse_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError:
        raise SystemExit(f"jdistill: {option} expects integers separated by commas, got {text!r}")


def _common_config(args) -> dict:
    return dict(
        dataset=args.dataset,
        data_dir=args.data_dir,
        seed=args.seed,
        warmup_epochs=args.warmup_epochs,
        max_norm=args.max_norm,
        clip_norm=args.clip_norm,
        holdout_fraction=args.holdout_fraction,
        exclude_classes=_parse_classes(args.exclude_classes),
        labelled_fraction=args.labelled_fraction,
        label_noise=args.label_noise,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        init=args.init,
    )


def cmd_train_teacher(args) -> None:
    from jdistill.train import RunConfig, fit

    settings, _, _, sources = _settings(args, args.model)
    config = RunConfig(model=args.model, **settings, **_common_config(args))
    _print_configuration(args, config, sources)
    summary = fit(config, args.out, progress=not args.quiet, steps_per_call=args.steps_per_call)
    _report(args.out, summary)


def cmd_distill(args) -> None:
    from jdistill.train import RunConfig, RunDir, fit, parse_methods

    methods = parse_methods(args.method)
    given_weights, given_options = _parse_weights(args.weight), _parse_method_options(args.method_option)
    teacher_model = RunDir(args.teacher).config().model
    settings, weights, options, sources = _settings(args, args.student, methods, teacher_model)
    if given_weights:
        sources["weights"] = f"{sources['weights']} and given"
    if given_options:
        sources["method_options"] = f"{sources['method_options']} and given"
    for method, extra in given_options.items():
        options[method] = {**options.get(method, {}), **extra}
    config = RunConfig(
        model=args.student,
        teacher=args.teacher,
        methods=methods,
        weights={**weights, **given_weights},
        method_options=options,
        **settings,
        **_common_config(args),
    )
    _print_configuration(args, config, sources)
    summary = fit(config, args.out, progress=not args.quiet, steps_per_call=args.steps_per_call)
    _report(args.out, summary)


def _print_configuration(args, config, sources: dict[str, str]) -> None:
    from jdistill.cli_games import print_configuration

    print_configuration(args.command, config, sources)


def _report(out: str, summary: dict) -> None:
    """The summary on standard output and the run's learning curves beside its metrics."""
    from jdistill.report import plot_run
    from jdistill.train import RunDir

    print(json.dumps(summary, indent=2))
    if RunDir(out).metrics_file.exists():
        print(f"learning curves: {plot_run(out)}", file=sys.stderr)


def cmd_models(args) -> None:
    import jax
    from flax import nnx

    from jdistill.models import MODELS, count_params, create_model, native_input_shape

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
            print(f"{name:14s} {'-':>12}  ({e})")
            continue
        line = f"{name:14s} {count_params(model):>12,}  {'x'.join(map(str, shape))}"
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

    parser = argparse.ArgumentParser(prog="jdistill", description="Knowledge distillation in JAX/Flax.")
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
    p.add_argument("--model", required=True, help="built-in model name (see 'jdistill models')")
    _add_training_options(p)
    p.set_defaults(func=cmd_train_teacher)

    p = sub.add_parser(
        "distill",
        help="train a student from a finished teacher run",
        description="Distil a teacher into a student. The objective is the weighted sum of "
        "the named loss terms of the chosen methods, always including 'ce' "
        "(hard labels; --weight ce=0 removes it).",
    )
    p.add_argument("--teacher", required=True, help="run directory of a finished 'train-teacher' run")
    p.add_argument("--student", required=True, help="built-in model name of the student")
    p.add_argument(
        "--method",
        required=True,
        help=f"methods joined by '+', e.g. kd or kd+fitnet; built-in: {', '.join(METHODS)}",
    )
    p.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="TERM=W",
        help="weight of a loss term, repeatable, e.g. kd=0.9; each method's terms and default weights (the "
        "CIFAR benchmark's) are in the README; an unknown term is an error that lists the run's terms",
    )
    p.add_argument(
        "--method-option",
        action="append",
        default=[],
        metavar="METHOD.FIELD=VALUE",
        help="set a method's option, repeatable: e.g. fitnet.student_layer=stage3, "
        'at.layers=[["conv2","conv2"]] (JSON), crd.num_negatives=4096, dkd.warmup_epochs=5; an unknown '
        "option is an error that lists the method's; 'jdistill models --features' lists the features",
    )
    p.add_argument(
        "--temperature", type=float, default=None, help="softmax temperature T of the kd and dkd terms (4)"
    )
    _add_training_options(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser(
        "models",
        help="list built-in models with their parameter counts",
        description="List every built-in model with its number of trainable parameters.",
    )
    p.add_argument("--num-classes", type=int, default=10, help="number of classes")
    p.add_argument(
        "--input-shape",
        default=None,
        help="input image shape HxWxC for every model (default: 32x32x3 for the CIFAR zoo, 28x28x1 otherwise)",
    )
    p.add_argument("--features", action="store_true", help="also list each model's named features and shapes")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *rest, **options: (
        f"jdistill {args.command}: warning: {message}\n"
    )
    try:
        args.func(args)
    except (ValueError, OSError, FloatingPointError) as e:  # OSError: FileNotFoundError, read-only, ...
        sys.exit(f"jdistill {args.command}: error: {e}")
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        where = f"; the same command resumes from the last checkpoint in {out}" if out else ""
        sys.exit(f"jdistill {args.command}: interrupted{where}")
    finally:
        warnings.formatwarning = formatwarning  # for a caller that imported main

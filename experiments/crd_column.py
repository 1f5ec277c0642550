"""One column of the CRD/RepDistiller CIFAR-100 table: one teacher -> one student, every method.

The teacher trains once (or comes from ``--teacher-dir``); the student then trains alone and with
each method, for several seeds, with the benchmark's recipe (``jdistill.recipes``: 240 epochs,
batch 64, SGD, steps at 150/180/210, crop + flip, the benchmark's loss weights). The table gives
the last-epoch accuracy (the CRD table's convention) and the best-epoch accuracy (DKD's), mean
and spread over seeds, beside the paper's number where the pair is in the paper's table.

    python experiments/crd_column.py --dataset cifar100 --data-dir DIR --teacher-model resnet56 \\
        --student resnet20 --out runs/crd_r56_r20
        # the full column: GPU work (16 methods x 3 seeds x 240 epochs)
    python experiments/crd_column.py --dataset npz \\
        --data-dir ../shared/data/cifar10-subset/cifar10_subset.npz --teacher-model resnet20 \\
        --student resnet8 --methods kd,crd,dkd --epochs 30 --teacher-epochs 60 --out runs/cifar10_subset
        # the CPU sanity table of the README (4,000 CIFAR-10 images): about 90 min on 2 CPU cores
    python experiments/crd_column.py --smoke --out runs/crd_smoke
        # every method for one short epoch on 256 random images (the CI test): about 4 min

Every run is a run directory under ``--out``: re-running the command resumes interrupted runs and
skips finished ones. The paper's numbers (top-1 %, last epoch, mean of runs: the CRD paper and
RepDistiller's README; DKD: mdistiller's README, best epoch) are in ``crd_column.paper.json``,
keyed ``teacher->student``. Writes ``table.md``, ``results.json`` and ``accuracy.png`` to ``--out``.
"""

import argparse
import json
import pathlib

import numpy as np

from jdistill.cli_options import parse_weights
from jdistill.data import Dataset, load_dataset
from jdistill.experiment import Experiment, Run, main, paper_numbers
from jdistill.methods import build_method, default_weights, parse_methods
from jdistill.recipes import crd_benchmark
from jdistill.report import evaluated, markdown_table, mean_std, paired_difference
from jdistill.train import RunConfig, RunDir

ALL_METHODS = ("kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst", "crd",
               "crd+kd", "dkd", "dist")  # fmt: skip
SMOKE = dict(
    dataset="smoke", teacher_model="resnet20", student="resnet8", epochs=1, teacher_epochs=1, batch_size=32
)


def smoke_dataset(n_train: int = 256, n_test: int = 128, num_classes: int = 10) -> Dataset:
    """Random 32x32 colour images whose class shifts the mean of one channel: learnable, tiny."""
    rng = np.random.default_rng(0)

    def split(n):
        y = rng.integers(0, num_classes, n).astype(np.int32)
        x = rng.uniform(0, 1, (n, 32, 32, 3)).astype(np.float32)
        x[..., 0] = np.clip(x[..., 0] * 0.5 + y[:, None, None] / num_classes * 0.5, 0, 1)
        return x, y

    (x_train, y_train), (x_test, y_test) = split(n_train), split(n_test)
    stats = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return Dataset("smoke", x_train, y_train, x_test, y_test, num_classes, mean=stats[0], std=stats[1])


def settings(options) -> argparse.Namespace:
    """The command line's options, with --smoke's pair, epochs, batch and CRD negatives."""
    args = options.args
    if not options.smoke:
        return args
    return argparse.Namespace(**{**vars(args), **SMOKE, "crd_negatives": args.crd_negatives or 64})


def weight_overrides(args) -> dict[str, dict[str, float]]:
    """``--weight TERM=W`` by method spec of ``--methods``: each override goes to the distilled runs
    whose methods have the term (``ce``: every distilled run; never the student alone nor the
    teacher); a term that no spec has is refused in one line."""
    overrides, specs = parse_weights(args.weight), args.methods.split(",")
    terms = {s: set(default_weights([build_method(n) for n in parse_methods(s)])) for s in specs}
    unknown = sorted(set(overrides) - set().union(*terms.values()))
    if unknown:
        raise ValueError(
            f"--weight names term(s) that no method of --methods has: {', '.join(unknown)}; their terms: "
            f"{', '.join(sorted(set().union(*terms.values())))}"
        )
    return {s: {k: w for k, w in overrides.items() if k in terms[s]} for s in specs}


def run_config(
    args, options, model: str, methods: tuple[str, ...], seed: int, teacher=None, epochs=None, weights=None
):
    """A run of the recipe, ``weights`` over the benchmark's; the runner adds --validate's held-out
    fraction."""
    fields = crd_benchmark(
        model,
        methods,
        teacher_model=args.teacher_model if teacher else None,
        epochs=epochs or args.epochs,
        batch_size=args.batch_size,
    )
    fields["weights"] = {**fields["weights"], **(weights or {})}
    if "crd" in methods and args.crd_negatives:
        fields["method_options"]["crd"] = {"num_negatives": args.crd_negatives}
    return RunConfig(
        model=model,
        dataset=args.dataset,
        data_dir=options.data_dir,
        seed=seed,
        teacher=teacher and str(teacher),
        methods=methods,
        **fields,
    )


def runs(options):
    args = settings(options)
    if args.teacher_dir:  # a finished run, read back
        teacher = pathlib.Path(args.teacher_dir).absolute()
        if not (teacher / "summary.json").exists():
            raise ValueError(f"--teacher-dir {teacher} is not a finished run (no summary.json)")
        held_out = RunDir(teacher).config().data.holdout_fraction
        if options.validate and held_out != options.holdout_fraction:
            raise ValueError(
                f"--teacher-dir {teacher} held out {held_out:g} of the training set, --validate "
                f"holds out {options.holdout_fraction:g}: the teacher would have trained on the evaluation "
                "images"
            )
        yield Run(str(teacher), RunDir(teacher).config(), "teacher")
    else:
        teacher = options.out / "teacher"
        epochs = args.teacher_epochs or args.epochs
        yield Run(
            "teacher", run_config(args, options, args.teacher_model, ("ce",), 0, epochs=epochs), "teacher"
        )
    overrides = weight_overrides(args)
    for spec in ["student", *args.methods.split(",")]:
        methods = ("ce",) if spec == "student" else parse_methods(spec)
        for seed in options.seeds:
            config = run_config(
                args,
                options,
                args.student,
                methods,
                seed,
                None if spec == "student" else teacher,
                weights=overrides.get(spec),
            )
            yield Run(f"{spec}/seed{seed}", config, spec)


def accuracies(run_dir: pathlib.Path, options) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"last": evaluated(summary), "best": evaluated(summary, "best_accuracy")}


def paper(options) -> dict | None:
    """The paper's numbers for the pair, less the methods whose weights ``--weight`` changed."""
    args = settings(options)
    if args.dataset != "cifar100" or options.validate:
        return None
    changed = {spec for spec, weights in weight_overrides(args).items() if weights}
    numbers = paper_numbers(__file__).get(f"{args.teacher_model}->{args.student}")
    return numbers and {name: v for name, v in numbers.items() if name not in changed}


def table(results, options) -> str:
    """One row per method: last- and best-epoch accuracy over seeds, each seed's last, and the
    difference to the student alone paired by seed (a seed's runs share the student's
    initialisation and data order), beside the paper's number where the pair is in its table."""
    args, ref = settings(options), paper(options) or {}
    alone = {r["seed"]: r["last"] for r in results.get("student", [])}
    rows = []
    for name, runs in results.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        last = [r["last"] for r in runs]
        per_seed = " / ".join(f"{100 * v:.1f}" for v in last) if len(runs) > 1 else ""
        gain = (
            ""
            if name in ("teacher", "student")
            else paired_difference({r["seed"]: r["last"] for r in runs}, alone)
        )
        diff = f"{100 * np.mean(last) - ref[name]:+.2f}" if name in ref else ""
        minutes = np.mean([r["train_seconds"] for r in runs]) / 60
        best = mean_std([r["best"] for r in runs])
        rows.append(
            [name, mean_std(last), per_seed, best, gain, len(runs), ref.get(name, ""), diff, f"{minutes:.1f}"]
        )
    headers = [
        "method",
        "last epoch %",
        "per seed (last)",
        "best epoch %",
        "minus the student alone (points, paired by seed)",
        "seeds",
        "paper %",
        "last - paper",
        "train min / run",
    ]
    where = (
        f"accuracy on {options.holdout_fraction:g} of the training set held out"
        if options.validate
        else "test accuracy"
    )
    changed = "; ".join(
        f"{spec}: " + ", ".join(f"{term} {w:g}" for term, w in weights.items())
        for spec, weights in weight_overrides(args).items()
        if weights
    )
    return (
        f"{args.teacher_model} -> {args.student} on {args.dataset}; student {args.epochs} epochs, batch "
        f"{args.batch_size} (crd recipe scaled to the epochs"
        + (f"; weights changed by --weight: {changed}" if changed else "")
        + f"); last epoch and best epoch {where}, mean +- std over seeds. Paper: CRD table (last epoch) "
        "except DKD (mdistiller, best epoch).\n\n" + markdown_table(headers, rows)
    )


def plots(results, options) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, ref = list(results), paper(options)
    means = [100 * np.mean([r["last"] for r in results[n]]) for n in names]
    stds = [100 * np.std([r["last"] for r in results[n]]) for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 4))
    ax.bar(names, means, yerr=stds, capsize=3, label="measured (last epoch)")
    if ref:
        xs = [i for i, n in enumerate(names) if n in ref]
        ax.scatter(xs, [ref[names[i]] for i in xs], color="black", marker="_", s=300, label="paper", zorder=3)
    ax.set_ylim(max(0, min(means) - 10), min(100, max(means) + 5))
    ax.set_ylabel(f"{'held-out' if options.validate else 'test'} accuracy (%)")
    ax.tick_params(axis="x", rotation=45)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(options.out / "accuracy.png", dpi=120)
    plt.close(fig)


def add_options(parser) -> None:
    parser.add_argument("--dataset", default="cifar100", help="cifar100, cifar10 or npz")
    parser.add_argument("--teacher-model", default="resnet56")
    parser.add_argument("--student", default="resnet20")
    parser.add_argument("--teacher-dir", help="a finished teacher run to use instead of training one")
    parser.add_argument("--methods", default=",".join(ALL_METHODS), help="comma-separated; '+' joins methods")
    parser.add_argument("--epochs", type=int, default=240, help="student epochs; the recipe scales with them")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="default: --epochs")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="the learning rate scales with it (x batch/64)"
    )
    parser.add_argument("--crd-negatives", type=int, default=None, help="CRD negatives (default 16384)")
    parser.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="TERM=W",
        help="a term's weight instead of the benchmark's, in the distilled runs whose methods have the "
        "term (e.g. dkd_nckd=2); repeatable",
    )


EXPERIMENT = Experiment(
    doc=__doc__,
    dataset=None,  # --dataset chooses it, or --smoke's random images: see data
    data=lambda _, options: (
        smoke_dataset() if options.smoke else load_dataset(options.args.dataset, options.data_dir)
    ),
    runs=runs,
    table=table,
    plots=plots,
    add_options=add_options,
    measure=accuracies,
    smoke={k: SMOKE[k] for k in ("epochs", "batch_size")},  # what settings sets: the runner changes nothing
    smoke_examples=(256, 128),  # smoke_dataset's
    holdout_fraction=0.2,
)

if __name__ == "__main__":
    main(EXPERIMENT)

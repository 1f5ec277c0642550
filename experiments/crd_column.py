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
skips finished ones. Writes ``table.md``, ``results.json`` and ``accuracy.png`` to ``--out``.
"""

import argparse
import json
import pathlib
import time

import numpy as np

from jdistill.data import Dataset, load_dataset
from jdistill.methods import parse_methods
from jdistill.recipes import crd_benchmark
from jdistill.report import evaluated, markdown_table, mean_std
from jdistill.train import RunConfig, RunDir, fit

ALL_METHODS = ("kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst", "crd", "crd+kd",
               "dkd", "dist")  # fmt: skip
# Top-1 % on CIFAR-100, last epoch, mean of runs (CRD paper / RepDistiller README; DKD: mdistiller
# README, best epoch). Keys: (teacher, student).
PAPER = {
    ("wrn_40_2", "wrn_16_2"): dict(
        teacher=75.61,
        student=73.26,
        kd=74.92,
        fitnet=73.58,
        at=74.08,
        sp=73.83,
        cc=73.56,
        vid=74.11,
        rkd=73.35,
        pkt=74.54,
        ab=72.50,
        ft=73.25,
        fsp=72.91,
        nst=73.68,
        crd=75.48,
        **{"crd+kd": 75.64},
        dkd=76.23,
    ),
    ("wrn_40_2", "wrn_40_1"): dict(
        teacher=75.61,
        student=71.98,
        kd=73.54,
        fitnet=72.24,
        at=72.77,
        sp=72.43,
        cc=72.21,
        vid=73.30,
        rkd=72.22,
        pkt=73.45,
        ab=72.38,
        ft=71.59,
        nst=72.24,
        crd=74.14,
        **{"crd+kd": 74.38},
        dkd=74.81,
    ),
    ("resnet56", "resnet20"): dict(
        teacher=72.34,
        student=69.06,
        kd=70.66,
        fitnet=69.21,
        at=70.55,
        sp=69.67,
        cc=69.63,
        vid=70.38,
        rkd=69.61,
        pkt=70.34,
        ab=69.47,
        ft=69.84,
        fsp=69.95,
        nst=69.60,
        crd=71.16,
        **{"crd+kd": 71.63},
        dkd=71.97,
    ),
    ("resnet110", "resnet20"): dict(
        teacher=74.31,
        student=69.06,
        kd=70.67,
        fitnet=68.99,
        at=70.22,
        sp=70.04,
        cc=69.48,
        vid=70.16,
        rkd=69.25,
        pkt=70.25,
        ab=69.53,
        ft=70.22,
        fsp=70.11,
        nst=69.53,
        crd=71.46,
        **{"crd+kd": 71.56},
    ),
    ("resnet110", "resnet32"): dict(
        teacher=74.31,
        student=71.14,
        kd=73.08,
        fitnet=71.06,
        at=72.31,
        sp=72.69,
        cc=71.48,
        vid=72.61,
        rkd=71.82,
        pkt=72.61,
        ab=70.98,
        ft=72.37,
        fsp=71.89,
        nst=71.96,
        crd=73.48,
        **{"crd+kd": 73.75},
        dkd=74.11,
    ),
    ("resnet32x4", "resnet8x4"): dict(
        teacher=79.42,
        student=72.50,
        kd=73.33,
        fitnet=73.50,
        at=73.44,
        sp=72.94,
        cc=72.97,
        vid=73.09,
        rkd=71.90,
        pkt=73.64,
        ab=73.17,
        ft=72.86,
        fsp=72.62,
        nst=73.30,
        crd=75.51,
        **{"crd+kd": 75.46},
        dkd=76.32,
    ),
    ("vgg13", "vgg8"): dict(
        teacher=74.64,
        student=70.36,
        kd=72.98,
        fitnet=71.02,
        at=71.43,
        sp=72.68,
        cc=70.71,
        vid=71.23,
        rkd=71.48,
        pkt=72.88,
        ab=70.94,
        ft=70.58,
        fsp=70.23,
        nst=71.53,
        crd=73.94,
        **{"crd+kd": 74.29},
        dkd=74.68,
    ),
}


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


def run_config(
    args, model: str, methods: tuple[str, ...], seed: int, teacher_dir=None, epochs=None
) -> RunConfig:
    fields = crd_benchmark(
        model,
        methods,
        teacher_model=args.teacher_model if teacher_dir else None,
        epochs=epochs or args.epochs,
        batch_size=args.batch_size,
    )
    if "crd" in methods and args.crd_negatives:
        fields["method_options"]["crd"] = {"num_negatives": args.crd_negatives}
    return RunConfig(
        model=model,
        dataset=args.dataset,
        data_dir=args.data_dir,
        seed=seed,
        teacher=None if teacher_dir is None else str(pathlib.Path(teacher_dir).absolute()),
        methods=methods,
        checkpoint_every=args.checkpoint_every,
        holdout_fraction=args.holdout if args.validate else 0.0,
        **fields,
    )


def accuracies(run_dir: pathlib.Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "last": evaluated(summary),
        "best": evaluated(summary, "best_accuracy"),
        "seconds": summary["train_seconds"],
    }


def render(results: dict, paper: dict | None, args) -> str:
    headers = [
        "method",
        "last epoch %",
        "best epoch %",
        "seeds",
        "paper %",
        "last - paper",
        "train min / run",
    ]
    rows = []
    for name, runs in results.items():
        last = [r["last"] for r in runs]
        best = [r["best"] for r in runs]
        ref = (paper or {}).get(name)
        diff = f"{100 * np.mean(last) - ref:+.2f}" if ref is not None else ""
        minutes = np.mean([r["seconds"] for r in runs]) / 60
        rows.append(
            [
                name,
                mean_std(last),
                mean_std(best),
                len(runs),
                ref if ref is not None else "",
                diff,
                f"{minutes:.1f}",
            ]
        )
    where = f"accuracy on {args.holdout:g} of the training set held out" if args.validate else "test accuracy"
    setting = (
        f"{args.teacher_model} -> {args.student} on {args.dataset}; student {args.epochs} epochs, batch "
        f"{args.batch_size} (crd recipe scaled to the epochs); last epoch and best epoch "
        f"{where}, "
        f"mean +- std over seeds. Paper: CRD table (last epoch) except DKD (mdistiller, best epoch)."
    )
    return setting + "\n\n" + markdown_table(headers, rows)


def plot(results: dict, paper: dict | None, path: pathlib.Path, evaluated_on: str = "test") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    means = [100 * np.mean([r["last"] for r in results[n]]) for n in names]
    stds = [100 * np.std([r["last"] for r in results[n]]) for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 4))
    ax.bar(names, means, yerr=stds, capsize=3, label="measured (last epoch)")
    if paper:
        xs = [i for i, n in enumerate(names) if n in paper]
        ax.scatter(
            xs, [paper[names[i]] for i in xs], color="black", marker="_", s=300, label="paper", zorder=3
        )
    ax.set_ylim(max(0, min(means) - 10), min(100, max(means) + 5))
    ax.set_ylabel(f"{evaluated_on} accuracy (%)")
    ax.tick_params(axis="x", rotation=45)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cifar100", help="cifar100, cifar10 or npz")
    parser.add_argument("--data-dir", default=None, help="see 'jdistill train-teacher --help'")
    parser.add_argument("--teacher-model", default="resnet56")
    parser.add_argument("--student", default="resnet20")
    parser.add_argument(
        "--teacher-dir", default=None, help="a finished teacher run to use instead of training one"
    )
    parser.add_argument("--methods", default=",".join(ALL_METHODS), help="comma-separated; '+' joins methods")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=240, help="student epochs; the recipe scales with them")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="default: --epochs")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="the learning rate scales with it (x batch/64)"
    )
    parser.add_argument("--crd-negatives", type=int, default=None, help="CRD negatives (default 16384)")
    parser.add_argument("--checkpoint-every", type=int, default=1)
    parser.add_argument(
        "--validate", action="store_true", help="train without --holdout of the training set, evaluate on it"
    )
    parser.add_argument("--holdout", type=float, default=0.2, help="fraction held out by --validate")
    parser.add_argument(
        "--smoke", action="store_true", help="random 32x32 data, resnet20 -> resnet8, 1 epoch"
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()

    dataset = None
    if args.smoke:
        dataset = smoke_dataset()
        args.dataset, args.teacher_model, args.student = "smoke", "resnet20", "resnet8"
        args.epochs, args.teacher_epochs, args.seeds, args.batch_size = 1, 1, 1, 32
        args.crd_negatives = args.crd_negatives or 64
    else:
        dataset = load_dataset(args.dataset, args.data_dir)
    out = pathlib.Path(args.out)
    started = time.perf_counter()

    def run(config: RunConfig, name: str) -> dict:
        # fit skips a finished run of the same configuration and refuses a different one.
        fit(config, out / name, dataset=dataset, progress=not args.quiet, label=name)
        return accuracies(out / name)

    teacher_dir = pathlib.Path(args.teacher_dir) if args.teacher_dir else out / "teacher"
    if args.teacher_dir and args.validate:
        held_out = RunDir(teacher_dir).config_record()["config"].get("holdout_fraction", 0.0)
        if held_out != args.holdout:
            parser.error(
                f"--teacher-dir {teacher_dir} held out {held_out:g} of the training set, --validate "
                f"holds out {args.holdout:g}: the teacher would have trained on the evaluation images"
            )
    teacher_epochs = args.teacher_epochs or args.epochs
    results = {}
    if args.teacher_dir:
        results["teacher"] = [accuracies(teacher_dir)]
    else:
        results["teacher"] = [
            run(run_config(args, args.teacher_model, ("ce",), 0, epochs=teacher_epochs), "teacher")
        ]
    results["student"] = [
        run(run_config(args, args.student, ("ce",), seed), f"student/seed{seed}")
        for seed in range(args.seeds)
    ]
    for spec in args.methods.split(","):
        methods = parse_methods(spec)
        results[spec] = [
            run(run_config(args, args.student, methods, seed, teacher_dir), f"{spec}/seed{seed}")
            for seed in range(args.seeds)
        ]

    paper = (
        PAPER.get((args.teacher_model, args.student))
        if args.dataset == "cifar100" and not args.validate
        else None
    )
    table = render(results, paper, args)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, paper, out / "accuracy.png", "held-out" if args.validate else "test")
    print(table)
    print(f"Wrote {out}/table.md, results.json, accuracy.png ({time.perf_counter() - started:.0f} s).")


if __name__ == "__main__":
    main()

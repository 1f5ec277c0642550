"""Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network", section 3: MNIST.

A teacher 784-1200-1200-10 (ReLU, dropout 0.2 on the input and 0.5 on the hidden layers, max-norm
weights, input jitter of up to 2 pixels) is trained once; a student 784-800-800-10 without any
regularisation then trains (a) on the hard labels alone and (b) on hard labels plus the teacher's
soft targets at T = 20, each over several seeds; a temperature sweep and the paper's "omitted 3s"
experiment (every 3 removed from the transfer set, then the bias of class 3 raised) follow.
Errors are counts out of the 10,000 test images.

    python experiments/hinton_mnist.py --data-dir ../shared/data/mnist --out runs/hinton_mnist
        # the whole table: teacher 600 epochs, students 80; measured 95.3 min of training on 2 CPU
        # cores shared with other work, about 72 min idle (README: "Hinton et al. 2015 on MNIST")
    python experiments/hinton_mnist.py --data-dir ../shared/data/mnist --out runs/hinton_long --schedule long
        # the paper's teacher recipe (Hinton et al. 2012, HINTON_2012 below), 3,000 epochs; students
        # 200 (not run here: an estimated 4 hours of teacher on 2 CPU cores)
    python experiments/hinton_mnist.py --data-dir ../shared/data/mnist --out runs/hinton_val --validate
        # every run (teacher included) trains without 10,000 training images and is evaluated on
        # them: for choosing hyperparameters without the test set

Without ``--data-dir`` MNIST comes through tensorflow-datasets. Every run is a run directory
under ``--out``: re-running the command resumes an interrupted run from its last checkpoint and
skips finished ones. Writes ``table.md``, ``results.json``, ``temperature.png`` and
``learning_curves.png`` to ``--out``.
"""

import argparse
import dataclasses
import json
import pathlib

import jax
import numpy as np

from jdistill.data import load_dataset
from jdistill.presets import HINTON_2012 as HINTON_2012_PRESET
from jdistill.report import evaluated, markdown_table
from jdistill.train import RunConfig, RunDir, fit, load_teacher, teacher_forward

PAPER = {"teacher": 67, "alone": 146, "kd": 74, "omitted": 206, "omitted_threes": 133, "shifted": 109}
THREE = 3
HOLDOUT = 1 / 6  # of the 60,000 training images: 10,000 for --validate


@dataclasses.dataclass(frozen=True)
class Schedule:
    teacher_epochs: int
    student_epochs: int
    kd_warmup_epochs: int = 0  # linear warm-up of the distilled students' learning rate
    clip_norm: float | None = 1.0  # global gradient-norm clipping of the distilled students
    eval_every: int = 10  # epochs between evaluations
    teacher_recipe: tuple = ()  # RunConfig fields of the teacher that differ from the default recipe


# Hinton et al. 2012's recipe, as far as its appendix A establishes it: the preset hinton2012
# (jdistill.presets, where its lr of 1 instead of the paper's 10 is explained).
HINTON_2012 = tuple(HINTON_2012_PRESET.items())

SCHEDULES = {
    "smoke": Schedule(teacher_epochs=2, student_epochs=1, eval_every=1),  # for tests of the pipeline
    "default": Schedule(teacher_epochs=600, student_epochs=80),
    "long": Schedule(teacher_epochs=3000, student_epochs=200, eval_every=50, teacher_recipe=HINTON_2012),
}


def held_out_options(data_dir: str | None, teacher_epochs: int) -> argparse.Namespace:
    """This script's options with the table's recipe and ``--validate``: for studies that train
    every run without the 10,000 held-out images (hinton_transfer.py, hinton_student_recipe.py)."""
    return argparse.Namespace(
        data_dir=data_dir,
        validate=True,
        teacher_epochs=teacher_epochs,
        student_lr=0.1,
        kd_lr=0.1,
        hard_weight=0.1,
        kd_warmup_epochs=None,
        clip_norm=None,
        transfer_jitter=0,
    )


def teacher_config(args, schedule: Schedule) -> RunConfig:
    default = RunConfig(
        model="mlp1200",
        dataset="mnist",
        data_dir=args.data_dir,
        epochs=args.teacher_epochs or schedule.teacher_epochs,
        learning_rate=0.1,
        max_shift=2,
        max_norm=4.0,
        holdout_fraction=HOLDOUT if args.validate else 0.0,
        eval_every=schedule.eval_every,
    )
    return default.replace(**dict(schedule.teacher_recipe))


def student_config(args, schedule: Schedule, seed: int) -> RunConfig:
    return RunConfig(
        model="mlp800",
        dataset="mnist",
        data_dir=args.data_dir,
        epochs=schedule.student_epochs,
        seed=seed,
        learning_rate=args.student_lr,
        holdout_fraction=HOLDOUT if args.validate else 0.0,
        eval_every=schedule.eval_every,
    )


def distilled_config(args, schedule: Schedule, teacher_dir, seed: int, temperature: float) -> RunConfig:
    return student_config(args, schedule, seed).replace(
        teacher=str(pathlib.Path(teacher_dir).absolute()),
        methods=("ce", "kd"),
        weights={"ce": args.hard_weight, "kd": 1.0 - args.hard_weight},
        temperature=temperature,
        learning_rate=args.kd_lr,
        warmup_epochs=schedule.kd_warmup_epochs if args.kd_warmup_epochs is None else args.kd_warmup_epochs,
        clip_norm=schedule.clip_norm if args.clip_norm is None else (args.clip_norm or None),
        max_shift=args.transfer_jitter,
    )


def errors(summary: dict, num_test: int) -> int:
    return round((1.0 - evaluated(summary)) * num_test)


def predict_logits(run_dir, dataset, *image_sets: np.ndarray, batch: int = 1000) -> list[np.ndarray]:
    """Logits of the finished run ``run_dir`` (loaded once) on each of ``image_sets``, in inference mode."""
    model = load_teacher(str(run_dir), dataset)
    forward = jax.jit(lambda x: teacher_forward(model.graphdef, model.variables, x)[0])
    return [
        np.concatenate([np.asarray(forward(images[i : i + batch])) for i in range(0, len(images), batch)])
        for images in image_sets
    ]


def bias_shift_study(run_dir, dataset, x_test, y_test) -> dict:
    """Errors of a student that never saw a 3, before and after adding ``shift`` to its class-3
    logit (which is adding it to the class-3 bias). The shift is chosen on the full training set
    (whose 3s the student never saw), never on the test set."""
    shifts = np.arange(0.0, 10.01, 0.25)

    def count_errors(logits, labels, shift):
        shifted = logits.copy()
        shifted[:, THREE] += shift
        wrong = shifted.argmax(-1) != labels
        return int(wrong.sum()), int(wrong[labels == THREE].sum())

    train_logits, test_logits = predict_logits(run_dir, dataset, dataset.x_train, x_test)
    shift = float(shifts[np.argmin([count_errors(train_logits, dataset.y_train, s)[0] for s in shifts])])
    before, before_threes = count_errors(test_logits, y_test, 0.0)
    after, after_threes = count_errors(test_logits, y_test, shift)
    return {
        "errors": before,
        "errors_on_threes": before_threes,
        "bias_shift": shift,
        "errors_after_shift": after,
        "errors_on_threes_after_shift": after_threes,
    }


def spread(values) -> str:
    values = np.asarray(values, np.float64)
    return f"{values.mean():.1f} +- {values.std():.1f}" if len(values) > 1 else f"{values[0]:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="MNIST IDX files; default: tensorflow-datasets")
    parser.add_argument("--out", default="runs/hinton_mnist")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="default")
    parser.add_argument(
        "--validate", action="store_true", help="evaluate students on 10k held-out training images"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds of each student row")
    parser.add_argument(
        "--sweep-seeds",
        type=int,
        default=1,
        help="seeds of each other temperature of the sweep (0: no sweep)",
    )
    parser.add_argument("--temperatures", default="1,2,4,8,20", help="the sweep (20 is the table's row)")
    parser.add_argument("--student-lr", type=float, default=0.1, help="learning rate of the student alone")
    parser.add_argument(
        "--kd-lr",
        type=float,
        default=0.1,
        help="learning rate of the distilled student, reached after the warm-up",
    )
    parser.add_argument(
        "--kd-warmup-epochs",
        type=int,
        default=None,
        help="override the schedule's linear warm-up of the distilled students' learning rate (none)",
    )
    parser.add_argument(
        "--clip-norm",
        type=float,
        default=None,
        help="override the schedule's global gradient-norm clipping of the distilled students "
        "(1.0; without clipping or a warm-up lr 0.1 diverges at T = 20; 0: no clipping)",
    )
    parser.add_argument(
        "--hard-weight",
        type=float,
        default=0.1,
        help="weight of the hard-label term; soft targets get 1 - it",
    )
    parser.add_argument(
        "--transfer-jitter",
        type=int,
        default=0,
        help="translate the distilled students' transfer images by up to this many pixels (the "
        "teacher's soft targets then come from the translated image)",
    )
    parser.add_argument("--teacher-epochs", type=int, default=None, help="override the schedule's")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    schedule = SCHEDULES[args.schedule]
    temperatures = [float(t) for t in args.temperatures.split(",")]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    dataset = load_dataset("mnist", args.data_dir)
    evaluation = dataset.holdout(HOLDOUT) if args.validate else dataset
    num_test = len(evaluation.y_test)

    def run(config: RunConfig, name: str) -> dict:
        return fit(config, out / name, dataset=dataset, progress=not args.quiet, label=name)

    teacher_dir = out / "teacher"
    teacher = run(teacher_config(args, schedule), "teacher")

    alone = [run(student_config(args, schedule, s), f"alone/seed{s}") for s in range(args.seeds)]
    sweep = {}
    for t in sorted(set(temperatures) | {20.0}):
        seeds = args.seeds if t == 20.0 else args.sweep_seeds
        if seeds == 0:
            continue
        sweep[t] = [
            run(distilled_config(args, schedule, teacher_dir, s, t), f"kd_T{t:g}/seed{s}")
            for s in range(seeds)
        ]
    omitted_dirs = [f"kd_T20_no3/seed{s}" for s in range(args.seeds)]
    for s, name in enumerate(omitted_dirs):
        run(
            distilled_config(args, schedule, teacher_dir, s, 20.0).replace(exclude_classes=(THREE,)),
            name,
        )
    omitted = [
        bias_shift_study(out / name, dataset, evaluation.x_test, evaluation.y_test) for name in omitted_dirs
    ]

    results = {
        "schedule": dataclasses.asdict(schedule),
        "validate": args.validate,
        "evaluated_on": f"{num_test} {'held-out training' if args.validate else 'test'} images",
        "teacher": errors(teacher, num_test),
        "alone": [errors(r, num_test) for r in alone],
        "kd_by_temperature": {f"{t:g}": [errors(r, num_test) for r in rs] for t, rs in sweep.items()},
        "omitted_threes": omitted,
        "train_seconds": round(
            sum(json.loads(p.read_text())["train_seconds"] for p in out.glob("**/summary.json")), 1
        ),
    }
    kd = results["kd_by_temperature"]["20"]
    gap = np.mean(results["alone"]) - results["teacher"]  # None below: the student alone is as good
    results["gap_closed"] = float((np.mean(results["alone"]) - np.mean(kd)) / gap) if gap > 0 else None
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (out / "table.md").write_text(table)
    plot_temperature(results, out / "temperature.png")
    plot_curves(out, args.seeds, num_test, out / "learning_curves.png")
    print(table)


def render(results: dict) -> str:
    def diff(value, paper):
        return f"{value - paper:+.1f}"

    alone, kd = results["alone"], results["kd_by_temperature"]["20"]
    rows = [
        [
            "teacher 784-1200-1200-10 (dropout, max-norm, jitter)",
            results["teacher"],
            1,
            PAPER["teacher"],
            diff(results["teacher"], PAPER["teacher"]),
        ],
        [
            "student 784-800-800-10, hard labels only",
            spread(alone),
            len(alone),
            PAPER["alone"],
            diff(np.mean(alone), PAPER["alone"]),
        ],
        [
            "student 784-800-800-10, soft targets T = 20",
            spread(kd),
            len(kd),
            PAPER["kd"],
            diff(np.mean(kd), PAPER["kd"]),
        ],
    ]
    text = f"Test errors out of {results['evaluated_on']} (mean +- std over seeds).\n\n"
    text += markdown_table(["net", "errors", "seeds", "paper", "difference"], rows)
    if results["gap_closed"] is not None:
        text += (
            f"\nGap between the student alone and the teacher closed by distillation: "
            f"{100 * results['gap_closed']:.0f} % (paper: 91 %).\n"
        )
    text += "\nTemperature sweep (soft targets + hard labels):\n\n"
    text += markdown_table(
        ["T", "errors", "seeds"],
        [[t, spread(v), len(v)] for t, v in results["kd_by_temperature"].items()],
    )
    om = results["omitted_threes"]
    mean = lambda key: spread([o[key] for o in om])
    text += "\nOmitted 3s: the student distils at T = 20 from a transfer set with no 3 in it.\n\n"
    text += markdown_table(
        ["", "errors", "errors on test 3s", "paper"],
        [
            [
                "as trained",
                mean("errors"),
                mean("errors_on_threes"),
                f"{PAPER['omitted']} ({PAPER['omitted_threes']} on 3s)",
            ],
            [
                f"class-3 bias + {mean('bias_shift')} (chosen on the training set)",
                mean("errors_after_shift"),
                mean("errors_on_threes_after_shift"),
                f"{PAPER['shifted']} (bias + 3.5)",
            ],
        ],
    )
    return text + f"\nTraining time of all runs: {results['train_seconds'] / 60:.1f} min.\n"


def plot_temperature(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temps = sorted(results["kd_by_temperature"], key=float)
    values = [np.asarray(results["kd_by_temperature"][t], np.float64) for t in temps]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.errorbar(
        [float(t) for t in temps],
        [v.mean() for v in values],
        yerr=[v.std() for v in values],
        marker="o",
        capsize=3,
        label="student, soft targets + hard labels",
    )
    ax.axhline(np.mean(results["alone"]), color="tab:red", ls="--", label="student, hard labels only")
    ax.axhline(results["teacher"], color="k", ls="--", label="teacher")
    ax.set_xscale("log")
    ax.set_xticks([float(t) for t in temps], temps)
    ax.set_xlabel("temperature T")
    ax.set_ylabel(f"errors out of {results['evaluated_on']}")
    ax.set_title("Hinton et al. 2015 on MNIST: test errors against temperature")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(out: pathlib.Path, seeds: int, num_test: int, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {
        "teacher": ["teacher"],
        "student, hard labels only": [f"alone/seed{s}" for s in range(seeds)],
        "student, soft targets T = 20": [f"kd_T20/seed{s}" for s in range(seeds)],
    }
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, names in groups.items():
        curves = [
            [m for m in RunDir(out / n).metrics() if {"test/accuracy", "val/accuracy"} & set(m)]
            for n in names
        ]
        epochs = [m["epoch"] for m in curves[0]]
        errs = np.array([[(1 - evaluated(m)) * num_test for m in c] for c in curves])
        ax.plot(epochs, errs.mean(0), label=f"{label} (n={len(names)})")
        ax.fill_between(epochs, errs.min(0), errs.max(0), alpha=0.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test errors")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()

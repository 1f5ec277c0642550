"""Data-free adversarial distillation on MNIST: LeNet-5 teacher -> LeNet-5-half student.

The teacher trains on real MNIST; then the student learns from it (a) on real data, as the
baselines of the papers' table (hard labels alone; KD on the original data), and (b) data-free,
from a generator that never sees a real image: DFAD (Fang et al. 2019), DAFL (Chen et al. 2019)
and ZSKT (Micaelli & Storkey 2019). The real test set scores every student.

    python experiments/data_free_mnist.py --data-dir ../shared/data/mnist --out runs/data_free_cpu
        # --config cpu: 28x28 images, generator width 16, batch 256 (see CONFIGS); with
        # --methods dfad (teacher, baselines, one DFAD run) 38 minutes on 2 CPU cores, measured
    python experiments/data_free_mnist.py --data-dir ../shared/data/mnist --out runs/data_free_paper \\
        --config paper --seeds 0 1 2
        # the papers' sizes (32x32, width 64, batch 512, DFAD 2,000 iterations, DAFL 24,000):
        # GPU work, over 15 minutes on one H100 (two 10-minute calls did not finish every run)

Every run is a run directory under ``--out``; re-running resumes unfinished runs and skips
finished ones. Writes ``table.md`` (beside the papers' numbers), ``results.json``,
``accuracy.png`` (test accuracy of the data-free students against iterations) and, per
data-free run, ``samples/iter_*.png`` grids and ``class_histogram.png``.
"""

import argparse
import dataclasses
import json
import pathlib
import time

import numpy as np

from jdistill.adversarial.data_free import DataFreeConfig, teacher_dataset
from jdistill.data import load_dataset
from jdistill.report import markdown_table, mean_std, plot_learning_curves
from jdistill.train import RunConfig, RunDir, fit

# ../shared/reference/paper-tables.md: LeNet-5 -> LeNet-5-half on MNIST.
PAPER = {
    "teacher": "98.9 (DFAD 0.989; DAFL 98.91)",
    "student": "98.65 (DAFL)",
    "kd": "98.8 (DFAD) / 98.91 (DAFL)",
    "dfad": "98.3 +- 0.2 (DFAD)",
    "dafl": "98.20 (DAFL) / 98.1 (by DFAD)",
    "zskt": "n/a (no MNIST result)",
}


@dataclasses.dataclass(frozen=True)
class Setting:
    image_size: int
    teacher_epochs: int
    student_epochs: int
    data_free: dict  # method -> DataFreeConfig fields


CONFIGS = {
    # The papers' sizes: images resized to 32x32, generator width 64, batch 512; DFAD 40 x 50
    # iterations of 5 student steps; DAFL 200 x 120 iterations of one step each; ZSKT (no MNIST
    # recipe in its paper) 2,000 iterations of 1 generator + 10 student steps, cosine schedules.
    "paper": Setting(
        image_size=32,
        teacher_epochs=10,
        student_epochs=10,
        data_free={
            "dfad": {"batch_size": 512, "generator_width": 64, "iterations": 2000},
            "dafl": {
                "batch_size": 512,
                "generator_width": 64,
                "iterations": 24000,
                "iterations_per_epoch": 120,
                "checkpoint_every": 10,
            },
            "zskt": {
                "batch_size": 512,
                "generator_width": 64,
                "iterations": 2000,
                "student_schedule": "cosine",
                "generator_schedule": "cosine",
                "grad_clip": 5.0,
            },
        },
    ),
    # What fits a 2-core CPU: native 28x28 images, a generator 4x narrower, half the batch.
    "cpu": Setting(
        image_size=28,
        teacher_epochs=6,
        student_epochs=6,
        data_free={
            "dfad": {"batch_size": 256, "generator_width": 16, "iterations": 2000},
            "dafl": {"batch_size": 256, "generator_width": 16, "iterations": 3000},
            "zskt": {
                "batch_size": 256,
                "generator_width": 16,
                "iterations": 300,
                "student_schedule": "cosine",
                "generator_schedule": "cosine",
                "grad_clip": 5.0,
            },
        },
    ),
    # For tests of the pipeline: a few iterations of everything.
    "smoke": Setting(
        image_size=28,
        teacher_epochs=1,
        student_epochs=1,
        data_free={
            m: {
                "batch_size": 32,
                "generator_width": 4,
                "iterations": 4,
                "iterations_per_epoch": 2,
                "samples_every": 2,
                "histogram_samples": 64,
            }
            for m in ("dfad", "dafl", "zskt")
        },
    ),
}


def real_data_config(args, setting: Setting, model: str, methods=("ce",), teacher=None, seed=0) -> RunConfig:
    """Teacher and real-data baselines: Adam 2e-3, cosine, batch 128."""
    return RunConfig(
        model=model,
        dataset="mnist",
        data_dir=args.data_dir,
        epochs=setting.teacher_epochs if teacher is None else setting.student_epochs,
        seed=seed,
        optimizer="adam",
        learning_rate=2e-3,
        batch_size=128,
        teacher=teacher,
        methods=methods,
        temperature=4.0,
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=None, help="MNIST IDX files (default: tensorflow-datasets)")
    parser.add_argument("--out", required=True, help="directory of the runs and the table")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    parser.add_argument(
        "--methods", nargs="+", choices=("dfad", "dafl", "zskt"), default=["dfad", "dafl", "zskt"]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the data-free students")
    parser.add_argument(
        "--iterations", type=int, default=None, help="override every data-free run's iterations"
    )
    parser.add_argument(
        "--generator-width", type=int, default=None, help="override every data-free run's generator width"
    )
    parser.add_argument(
        "--student-schedule",
        choices=("constant", "cosine"),
        default=None,
        help="override every data-free run's student learning-rate schedule",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    setting = CONFIGS[args.config]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    started = time.perf_counter()

    dataset = teacher_dataset(load_dataset("mnist", args.data_dir), setting.image_size)
    if args.config == "smoke":
        dataset = dataset.first(512, 256)
    results = {}

    def real(name, config):
        summary = fit(config, out / name, dataset=dataset, progress=progress, label=name)
        results[name] = {"accuracy": summary["test/accuracy"], "seconds": summary["train_seconds"]}

    real("teacher", real_data_config(args, setting, "lenet5"))
    real("student", real_data_config(args, setting, "lenet5_half", seed=0))
    real("kd", real_data_config(args, setting, "lenet5_half", ("ce", "kd"), teacher=str(out / "teacher")))

    for method in args.methods:
        fields = dict(setting.data_free[method])
        if args.iterations:
            fields["iterations"] = args.iterations
        if args.generator_width:
            fields["generator_width"] = args.generator_width
        if args.student_schedule:
            fields["student_schedule"] = args.student_schedule
        for seed in args.seeds:
            config = DataFreeConfig(
                teacher_dir=str(out / "teacher"),
                method=method,
                data_dir=args.data_dir,
                image_size=setting.image_size,
                seed=seed,
                **fields,
            )
            fit(config, out / f"{method}_seed{seed}", dataset=dataset, progress=progress)
    # The table shows every finished data-free run in --out, from this command or an earlier one.
    for method in ("dfad", "dafl", "zskt"):
        finished = sorted(d for d in out.glob(f"{method}_seed*") if (d / "summary.json").exists())
        if finished:
            results[method] = [
                {
                    "dir": str(d),
                    **RunDir(d).summary(),
                    "config": json.loads((d / "config.json").read_text())["config"],
                }
                for d in finished
            ]

    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_table(out, args, setting, results)
    groups = {m.upper(): [r["dir"] for r in results[m]] for m in ("dfad", "dafl", "zskt") if m in results}
    plot_learning_curves(groups, out / "accuracy.png", title="data-free students (LeNet-5-half), MNIST test")
    print((out / "table.md").read_text())


def write_table(out: pathlib.Path, args, setting: Setting, results: dict) -> None:
    rows = [
        ["teacher LeNet-5 (real data)", f"{100 * results['teacher']['accuracy']:.2f}", PAPER["teacher"],
         f"{results['teacher']['seconds']:.0f}"],
        ["student LeNet-5-half, real data, hard labels", f"{100 * results['student']['accuracy']:.2f}",
         PAPER["student"], f"{results['student']['seconds']:.0f}"],
        ["KD on the real data (T = 4)", f"{100 * results['kd']['accuracy']:.2f}", PAPER["kd"],
         f"{results['kd']['seconds']:.0f}"],
    ]  # fmt: skip
    for method in ("dfad", "dafl", "zskt"):
        if method not in results:
            continue
        runs = results[method]
        c = runs[0]["config"]
        what = (
            f"{method.upper()} data-free: {c['iterations']} it. x {c['student_steps']} student steps, "
            f"batch {c['batch_size']}, generator width {c['generator_width']}, {c['image_size']}x{c['image_size']}, "
            f"student lr {c['student_lr']} {c['student_schedule']}"
        )
        accuracy = mean_std([r["test/accuracy"] for r in runs])
        entropy = np.mean([r["generated/class_entropy"] for r in runs])
        rows.append([f"{what} (n={len(runs)}; class entropy {entropy:.2f})", accuracy, PAPER[method],
                     f"{np.mean([r['train_seconds'] for r in runs]):.0f}"])  # fmt: skip
    text = (
        f"# Data-free distillation on MNIST, LeNet-5 -> LeNet-5-half (--config {args.config})\n\n"
        "Test accuracy (%) on the 10,000 real test images, final iteration; mean +- std over seeds.\n"
        "Class entropy: entropy of the teacher's predicted classes on generated samples, over log 10 "
        "(1 = balanced).\n\n"
        + markdown_table(["student", "accuracy (%)", "paper", "train seconds"], rows)
        + f"\nWhole experiment: {results['wall_seconds'] / 60:.1f} min wall.\n"
    )
    (out / "table.md").write_text(text)


if __name__ == "__main__":
    main()

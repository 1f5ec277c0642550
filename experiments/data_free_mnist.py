"""Data-free adversarial distillation on MNIST: LeNet-5 teacher -> LeNet-5-half student.

Each method's teacher trains on real MNIST with its reference code's recipe
(:func:`jdistill.adversarial.data_free.paper_teacher`: DFAD's SGD 0.01, 10 epochs, also used for
ZSKT, which has no MNIST teacher; DAFL's Adam 1e-3, 9 epochs; batch 256, constant rate, PyTorch's
initialisation). Then the student learns from it (a) on real data, as the baselines of the papers'
table (hard labels alone; KD on the original data, from the first method's teacher), and (b)
data-free, from a generator that never sees a real image: DFAD (Fang et al. 2019), DAFL (Chen et
al. 2019) and ZSKT (Micaelli & Storkey 2019), student and generator initialised as PyTorch does
(``--init flax``: Flax's defaults). The real test set scores every student.

    python experiments/data_free_mnist.py --data-dir ../shared/data/mnist --out runs/data_free_dfad_cpu \\
        --config cpu --methods dfad --seeds 0 1 2
        # the CPU-sized DFAD configuration: 32x32, batch 256, generator width 16, 2,000 iterations,
        # evaluated every 20. Measured on 2 idle CPU cores: teacher 29 s, 0.47 s per iteration, so
        # 16 min per seed (seed 0: 98.30 % at the last iteration, 97.7 % by iteration 400)
    python experiments/data_free_mnist.py --data-dir ../shared/data/mnist --out runs/data_free_paper \\
        --config paper --seeds 0 1 2
        # the papers' sizes (width 64, batch 512, DFAD 2,000 iterations, DAFL 24,000): GPU work

Every run is a run directory under ``--out``; re-running resumes unfinished runs and skips
finished ones. Writes ``table.md`` (beside the papers' numbers, and each data-free method's test
accuracy by iteration), ``results.json`` (with every data-free run's accuracy curve),
``accuracy.png`` (test accuracy of the data-free students against iterations) and, per data-free
run, ``samples/iter_*.png`` grids and ``class_histogram.png``.
"""

import argparse
import dataclasses
import json
import pathlib
import time

import numpy as np

from jdistill.adversarial.data_free import DATA_FREE_METHODS, DataFreeConfig, paper_teacher, teacher_dataset
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
    student_epochs: int  # the real-data baselines'
    data_free: dict  # method -> DataFreeConfig fields
    teacher_epochs: int | None = None  # None: the reference recipe's


CONFIGS = {
    # The papers' sizes: images resized to 32x32, generator width 64, batch 512; DFAD 40 x 50
    # iterations of 5 student steps; DAFL 200 x 120 iterations of one step each; ZSKT (no MNIST
    # recipe in its paper) 2,000 iterations of 1 generator + 10 student steps, cosine schedules.
    "paper": Setting(
        image_size=32,
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
    # What fits a 2-core CPU: a generator 4x narrower, half the batch; DFAD evaluated every 20
    # iterations, to see its early progress.
    "cpu": Setting(
        image_size=32,
        student_epochs=6,
        data_free={
            "dfad": {
                "batch_size": 256,
                "generator_width": 16,
                "iterations": 2000,
                "iterations_per_epoch": 20,
                "checkpoint_every": 5,
            },
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
        image_size=32,
        student_epochs=1,
        teacher_epochs=1,
        data_free={
            m: {
                "batch_size": 32,
                "generator_width": 4,
                "iterations": 4,
                "iterations_per_epoch": 2,
                "samples_every": 2,
                "histogram_samples": 64,
            }
            for m in DATA_FREE_METHODS
        },
    ),
}


def teacher_config(args, setting: Setting, method: str) -> RunConfig:
    """``method``'s teacher: its reference recipe (the setting may shorten it)."""
    epochs = {"epochs": setting.teacher_epochs} if setting.teacher_epochs else {}
    return paper_teacher(method, data_dir=args.data_dir, **epochs)


def real_data_config(args, setting: Setting, methods=("ce",), teacher=None) -> RunConfig:
    """The real-data baselines (LeNet-5-half): Adam 2e-3, cosine, batch 128."""
    return RunConfig(
        model="lenet5_half",
        dataset="mnist",
        data_dir=args.data_dir,
        epochs=setting.student_epochs,
        optimizer="adam",
        learning_rate=2e-3,
        batch_size=128,
        teacher=teacher,
        methods=methods,
        temperature=4.0,
    )


def curve(run_dir) -> list[list]:
    """``[iteration, test accuracy]`` of every evaluation of a data-free run."""
    return [[m["step"], m["test/accuracy"]] for m in RunDir(run_dir).metrics() if "test/accuracy" in m]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=None, help="MNIST IDX files (default: tensorflow-datasets)")
    parser.add_argument("--out", required=True, help="directory of the runs and the table")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    parser.add_argument("--methods", nargs="+", choices=DATA_FREE_METHODS, default=list(DATA_FREE_METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the data-free students")
    parser.add_argument(
        "--init",
        choices=("torch", "flax"),
        default="torch",
        help="initialisation of the data-free students and generators (the teachers': PyTorch's)",
    )
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
    results = {"teachers": {}}

    def real(name, config):
        summary = fit(config, out / name, dataset=dataset, progress=progress, label=name)
        return {"accuracy": summary["test/accuracy"], "seconds": summary["train_seconds"]}

    # One teacher per recipe: methods whose recipes agree (DFAD, ZSKT) share it.
    teachers, names = {}, {}
    for method in args.methods:
        config = teacher_config(args, setting, method)
        name = teachers[method] = names.setdefault(config.to_json(), f"teacher_{method}")
        if name not in results["teachers"]:
            results["teachers"][name] = {**real(name, config), "recipe": describe(config), "methods": []}
        results["teachers"][name]["methods"].append(method)
    first_teacher = str(out / teachers[args.methods[0]])
    results["student"] = real("student", real_data_config(args, setting))
    results["kd"] = real("kd", real_data_config(args, setting, ("ce", "kd"), teacher=first_teacher))

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
                teacher_dir=str(out / teachers[method]),
                method=method,
                data_dir=args.data_dir,
                image_size=setting.image_size,
                init=args.init,
                seed=seed,
                **fields,
            )
            fit(config, out / f"{method}_seed{seed}", dataset=dataset, progress=progress)
    # The table shows every finished data-free run in --out, from this command or an earlier one.
    for method in DATA_FREE_METHODS:
        finished = sorted(d for d in out.glob(f"{method}_seed*") if (d / "summary.json").exists())
        if finished:
            results[method] = [
                {
                    "dir": str(d),
                    **RunDir(d).summary(),
                    "config": json.loads((d / "config.json").read_text())["config"],
                    "curve": curve(d),
                }
                for d in finished
            ]

    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_table(out, args, results)
    groups = {m.upper(): [r["dir"] for r in results[m]] for m in DATA_FREE_METHODS if m in results}
    plot_learning_curves(groups, out / "accuracy.png", title="data-free students (LeNet-5-half), MNIST test")
    print((out / "table.md").read_text())


def describe(config: RunConfig) -> str:
    """A teacher's recipe in a few words."""
    optimizer = "Adam" if config.optimizer == "adam" else f"SGD momentum {config.momentum}"
    decay = f", weight decay {config.weight_decay:g}" if config.weight_decay else ""
    return (
        f"{optimizer} {config.learning_rate:g}{decay}, batch {config.batch_size}, {config.schedule}, "
        f"{config.epochs} epochs, {config.init} init"
    )


def curve_table(runs: list[dict], rows: int = 20) -> str:
    """Test accuracy (%) of each seed and their mean +- std at (at most ``rows``) evaluations."""
    iterations = [i for i, _ in runs[0]["curve"]]
    every = max(1, len(iterations) // rows)
    shown = sorted({*iterations[every - 1 :: every], iterations[-1]})
    accuracy = [dict(map(tuple, r["curve"])) for r in runs]
    lines = [[i, *(f"{100 * a[i]:.2f}" for a in accuracy), mean_std([a[i] for a in accuracy])] for i in shown]
    seeds = [f"seed {r['config']['seed']}" for r in runs]
    return markdown_table(["iteration", *seeds, "mean +- std"], lines)


def write_table(out: pathlib.Path, args, results: dict) -> None:
    rows = [
        [f"teacher LeNet-5 for {', '.join(m.upper() for m in t['methods'])} ({t['recipe']})",
         f"{100 * t['accuracy']:.2f}", PAPER["teacher"], f"{t['seconds']:.0f}"]
        for t in results["teachers"].values()
    ] + [
        ["student LeNet-5-half, real data, hard labels", f"{100 * results['student']['accuracy']:.2f}",
         PAPER["student"], f"{results['student']['seconds']:.0f}"],
        ["KD on the real data (T = 4)", f"{100 * results['kd']['accuracy']:.2f}", PAPER["kd"],
         f"{results['kd']['seconds']:.0f}"],
    ]  # fmt: skip
    curves = ""
    for method in DATA_FREE_METHODS:
        if method not in results:
            continue
        runs = results[method]
        c = runs[0]["config"]
        what = (
            f"{method.upper()} data-free: {c['iterations']} it. x {c['student_steps']} student steps, "
            f"batch {c['batch_size']}, generator width {c['generator_width']}, "
            f"{c['image_size']}x{c['image_size']}, "
            f"student lr {c['student_lr']} {c['student_schedule']}, {c.get('init', 'flax')} init"
        )
        # Runs of jdistill before these statistics were logged show nan.
        final = {k: np.mean([r.get(f"generated/{k}", np.nan) for r in runs])
                 for k in ("class_entropy", "teacher_abs_logit", "max_abs_pixel")}  # fmt: skip
        generated = (f"class entropy {final['class_entropy']:.2f}, teacher |logit| "
                     f"{final['teacher_abs_logit']:.2f}, max |pixel| "
                     f"{final['max_abs_pixel']:.2f}")  # fmt: skip
        accuracy = mean_std([r["test/accuracy"] for r in runs])
        rows.append([f"{what} (n={len(runs)}; {generated})", accuracy, PAPER[method],
                     f"{np.mean([r['train_seconds'] for r in runs]):.0f}"])  # fmt: skip
        curves += f"\n## {method.upper()}: test accuracy (%) by iteration\n\n" + curve_table(runs)
    text = (
        f"# Data-free distillation on MNIST, LeNet-5 -> LeNet-5-half (--config {args.config})\n\n"
        "Test accuracy (%) on the 10,000 real test images, final iteration; mean +- std over seeds.\n"
        "On generated samples at the end (mean over seeds): class entropy of the teacher's predictions "
        "over log 10 (1 = balanced), the teacher's mean |logit|, the largest |pixel| (standardised; "
        "real MNIST: at most 2.82).\n\n"
        + markdown_table(["student", "accuracy (%)", "paper", "train seconds"], rows)
        + curves
        + f"\nWhole experiment: {results['wall_seconds'] / 60:.1f} min wall.\n"
    )
    (out / "table.md").write_text(text)


if __name__ == "__main__":
    main()

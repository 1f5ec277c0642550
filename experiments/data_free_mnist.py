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
        # 16 min per seed (seed 0: 98.30 % at the last iteration, 97.7 % by iteration 400);
        # --methods dfad dafl zskt adds DAFL (3,000 iterations, 16-18 min per seed; 92.26 +- 3.62 %)
        # (with its own teacher) and ZSKT (300 iterations, under 2 min per seed; 97.30 +- 0.26 %);
        # DAFL seed 0 given 6,000 iterations collapsed into one class by iteration 2,500 (README)
    python experiments/data_free_mnist.py --data-dir ../shared/data/mnist --out runs/data_free_paper \\
        --config paper --seeds 0 1 2
        # the papers' sizes (width 64, batch 512, DFAD 2,000 iterations, DAFL 24,000): GPU work
    python experiments/data_free_mnist.py --data-dir DIR --out DIR --smoke   # the pipeline in seconds

``--seeds 0 1 2`` names the data-free students' seeds; a single value N means seeds 0..N-1 (before
the experiment runner, it named one seed). Runs ``teacher_dfad`` (one per teacher recipe: DFAD and
ZSKT share it), ``student``, ``kd``, ``dfad_seed0``, ...; re-running resumes unfinished runs and
reads back finished ones. Writes ``table.md`` (beside the papers' numbers, and each data-free
method's test accuracy by iteration), ``results.json`` (with every data-free run's configuration and
accuracy curve), ``accuracy.png`` (test accuracy of the data-free students against iterations) and,
per data-free run, ``samples/iter_*.png`` grids and ``class_histogram.png``.
"""

import argparse
import dataclasses
import sys

import numpy as np

from jdistill.adversarial.data_free import DATA_FREE_METHODS, DataFreeConfig, paper_teacher, teacher_dataset
from jdistill.adversarial.inspection import COLLAPSED, collapse_iteration
from jdistill.experiment import Experiment, Run, deprecated_option, main, paper_numbers
from jdistill.report import markdown_table, mean_std, plot_learning_curves
from jdistill.train import RunConfig, RunDir

PAPER = paper_numbers(__file__)  # ../shared/reference/paper-tables.md: LeNet-5 -> LeNet-5-half on MNIST


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
                "student_clip_norm": 5.0,
                "generator_clip_norm": 5.0,
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
                "student_clip_norm": 5.0,
                "generator_clip_norm": 5.0,
            },
        },
    ),
    # --smoke: a few iterations of everything (on 512 training and 256 test images).
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


class ConfigChoice(argparse.Action):
    """``--config cpu|paper``; ``--config smoke`` (before the runner) is ``--smoke``, with a warning."""

    def __call__(self, parser, namespace, value, option_string=None):
        if value == "smoke":
            print(f"{parser.prog}: warning: --config smoke is deprecated; use --smoke", file=sys.stderr)
            namespace.smoke, value = True, "cpu"
        namespace.config = value


def add_options(parser):
    parser.add_argument("--config", choices=("cpu", "paper", "smoke"), default="cpu", action=ConfigChoice)
    parser.add_argument("--methods", nargs="+", choices=DATA_FREE_METHODS, default=list(DATA_FREE_METHODS))
    parser.add_argument(
        "--init",
        choices=("torch", "flax"),
        default="torch",
        help="initialisation of the data-free students and generators (the teachers': PyTorch's)",
    )
    parser.add_argument("--iterations", type=int, help="override every data-free run's iterations")
    parser.add_argument("--teachers-only", action="store_true",
                        help="train the teachers and the real-data baselines, no data-free run "
                             "(data_free_gpu.sh trains them once for all its processes)")  # fmt: skip
    parser.add_argument("--restarts", type=int, default=0,
                        help="on a generator's collapse into one class, go back to the run's last checkpoint "
                             "with new noise, at most this many times per run (the DAFL authors' remedy; "
                             "default 0: the collapse is only named)")  # fmt: skip
    parser.add_argument("--generator-width", type=int, help="override every data-free run's generator width")
    parser.add_argument("--student-schedule", choices=("constant", "cosine"),
                        help="override every data-free run's student learning-rate schedule")  # fmt: skip
    parser.add_argument("--student-ema", type=float, metavar="DECAY",
                        help="keep the debiased moving average of every data-free student's parameters "
                             "with this decay (e.g. 0.999) and report its test accuracy beside the "
                             "student's own; training is unchanged")  # fmt: skip
    deprecated_option(parser, "--no-progress", "--quiet", quiet=True)


def setting(options) -> Setting:
    return CONFIGS["smoke" if options.smoke else options.args.config]


def teachers(options) -> dict[str, tuple[RunConfig, list[str]]]:
    """Teacher run name -> its reference recipe (the setting may shorten it) and the methods it
    teaches: methods whose recipes agree (DFAD, ZSKT) share one."""
    epochs = setting(options).teacher_epochs
    names, teacher = {}, {}
    for method in options.args.methods:
        config = paper_teacher(method, data_dir=options.data_dir, **({"epochs": epochs} if epochs else {}))
        name = names.setdefault(config.to_json(), f"teacher_{method}")
        teacher.setdefault(name, (config, []))[1].append(method)
    return teacher


def runs(options):
    a, s, teacher = options.args, setting(options), teachers(options)
    for name, (config, _) in teacher.items():
        yield Run(name, config, name)
    # The real-data baselines (LeNet-5-half): Adam 2e-3, cosine, batch 128; KD from the first teacher.
    real = RunConfig(model="lenet5_half", dataset="mnist", data_dir=options.data_dir, epochs=s.student_epochs,
                     optimizer="adam", learning_rate=2e-3, batch_size=128, temperature=4.0)  # fmt: skip
    yield Run("student", real, "student")
    kd_teacher = str(options.out / next(iter(teacher)))
    yield Run("kd", real.replace(teacher=kd_teacher, methods=("ce", "kd")), "kd")
    if a.teachers_only:
        return
    given = {k: getattr(a, k) for k in ("iterations", "generator_width", "student_schedule")}
    given["student_ema_decay"] = a.student_ema
    teacher_of = {method: name for name, (_, methods) in teacher.items() for method in methods}
    for method in a.methods:
        fields = {**s.data_free[method], **{k: v for k, v in given.items() if v}}
        for seed in options.seeds:
            config = DataFreeConfig(str(options.out / teacher_of[method]), method, data_dir=options.data_dir,
                                    image_size=s.image_size, init=a.init, seed=seed,
                                    collapse_restarts=a.restarts, **fields)  # fmt: skip
            yield Run(f"{method}_seed{seed}", config, method)


EMA = "test/ema/accuracy"  # the student's parameter average (--student-ema)


def measure(run_dir, options) -> dict:
    """A data-free run's ``[iteration, test accuracy]`` at every evaluation (``ema_curve``: of its
    student's parameter average, with ``--student-ema``), the iteration by which its generator
    collapsed into one class (None if it never did, or if every collapse was undone by a restart)
    and its restarts: ``[collapsed at, back to]`` iterations."""
    if "_seed" not in run_dir.name:
        return {}
    run = RunDir(run_dir)
    metrics = run.metrics()
    curve = lambda key: [[m["step"], m[key]] for m in metrics if key in m]
    restarts = [[r["step"], r["back_to_step"]] for r in run.restarts()]
    measured = {
        "curve": curve("test/accuracy"),
        "collapsed_at": collapse_iteration(metrics),
        "restarts": restarts,
    }
    if any(EMA in m for m in metrics):
        measured["ema_curve"] = curve(EMA)
    return measured


def describe(config: RunConfig) -> str:
    """A teacher's recipe in a few words."""
    opt = config.optimizer
    optimizer = "Adam" if opt.name == "adam" else f"SGD momentum {opt.momentum}"
    decay = f", weight decay {opt.weight_decay:g}" if opt.weight_decay else ""
    return (
        f"{optimizer} {opt.learning_rate:g}{decay}, batch {config.loop.batch_size}, {opt.schedule}, "
        f"{config.loop.epochs} epochs, {config.model.init} init"
    )


def curve_table(runs: list[dict], rows: int = 20) -> str:
    """Test accuracy (%) of each seed and their mean +- std at (at most ``rows``) evaluations, and
    the mean +- std of the students' parameter averages where they were kept."""
    iterations = [i for i, _ in runs[0]["curve"]]
    every = max(1, len(iterations) // rows)
    shown = sorted({*iterations[every - 1 :: every], iterations[-1]})
    accuracy = [dict(map(tuple, r["curve"])) for r in runs]
    lines = [[i, *(f"{100 * a[i]:.2f}" for a in accuracy), mean_std([a[i] for a in accuracy])] for i in shown]
    header = ["iteration", *(f"seed {r['config']['seed']}" for r in runs), "mean +- std"]
    if all("ema_curve" in r for r in runs):
        averaged = [dict(map(tuple, r["ema_curve"])) for r in runs]
        lines = [[*line, mean_std([a[i] for a in averaged])] for line, i in zip(lines, shown)]
        header.append("parameter average: mean +- std")
    return markdown_table(header, lines)


def table(results, options):
    real = [(f"teacher LeNet-5 for {', '.join(map(str.upper, ms))} ({describe(config)})", name, "teacher")
            for name, (config, ms) in teachers(options).items()]  # fmt: skip
    real += [("student LeNet-5-half, real data, hard labels", "student", "student"),
             ("KD on the real data (T = 4)", "kd", "kd")]  # fmt: skip
    rows = [[what, f"{100 * results[row][0]['test/accuracy']:.2f}", PAPER[paper],
             f"{results[row][0]['train_seconds']:.0f}"] for what, row, paper in real]  # fmt: skip
    curves = ""
    for method in (m for m in DATA_FREE_METHODS if m in results):
        runs = results[method]
        c = runs[0]["config"]
        what = (
            f"{method.upper()} data-free: {c['iterations']} it. x {c['student_steps']} student steps, "
            f"batch {c['batch_size']}, generator width {c['generator_width']}, "
            f"{c['image_size']}x{c['image_size']}, "
            f"student lr {c['student_learning_rate']} {c['student_schedule']}, {c['init']} init"
        )
        # Runs of jdistill before these statistics were logged show nan.
        final = {k: np.mean([r.get(f"generated/{k}", np.nan) for r in runs])
                 for k in ("class_entropy", "teacher_abs_logit", "max_abs_pixel", "tanh_saturation", "tanh_std")}  # fmt: skip
        generated = (f"class entropy {final['class_entropy']:.2f}, teacher |logit| "
                     f"{final['teacher_abs_logit']:.2f}, max |pixel| "
                     f"{final['max_abs_pixel']:.2f}, tanh saturated {final['tanh_saturation']:.2f}, "
                     f"tanh spread {final['tanh_std']:.2f}")  # fmt: skip
        collapsed = [f"seed {r['config']['seed']} by iteration {r['collapsed_at']}" for r in runs
                     if r.get("collapsed_at")]  # fmt: skip
        if collapsed:
            generated += f"; collapsed into one class: {', '.join(collapsed)}"
        restarted = [f"seed {r['config']['seed']} at {', '.join(f'{at} (back to {back})' for at, back in r['restarts'])}"
                     for r in runs if r.get("restarts")]  # fmt: skip
        if restarted:
            generated += f"; restarted after a collapse: {'; '.join(restarted)}"
        accuracy = mean_std([r["test/accuracy"] for r in runs])
        rows.append([f"{what} (n={len(runs)}; {generated})", accuracy, PAPER[method],
                     f"{np.mean([r['train_seconds'] for r in runs]):.0f}"])  # fmt: skip
        if all(EMA in r for r in runs):
            decay = c["student_ema_decay"]
            rows.append([f"{method.upper()}: the same students' parameter average (EMA {decay:g}, debiased; "
                         "not the paper's method)", mean_std([r[EMA] for r in runs]), "", ""])  # fmt: skip
        curves += f"\n## {method.upper()}: test accuracy (%) by iteration\n\n" + curve_table(runs)
    return (
        f"# Data-free distillation on MNIST, LeNet-5 -> LeNet-5-half "
        f"({'--smoke' if options.smoke else f'--config {options.args.config}'})\n\n"
        "Test accuracy (%) on the 10,000 real test images, final iteration; mean +- std over seeds.\n"
        "On generated samples at the end (mean over seeds): class entropy of the teacher's predictions "
        "over log 10 (1 = balanced), the teacher's mean |logit|, the largest |pixel| (standardised; "
        f"real MNIST: at most 2.82). A run whose class entropy fell to {COLLAPSED} or less at an epoch's "
        "end is named as collapsed into one class (the DAFL reference code does this on MNIST now and "
        "then); with --restarts, such a run went back to its last checkpoint and played on with new "
        "noise (named with the iteration of the collapse and the one it went back to).\n\n"
        + markdown_table(["student", "accuracy (%)", "paper", "train seconds"], rows)
        + curves
    )


def plots(results, options):
    groups = {
        m.upper(): [options.out / r["run"] for r in results[m]] for m in DATA_FREE_METHODS if m in results
    }
    if groups:  # none with --teachers-only
        title = "data-free students (LeNet-5-half), MNIST test"
        plot_learning_curves(groups, options.out / "accuracy.png", title=title)


def data(dataset, options):
    return teacher_dataset(dataset, setting(options).image_size)


EXPERIMENT = Experiment(__doc__, "mnist", runs, table, plots, add_options, seeds=1, smoke={},
                        smoke_examples=(512, 256), data=data, measure=measure)  # fmt: skip

if __name__ == "__main__":
    main(EXPERIMENT)

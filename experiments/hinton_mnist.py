"""Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network", section 3: MNIST.

A teacher 784-1200-1200-10 (ReLU, dropout 0.2 on the input and 0.5 on the hidden layers, max-norm
weights, input jitter of up to 2 pixels) is trained once; a student 784-800-800-10 without any
regularisation then trains (a) on the hard labels alone and (b) on hard labels plus the teacher's
soft targets at T = 20, each over several seeds; a temperature sweep and the paper's "omitted 3s"
experiment (every 3 removed from the transfer set, then the bias of class 3 raised) follow.
Errors are counts out of the 10,000 test images.

    python experiments/hinton_mnist.py --data-dir ../shared/data/mnist --out runs/hinton_mnist
        # the whole table: teacher 900 epochs of Hinton et al. 2012's recipe compressed in time
        # (hinton_2012_over) at lr 0.5, students 80; teacher 73 test errors, distilled students 92.0
        # over 3 seeds; about 3.9 h of training on 2 slow CPU cores (README: "Hinton et al. 2015 on MNIST");
        # benchmarks/experiment_time.py projects it on a machine before it runs
    python experiments/hinton_mnist.py --data-dir ../shared/data/mnist --out runs/hinton_long --schedule long
        # the paper's teacher recipe (Hinton et al. 2012, the preset hinton2012), 3,000 epochs, at lr 0.5
        # (TEACHER_LR below; --teacher-lr 1: the preset's rate, whose teacher took 4.7 h of training
        # on 2 CPU cores); students 80, as the default's. Measured 2026-12-02: teacher 62 test
        # errors, distilled students 94.7 over 3 seeds (6.9 h of teacher at its median epoch)
    python experiments/hinton_mnist.py --data-dir ../shared/data/mnist --out runs/hinton_val --validate
        # every run (teacher included) trains without 10,000 training images and is evaluated on
        # them: for choosing hyperparameters without the test set

``--schedule smoke`` (teacher 2 epochs, students 1, on all the data) and ``--smoke`` (the runner's:
a few hundred images, one epoch, one seed) test the pipeline. Without ``--data-dir`` MNIST comes
through tensorflow-datasets. Runs ``teacher``, ``alone/seed{s}``, ``kd_T{T}/seed{s}``,
``kd_T20_no3/seed{s}`` (``--no-omitted-threes`` leaves these out, and their table); ``results.json``
keeps every run's summary with its ``errors`` (and the omitted-3s study's numbers); the paper's
numbers are in ``hinton_mnist.paper.json``. Writes ``table.md``, ``results.json``,
``temperature.png`` and ``learning_curves.png`` to ``--out``.
"""

import argparse
import dataclasses
import pathlib

import jax
import numpy as np

from jdistill.experiment import Experiment, Run, main, paper_numbers
from jdistill.presets import HINTON_2012 as HINTON_2012_PRESET
from jdistill.report import evaluated, markdown_table
from jdistill.train import RunConfig, RunDir, load_teacher, teacher_forward

THREE = 3
HOLDOUT = 1 / 6  # of the 60,000 training images: 10,000 for --validate
OMITTED = "kd_T20_no3"
ROWS = {  # the table's: row -> label
    "teacher": "teacher 784-1200-1200-10 (dropout, max-norm, jitter)",
    "alone": "student 784-800-800-10, hard labels only",
    "kd_T20": "student 784-800-800-10, soft targets T = 20",
}


@dataclasses.dataclass(frozen=True)
class Schedule:
    teacher_epochs: int
    student_epochs: int
    kd_warmup_epochs: int = 0  # linear warm-up of the distilled students' learning rate
    clip_norm: float | None = 1.0  # global gradient-norm clipping of the distilled students
    eval_every: int = 10  # epochs between evaluations
    teacher_recipe: tuple = ()  # RunConfig fields of the teacher that differ from the default recipe


# Hinton et al. 2012's recipe, as far as its appendix A establishes it: the preset hinton2012
# (jdistill.presets, where its lr of 1 instead of the paper's 10 is explained). Both schedules train
# their teacher at TEACHER_LR instead.
HINTON_2012_EPOCHS = 3000  # what the recipe's lr decay (x0.998 per epoch) and momentum ramp (500) are set for


# The teacher's rate, chosen on held-out images (--validate): lr 0.5 made better teachers and students
# than the preset's 1 with the recipe compressed to 100, 300 and 900 epochs (README, "The teacher's
# learning rate"); the long schedule takes it too (not compared at 3,000 epochs).
TEACHER_LR = 0.5


def hinton_2012_over(epochs: int, learning_rate: float | None = None) -> tuple:
    """Hinton et al. 2012's recipe compressed in time to ``epochs``: the lr decays by
    0.998^(3000 / epochs) per epoch, so it ends where 3,000 epochs of the recipe end (x0.0025), and
    the momentum rises from 0.5 to 0.99 over 500 * epochs / 3000 epochs (at 3,000: the recipe itself);
    ``learning_rate`` None: the preset's."""
    ratio, recipe = HINTON_2012_EPOCHS / epochs, HINTON_2012_PRESET
    compressed = {"lr_decay": recipe["lr_decay"] ** ratio,
                  "momentum_ramp_epochs": round(recipe["momentum_ramp_epochs"] / ratio)}  # fmt: skip
    rate = {} if learning_rate is None else {"learning_rate": learning_rate}
    return tuple((recipe | compressed | rate).items())


SCHEDULES = {
    "smoke": Schedule(teacher_epochs=2, student_epochs=1, eval_every=1),  # for tests of the pipeline
    "default": Schedule(
        teacher_epochs=900, student_epochs=80, teacher_recipe=hinton_2012_over(900, TEACHER_LR)
    ),
    "long": Schedule(  # its students are the default's: converged by epoch 30-80 on held-out images (README)
        teacher_epochs=HINTON_2012_EPOCHS,
        student_epochs=80,
        eval_every=50,
        teacher_recipe=hinton_2012_over(HINTON_2012_EPOCHS, TEACHER_LR),
    ),
}


# fmt: off
def teacher_config(data_dir, schedule: Schedule, epochs: int | None = None,
                   lr: float | None = None) -> RunConfig:
    """The table's teacher; ``epochs``, ``lr`` None: the schedule's."""
    default = RunConfig(model="mlp1200", dataset="mnist", data_dir=data_dir, learning_rate=0.1, max_shift=2,
                        epochs=epochs or schedule.teacher_epochs, max_norm=4.0,
                        eval_every=schedule.eval_every)
    return default.replace(**dict(schedule.teacher_recipe) | ({} if lr is None else {"learning_rate": lr}))


def student_config(data_dir, schedule: Schedule, seed: int, lr: float = 0.1) -> RunConfig:
    return RunConfig(model="mlp800", dataset="mnist", data_dir=data_dir, epochs=schedule.student_epochs,
                     seed=seed, learning_rate=lr, eval_every=schedule.eval_every)


def distilled_config(data_dir, schedule: Schedule, teacher_dir, seed: int, temperature: float, *,
                     hard_weight=0.1, lr=0.1, warmup_epochs=None, clip_norm=None, jitter=0) -> RunConfig:
    """The table's distilled student; ``warmup_epochs``, ``clip_norm`` None: the schedule's (clip 0: none)."""
    return student_config(data_dir, schedule, seed).replace(
        teacher=str(pathlib.Path(teacher_dir).absolute()), methods=("ce", "kd"), temperature=temperature,
        weights={"ce": hard_weight, "kd": 1.0 - hard_weight}, learning_rate=lr, max_shift=jitter,
        warmup_epochs=schedule.kd_warmup_epochs if warmup_epochs is None else warmup_epochs,
        clip_norm=schedule.clip_norm if clip_norm is None else (clip_norm or None))
# fmt: on


def runs(options):
    a, data_dir, teacher = options.args, options.data_dir, options.out / "teacher"
    schedule = SCHEDULES[a.schedule]
    kd = dict(hard_weight=a.hard_weight, lr=a.kd_lr, warmup_epochs=a.kd_warmup_epochs, clip_norm=a.clip_norm,
              jitter=a.transfer_jitter)  # fmt: skip
    yield Run("teacher", teacher_config(data_dir, schedule, a.teacher_epochs, a.teacher_lr), "teacher")
    for s in options.seeds:
        yield Run(f"alone/seed{s}", student_config(data_dir, schedule, s, a.student_lr), "alone")
    for t in sorted(set(a.temperatures) | {20.0}):  # the other temperatures: --sweep-seeds seeds
        for s in options.seeds if t == 20.0 else range(a.sweep_seeds)[: 1 if options.smoke else None]:
            config = distilled_config(data_dir, schedule, teacher, s, t, **kd)
            yield Run(f"kd_T{t:g}/seed{s}", config, f"kd_T{t:g}")
    for s in options.seeds if a.omitted_threes else ():
        config = distilled_config(data_dir, schedule, teacher, s, 20.0, **kd)
        yield Run(f"{OMITTED}/seed{s}", config.replace(exclude_classes=(THREE,)), OMITTED)


def predict_logits(run_dir, dataset, *image_sets: np.ndarray, batch: int = 1000) -> list[np.ndarray]:
    """Logits of the finished run ``run_dir`` (loaded once) on each of ``image_sets``, in inference mode."""
    model = load_teacher(str(run_dir), dataset)
    forward = jax.jit(lambda x: teacher_forward(model.graphdef, model.variables, x)[0])
    return [
        np.concatenate([np.asarray(forward(images[i : i + batch])) for i in range(0, len(images), batch)])
        for images in image_sets
    ]


def forward(run_dir, dataset, images: np.ndarray) -> tuple[np.ndarray, dict]:
    """Logits and features (``hidden{i}``, ...) of the finished run ``run_dir`` on ``images``, in inference mode."""
    model = load_teacher(str(run_dir), dataset)
    logits, features = jax.jit(lambda x: teacher_forward(model.graphdef, model.variables, x))(images)
    return np.asarray(logits), features


def dead_units(features: dict) -> dict[str, float]:
    """Per hidden layer, the share of its units never active on the images ``features`` came from: a
    ReLU whose input is negative for every image gets no gradient."""
    return {name: float((np.asarray(h).max(0) <= 0).mean()) for name, h in features.items()
            if name.startswith("hidden")}  # fmt: skip


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
    (before, on_threes), (after, after_on_threes) = [count_errors(test_logits, y_test, s) for s in (0, shift)]
    return {"errors": before, "errors_on_threes": on_threes, "bias_shift": shift,
            "errors_after_shift": after, "errors_on_threes_after_shift": after_on_threes}  # fmt: skip


def evaluation(run_dir, options):
    """The images ``run_dir`` is evaluated on: its held-out part of the training set, or the test set."""
    holdout = RunDir(run_dir).config().data.holdout_fraction
    return options.dataset.holdout(holdout) if holdout else options.dataset


def measure(run_dir, options) -> dict:
    """A run's errors (a count); the omitted-3s students' bias-shift study."""
    data = evaluation(run_dir, options)
    measured = {"errors": round((1.0 - evaluated(RunDir(run_dir).summary())) * len(data.y_test))}
    if run_dir.parent.name == OMITTED:
        measured |= bias_shift_study(run_dir, options.dataset, data.x_test, data.y_test)
    return measured


def spread(values) -> str:
    values = np.asarray(values, np.float64)
    return f"{values.mean():.1f} +- {values.std():.1f}" if len(values) > 1 else f"{values[0]:.0f}"


def numbers(results, options):
    """Errors by row and the sweep's by temperature, what they are out of, the gap closed (None: the student
    alone is as good as the teacher)."""
    errors = {row: [s["errors"] for s in summaries] for row, summaries in results.items()}
    sweep = {row[4:]: e for row, e in errors.items() if row.startswith("kd_T") and row != OMITTED}
    count = len(evaluation(options.out / "teacher", options).y_test)
    out_of = f"{count} {'held-out training' if options.validate else 'test'} images"
    gap = np.mean(errors["alone"]) - errors["teacher"][0]
    closed = float((np.mean(errors["alone"]) - np.mean(errors["kd_T20"])) / gap) if gap > 0 else None
    return errors, sweep, count, out_of, closed


def table(results, options) -> str:
    paper, (errors, sweep, _, out_of, closed) = paper_numbers(__file__), numbers(results, options)
    # --validate: the paper's counts (test errors of nets trained on 10,000 more images) do not compare
    columns = 4 if options.validate else 6
    rows = [[label, spread(e), " / ".join(map(str, e)), len(e), paper[row], f"{np.mean(e) - paper[row]:+.1f}"]
            [:columns] for row, label in ROWS.items() for e in [errors[row]]]  # fmt: skip
    caveat = "; not comparable with the paper's test errors" if options.validate else ""
    text = f"Errors out of {out_of} (mean +- std over seeds){caveat}.\n\n"
    text += markdown_table(["net", "errors", "per seed", "seeds", "paper", "difference"][:columns], rows)
    if closed is not None:
        text += ("\nGap between the student alone and the teacher closed by distillation: "
                 f"{100 * closed:.0f} % (paper, test set: {paper['gap_closed_percent']} %).\n")  # fmt: skip
    text += "\nTemperature sweep (soft targets + hard labels):\n\n"
    text += markdown_table(["T", "errors", "seeds"], [[t, spread(v), len(v)] for t, v in sweep.items()])
    if OMITTED in results:
        text += omitted_threes_table(results[OMITTED], paper[OMITTED])
    seconds = sum(s["train_seconds"] for summaries in results.values() for s in summaries)
    return text + f"\nTraining time of all runs: {seconds / 60:.1f} min.\n"


def omitted_threes_table(studies, ref) -> str:
    """The omitted-3s students' errors before and after the class-3 bias shift, beside the paper's ``ref``."""

    def mean(key):
        return spread([study[key] for study in studies])

    text = "\nOmitted 3s: the student distils at T = 20 from a transfer set with no 3 in it.\n\n"
    text += markdown_table(["", "errors", "errors on test 3s", "paper"], [
        ["as trained", mean("errors"), mean("errors_on_threes"),
         f"{ref['errors']} ({ref['errors_on_threes']} on 3s)"],
        [f"class-3 bias + {mean('bias_shift')} (chosen on the training set)", mean("errors_after_shift"),
         mean("errors_on_threes_after_shift"), f"{ref['errors_after_shift']} (bias + {ref['bias_shift']})"]],
    )  # fmt: skip
    return text


def plots(results, options) -> None:
    """``temperature.png`` (errors against T) and ``learning_curves.png`` (the table's three rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    errors, sweep, count, out_of, _ = numbers(results, options)
    temps, values = [float(t) for t in sweep], [np.asarray(v, np.float64) for v in sweep.values()]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.errorbar(temps, [v.mean() for v in values], yerr=[v.std() for v in values], marker="o", capsize=3,
                label="student, soft targets + hard labels")  # fmt: skip
    ax.axhline(np.mean(errors["alone"]), color="tab:red", ls="--", label="student, hard labels only")
    ax.axhline(errors["teacher"][0], color="k", ls="--", label="teacher")
    ax.set(xscale="log", xlabel="temperature T", ylabel=f"errors out of {out_of}",
           title="Hinton et al. 2015 on MNIST: test errors against temperature")  # fmt: skip
    ax.set_xticks(temps, list(sweep))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(options.out / "temperature.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row, label in ROWS.items():
        logs = [RunDir(options.out / s["run"]).metrics() for s in results[row]]
        curves = [[m for m in metrics if {"test/accuracy", "val/accuracy"} & set(m)] for metrics in logs]
        epochs = [m["epoch"] for m in curves[0]]
        errs = np.array([[(1 - evaluated(m)) * count for m in c] for c in curves])
        ax.plot(epochs, errs.mean(0), label=f"{label.split(' (')[0]} (n={len(curves)})")
        ax.fill_between(epochs, errs.min(0), errs.max(0), alpha=0.2)
    ax.set(xscale="log", yscale="log", xlabel="epoch", ylabel=f"errors out of {out_of}",
           title="Hinton et al. 2015 on MNIST: errors along training")  # fmt: skip
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 7.0)))  # labelled ticks
    ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(options.out / "learning_curves.png", dpi=120)
    plt.close(fig)


def temperatures(text: str) -> list[float]:
    return [float(t) for t in text.split(",")]


# fmt: off
def add_options(parser) -> None:
    add = parser.add_argument
    add("--schedule", choices=sorted(SCHEDULES), default="default", help="epochs (smoke: 2 and 1)")
    add("--sweep-seeds", type=int, default=1, help="seeds of each other temperature in the sweep (0: none)")
    add("--temperatures", type=temperatures, default="1,2,4,8,20", help="the sweep (20 is the table's row)")
    add("--student-lr", type=float, default=0.1, help="learning rate of the student alone")
    add("--kd-lr", type=float, default=0.1, help="learning rate of the distilled student, after the warm-up")
    add("--kd-warmup-epochs", type=int, default=None,
        help="override the schedule's linear warm-up of the distilled students' learning rate (none)")
    add("--clip-norm", type=float, default=None, help="override the schedule's global gradient-norm "
        "clipping of the distilled students (1.0; without clipping or a warm-up lr 0.1 diverges at T = 20; "
        "0: none)")
    add("--hard-weight", type=float, default=0.1, help="weight of the hard-label term; soft targets: 1 - it")
    add("--transfer-jitter", type=int, default=0, help="translate the distilled students' transfer images "
        "by up to this many pixels (the teacher's soft targets then come from the translated image)")
    add("--teacher-epochs", type=int, default=None, help="override the schedule's")
    add("--teacher-lr", type=float, default=None, help="override the teacher recipe's learning rate (0.5; "
        "1: the hinton2012 preset's and the earlier tables'; README: 'The teacher's learning rate')")
    add("--omitted-threes", action=argparse.BooleanOptionalAction, default=True,
        help="the omitted-3s students and their table (--no-omitted-threes: the main table alone)")


EXPERIMENT = Experiment(doc=__doc__, dataset="mnist", runs=runs, table=table, plots=plots, measure=measure,
                        add_options=add_options, holdout_fraction=HOLDOUT, default_out="runs/hinton_mnist")
# fmt: on

if __name__ == "__main__":
    main(EXPERIMENT)

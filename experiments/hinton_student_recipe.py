"""Held-out study of the distilled student's recipe in Hinton et al. 2015's MNIST table (section 3).

Asks whether the distilled 800-800 student misses the paper (122 test errors against 74) because
of how it is trained: temperature, the hard-label weight, soft targets alone, learning rate,
clipping, batch size, Adam, PyTorch's initialisation. Every student trains without 10,000 training
images (``hinton_mnist.py --validate``'s split) and is evaluated on them; nothing looks at the test
set. With ``--teacher-dir`` the students distil from a finished teacher run (``hinton_mnist.py``'s
``teacher``); if that teacher trained on the held-out images the table says so, and its numbers
rank recipes only (a student that copied such a teacher exactly would make the teacher's training
errors). Without it a held-out teacher of ``--teacher-epochs`` is trained first.

    python experiments/hinton_student_recipe.py --data-dir ../shared/data/mnist \\
        --teacher-dir runs/hinton_mnist/teacher --out runs/hinton_student_recipe
        # every arm: 27 students of 30 epochs (the first 16 arms' 18 took 12 min of training on 2 CPU cores)

    python experiments/hinton_student_recipe.py --data-dir ../shared/data/mnist \\
        --teacher-dir runs/teacher100/lr0.5_flax --out runs/student_gap \\
        --arms base,alone,T8,wide,dropout,teacher_net,sgd2012,jitter,epochs120
        # why the students stay above their teacher (README), from hinton_teacher_rate.py's held-out
        # 100-epoch teacher at lr 0.5: 10 students, 27 min on 2 CPU cores

Every student is also measured against the teacher on the held-out images (``disagreements``, and
``teacher_right_student_wrong`` of them) and for its hidden units never active on 2,000 training images
(``dead``). Runs ``{arm}/seed{s}``: ``base`` and ``hard05`` over ``--seeds`` seeds (2), the other arms over the first.
Writes ``table.md`` and ``results.json`` (each student's summary with its held-out ``errors``) to ``--out``.
"""

import dataclasses
import pathlib
import runpy
from types import SimpleNamespace

from jdistill.experiment import Experiment, Run, main
from jdistill.report import markdown_table, mean_std
from jdistill.train import RunDir

hinton = SimpleNamespace(**runpy.run_path(str(pathlib.Path(__file__).with_name("hinton_mnist.py"))))

# name: (description, changes to the table's recipe (or a function of the students' epochs giving them),
# over every seed or the first); "alone...": no teacher
ARMS = {
    "alone": ("alone (hard labels)", {}, False),
    "alone_torch_init": ("alone, PyTorch init", {"init": "torch"}, False),
    "base": ("KD: the table's recipe (0.1 CE + 0.9 T^2 KL, T = 20, lr 0.1, clip 1)", {}, True),
    "soft_only": ("soft targets only", {"methods": ("kd",), "weights": {"kd": 1.0}}, False),
    "T4": ("T = 4", {"temperature": 4.0}, False),
    "hard03": ("hard weight 0.3", {"weights": {"ce": 0.3, "kd": 0.7}}, False),
    "hard05": ("hard weight 0.5", {"weights": {"ce": 0.5, "kd": 0.5}}, True),
    "hard07": ("hard weight 0.7", {"weights": {"ce": 0.7, "kd": 0.3}}, False),
    "hard05_T4": ("hard weight 0.5, T = 4", {"weights": {"ce": 0.5, "kd": 0.5}, "temperature": 4.0}, False),
    "lr001_noclip": ("lr 0.01, no clipping", {"learning_rate": 0.01, "clip_norm": None}, False),
    "lr03": ("lr 0.3", {"learning_rate": 0.3}, False),
    "lr1": ("lr 1.0", {"learning_rate": 1.0}, False),
    "clip5": ("clipping at 5", {"clip_norm": 5.0}, False),
    "adam": ("Adam 1e-3, no clipping",
             {"optimizer": "adam", "learning_rate": 1e-3, "clip_norm": None, "nesterov": False}, False),
    "b100_lr003": ("batch 100, lr 0.03", {"batch_size": 100, "learning_rate": 0.03}, False),
    "torch_init": ("PyTorch init", {"init": "torch"}, False),
    # Why the student stays far above its teacher (added 2026-12-04): more epochs, a lower temperature,
    # the teacher's width, the teacher's dropout, both, translated transfer images, the teacher's optimizer
    "epochs120": ("120 epochs", {"epochs": 120}, False),
    "T8": ("T = 8", {"temperature": 8.0}, False),
    "wide": ("784-1200-1200-10 (the teacher's width), no dropout", {"model": "mlp1200_plain"}, False),
    "dropout": ("dropout 0.2 / 0.5 (the teacher's)", {"model": "mlp800_dropout"}, False),
    "teacher_net": ("784-1200-1200-10 with dropout 0.2 / 0.5 (the teacher's net)", {"model": "mlp1200"}, False),
    "jitter": ("transfer images translated by up to 2 pixels", {"max_shift": 2}, False),
    "sgd2012": ("the teacher's optimizer (Hinton et al. 2012 compressed to the epochs, lr 0.5; no max-norm)",
                lambda epochs: {**dict(hinton.hinton_2012_over(epochs, hinton.TEACHER_LR)), "max_norm": None},
                False),
}  # fmt: skip
PROBE_IMAGES = 2000  # training images the dead units are counted on


def teacher_dir(options) -> pathlib.Path:
    return pathlib.Path(options.args.teacher_dir or options.out / "teacher").absolute()


def runs(options):
    a, data_dir, held_out = options.args, options.data_dir, {"holdout_fraction": hinton.HOLDOUT}
    schedule = dataclasses.replace(hinton.SCHEDULES["default"], student_epochs=a.student_epochs)
    if a.teacher_dir is None:
        yield Run("teacher", hinton.teacher_config(data_dir, schedule, a.teacher_epochs).replace(**held_out))
    unknown = [name for name in a.arms.split(",") if name not in ARMS]
    if unknown:
        raise ValueError(f"--arms: unknown {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    for name in a.arms.split(","):
        _, changes, every_seed = ARMS[name]
        changes = changes(schedule.student_epochs) if callable(changes) else changes
        for s in options.seeds if every_seed else options.seeds[:1]:
            if name.startswith("alone"):
                base = hinton.student_config(data_dir, schedule, s)
            else:
                base = hinton.distilled_config(data_dir, schedule, teacher_dir(options), s, 20.0)
            yield Run(f"{name}/seed{s}", base.replace(**held_out, **changes), name)


def saw_held_out(teacher) -> bool:  # the images the students are evaluated on
    return RunDir(teacher).config().data.holdout_fraction != hinton.HOLDOUT


def measure(run_dir, options) -> dict:
    """Held-out errors; how far the student is from a copy of the teacher there: the images on which
    they disagree, and those of them the teacher classifies right; per hidden layer the share of units
    never active on the first ``PROBE_IMAGES`` training images."""
    held = options.dataset.holdout(hinton.HOLDOUT)
    (student,), (teacher,) = (hinton.predict_logits(d, options.dataset, held.x_test)
                              for d in (run_dir, teacher_dir(options)))  # fmt: skip
    student, teacher = student.argmax(-1), teacher.argmax(-1)
    measured = hinton.measure(run_dir, options) | {
        "disagreements": int((student != teacher).sum()),
        "teacher_right_student_wrong": int(((teacher == held.y_test) & (student != held.y_test)).sum()),
        "dead": hinton.dead_units(
            hinton.forward(run_dir, options.dataset, options.dataset.x_train[:PROBE_IMAGES])[1]
        ),
    }
    distilled_from = RunDir(run_dir).config().distill.teacher
    return measured | ({"teacher_saw_held_out": saw_held_out(distilled_from)} if distilled_from else {})


def table(results, options) -> str:
    held = options.dataset.holdout(hinton.HOLDOUT)
    (logits,) = hinton.predict_logits(teacher_dir(options), options.dataset, held.x_test)
    rows = [["teacher 784-1200-1200-10", str(int((logits.argmax(-1) != held.y_test).sum())), "", "", "", ""]]
    for name, summaries in results.items():
        errors, copy = [s["errors"] for s in summaries], summaries[0]
        dead = " / ".join(f"{100 * d:.1f}" for d in copy["dead"].values())
        rows.append([ARMS[name][0], mean_std(errors, scale=1.0, digits=1), str(errors), copy["disagreements"],
                     copy["teacher_right_student_wrong"], dead])  # fmt: skip
    epochs = RunDir(options.out / next(iter(results.values()))[0]["run"]).config().loop.epochs
    proxy = saw_held_out(teacher_dir(options))
    headers = ["student (784-800-800-10 unless said)", "held-out errors", "per seed", "disagreements with the teacher",
               "of them the teacher right", "dead units, hidden 1 / 2 (%)"]  # fmt: skip
    return markdown_table(headers, rows) + (
        f"\nErrors on {len(held.y_test):,} held-out training images; students {epochs} epochs (unless a row "
        "says otherwise); disagreements and dead units of the first seed; dead: never active on the first "
        f"{PROBE_IMAGES:,} training images; teacher "
        f"{teacher_dir(options)}{' trained on these images: the rows rank recipes only' if proxy else ''}.\n"
    )


def add_options(parser) -> None:
    parser.add_argument("--teacher-dir", default=None, help="a finished hinton_mnist.py teacher run")
    parser.add_argument("--teacher-epochs", type=int, default=600, help="without --teacher-dir")
    parser.add_argument("--student-epochs", type=int, default=30)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated; default: all")


EXPERIMENT = Experiment(doc=__doc__, dataset="mnist", runs=runs, table=table, add_options=add_options,
                        measure=measure, seeds=2, holdout_fraction=hinton.HOLDOUT,
                        default_out="runs/hinton_student_recipe")  # fmt: skip

if __name__ == "__main__":
    main(EXPERIMENT)

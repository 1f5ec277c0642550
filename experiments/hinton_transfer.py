"""Held-out study of the transfer set of Hinton et al. 2015's MNIST students (section 3).

On the test set the distilled 800-800 student stays far above its teacher (122 errors against 75)
although it agrees with the teacher on 99.9 % of the training images: it copies the teacher on
the transfer images but not between them. This study asks whether translating the transfer images
by up to ``--jitter`` pixels (the teacher's soft targets then come from the translated image, as
the teacher itself was trained) closes that gap, and how much of the effect the translation alone
gives a student without a teacher. Nothing here looks at the test set: every run trains without
10,000 training images and is evaluated on them (``hinton_mnist.py --validate``'s split), the
teacher included.

    python experiments/hinton_transfer.py --data-dir ../shared/data/mnist --out runs/hinton_transfer
        # teacher 100 epochs, 6 students of 60 epochs, 1 seed: about 40 min on 2 CPU cores

Arms, each over ``--seeds`` seeds: the student alone on clean and on translated images; the
distilled student (``hinton_mnist.py``'s recipe: 0.1 CE + 0.9 T^2 KL, clipping 1.0) at each of
``--temperatures`` on a clean and on a translated transfer set. Runs ``teacher``,
``alone_{clean,jitterJ}/seed{s}``, ``T{T}_{clean,jitterJ}/seed{s}``. Writes ``table.md`` and
``results.json`` (every run's summary with its held-out ``errors``) to ``--out``.
"""

import dataclasses
import pathlib
import runpy
from types import SimpleNamespace

from jdistill.experiment import Experiment, Run, main
from jdistill.report import markdown_table, mean_std
from jdistill.train import RunDir

hinton = SimpleNamespace(**runpy.run_path(str(pathlib.Path(__file__).with_name("hinton_mnist.py"))))


def runs(options):
    a, data_dir, held_out = options.args, options.data_dir, {"holdout_fraction": hinton.HOLDOUT}
    if a.jitter < 1:
        raise ValueError(f"--jitter must be >= 1, got {a.jitter}")
    schedule = dataclasses.replace(hinton.SCHEDULES["default"], student_epochs=a.student_epochs)
    teacher = hinton.teacher_config(data_dir, schedule, a.teacher_epochs)
    yield Run("teacher", teacher.replace(**held_out), "teacher")
    for jitter in (0, a.jitter):
        kind = "clean" if jitter == 0 else f"jitter{jitter}"
        for s in options.seeds:
            config = hinton.student_config(data_dir, schedule, s).replace(max_shift=jitter, **held_out)
            yield Run(f"alone_{kind}/seed{s}", config, f"alone, {kind}")
        for t in a.temperatures:
            for s in options.seeds:
                config = hinton.distilled_config(
                    data_dir, schedule, options.out / "teacher", s, t, jitter=jitter
                )
                yield Run(f"T{t:g}_{kind}/seed{s}", config.replace(**held_out), f"KD T = {t:g}, {kind}")


def table(results, options) -> str:
    (teacher,), *arms = ([s["errors"] for s in summaries] for summaries in results.values())
    rows = [["teacher 784-1200-1200-10", str(teacher), ""]]
    rows += [[name, mean_std(e, scale=1.0, digits=1), str(e)] for name, e in zip(list(results)[1:], arms)]
    epochs = [RunDir(options.out / s[0]["run"]).config().loop.epochs for s in list(results.values())[:2]]
    held_out = len(hinton.evaluation(options.out / "teacher", options).y_test)
    return markdown_table(["student 784-800-800-10", "held-out errors", "per seed"], rows) + (
        f"\nErrors on {held_out:,} held-out training images; teacher {epochs[0]} epochs, students "
        f"{epochs[1]}, {len(options.seeds)} seed(s), translations up to {options.args.jitter} pixels.\n"
    )


def add_options(parser) -> None:
    parser.add_argument("--teacher-epochs", type=int, default=100)
    parser.add_argument("--student-epochs", type=int, default=60)
    parser.add_argument("--temperatures", type=hinton.temperatures, default="4,20")
    parser.add_argument("--jitter", type=int, default=2, help="largest translation in pixels")


EXPERIMENT = Experiment(doc=__doc__, dataset="mnist", runs=runs, table=table, add_options=add_options,
                        measure=hinton.measure, seeds=1, holdout_fraction=hinton.HOLDOUT,
                        default_out="runs/hinton_transfer")  # fmt: skip

if __name__ == "__main__":
    main(EXPERIMENT)

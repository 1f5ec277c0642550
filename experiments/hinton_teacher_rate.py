"""Why Hinton et al. 2015's teacher trains at lr 1 here, not at Hinton et al. 2012's lr 10.

The paper's teacher follows Hinton et al. 2012's MNIST recipe (the preset ``hinton2012``): batches of
100, ``dw <- mu dw - (1 - mu) lr g``, momentum 0.5 at first, max-norm sqrt(15), lr 10 decaying by
0.998 per epoch. This study trains that teacher (784-1200-1200-10, dropout 0.2 / 0.5, jitter of up
to 2 pixels) for ``--epochs`` at each learning rate of ``--rates``, from Flax's initialisation
(LeCun-normal kernels, zero biases) and from PyTorch's (``sqrt(3)`` times narrower, small random
biases), without 10,000 training images, and reports on those held-out images its errors, and on the
first 2,000 training images the share of each hidden layer's units that are never active ("dead":
a ReLU unit whose input is negative for every image gets no gradient and stays so) and the spread
of the logits. ``--jitter 0`` trains the teachers without translations. Nothing looks at the test set.

    python experiments/hinton_teacher_rate.py --data-dir ../shared/data/mnist --out runs/hinton_teacher_rate
        # 12 teachers of 1 epoch: about 3 min on 2 CPU cores
    python experiments/hinton_teacher_rate.py --data-dir ../shared/data/mnist \\
        --out runs/hinton_teacher_rate_100 --rates 0.5 1 --inits flax --epochs 100 --compressed \\
        --students 2 --teacher-seed 0
        # 2 teachers of hinton_mnist.py's compressed recipe (hinton_2012_over), 100 epochs, each with 2
        # distilled students of 30 epochs (hinton_mnist.py's recipe, T = 20): about 37 min (README)

Runs ``lr{rate}_{init}`` (the teachers) and ``lr{rate}_{init}_kd/seed{s}`` (their students); writes
``table.md`` and ``results.json`` to ``--out``.
"""

import dataclasses
import pathlib
import runpy
from types import SimpleNamespace

from jdistill.experiment import Experiment, Run, main
from jdistill.report import markdown_table, mean_std
from jdistill.train import RunDir

hinton = SimpleNamespace(**runpy.run_path(str(pathlib.Path(__file__).with_name("hinton_mnist.py"))))
INITS = ("flax", "torch")
PROBE_IMAGES = 2000  # training images the dead units and logits are measured on


def runs(options):
    a, data_dir, held_out = options.args, options.data_dir, {"holdout_fraction": hinton.HOLDOUT}
    long = hinton.SCHEDULES["long"]
    recipe = dict(hinton.hinton_2012_over(a.epochs) if a.compressed else long.teacher_recipe)
    recipe |= {"eval_every": 1, "seed": a.teacher_seed}
    students = dataclasses.replace(hinton.SCHEDULES["default"], student_epochs=a.student_epochs)
    for rate in a.rates:
        for init in a.inits:
            name = f"lr{rate:g}_{init}"
            teacher = hinton.teacher_config(data_dir, long, a.epochs).replace(
                **(recipe | {"learning_rate": rate, "init": init, "max_shift": a.jitter}), **held_out
            )
            yield Run(name, teacher, name)
            for s in range(a.students):
                config = hinton.distilled_config(data_dir, students, options.out / name, s, 20.0)
                yield Run(f"{name}_kd/seed{s}", config.replace(**held_out), f"{name}_kd")


def measure(run_dir, options) -> dict:
    """Held-out errors; per hidden layer the share of units never active on the probe images; the
    logits' standard deviation there."""
    if RunDir(run_dir).config().distill.teacher is not None:  # a distilled student
        return hinton.measure(run_dir, options)
    logits, features = hinton.forward(run_dir, options.dataset, options.dataset.x_train[:PROBE_IMAGES])
    return hinton.measure(run_dir, options) | {
        "dead": hinton.dead_units(features),
        "logit_std": float(logits.std()),
    }


def epochs(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


def table(results, options) -> str:
    a, rows = options.args, []
    for name, (summary,) in ((n, r) for n, r in results.items() if not n.endswith("_kd")):
        rate, init = f"{summary['config']['learning_rate']:g}", summary["config"]["init"]
        dead = " / ".join(f"{100 * d:.1f}" for d in summary["dead"].values())
        students = [s["errors"] for s in results.get(f"{name}_kd", [])]
        row = [rate, init, summary["errors"], dead, f"{summary['logit_std']:.2f}"]
        rows.append(row + ([mean_std(students, scale=1.0, digits=1), str(students)] if students else []))
    held_out = len(options.dataset.holdout(hinton.HOLDOUT).y_test)
    headers = ["lr", "init", f"teacher's held-out errors (of {held_out:,})", "dead units, hidden 1 / 2 (%)"]
    headers += ["logit std"] + (["distilled students' held-out errors", "per seed"] if a.students else [])
    recipe = f"compressed to {epochs(a.epochs)} (hinton_2012_over)" if a.compressed else "of --schedule long"
    probed = len(options.dataset.x_train[:PROBE_IMAGES])
    note = f"Teachers: Hinton et al. 2012's recipe {recipe} at the rate of each row, {epochs(a.epochs)}, "
    note += f"inputs translated by up to {a.jitter} pixels; "
    note += f"dead units and logits on the first {probed:,} training images."
    if a.students:
        note += f" Students: hinton_mnist.py's distilled recipe (T = 20), {epochs(a.student_epochs)}."
    return markdown_table(headers, rows) + f"\n{note}\n"


def add_options(parser) -> None:
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 1.0, 2.0, 3.0, 5.0, 10.0])
    parser.add_argument("--epochs", type=int, default=1, help="of each teacher")
    parser.add_argument("--inits", nargs="+", choices=INITS, default=list(INITS))
    parser.add_argument(
        "--compressed",
        action="store_true",
        help="the recipe compressed in time to --epochs (hinton_mnist.py's default schedule)",
    )
    parser.add_argument("--teacher-seed", type=int, default=0, help="of every teacher")
    parser.add_argument(
        "--jitter",
        type=int,
        default=2,
        help="the teachers' input translations, in pixels (the paper's 2; 0: none)",
    )
    parser.add_argument("--students", type=int, default=0, help="distilled students (seeds) per teacher")
    parser.add_argument("--student-epochs", type=int, default=30)


EXPERIMENT = Experiment(doc=__doc__, dataset="mnist", runs=runs, table=table, add_options=add_options,
                        measure=measure, seeds=1, default_out="runs/hinton_teacher_rate")  # fmt: skip

if __name__ == "__main__":
    main(EXPERIMENT)

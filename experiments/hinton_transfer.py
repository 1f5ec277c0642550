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
``--temperatures`` on a clean and on a translated transfer set. Writes ``table.md`` and
``results.json`` to ``--out``.
"""

import argparse
import dataclasses
import importlib.util
import json
import pathlib

from jdistill.data import load_dataset
from jdistill.report import markdown_table, mean_std
from jdistill.train import fit

_spec = importlib.util.spec_from_file_location(
    "hinton_mnist", pathlib.Path(__file__).with_name("hinton_mnist.py")
)
hinton = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hinton)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="MNIST IDX files; default: tensorflow-datasets")
    parser.add_argument("--out", default="runs/hinton_transfer")
    parser.add_argument("--teacher-epochs", type=int, default=100)
    parser.add_argument("--student-epochs", type=int, default=60)
    parser.add_argument("--temperatures", default="4,20")
    parser.add_argument("--jitter", type=int, default=2, help="largest translation in pixels")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    if args.jitter < 1 or args.seeds < 1:
        parser.error("--jitter and --seeds must be >= 1")
    out = pathlib.Path(args.out)
    options = hinton.held_out_options(args.data_dir, args.teacher_epochs)
    schedule = dataclasses.replace(hinton.SCHEDULES["default"], student_epochs=args.student_epochs)
    dataset = load_dataset("mnist", args.data_dir)
    num_held_out = len(dataset.holdout(hinton.HOLDOUT).y_test)

    def errors(config, name: str) -> int:
        summary = fit(config, out / name, dataset=dataset, progress=not args.quiet, label=name)
        return hinton.errors(summary, num_held_out)

    teacher = errors(hinton.teacher_config(options, schedule), "teacher")
    arms = {}
    for jitter in (0, args.jitter):
        kind = "clean" if jitter == 0 else f"jitter{jitter}"
        arms[f"alone, {kind}"] = [
            errors(hinton.student_config(options, schedule, s).replace(max_shift=jitter),
                   f"alone_{kind}/seed{s}")
            for s in range(args.seeds)
        ]  # fmt: skip
        for t in (float(t) for t in args.temperatures.split(",")):
            arms[f"KD T = {t:g}, {kind}"] = [
                errors(
                    hinton.distilled_config(options, schedule, out / "teacher", s, t).replace(
                        max_shift=jitter
                    ),
                    f"T{t:g}_{kind}/seed{s}",
                )
                for s in range(args.seeds)
            ]
    rows = [["teacher 784-1200-1200-10", str(teacher), ""]]
    rows += [[name, mean_std(e, scale=1.0, digits=1), str(e)] for name, e in arms.items()]
    table = markdown_table(["student 784-800-800-10", "held-out errors", "per seed"], rows)
    note = (
        f"\nErrors on {num_held_out:,} held-out training images; teacher {args.teacher_epochs} epochs, "
        f"students {args.student_epochs}, {args.seeds} seed(s), translations up to {args.jitter} pixels.\n"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + note)
    (out / "results.json").write_text(json.dumps({"teacher": teacher, **arms}, indent=2) + "\n")
    print(table + note)


if __name__ == "__main__":
    main()

"""N students in one compiled step (``--seeds``, :mod:`jdistill.train.cohort`) against N single runs.

A teacher (``--teacher``, trained one epoch on random MNIST-shaped data: speed does not depend on
the weights' values) and N students (``--student``) of seeds 0..N-1 distil with 0.1 CE + 0.9 KD
at T = 4 and SGD. It times the engine's jitted round (one optimizer step of every student) of one
single run, and of the cohort of N, in three settings:

- ``cached``: un-augmented batches; the teacher's outputs on the training set are computed once
  and gathered (every member shares the table);
- ``augmented``: batches translated by up to 2 pixels, each member its own data order and
  jitter, so the teacher runs on every member's batch (vmapped: one batched forward pass);
- ``shared-data``: augmented batches with one ``--data-seed`` for all members: one batch, one
  teacher forward pass, N students.

    python benchmarks/students_per_step.py                      # mlp1200 -> mlp800, N = 4
    python benchmarks/students_per_step.py --teacher lenet5 --student lenet5_half

For each setting it prints ``SETTING single=A ms cohort=B ms cost=B/(N*A)``: the cohort's step
against N single runs' steps (1/N: free; 1: no saving).
"""

import argparse
import tempfile
import time

import jax
import numpy as np
from teacher_cache import median_ms  # benchmarks/: the script's own directory

from jdistill.data import Dataset
from jdistill.train import RunConfig, fit, make_mesh
from jdistill.train.cohort import Cohort
from jdistill.train.parallel import replicated
from jdistill.train.rounds import cache_frozen_outputs, make_rounds


def step_ms(cohort: Cohort, mesh, repeats: int, steps: int) -> float:
    """The median time of one round of ``cohort`` (a single run when it has one game)."""
    game = cohort.lead
    place = lambda tree: jax.device_put(tree, replicated(mesh))
    teachers = place(dict(game.teachers))
    data = game.source.arrays()
    table = cache_frozen_outputs(game, teachers, mesh)
    if table is not None:
        data["frozen"] = table
    data, order, hparams = place((data, cohort.order(0), cohort.hparams()))
    seeds = None if cohort.seeds() is None else place(cohort.seeds())
    rounds = make_rounds(game, 0, 1, mesh, cached=table is not None, owners={}, members=cohort.axes)
    players = [
        place(jax.device_get(cohort.stack([dict(g.players) for g in cohort.games])))
    ]  # donated: a copy

    def step():
        players[0], metrics = rounds(players[0], teachers, data, order, 0, 0, hparams, seeds)
        return metrics

    return median_ms(step, repeats, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="mlp1200")
    parser.add_argument("--student", default="mlp800")
    parser.add_argument("--students", type=int, default=4, help="N")
    parser.add_argument("--examples", type=int, default=60000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = rng.random((args.examples, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 10, args.examples)
    data = Dataset("mnist", images, labels, images[:1000], labels[:1000], 10, mean=(0.13,), std=(0.31,))
    mesh = make_mesh(jax.devices()[:1])
    print(f"{args.teacher} -> {args.student}, N = {args.students}, batch {args.batch_size}, "
          f"{jax.devices()[0].platform} (1 device)")  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        teacher = RunConfig(model=args.teacher, dataset="mnist", epochs=1, batch_size=args.batch_size)
        fit(teacher, f"{work}/teacher", dataset=data, progress=False)
        base = teacher.replace(model=args.student, teacher=f"{work}/teacher", methods=("ce", "kd"),
                               weights={"ce": 0.1, "kd": 0.9}, temperature=4.0)  # fmt: skip
        settings = {
            "cached": base,
            "augmented": base.replace(max_shift=2),
            "shared-data": base.replace(max_shift=2, data_seed=0),
        }
        for name, config in settings.items():
            games = tuple(config.replace(seed=s).build(data) for s in range(args.students))
            started = time.perf_counter()
            single = step_ms(Cohort(games[:1]), mesh, args.repeats, args.steps)
            together = step_ms(Cohort(games), mesh, args.repeats, args.steps)
            cost = together / (args.students * single)
            print(f"{name} single={single:.2f} ms cohort={together:.2f} ms cost={cost:.2f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

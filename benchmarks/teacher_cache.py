"""The KD step with the teacher's outputs read from a cache against the live teacher.

A teacher (``--teacher``, trained one epoch here on random MNIST-shaped data: speed does not depend
on the weights' values) and a student (``--student``) distil with 0.1 CE + 0.9 KD at T = 4 and
SGD. It times the engine's jitted round (one step) with the teacher run in every round, as for
augmented batches, and with its outputs gathered from a table of every training example, as the
engine's in-memory cache and ``--teacher-cache`` give them; and the one-time cost of that table:
the teacher's pass over the training set (the in-memory cache, at each start) against reading
``jdistill cache-teacher``'s file.

    python benchmarks/teacher_cache.py                        # mlp1200 -> mlp800, 60,000 examples
    python benchmarks/teacher_cache.py --teacher lenet5 --student lenet5_half

It prints ``step live=A ms cached=B ms ratio=B/A`` and ``table teacher-pass=C s file=D s``.
"""

import argparse
import statistics
import tempfile
import time

import jax
import numpy as np

from jdistill.data import Dataset
from jdistill.train import RunConfig, fit, load_teacher, make_mesh, teacher_cache
from jdistill.train.distill import build
from jdistill.train.parallel import replicated
from jdistill.train.rounds import cache_frozen_outputs, make_rounds


def median_ms(call, repeats: int, steps: int) -> float:
    jax.block_until_ready(call())  # compiled and warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            out = call()
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / steps * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="mlp1200")
    parser.add_argument("--student", default="mlp800")
    parser.add_argument("--examples", type=int, default=60000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = rng.random((args.examples, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 10, args.examples)
    data = Dataset("mnist", images, labels, images[:1000], labels[:1000], 10, mean=(0.13,), std=(0.31,))
    with tempfile.TemporaryDirectory() as work:
        teacher_dir, cache_dir = f"{work}/teacher", f"{work}/cache"
        teacher = RunConfig(model=args.teacher, dataset="mnist", epochs=1, batch_size=args.batch_size)
        fit(teacher, teacher_dir, dataset=data, progress=False)
        config = teacher.replace(model=args.student, teacher=teacher_dir, methods=("ce", "kd"),
                                 weights={"ce": 0.1, "kd": 0.9})  # fmt: skip
        game = build(config, data)
        mesh = make_mesh(jax.devices()[:1])
        teachers = jax.device_put(dict(game.teachers), replicated(mesh))

        start = time.perf_counter()
        table = jax.block_until_ready(cache_frozen_outputs(game, teachers, mesh))
        teacher_pass = time.perf_counter() - start
        teacher_cache.write(load_teacher(teacher_dir, data), teacher_dir, game.source.images(), cache_dir)
        start = time.perf_counter()
        teacher_cache.read(cache_dir, teacher_dir, game.source.images(), {}, ())
        from_file = time.perf_counter() - start

        arrays = jax.device_put(game.source.arrays(), replicated(mesh))
        cached_arrays = jax.device_put({**game.source.arrays(), "frozen": table}, replicated(mesh))
        order = jax.device_put(np.asarray(game.source.order(0, 0)), replicated(mesh))
        hparams = jax.device_put(dict(game.hparams), replicated(mesh))
        timings = {}
        for name, cached, batch_data in (("live", False, arrays), ("cached", True, cached_arrays)):
            rounds = make_rounds(game, 0, 1, mesh, cached=cached, owners={})
            players = [
                jax.device_put(jax.device_get(dict(game.players)), replicated(mesh))
            ]  # donated: a copy

            def step():
                players[0], metrics = rounds(players[0], teachers, batch_data, order, 0, 0, hparams)
                return metrics

            timings[name] = median_ms(step, args.repeats, args.steps)
    print(f"{args.teacher} -> {args.student}, batch {args.batch_size}, {args.examples} examples, "
          f"{jax.devices()[0].platform} ({len(jax.devices())} devices, 1 used)")  # fmt: skip
    print(f"step live={timings['live']:.2f} ms cached={timings['cached']:.2f} ms "
          f"ratio={timings['cached'] / timings['live']:.2f}")  # fmt: skip
    print(f"table teacher-pass={teacher_pass:.2f} s file={from_file:.2f} s")


if __name__ == "__main__":
    main()

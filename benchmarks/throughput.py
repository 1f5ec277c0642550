"""Distillation training throughput: the engine's jitted rounds against a plain PyTorch eager loop.

For each teacher -> student pair, both frameworks run the same step on the same machine: the
frozen teacher's forward pass (inference mode, no gradient), the student's forward and backward
pass, the loss ``0.1 * CE(labels) + 0.9 * T^2 KL(teacher_T || student_T)`` at T = 20, and an
SGD update (momentum 0.9, Nesterov, lr 0.05), on random images already in memory (speed does not
depend on them). jdistill runs the distillation game's rounds with ``steps_per_call`` rounds per
jitted call (``--steps-per-call 1,16``: one call per step, or 16 steps in one ``lax.scan``), the
teacher's outputs computed in every round as PyTorch computes them (the engine computes them once
per run when the data is not augmented; that saving is not counted here). Throughput is images
per second after compilation / warm-up, the median over ``--repeats`` timed repetitions of
``--steps`` steps.

    pip install torch==2.13.0      # benchmark-only extra (the CPU build on this registry)
    python benchmarks/throughput.py                    # the MNIST pairs, batch 128
    python benchmarks/throughput.py --pairs resnet56->resnet20,resnet32x4->resnet8x4 --batch-size 64
    python benchmarks/throughput.py --dtype bfloat16   # the student's passes in bfloat16 (mixed precision)

For each pair and setting it prints the compile time of the first call, the teacher-forward share
of a step, the img/s of each ``steps_per_call``, and ends with the line
``PAIR jdistill=N img/s pytorch=M img/s ratio=R`` (N: the best setting; R = N / M). Without
PyTorch installed, or for the CIFAR pairs (no PyTorch models here), ``pytorch=nan``.
"""

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jdistill.data import Dataset
from jdistill.methods import build_method
from jdistill.models import create_model
from jdistill.train import Frozen, Game, Move, Optimizer, Phase, Player, Trainable, make_mesh, split_module
from jdistill.train.config import DTYPES
from jdistill.train.distill import objective, teacher_forward, teacher_outputs
from jdistill.train.parallel import replicated
from jdistill.train.rounds import make_rounds
from jdistill.train.sources import DataSource

PAIRS = {
    "mlp1200->mlp800": ("mlp1200", "mlp800", (28, 28, 1), 10),
    "lenet5->lenet5_half": ("lenet5", "lenet5_half", (28, 28, 1), 10),
    "resnet56->resnet20": ("resnet56", "resnet20", (32, 32, 3), 100),
    "resnet32x4->resnet8x4": ("resnet32x4", "resnet8x4", (32, 32, 3), 100),
}
MNIST_PAIRS = ("mlp1200->mlp800", "lenet5->lenet5_half")
TEMPERATURE, HARD_WEIGHT, LR, MOMENTUM = 20.0, 0.1, 0.05, 0.9
CLASSES = 10  # of the PyTorch models (the MNIST pairs)


def median_seconds(run, repeats: int) -> float:
    """Median wall time of ``run()`` (which must block until its work is done) over repeats."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fake_batches(batch: int, count: int, shape, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((count, batch, *shape), dtype=np.float32)
    labels = rng.integers(0, classes, (count, batch)).astype(np.int64)
    return images, labels


def kd_game(teacher_name, student_name, shape, classes, images, labels, dtype=None) -> Game:
    """The distillation game of the benchmark's step: ce + kd, the teacher's outputs in every round;
    the student's passes in ``dtype`` (None: float32)."""
    teacher = Trainable(create_model(teacher_name, shape, classes, rngs=nnx.Rngs(0)))
    student = Trainable(create_model(student_name, shape, classes, rngs=nnx.Rngs(1)))
    methods = (build_method("ce"), build_method("kd"))
    x, y = images.reshape(-1, *shape), labels.reshape(-1).astype(np.int32)
    source = DataSource(Dataset("random", x, y, x[:1], y[:1], classes), images.shape[1])
    return Game(
        config=None,
        players={"student": Player.create(student, Optimizer("sgd", LR, momentum=MOMENTUM, nesterov=True))},
        phases=(Phase("train", 1, (Move("student", functools.partial(objective, methods, False, True)),)),),
        source=source,
        seed=0,
        teachers={"teacher": Frozen(*split_module(teacher))},
        frozen_outputs=functools.partial(teacher_outputs, ()),
        hparams={
            "temperature": jnp.float32(TEMPERATURE),
            "weights": {"ce": jnp.float32(HARD_WEIGHT), "kd": jnp.float32(1 - HARD_WEIGHT)},
        },
        compute_dtype=dtype,
    )


def bench_jdistill(game: Game, steps: int, repeats: int, steps_per_call: int) -> dict:
    mesh = make_mesh(jax.devices()[:1])
    place = lambda tree: jax.device_put(tree, replicated(mesh))
    rounds = make_rounds(game, 0, steps_per_call, mesh, cached=False, owners={})
    teachers, hparams = place(dict(game.teachers)), place(dict(game.hparams))
    data, order = place(game.source.arrays()), game.source.order(0, 0)
    per_epoch = game.source.steps_per_epoch
    players = place(jax.tree.map(jnp.array, dict(game.players)))

    start = time.perf_counter()
    players, metrics = rounds(players, teachers, data, order, 0, 0, hparams)
    jax.block_until_ready(metrics)
    first_call = time.perf_counter() - start

    def train():
        nonlocal players
        for i in range(0, steps, steps_per_call):
            players, metrics = rounds(
                players, teachers, data, order, 0, i % (per_epoch - steps_per_call + 1), hparams
            )
        jax.block_until_ready((players, metrics))

    teacher = game.teachers["teacher"]
    forward = jax.jit(lambda x: teacher_forward(teacher.graphdef, teacher.variables, x)[0])
    batch = jnp.asarray(data["x"][: game.source.batch_size])
    jax.block_until_ready(forward(batch))

    def teacher_only():
        for _ in range(steps):
            out = forward(batch)
        jax.block_until_ready(out)

    train()  # warm-up
    seconds = median_seconds(train, repeats)
    return {
        "img_per_s": steps * game.source.batch_size / seconds,
        "first_call_s": first_call,
        "teacher_share": median_seconds(teacher_only, repeats) / seconds,
    }


def torch_models(teacher_name, student_name):
    import torch
    from torch import nn

    def mlp(widths, dropout=0.0, input_dropout=0.0):
        layers, size = [nn.Flatten(), nn.Dropout(input_dropout)], 28 * 28
        for w in widths:
            layers += [nn.Linear(size, w), nn.ReLU(), nn.Dropout(dropout)]
            size = w
        return nn.Sequential(*layers, nn.Linear(size, CLASSES))

    def lenet(c1, c2, f1, f2):
        return nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(5 * 5 * c2, f1),
            nn.ReLU(),
            nn.Linear(f1, f2),
            nn.ReLU(),
            nn.Linear(f2, CLASSES),
        )

    build = {
        "mlp1200": lambda: mlp((1200, 1200), dropout=0.5, input_dropout=0.2),
        "mlp800": lambda: mlp((800, 800)),
        "lenet5": lambda: lenet(6, 16, 120, 84),
        "lenet5_half": lambda: lenet(3, 8, 60, 42),
    }
    torch.manual_seed(0)
    return build[teacher_name]().eval(), build[student_name]().train()


def bench_pytorch(teacher_name, student_name, images, labels, steps, repeats) -> dict:
    import torch
    import torch.nn.functional as F

    teacher, student = torch_models(teacher_name, student_name)
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True)
    batches = [
        (torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y))
        for x, y in zip(images, labels, strict=True)
    ]

    def kd_step(x, y):
        with torch.no_grad():
            t = teacher(x)
        s = student(x)
        soft = F.kl_div(
            F.log_softmax(s / TEMPERATURE, -1),
            F.log_softmax(t / TEMPERATURE, -1),
            reduction="batchmean",
            log_target=True,
        )
        loss = HARD_WEIGHT * F.cross_entropy(s, y) + (1 - HARD_WEIGHT) * TEMPERATURE**2 * soft
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def train():
        for i in range(steps):
            kd_step(*batches[i % len(batches)])

    def teacher_only():
        with torch.no_grad():
            for i in range(steps):
                teacher(batches[i % len(batches)][0])

    train()  # warm-up
    seconds = median_seconds(train, repeats)
    teacher_seconds = median_seconds(teacher_only, repeats)
    return {"img_per_s": steps * len(labels[0]) / seconds, "teacher_share": teacher_seconds / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pairs", default=",".join(MNIST_PAIRS), help=f"comma-separated, from {', '.join(PAIRS)}"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--steps", type=int, default=96, help="steps per timed repetition (a multiple of each setting)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (the median is reported)")
    parser.add_argument("--steps-per-call", default="1,16", help="comma-separated settings of steps_per_call")
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="jdistill's student computes in this dtype (its teacher and PyTorch in float32)",
    )
    args = parser.parse_args()
    settings = [int(k) for k in args.steps_per_call.split(",")]
    if any(args.steps % k for k in settings):
        raise SystemExit(
            f"--steps {args.steps} must be a multiple of every --steps-per-call setting {settings}"
        )
    try:
        import torch

        torch_info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        torch = None
        torch_info = "torch not installed (pip install torch==2.13.0)"
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}; {torch_info}")
    print(
        f"batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats (median), "
        f"jdistill in {args.dtype}"
    )

    dtype = None if args.dtype == "float32" else jnp.dtype(args.dtype)
    for pair in args.pairs.split(","):
        if pair not in PAIRS:
            raise SystemExit(f"unknown pair {pair!r}; choose from {', '.join(PAIRS)}")
        teacher, student, shape, classes = PAIRS[pair]
        images, labels = fake_batches(args.batch_size, max(16, max(settings)), shape, classes)
        game = kd_game(teacher, student, shape, classes, images, labels, dtype)
        ours = {}
        for k in settings:
            ours[k] = bench_jdistill(game, args.steps, args.repeats, k)
            print(
                f"{pair}: jdistill steps_per_call={k}: {ours[k]['img_per_s']:.0f} img/s, first call "
                f"(compile + run) {ours[k]['first_call_s']:.2f} s, teacher forward "
                f"{100 * ours[k]['teacher_share']:.0f} % of a step"
            )
        best = max(ours.values(), key=lambda r: r["img_per_s"])
        theirs = {"img_per_s": float("nan")}
        if torch is not None and pair in MNIST_PAIRS:
            theirs = bench_pytorch(teacher, student, images, labels, args.steps, args.repeats)
            print(f"{pair}: pytorch eager teacher forward {100 * theirs['teacher_share']:.0f} % of a step")
        print(
            f"{pair} jdistill={best['img_per_s']:.0f} img/s pytorch={theirs['img_per_s']:.0f} img/s "
            f"ratio={best['img_per_s'] / theirs['img_per_s']:.2f}"
        )


if __name__ == "__main__":
    main()

"""Distillation training throughput: jdistill's jitted step against a plain PyTorch eager loop.

For each teacher -> student pair, both frameworks run the same step on the same machine: the
frozen teacher's forward pass (inference mode, no gradient), the student's forward and backward
pass, the loss ``0.1 * CE(labels) + 0.9 * T^2 KL(teacher_T || student_T)`` at T = 20, and an
SGD update (momentum 0.9, Nesterov, lr 0.05), batch 128, on MNIST-shaped images already in memory
(random pixels: speed does not depend on them). Throughput is images per second after
compilation / warm-up, the median over ``--repeats`` timed repetitions of ``--steps`` steps.

    pip install torch==2.13.0      # benchmark-only extra (the CPU build on this registry)
    python benchmarks/throughput.py

For each pair it prints the compile time of jdistill's first step, the teacher-forward share
of a step in each framework, and ends with the line
``PAIR jdistill=N img/s pytorch=M img/s ratio=R`` (R = N / M). Without PyTorch installed the
PyTorch figures are skipped (``pytorch=nan``).
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jdistill.methods import build_method
from jdistill.models import create_model
from jdistill.train import RunConfig, Trainable, create_state, make_train_step, teacher_forward
from jdistill.train.loop import hparams_for

PAIRS = {"mlp1200->mlp800": ("mlp1200", "mlp800"), "lenet5->lenet5_half": ("lenet5", "lenet5_half")}
SHAPE = (28, 28, 1)
CLASSES = 10
TEMPERATURE, HARD_WEIGHT, LR, MOMENTUM = 20.0, 0.1, 0.05, 0.9


def median_seconds(run, repeats: int) -> float:
    """Median wall time of ``run()`` (which must block until its work is done) over repeats."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fake_batches(batch: int, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((count, batch, *SHAPE), dtype=np.float32)
    labels = rng.integers(0, CLASSES, (count, batch)).astype(np.int64)
    return images, labels


def bench_jdistill(teacher_name, student_name, images, labels, steps, repeats) -> dict:
    tx = optax.trace(decay=MOMENTUM, nesterov=True)
    teacher = Trainable(create_model(teacher_name, SHAPE, CLASSES, rngs=nnx.Rngs(0)), {})
    teacher_graphdef, teacher_state = create_state(teacher, tx, 0)
    teacher_vars = (teacher_state.params, teacher_state.rest)
    student = Trainable(create_model(student_name, SHAPE, CLASSES, rngs=nnx.Rngs(1)), {})
    graphdef, state = create_state(student, tx, 1)
    methods = (build_method("ce"), build_method("kd"))
    step = make_train_step(graphdef, methods, tx, optax.constant_schedule(1.0), teacher_graphdef)
    config = RunConfig(
        model=student_name, dataset="mnist", epochs=1, learning_rate=LR, temperature=TEMPERATURE
    )
    hparams = hparams_for(config, {"ce": HARD_WEIGHT, "kd": 1 - HARD_WEIGHT})
    batches = [
        {"image": jnp.asarray(x), "label": jnp.asarray(y, jnp.int32)}
        for x, y in zip(images, labels, strict=True)
    ]

    start = time.perf_counter()
    state, metrics = step(state, teacher_vars, batches[0], hparams)
    jax.block_until_ready(metrics)
    first_step = time.perf_counter() - start

    def train():
        nonlocal state
        for i in range(steps):
            state, metrics = step(state, teacher_vars, batches[i % len(batches)], hparams)
        jax.block_until_ready((state, metrics))

    forward = jax.jit(lambda x: teacher_forward(teacher_graphdef, teacher_vars, x)[0])
    jax.block_until_ready(forward(batches[0]["image"]))

    def teacher_only():
        for i in range(steps):
            out = forward(batches[i % len(batches)]["image"])
        jax.block_until_ready(out)

    train()  # warm-up
    seconds = median_seconds(train, repeats)
    teacher_seconds = median_seconds(teacher_only, repeats)
    return {
        "img_per_s": steps * len(labels[0]) / seconds,
        "first_step_s": first_step,
        "teacher_share": teacher_seconds / seconds,
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
            nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(5 * 5 * c2, f1), nn.ReLU(), nn.Linear(f1, f2), nn.ReLU(), nn.Linear(f2, CLASSES),
        )  # fmt: skip

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
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"comma-separated, from {', '.join(PAIRS)}")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100, help="steps per timed repetition")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (the median is reported)")
    args = parser.parse_args()
    try:
        import torch

        torch_info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        torch = None
        torch_info = "torch not installed (pip install torch==2.13.0)"
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}; {torch_info}")
    print(f"batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats (median)")

    images, labels = fake_batches(args.batch_size, count=10)
    for pair in args.pairs.split(","):
        if pair not in PAIRS:
            raise SystemExit(f"unknown pair {pair!r}; choose from {', '.join(PAIRS)}")
        teacher, student = PAIRS[pair]
        ours = bench_jdistill(teacher, student, images, labels, args.steps, args.repeats)
        print(
            f"{pair}: jdistill first step (compile + run) {ours['first_step_s']:.2f} s, "
            f"teacher forward {100 * ours['teacher_share']:.0f} % of a step"
        )
        theirs = {"img_per_s": float("nan")}
        if torch is not None:
            theirs = bench_pytorch(teacher, student, images, labels, args.steps, args.repeats)
            print(f"{pair}: pytorch eager teacher forward {100 * theirs['teacher_share']:.0f} % of a step")
        print(
            f"{pair} jdistill={ours['img_per_s']:.0f} img/s pytorch={theirs['img_per_s']:.0f} img/s "
            f"ratio={ours['img_per_s'] / theirs['img_per_s']:.2f}"
        )


if __name__ == "__main__":
    main()

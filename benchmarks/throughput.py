"""Distillation training throughput: the engine's jitted rounds against a plain PyTorch eager loop.

For each teacher -> student pair, method and batch size, both frameworks run the same step on the
same machine, on random images already in memory (speed does not depend on their values): the
frozen teacher's forward pass (inference mode, no gradient), the student's forward and backward
pass, the loss and an SGD update.

- The MNIST pairs (``mlp1200->mlp800``, ``lenet5->lenet5_half``; batch 128): Hinton et al.'s KD,
  ``0.1 CE + 0.9 T^2 KL(teacher_T || student_T)`` at T = 20; SGD lr 0.05, momentum 0.9, Nesterov.
- The CIFAR-100 pairs (``resnet56->resnet20``, ``resnet32x4->resnet8x4``; batches 64 and 256) with
  the CRD/RepDistiller benchmark's step as the ``crd`` preset gives it (``jdistill.recipes``): SGD
  momentum 0.9 without Nesterov, weight decay 5e-4, lr 0.05 x batch / 64 (its step schedule left
  out: speed does not depend on the rate). ``--methods kd``: 0.1 CE + 0.9 T^2 KL at T = 4;
  ``--methods crd``: CE + 0.8 CRD (jdistill's ``crd`` method with its defaults: linear embeddings to
  128, L2-normalised; a memory bank per side of 50,000 rows, CIFAR-100's training set; 16,384
  negatives of other classes drawn with replacement in every step; NCE temperature 0.07; bank
  momentum 0.5). The PyTorch side is ``benchmarks/torch_cifar.py``: the CIFAR ResNets (their
  parameter counts are printed beside jdistill's) and a CRD that computes what jdistill's does.

jdistill runs the distillation game's rounds with ``steps_per_call`` rounds per jitted call
(``--steps-per-call 1,16``: one call per step, or 16 steps in one ``lax.scan``; for the CIFAR pairs
on the CPU the default is 1 alone, since XLA's CPU compiler leaves convolutions inside loops
unoptimised), the teacher's outputs computed in every round as PyTorch computes them (the engine
computes them once per run when the data is not augmented; the CIFAR recipe augments, so there it
computes them in every round too). Throughput is images per second after compilation and a
warm-up repetition: the median over ``--repeats`` timed repetitions of ``--steps`` steps.

    pip install torch==2.13.0      # benchmark-only extra (the CPU build on this registry)
    python benchmarks/throughput.py                    # the MNIST pairs, batch 128
    python benchmarks/throughput.py --pairs 'resnet56->resnet20,resnet32x4->resnet8x4' --methods kd,crd \\
        --batch-sizes 64 --steps 2 --repeats 3         # the CIFAR pairs on 2 CPU cores: 6 minutes
    python -u benchmarks/throughput.py --pairs 'resnet56->resnet20,resnet32x4->resnet8x4' --methods kd,crd \\
        --batch-sizes 64,max --steps-per-call 16 --steps 16 --repeats 3   # on a GPU: 8 compilations
    python benchmarks/throughput.py --dtype bfloat16   # jdistill's student in bfloat16 (mixed precision)

For each pair, method, batch and setting it prints the first call's time (compilation and one
call), the teacher-forward share of a step, the img/s of each ``steps_per_call``, and the FLOPs
of one step by XLA's cost analysis (of the compiled one-step round; of the program before
optimisation where there is no one-step setting or the compiled count is under half of it, as on
a backend that leaves library calls uncounted). On a GPU it adds the model FLOPs utilisation:
those FLOPs per second at the best setting over the device's dense peak, for an H200 (NVIDIA's
data sheet) 989 TFLOP/s in bfloat16 (``--dtype bfloat16``) and in float32 both 67 TFLOP/s (float32)
and 495 TFLOP/s (TF32 tensor cores, which XLA and cuDNN may use for float32 convolutions);
``--peak-tflops`` for other devices. For the CIFAR pairs it prints the parameter counts of both
frameworks' models and CRD heads. Each configuration ends with the line ``PAIR jdistill=N img/s
pytorch=M img/s ratio=R`` (N: the best setting; R = N / M); the CIFAR pairs' lines name the method
and batch (``resnet56->resnet20 kd b64 jdistill=...``) and add the projected wall time of the
recipe's 240 epochs of 50,000 images in each framework (12,000,000 images / img/s). Without
PyTorch installed, ``pytorch=nan``.

``--batch-sizes max`` (accelerators only) tries ``--max-batch`` (4096) first and halves it down to
64 until jdistill's step runs without exhausting the device's memory (one compilation where the
largest fits; PyTorch then runs at that batch, ``nan`` if it runs out of memory). The wall time
projected at a batch other than 64 is that of the recipe with its learning rate scaled linearly,
not the benchmark's schedule.

Caveats: neither side counts data loading or augmentation (jdistill augments on the device inside
its step; RepDistiller loads and augments in DataLoader workers on the CPU); the images of a run
are a few batches in memory while CRD's banks have 50,000 rows. PyTorch runs eager (no
``torch.compile``) in float32 whatever ``--dtype`` says, NCHW unless ``--torch-channels-last``,
with ``torch.set_num_threads(os.cpu_count())`` on the CPU (``--threads``; XLA's CPU client uses
every core too) and ``cudnn.benchmark`` on a GPU. Both CRDs compute every dot product of a bank
with the batch and pick the sampled ones (jdistill's way; RepDistiller gathers the sampled rows),
and PyTorch moves the banks' rows after the backward pass (which needs the banks as the scores
read them). On a shared machine the figures vary from run to run: compare runs by their final lines.
"""

import argparse
import dataclasses
import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jdistill import recipes
from jdistill.data import Dataset
from jdistill.methods import build_method, feature_shapes, resolve_weights
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
CIFAR_METHODS = ("kd", "crd")
TEMPERATURE, HARD_WEIGHT, LR, MOMENTUM = 20.0, 0.1, 0.05, 0.9  # the MNIST pairs' step
CLASSES = 10  # of the MNIST PyTorch models
CIFAR_TRAIN_IMAGES = 50_000  # CIFAR-100's training set: CRD's banks, the projected epochs
MAX_BATCH, MIN_BATCH = 4096, 64  # --batch-sizes max tries these and the powers of two between
# Dense peak TFLOP/s of the devices MFU is reported for (NVIDIA's data sheet; H200 SXM).
PEAK_TFLOPS = {"H200": {"bfloat16": 989.0, "float32": 67.0, "tf32": 495.0}}


@dataclasses.dataclass(frozen=True)
class Step:
    """What one distillation step computes: the methods (``ce`` first), each term's weight, the
    KD temperature, and SGD's settings."""

    methods: tuple[str, ...]
    weights: dict
    temperature: float
    learning_rate: float
    momentum: float
    nesterov: bool
    weight_decay: float


MNIST_STEP = Step(
    ("ce", "kd"), {"ce": HARD_WEIGHT, "kd": 1 - HARD_WEIGHT}, TEMPERATURE, LR, MOMENTUM, True, 0.0
)


def cifar_step(teacher: str, student: str, method: str, batch: int) -> Step:
    """The ``crd`` preset's step for ``method`` (kd or crd) at ``batch``."""
    methods = ("ce", method)
    recipe = recipes.crd_benchmark(student, methods, teacher_model=teacher, batch_size=batch)
    weights = resolve_weights(tuple(build_method(m) for m in methods), recipe["weights"])
    return Step(
        methods,
        weights,
        recipe["temperature"],
        recipe["learning_rate"],
        recipe["momentum"],
        recipe["nesterov"],
        recipe["weight_decay"],
    )


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


def bank_labels(classes: int, seed: int = 1) -> np.ndarray:
    """A class for every row of CRD's banks (CIFAR-100's training-set size)."""
    return np.random.default_rng(seed).integers(0, classes, CIFAR_TRAIN_IMAGES)


def distill_game(teacher_name, student_name, shape, classes, images, labels, step: Step, dtype=None) -> Game:
    """The distillation game of the benchmark's step: ``step``'s methods and weights, the teacher's
    outputs in every round, the student's passes in ``dtype`` (None: float32). A method's modules
    (CRD's banks) are sized for CIFAR-100's 50,000 training images; the batches come from the few
    in memory."""
    teacher = create_model(teacher_name, shape, classes, rngs=nnx.Rngs(0))
    model = create_model(student_name, shape, classes, rngs=nnx.Rngs(1))
    methods = tuple(build_method(name) for name in step.methods)
    student_shapes, teacher_shapes = feature_shapes(model, shape), feature_shapes(teacher, shape)
    rows = bank_labels(classes)
    blank = np.zeros((1, *shape), np.float32)  # CRD's modules read only the labels
    bank_set = Dataset("bank", np.broadcast_to(blank, (len(rows), *shape)), rows, blank, rows[:1], classes)
    extras = {m.name: m.modules(student_shapes, teacher_shapes, bank_set, nnx.Rngs(2)) for m in methods}
    student = Trainable(model, {k: v for k, v in extras.items() if v})
    features = tuple(dict.fromkeys(n for m in methods for n in m.features(student_shapes, teacher_shapes)[1]))
    x, y = images.reshape(-1, *shape), labels.reshape(-1).astype(np.int32)
    source = DataSource(Dataset("random", x, y, x[:1], y[:1], classes), images.shape[1])
    optimizer = Optimizer(
        "sgd",
        step.learning_rate,
        momentum=step.momentum,
        nesterov=step.nesterov,
        weight_decay=step.weight_decay,
    )
    return Game(
        config=None,
        players={"student": Player.create(student, optimizer)},
        phases=(Phase("train", 1, (Move("student", functools.partial(objective, methods, False, True)),)),),
        source=source,
        seed=0,
        teachers={"teacher": Frozen(*split_module(Trainable(teacher)))},
        frozen_outputs=functools.partial(teacher_outputs, features),
        hparams={
            "temperature": jnp.float32(step.temperature),
            "weights": {k: jnp.float32(v) for k, v in step.weights.items()},
        },
        compute_dtype=dtype,
    )


def param_counts(game: Game) -> dict:
    """Trainable scalars of the game's teacher, student model and the methods' modules."""
    size = lambda tree: sum(leaf.size for leaf in jax.tree.leaves(tree))
    params = game.players["student"].params
    return {
        "teacher": size(game.teachers["teacher"].params),
        "student": size(params["model"]),
        "heads": size(params.get("extras", {})),
    }


def flops_of(stage) -> float:
    """The ``flops`` of XLA's cost analysis of a lowered or compiled computation (nan where it
    gives none)."""
    try:
        analysis = stage.cost_analysis()
    except (NotImplementedError, RuntimeError):  # some backends do not implement it
        return float("nan")
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def bench_jdistill(game: Game, steps: int, repeats: int, steps_per_call: int) -> dict:
    mesh = make_mesh(jax.devices()[:1])
    place = lambda tree: jax.device_put(tree, replicated(mesh))
    rounds = make_rounds(game, 0, steps_per_call, mesh, cached=False, owners={})
    teachers, hparams = place(dict(game.teachers)), place(dict(game.hparams))
    data, order = place(game.source.arrays()), game.source.order(0, 0)
    per_epoch = game.source.steps_per_epoch
    players = place(jax.tree.map(jnp.array, dict(game.players)))

    start = time.perf_counter()
    lowered = rounds.lower(players, teachers, data, order, 0, 0, hparams)
    compiled = lowered.compile()
    players, metrics = compiled(players, teachers, data, order, 0, 0, hparams)
    jax.block_until_ready(metrics)
    first_call = time.perf_counter() - start

    def train():
        nonlocal players
        for i in range(0, steps, steps_per_call):
            players, metrics = compiled(
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
    # XLA's cost analysis counts a loop's body once: only the one-step round's is a step's
    flops = {"compiled": flops_of(compiled), "lowered": flops_of(lowered)} if steps_per_call == 1 else None
    return {
        "img_per_s": steps * game.source.batch_size / seconds,
        "first_call_s": first_call,
        "teacher_share": median_seconds(teacher_only, repeats) / seconds,
        "flops": flops,
    }


def step_flops(game: Game, measured: dict | None) -> tuple[float, str]:
    """FLOPs of one step by XLA's cost analysis: of the compiled one-step round (``measured``, from
    :func:`bench_jdistill`), or of the program before optimisation where that is missing or counts
    less than half of it (a backend that leaves library calls such as cuDNN's uncounted); with
    which it is."""
    if measured is None:
        mesh = make_mesh(jax.devices()[:1])
        rounds = make_rounds(game, 0, 1, mesh, cached=False, owners={})
        arrays = (dict(game.players), dict(game.teachers), game.source.arrays(), game.source.order(0, 0))
        measured = {
            "compiled": float("nan"),
            "lowered": flops_of(rounds.lower(*arrays, 0, 0, dict(game.hparams))),
        }
    compiled, lowered = measured["compiled"], measured["lowered"]
    if compiled > 0 and not compiled < 0.5 * lowered:
        return compiled, "compiled step"
    return lowered, "step before optimisation"


def torch_models(teacher_name, student_name, classes):
    import torch
    import torch_cifar  # benchmarks/torch_cifar.py, beside this script
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
        **{name: functools.partial(torch_cifar.resnet, name, classes) for name in torch_cifar.RESNETS},
    }
    torch.manual_seed(0)
    return build[teacher_name]().eval(), build[student_name]().train()


def oom(error: BaseException) -> bool:
    """Whether ``error`` is a device running out of memory (XLA's or PyTorch's)."""
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def bench_pytorch(
    teacher_name, student_name, classes, images, labels, step: Step, steps, repeats, options
) -> dict:
    import torch
    import torch.nn.functional as F
    import torch_cifar

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    layout = torch.channels_last if options.torch_channels_last else torch.contiguous_format
    teacher, student = (
        m.to(device, memory_format=layout) for m in torch_models(teacher_name, student_name, classes)
    )
    for p in teacher.parameters():
        p.requires_grad_(False)
    both = lambda out: out if isinstance(out, tuple) else (out, None)  # (logits, embedding)
    crd = None
    if "crd" in step.methods:  # the CIFAR ResNets: the embedding is what the classifier reads
        rows = torch.from_numpy(bank_labels(classes))
        crd = torch_cifar.CRD(student.head.in_features, teacher.head.in_features, rows).to(device)
    trained = list(student.parameters()) + ([] if crd is None else list(crd.parameters()))
    counts = {
        "teacher": torch_cifar.count_params(teacher),
        "student": torch_cifar.count_params(student),
        "heads": 0 if crd is None else torch_cifar.count_params(crd),
    }
    opt = torch.optim.SGD(
        trained,
        lr=step.learning_rate,
        momentum=step.momentum,
        nesterov=step.nesterov,
        weight_decay=step.weight_decay,
    )
    batch = images.shape[1]
    batches = [
        (
            torch.from_numpy(x).permute(0, 3, 1, 2).to(device).contiguous(memory_format=layout),
            torch.from_numpy(y).to(device),
            torch.arange(i * batch, (i + 1) * batch, device=device),  # dataset indices (CRD's banks)
        )
        for i, (x, y) in enumerate(zip(images, labels, strict=True))
    ]
    kd_weight = step.weights.get("kd", 0.0)

    def train_step(x, y, index):
        with torch.no_grad():
            t_logits, t_embedding = both(teacher(x))
        s_logits, s_embedding = both(student(x))
        if kd_weight:
            loss = torch_cifar.kd_loss(
                s_logits,
                t_logits,
                y,
                temperature=step.temperature,
                ce_weight=step.weights["ce"],
                kd_weight=kd_weight,
            )
        else:
            loss = step.weights["ce"] * F.cross_entropy(s_logits, y)
        if crd is not None:
            loss = loss + step.weights["crd"] * crd(s_embedding, t_embedding, y, index)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if crd is not None:
            crd.update_memory()
        opt.step()
        return loss

    def train():
        for i in range(steps):
            train_step(*batches[i % len(batches)])
        sync()

    def teacher_only():
        with torch.no_grad():
            for i in range(steps):
                teacher(batches[i % len(batches)][0])
        sync()

    train()  # warm-up
    seconds = median_seconds(train, repeats)
    teacher_seconds = median_seconds(teacher_only, repeats)
    return {
        "img_per_s": steps * batch / seconds,
        "teacher_share": teacher_seconds / seconds,
        "params": counts,
    }


def mfu_text(flops_per_step: float, seconds_per_step: float, dtype: str, peak_tflops: float | None) -> str:
    """Achieved TFLOP/s and, where the device's peak is known, the model FLOPs utilisation."""
    achieved = flops_per_step / seconds_per_step / 1e12
    text = f"{achieved:.2f} TFLOP/s"
    if jax.default_backend() != "gpu":
        return text
    kind = jax.devices()[0].device_kind
    if peak_tflops is not None:
        peaks = {f"the given peak {peak_tflops:g} TFLOP/s": peak_tflops}
    else:
        known = next((v for k, v in PEAK_TFLOPS.items() if k in kind), None)
        if known is None:
            return f"{text} (no peak known for {kind}: give --peak-tflops for the MFU)"
        names = ("bfloat16",) if dtype == "bfloat16" else ("float32", "tf32")
        peaks = {f"the {name} peak {known[name]:g} TFLOP/s": known[name] for name in names}
    return f"{text}, MFU " + ", ".join(f"{100 * achieved / p:.1f} % of {name}" for name, p in peaks.items())


def hours(img_per_s: float) -> str:
    """The recipe's 240 epochs of 50,000 images at ``img_per_s``, in hours."""
    return f"{recipes.BENCHMARK_EPOCHS * CIFAR_TRAIN_IMAGES / img_per_s / 3600:.1f} h"


def run_one(pair, method, batch, settings, args, torch, label) -> bool:
    """Benchmark one pair, method and batch in both frameworks and print its lines; False when
    jdistill's step does not fit in the device's memory."""
    teacher, student, shape, classes = PAIRS[pair]
    step = MNIST_STEP if pair in MNIST_PAIRS else cifar_step(teacher, student, method, batch)
    images, labels = fake_batches(batch, max(16, max(settings)), shape, classes)
    dtype = None if args.dtype == "float32" else jnp.dtype(args.dtype)
    game = distill_game(teacher, student, shape, classes, images, labels, step, dtype)
    ours = {}
    try:
        for k in settings:
            ours[k] = bench_jdistill(game, args.steps, args.repeats, k)
    except Exception as error:
        if not oom(error):
            raise
        print(f"{label}: jdistill out of device memory ({str(error).splitlines()[0][:200]})")
        return False
    for k, r in ours.items():
        print(
            f"{label}: jdistill steps_per_call={k}: {r['img_per_s']:.0f} img/s, first call "
            f"(compile + run) {r['first_call_s']:.2f} s, teacher forward {100 * r['teacher_share']:.0f} % of a step"
        )
    best = max(ours.values(), key=lambda r: r["img_per_s"])
    flops, counted = step_flops(game, ours[1]["flops"] if 1 in ours else None)
    if flops > 0:
        print(
            f"{label}: jdistill {flops / 1e9:.1f} GFLOP per step (XLA cost analysis of the {counted}), "
            f"at the best setting {mfu_text(flops, batch / best['img_per_s'], args.dtype, args.peak_tflops)}"
        )
    theirs = {"img_per_s": float("nan")}
    if torch is not None:
        try:
            theirs = bench_pytorch(
                teacher, student, classes, images, labels, step, args.steps, args.repeats, args
            )
        except Exception as error:
            if not oom(error):
                raise
            print(f"{label}: pytorch out of device memory ({str(error).splitlines()[0][:200]})")
        else:
            print(f"{label}: pytorch eager teacher forward {100 * theirs['teacher_share']:.0f} % of a step")
            if pair not in MNIST_PAIRS:
                ours_count, theirs_count = param_counts(game), theirs["params"]
                print(
                    f"{label}: parameters jdistill / pytorch: "
                    + ", ".join(
                        f"{name} {ours_count[part]:,} / {theirs_count[part]:,}"
                        for part, name in (
                            ("teacher", teacher),
                            ("student", student),
                            ("heads", f"{method} heads"),
                        )
                        if ours_count[part] or theirs_count[part]
                    )
                )
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    line = (
        f"{label} jdistill={best['img_per_s']:.0f} img/s pytorch={theirs['img_per_s']:.0f} img/s "
        f"ratio={best['img_per_s'] / theirs['img_per_s']:.2f}"
    )
    if pair not in MNIST_PAIRS:
        line += (
            f"; 240-epoch recipe (50,000 images/epoch): jdistill {hours(best['img_per_s'])}, "
            f"pytorch {hours(theirs['img_per_s'])}"
        )
    print(line)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pairs", default=",".join(MNIST_PAIRS), help=f"comma-separated, from {', '.join(PAIRS)}"
    )
    parser.add_argument(
        "--methods",
        default="kd",
        help=f"comma-separated, from {', '.join(CIFAR_METHODS)}: for the CIFAR pairs (the MNIST pairs run kd)",
    )
    parser.add_argument(
        "--batch-sizes",
        help="comma-separated; 'max' (not on the CPU): the largest of --max-batch, half that, ... down to 64 "
        "at which jdistill's step fits in memory (default: 128 for the MNIST pairs, 64,256 for the CIFAR pairs)",
    )
    parser.add_argument("--batch-size", type=int, help="one batch size (the same as --batch-sizes N)")
    parser.add_argument(
        "--steps", type=int, default=96, help="steps per timed repetition (a multiple of each setting)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (the median is reported)")
    parser.add_argument(
        "--steps-per-call",
        help="comma-separated settings of steps_per_call (default 1,16; 1 for the CIFAR pairs on the CPU)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="jdistill's student computes in this dtype (its teacher and PyTorch in float32)",
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="PyTorch's CPU threads (default: every core)"
    )
    parser.add_argument(
        "--torch-channels-last", action="store_true", help="PyTorch's images and convolutions NHWC"
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=MAX_BATCH,
        help="the first batch --batch-sizes max tries (then halves)",
    )
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, for the MFU on GPUs not listed")
    args = parser.parse_args()
    if args.batch_size is not None:
        if args.batch_sizes is not None:
            raise SystemExit("give --batch-sizes or --batch-size, not both")
        args.batch_sizes = str(args.batch_size)
    pairs = args.pairs.split(",")
    for pair in pairs:
        if pair not in PAIRS:
            raise SystemExit(f"unknown pair {pair!r}; choose from {', '.join(PAIRS)}")
    methods = args.methods.split(",")
    for method in methods:
        if method not in CIFAR_METHODS:
            raise SystemExit(f"unknown method {method!r}; choose from {', '.join(CIFAR_METHODS)}")
    sizes = None if args.batch_sizes is None else args.batch_sizes.split(",")
    if sizes and not all(s == "max" or (s.isdigit() and int(s) > 0) for s in sizes):
        raise SystemExit(f"--batch-sizes: positive integers or 'max', got {args.batch_sizes!r}")
    # Allocate device memory as needed, not 75 % up front: PyTorch shares the GPU (before jax starts it).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    on_cpu = jax.default_backend() == "cpu"
    if sizes and "max" in sizes and on_cpu:
        raise SystemExit("--batch-sizes max needs an accelerator; on the CPU give sizes (default 64,256)")
    settings = {}  # steps_per_call settings of each pair
    for pair in pairs:
        text = args.steps_per_call or ("1" if pair not in MNIST_PAIRS and on_cpu else "1,16")
        settings[pair] = [int(k) for k in text.split(",")]
        if any(args.steps % k for k in settings[pair]):
            raise SystemExit(
                f"--steps {args.steps} must be a multiple of every --steps-per-call setting {settings[pair]} "
                f"({pair})"
            )
    try:
        import torch

        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = True  # as RepDistiller's training scripts
            torch_info = f"torch {torch.__version__} on {torch.cuda.get_device_name()}"
        else:
            torch.set_num_threads(args.threads)
            torch_info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        torch = None
        torch_info = "torch not installed (pip install torch==2.13.0)"
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}; {torch_info}")
    print(f"{args.steps} steps x {args.repeats} repeats (median), jdistill in {args.dtype}")

    for pair in pairs:
        cifar = pair not in MNIST_PAIRS
        pair_sizes = sizes or (["64", "256"] if cifar else ["128"])
        for method in methods if cifar else ["kd"]:
            for size in pair_sizes:
                if size == "max":  # the largest first, then halving: one compilation where it fits
                    halvings = max(1, (args.max_batch // MIN_BATCH).bit_length())
                    candidates = [args.max_batch >> i for i in range(halvings)]
                else:
                    candidates = [int(size)]
                for batch in candidates:
                    named = cifar or len(pair_sizes) > 1 or size == "max"  # the MNIST lines as before
                    label = f"{pair} {method} b{batch}" if named else pair
                    print(f"{label}: batch {batch}, steps_per_call {','.join(map(str, settings[pair]))}")
                    if run_one(pair, method, batch, settings[pair], args, torch, label):
                        break


if __name__ == "__main__":
    main()

"""DAFL on MNIST (Chen et al. 2019) as the authors' training loop plays it, written in PyTorch: the
reference that jdistill's DAFL runs are compared with over seeds, on the same teacher.

    python experiments/dafl_reference_torch.py --data-dir ../shared/data/mnist \\
        --teacher runs/data_free/teacher_dafl --out runs/dafl_torch --seeds 0 1 2
        # the paper's configuration: batch 512, generator width 64, 24,000 iterations (200 epochs
        # of 120), the student evaluated after every epoch; a GPU (--device, default cuda if present)

One iteration (:func:`dafl_iteration`): the generator makes a batch from fresh noise; the teacher
gives logits and its 120-d features; the generator's loss is CE(teacher logits, their argmax) + 5
sum(mean softmax * log10 mean softmax) - 0.1 mean |features|; the student's is KL(teacher ||
student) at T = 1 on the images detached from the generator; one backward pass of their sum, then
both Adam steps (generator 0.2, student 2e-3, constant). The generator (:class:`TorchGenerator`):
linear -> BN -> upsample -> conv3x3 -> BN(eps 0.8) -> LeakyReLU(0.2) -> upsample -> conv3x3 ->
BN(eps 0.8) -> LeakyReLU -> conv3x3 -> tanh -> BN without affine, always on the batch's statistics.
The student (LeNet-5-half) and the generator start from PyTorch's initialisation (``torch.manual_seed
(seed)``), or with ``--init jdistill`` from the weights jdistill's run of the same seed draws; the
noise is PyTorch's either way, the same for one seed, so the two show what the first weights alone
do. ``tests/parity/test_dafl_game.py`` checks these rounds against jdistill's engine from the same
weights.

``--teacher`` is a jdistill LeNet-5 run directory trained at 32x32 (``experiments/data_free_mnist.py``
and ``data_free_gpu.sh`` train DAFL's with its recipe, ``paper_teacher("dafl")``); its weights are
copied into the PyTorch network, so both frameworks' students learn from one teacher. The test set
is resized and standardised as the teacher saw its images (``teacher_dataset``). Products run in
full float32 on a GPU too (PyTorch's TF32 off), as jdistill's runs of ``data_free_gpu.sh`` do, whose
``reference_dafl_seedK`` parts run this script on their DAFL teacher.

Writes ``results.json`` after every evaluation (per seed: the student's test accuracy, the
normalised entropy of the teacher's class histogram on a generated batch, the teacher's mean |logit|
and the largest |pixel| on it) and ``table.md``: per seed the accuracy at the last evaluation (the
final iteration's, unless a time limit or Ctrl-C stopped the run), the highest with its iteration
(selected on the test set, as the reference code's ``accr_best`` is: for comparison with the
published figure only) and the first iteration whose class entropy is at most ``COLLAPSED`` (a
collapse into one class, as jdistill's runs name it).
"""

import argparse
import importlib.util
import json
import pathlib
import runpy
import sys
import time

import numpy as np

from jdistill.adversarial.data_free import PAPER_TEACHER_IMAGE_SIZE, teacher_dataset
from jdistill.adversarial.inspection import COLLAPSED, histogram_entropy
from jdistill.data import load_dataset
from jdistill.report import markdown_table, mean_std
from jdistill.train import load_teacher

NOISE = 100
START = PAPER_TEACHER_IMAGE_SIZE // 4  # the generator's first feature map
STARTS = {
    "torch": "PyTorch's draws",
    "jdistill": "those of jdistill's run of the same seed (--init jdistill)",
}
recipe = runpy.run_path(str(pathlib.Path(__file__).with_name("teacher_recipe_parity.py")))
torch_lenet5, torch_arrays = recipe["torch_lenet5"], recipe["torch_arrays"]


def torch_generator(width: int):
    """DAFL's MNIST generator in PyTorch (the class is made here: torch is imported only when used)."""
    import torch
    from torch import nn

    class TorchGenerator(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(NOISE, 2 * width * START**2)
            self.bn0 = nn.BatchNorm2d(2 * width)
            self.conv1, self.bn1 = (
                nn.Conv2d(2 * width, 2 * width, 3, padding=1),
                nn.BatchNorm2d(2 * width, 0.8),
            )
            self.conv2, self.bn2 = nn.Conv2d(2 * width, width, 3, padding=1), nn.BatchNorm2d(width, 0.8)
            self.conv_out, self.bn_out = nn.Conv2d(width, 1, 3, padding=1), nn.BatchNorm2d(1, affine=False)

        def forward(self, z):
            up = lambda h: nn.functional.interpolate(h, scale_factor=2)  # nearest
            h = self.bn0(self.linear(z).view(z.shape[0], -1, START, START))
            h = nn.functional.leaky_relu(self.bn1(self.conv1(up(h))), 0.2)
            h = nn.functional.leaky_relu(self.bn2(self.conv2(up(h))), 0.2)
            return self.bn_out(torch.tanh(self.conv_out(h)))

    return TorchGenerator()


def conv_layout(kernel):
    """A Flax HWIO kernel in PyTorch's OIHW layout."""
    return np.asarray(kernel).transpose(3, 2, 0, 1)


def lenet_layout(params) -> dict:
    """jdistill LeNet-5 parameters -> ``{index in torch_lenet5's Sequential: (weight, bias)}``."""
    c2, f1 = np.asarray(params["conv2"]["kernel"]).shape[-1], np.asarray(params["fc1"]["kernel"]).shape[-1]
    layouts = {0: ("conv1", conv_layout), 3: ("conv2", conv_layout),
               6: ("fc1", lambda k: conv_layout(np.asarray(k).reshape(5, 5, c2, f1))),  # flattened (h, w, c)
               9: ("fc2", lambda k: np.asarray(k).T), 11: ("head", lambda k: np.asarray(k).T)}  # fmt: skip
    return {
        i: (layout(params[n]["kernel"]), np.asarray(params[n]["bias"])) for i, (n, layout) in layouts.items()
    }


def generator_layout(params) -> dict:
    """jdistill generator parameters -> ``{torch parameter name: array}``; the linear layer's outputs
    are reshaped (h, w, c) in jdistill and (c, h, w) in PyTorch."""
    kernel = np.asarray(params["linear"]["kernel"])
    channels = kernel.shape[1] // START**2
    bias = np.asarray(params["linear"]["bias"]).reshape(START, START, channels)
    out = {"linear.weight": kernel.reshape(NOISE, START, START, channels).transpose(3, 1, 2, 0).reshape(-1, NOISE),
           "linear.bias": bias.transpose(2, 0, 1).ravel()}  # fmt: skip
    for name in ("conv1", "conv2", "conv_out"):
        out[f"{name}.weight"], out[f"{name}.bias"] = conv_layout(params[name]["kernel"]), params[name]["bias"]
    for name in ("bn0", "bn1", "bn2"):
        out[f"{name}.weight"], out[f"{name}.bias"] = params[name]["scale"], params[name]["bias"]
    return out


def load(net, arrays: dict, dtype=None) -> None:
    """``arrays`` (from :func:`lenet_layout` or :func:`generator_layout`) into ``net`` (moved to
    ``dtype`` if given)."""
    import torch

    if dtype is not None:
        net.to(dtype)
    tensor = lambda a, like: torch.from_numpy(np.array(a)).to(like.dtype)  # a copy: writable
    with torch.no_grad():
        if isinstance(net, torch.nn.Sequential):
            for index, (weight, bias) in arrays.items():
                net[index].weight.copy_(tensor(weight, net[index].weight))
                net[index].bias.copy_(tensor(bias, net[index].bias))
        else:
            for name, value in net.named_parameters():
                value.copy_(tensor(arrays[name], value))


def jdistill_start(teacher_dir, dataset, seed: int, width: int) -> tuple[dict, dict]:
    """The generator's and the student's initial weights in jdistill's DAFL run of ``seed``
    (``DataFreeConfig(init="torch")``, as ``data_free_mnist.py`` draws them), in PyTorch's layouts:
    for ``--init jdistill``, which tells the draws apart from the training."""
    from jdistill.adversarial import data_free as df

    config = df.DataFreeConfig(teacher=str(teacher_dir), method="dafl", image_size=PAPER_TEACHER_IMAGE_SIZE,
                               generator_width=width, iterations=1, iterations_per_epoch=1, init="torch", seed=seed)  # fmt: skip
    players = df.build(config, dataset).players
    return generator_layout(players["generator"].params), lenet_layout(players["student"].params["model"])


def adam_optimizers(generator, student) -> tuple:
    """The reference's: Adam 0.2 for the generator, 2e-3 for the student, PyTorch's defaults else."""
    import torch

    return torch.optim.Adam(generator.parameters(), lr=0.2), torch.optim.Adam(student.parameters(), lr=2e-3)


def dafl_iteration(generator, student, teacher, optimizers, z) -> dict:
    """One iteration of the reference loop on noise ``z``; its losses (the generator's terms
    weighted) before the steps."""
    import torch
    from torch.nn import functional

    for optimizer in optimizers:
        optimizer.zero_grad()
    images = generator(z)
    features = teacher[:8](images).flatten(1)  # conv3 + ReLU: the 120-d features
    logits = teacher[8:](features)
    one_hot = functional.cross_entropy(logits, logits.detach().argmax(1))
    mean_softmax = functional.softmax(logits, dim=1).mean(dim=0)
    information_entropy = 5 * (mean_softmax * torch.log10(mean_softmax)).sum()
    activation = -0.1 * features.abs().mean()
    student_log_p = functional.log_softmax(student(images.detach()), dim=1)
    teacher_p = functional.softmax(logits.detach(), dim=1)
    kl = functional.kl_div(student_log_p, teacher_p, reduction="sum") / len(z)
    (one_hot + information_entropy + activation + kl).backward()
    for optimizer in optimizers:
        optimizer.step()
    terms = {
        "one_hot": one_hot,
        "information_entropy": information_entropy,
        "activation": activation,
        "kl": kl,
    }
    return {name: value.item() for name, value in terms.items()}


def evaluate(generator, student, teacher, x_test, y_test, noise) -> dict:
    """The student's test accuracy, and the teacher on the generator's batch from ``noise``: its
    class entropy, mean |logit| and the largest |pixel|."""
    import torch

    student.eval()
    with torch.no_grad():
        correct = sum(
            int((student(x).argmax(1) == y).sum()) for x, y in zip(x_test.split(1000), y_test.split(1000))
        )
        images = generator(noise)  # in training mode, as in training
        logits = teacher(images)
    student.train()
    counts = np.bincount(logits.argmax(1).cpu().numpy(), minlength=10)
    return {"accuracy": correct / len(y_test), "class_entropy": histogram_entropy(counts),
            "teacher_abs_logit": float(logits.abs().mean()), "max_abs_pixel": float(images.abs().max())}  # fmt: skip


def networks(seed: int, width: int, teacher_params, start=None) -> tuple:
    """The generator, the student and the teacher of ``seed``'s run, drawn from PyTorch's stream
    seeded with ``seed`` in this order (the teacher's draws then replaced by ``teacher_params``, and
    with ``start`` the generator's and the student's by :func:`jdistill_start`'s), which leaves the
    stream where the run's noise begins: the same noise whatever ``start`` is."""
    import torch

    torch.manual_seed(seed)
    generator, student, teacher = torch_generator(width), torch_lenet5((3, 8), (60, 42)), torch_lenet5()
    load(teacher, lenet_layout(teacher_params))
    if start is not None:
        load(generator, start[0])
        load(student, start[1])
    return generator, student, teacher


def play(seed: int, teacher_params, test_set: tuple, a, device, record: dict, save, start=None) -> None:
    """One seed's run against the teacher ``teacher_params`` into ``record``: every evaluation's
    figures on ``test_set`` (images and labels on ``device``), by name, the iterations they were made
    at and (at the end) the training seconds; ``save()`` after each evaluation. ``start``: the
    generator's and the student's initial weights (:func:`jdistill_start`) instead of PyTorch's
    draws; the noise is the same either way."""
    import torch

    generator, student, teacher = networks(seed, a.generator_width, teacher_params, start)
    generator, student = generator.to(device), student.to(device)
    teacher.to(device).eval().requires_grad_(False)
    optimizers = adam_optimizers(generator, student)
    evaluation_noise = torch.Generator(device=device).manual_seed(seed)  # leaves the training noise alone
    record["iteration"] = []
    began = time.perf_counter()
    for i in range(1, a.iterations + 1):
        dafl_iteration(
            generator, student, teacher, optimizers, torch.randn(a.batch_size, NOISE, device=device)
        )
        if i % a.eval_every == 0 or i == a.iterations:
            noise = torch.randn(a.batch_size, NOISE, device=device, generator=evaluation_noise)
            figures = evaluate(generator, student, teacher, *test_set, noise)
            record["iteration"].append(i)
            for name, value in figures.items():
                record.setdefault(name, []).append(value)
            save()
            print(f"seed {seed} iteration {i}: accuracy {100 * figures['accuracy']:.2f} %, class entropy "
                  f"{figures['class_entropy']:.2f} ({time.perf_counter() - began:.0f} s)", file=sys.stderr)  # fmt: skip
    record["seconds"] = round(time.perf_counter() - began, 1)
    save()


def collapse(record: dict) -> int | None:
    """The first evaluated iteration whose class entropy is at most ``COLLAPSED``, or None."""
    return next((i for i, e in zip(record["iteration"], record["class_entropy"]) if e <= COLLAPSED), None)


def table(runs: dict, teacher_accuracy: float, init: str = "torch") -> str:
    rows, finals = [], []
    for seed, record in runs.items():
        best = int(np.argmax(record["accuracy"]))
        finals.append(record["accuracy"][-1])
        rows.append([seed, f"{100 * record['accuracy'][-1]:.2f} ({record['iteration'][-1]})",
                     f"{100 * record['accuracy'][best]:.2f} ({record['iteration'][best]})",
                     collapse(record) or "no", record.get("seconds", "stopped")])  # fmt: skip
    return "\n".join([
        "# DAFL on MNIST, the reference's loop in PyTorch (LeNet-5 -> LeNet-5-half)\n",
        (f"Teacher: {100 * teacher_accuracy:.2f} % (paper 98.91). Student test accuracy (%); paper 98.20. "
         f"First weights: {STARTS[init]}.\n"),
        markdown_table(["seed", "at the last evaluation (iteration)", "highest (iteration; chosen on the test set)",
                        "collapsed by iteration", "train s"], rows),
        (f"\nAt the last evaluation: {mean_std(finals)} % over {len(finals)} seed(s); 'stopped': a run "
         "that a time limit ended before --iterations."),
    ])  # fmt: skip


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="MNIST's IDX files (default: tensorflow-datasets)")
    parser.add_argument("--teacher", required=True, help="a jdistill LeNet-5 run directory trained at 32x32")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=24000, help="the paper's: 200 epochs of 120")
    parser.add_argument("--eval-every", type=int, default=120, help="iterations between evaluations")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--generator-width", type=int, default=64)
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--init", choices=("torch", "jdistill"), default="torch",
                        help="the student's and generator's first weights: PyTorch's draws, or the ones jdistill's "
                        "run of the same seed starts from (PyTorch's noise either way)")  # fmt: skip
    a = parser.parse_args(argv)
    if importlib.util.find_spec("torch") is None:
        parser.exit(2, f"{parser.prog}: PyTorch is not installed: pip install -e '.[parity]'\n")
    for name in ("iterations", "eval_every", "batch_size", "generator_width"):
        if getattr(a, name) < 1:
            parser.exit(2, f"{parser.prog}: --{name.replace('_', '-')} must be at least 1\n")
    import torch

    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # full float32 products, as the papers' GPUs and data_free_gpu.sh's jdistill runs: PyTorch's
    # convolutions default to TF32 (a 10-bit mantissa) on GPUs that have it
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        dataset = teacher_dataset(load_dataset("mnist", a.data_dir), PAPER_TEACHER_IMAGE_SIZE)
        teacher = load_teacher(a.teacher, dataset)
    except (OSError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: {error}\n")
    if teacher.config.model.name != "lenet5":
        parser.exit(
            2, f"{parser.prog}: the teacher {a.teacher} is a {teacher.config.model.name}, not a lenet5\n"
        )
    # the test set alone: the students never see MNIST's training images
    x_test, y_test = (t.to(device) for t in torch_arrays(dataset.first(0))[2:])
    teacher_params = teacher.frozen.params["model"]  # a Trainable's network
    net = torch_lenet5()
    load(net, lenet_layout(teacher_params))
    net.to(device).eval()
    with torch.no_grad():
        teacher_accuracy = float((net(x_test).argmax(1) == y_test).float().mean())
    a.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    settings = {k: v for k, v in vars(a).items() if k not in ("out", "seeds")} | {
        "device": str(device),
        "matmul_precision": "float32",
    }
    save = lambda: (a.out / "results.json").write_text(json.dumps(
        {"settings": settings, "teacher_accuracy": teacher_accuracy, "seeds": runs}, indent=1, default=str))  # fmt: skip
    try:
        for seed in a.seeds:
            runs[str(seed)] = {}
            start = (
                jdistill_start(a.teacher, dataset, seed, a.generator_width) if a.init == "jdistill" else None
            )
            play(seed, teacher_params, (x_test, y_test), a, device, runs[str(seed)], save, start)
    except KeyboardInterrupt:  # a time limit: the table of the evaluations so far
        runs = {seed: record for seed, record in runs.items() if record.get("accuracy")}
        save()
        if runs:
            (a.out / "table.md").write_text(table(runs, teacher_accuracy, a.init))
        parser.exit(130, f"{parser.prog}: interrupted; {a.out}/results.json holds every evaluation so far\n")
    (a.out / "table.md").write_text(table(runs, teacher_accuracy, a.init))
    print((a.out / "table.md").read_text())
    return runs


if __name__ == "__main__":
    main()

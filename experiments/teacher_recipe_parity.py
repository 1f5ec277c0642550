"""A data-free method's MNIST teacher recipe trained by jdistill and by PyTorch, over the same seeds.

The data-free papers' students learn from a LeNet-5 that their code trains on real MNIST
(:data:`jdistill.adversarial.data_free.PAPER_TEACHERS`: DAFL's Adam 1e-3 for 9 epochs, DFAD's SGD
0.01 with momentum 0.9 and weight decay 1e-4 for 10; batch 256, constant rate, 32x32 images).
jdistill trains it with ``fit`` on :func:`~jdistill.adversarial.data_free.paper_teacher`; the
PyTorch side is a plain loop written here (``torch.nn`` layers with PyTorch's own initialisation,
``torch.optim``, one shuffle per epoch, the last partial batch dropped as jdistill drops it). Both
read the same resized, standardised arrays, so what differs is the framework: the draws of initial
weights and batches, and the arithmetic. Seeds are not paired across frameworks; compare the
spreads. Test accuracy after every epoch is the figure.

    python experiments/teacher_recipe_parity.py --data-dir ../shared/data/mnist --out runs/teacher_parity_dafl \
        --seeds 0 1 2 3 4 5 6 7 8 9 10 11
        # DAFL's recipe (2026-12-02, 2 CPU cores, 0.5-5 min per seed: last epoch 98.86 +- 0.13 % in
        # jdistill, 98.86 +- 0.09 % in PyTorch; the DAFL paper's teacher: 98.91 %); default seeds 0 1 2
    python experiments/teacher_recipe_parity.py ... --method dfad    # DFAD's recipe (ZSKT's too)

Needs PyTorch (``pip install -e '.[parity]'``). Writes ``table.md`` (last-epoch accuracy per seed,
and the mean per epoch) and ``results.json`` (every accuracy) to ``--out``; the jdistill runs are
run directories under ``--out/jdistill``, read back when the command is run again.
"""

import argparse
import importlib.util
import json
import pathlib
import sys
import time

import numpy as np

from jdistill.adversarial.data_free import (
    DATA_FREE_METHODS,
    PAPER_TEACHER_IMAGE_SIZE,
    PAPER_TEACHERS,
    paper_teacher,
    teacher_dataset,
)
from jdistill.data import load_dataset
from jdistill.report import markdown_table, mean_std
from jdistill.train import RunDir, fit


def jdistill_accuracies(dataset, data_dir, method: str, seed: int, epochs: int, out: pathlib.Path) -> list:
    """Test accuracy after each epoch of jdistill's run of ``method``'s teacher recipe."""
    config = paper_teacher(method, data_dir=data_dir, seed=seed, epochs=epochs, eval_every=1)
    fit(config, out, dataset=dataset, progress=False, label=f"jdistill seed {seed}")
    return [m["test/accuracy"] for m in RunDir(out).metrics() if "test/accuracy" in m]


def torch_lenet5(channels=(6, 16), fc=(120, 84)):
    """LeNet-5 as the papers' code writes it, for 32x32 inputs (its third convolution is jdistill's
    ``fc1``), with PyTorch's default initialisation; ``channels=(3, 8), fc=(60, 42)``: LeNet-5-half."""
    from torch import nn

    (c1, c2), (f1, f2) = channels, fc
    return nn.Sequential(
        nn.Conv2d(1, c1, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c2, f1, 5), nn.ReLU(), nn.Flatten(),
        nn.Linear(f1, f2), nn.ReLU(), nn.Linear(f2, 10),
    )  # fmt: skip


def torch_optimizer(net, method: str):
    """``torch.optim`` as ``method``'s recipe names it: Adam, or SGD with coupled weight decay."""
    import torch

    recipe = PAPER_TEACHERS[method]
    if recipe["optimizer"] == "adam":
        return torch.optim.Adam(
            net.parameters(), lr=recipe["learning_rate"], weight_decay=recipe["weight_decay"]
        )
    return torch.optim.SGD(net.parameters(), lr=recipe["learning_rate"], momentum=recipe["momentum"],
                           nesterov=recipe["nesterov"], weight_decay=recipe["weight_decay"])  # fmt: skip


def torch_arrays(dataset) -> tuple:
    """``x_train, y_train, x_test, y_test`` as PyTorch tensors: standardised NCHW images, int64 labels."""
    import torch

    images = lambda x: torch.from_numpy(np.ascontiguousarray(dataset.normalise(x).transpose(0, 3, 1, 2)))
    labels = lambda y: torch.from_numpy(y.astype(np.int64))
    return images(dataset.x_train), labels(dataset.y_train), images(dataset.x_test), labels(dataset.y_test)


def torch_accuracies(arrays: tuple, method: str, seed: int, epochs: int) -> list:
    """Test accuracy after each epoch of the same recipe in plain PyTorch on :func:`torch_arrays`."""
    import torch
    from torch import nn

    x_train, y_train, x_test, y_test = arrays
    torch.manual_seed(seed)
    net = torch_lenet5()
    optimizer = torch_optimizer(net, method)
    accuracies = []
    for _ in range(epochs):
        net.train()
        size = PAPER_TEACHERS[method]["batch_size"]
        for batch in torch.randperm(len(x_train))[: len(x_train) // size * size].split(size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            accuracies.append(float((net(x_test).argmax(1) == y_test).float().mean()))
    return accuracies


def table(results: dict, method: str) -> str:
    seeds = sorted(results["jdistill"], key=int)
    last = {f: [results[f][s][-1] for s in seeds] for f in results}
    lines = [f"# {method.upper()}'s MNIST teacher recipe (LeNet-5, 32x32): jdistill against PyTorch\n",
             "Test accuracy (%) after the last epoch:\n",
             markdown_table(["framework", *(f"seed {s}" for s in seeds), "mean +- std"],
                            [[f, *(f"{100 * a:.2f}" for a in last[f]), mean_std(last[f])] for f in results]),
             "\nMean test accuracy (%) over the seeds, by epoch:\n"]  # fmt: skip
    epochs = len(results["jdistill"][seeds[0]])
    by_epoch = [
        [e + 1, *(mean_std([results[f][s][e] for s in seeds]) for f in results)] for e in range(epochs)
    ]
    lines.append(markdown_table(["epoch", *results], by_epoch))
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="MNIST's IDX files (default: tensorflow-datasets)")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--method", choices=DATA_FREE_METHODS, default="dafl", help="whose teacher recipe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--train-examples", type=int, help="only the first N training images (smoke runs)")
    a = parser.parse_args(argv)
    if importlib.util.find_spec("torch") is None:
        parser.exit(2, f"{parser.prog}: PyTorch is not installed: pip install -e '.[parity]'\n")
    try:
        dataset = teacher_dataset(load_dataset("mnist", a.data_dir), PAPER_TEACHER_IMAGE_SIZE).first(
            a.train_examples
        )
    except (OSError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: {error}\n")
    epochs = a.epochs or PAPER_TEACHERS[a.method]["epochs"]
    results, arrays = {"jdistill": {}, "pytorch": {}}, torch_arrays(dataset)
    for seed in a.seeds:
        start = time.perf_counter()
        results["jdistill"][str(seed)] = jdistill_accuracies(
            dataset, a.data_dir, a.method, seed, epochs, a.out / "jdistill" / f"seed{seed}"
        )
        results["pytorch"][str(seed)] = torch_accuracies(arrays, a.method, seed, epochs)
        last = {f: f"{100 * results[f][str(seed)][-1]:.2f} %" for f in results}
        print(f"seed {seed}: jdistill {last['jdistill']}, pytorch {last['pytorch']} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)  # fmt: skip
    (a.out / "results.json").write_text(
        json.dumps({"method": a.method, "epochs": epochs, **results}, indent=1)
    )
    (a.out / "table.md").write_text(table(results, a.method))
    print((a.out / "table.md").read_text())
    return results


if __name__ == "__main__":
    main()

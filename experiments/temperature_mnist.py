"""Seeing the temperature on MNIST: a LeNet-5 teacher's probabilities softmax(z / T) at T = 1,
2, 4, 8, 20 for three test images, chosen by the teacher's own entropy at T = 1: the most
confident correctly classified image, the median one, and the most ambiguous one.

The teacher (``lenet5``, 2 epochs, SGD with Nesterov momentum 0.9, learning rate 0.05 on a cosine
schedule, batch 128) is trained into ``--out``/teacher, or an existing finished MNIST run is
reused with ``--teacher DIR``. For each image, ``<kind>/temperature_bars.png`` shows the
probability of every class at every T beside the image, and ``<kind>/entropy.png`` its entropy
against T (log axis, 33 temperatures from 0.25 to 100); ``entropy.png`` puts the three curves
together. ``table.md`` has the numbers and the mean entropy over the whole test set per T.

    python experiments/temperature_mnist.py --data-dir ../shared/data/mnist --out runs/temperature_mnist
        # 4.4 min measured on 2 CPU cores shared with four other jobs (load average ~17); the
        # teacher's 2 epochs took 130 s of that. With --teacher DIR (no training) 2 min, shared.
    python experiments/temperature_mnist.py --data-dir DIR --out DIR --smoke   # the pipeline in seconds

Writes ``table.md``, ``results.json`` and the PNG files to ``--out``.
"""

import argparse
import json
import pathlib

import numpy as np

from jdistill import losses
from jdistill.data import load_dataset
from jdistill.temperature import TEMPERATURES, plot_entropy, show, teacher_logits
from jdistill.train import RunConfig, fit

SMOKE_TRAIN, SMOKE_TEST = 512, 200  # examples kept by --smoke


def choose_images(logits: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """Test-set positions of the most confident correctly classified image, the median one (by
    entropy at T = 1) and the most ambiguous one."""
    h = np.asarray(losses.entropy(losses.softened_probabilities(logits, temperature=1.0)))
    correct = np.flatnonzero(logits.argmax(-1) == labels)
    if len(correct) == 0:
        raise ValueError("the teacher classifies no test image correctly")
    order = np.argsort(h, kind="stable")
    return {
        "confident": int(correct[np.argmin(h[correct])]),
        "median": int(order[len(order) // 2]),
        "ambiguous": int(order[-1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="MNIST IDX files; default: tensorflow-datasets")
    parser.add_argument("--out", default="runs/temperature_mnist")
    parser.add_argument(
        "--teacher", default=None, help="a finished MNIST run to reuse instead of training one"
    )
    parser.add_argument("--epochs", type=int, default=2, help="teacher epochs")
    parser.add_argument(
        "--smoke", action="store_true", help=f"{SMOKE_TRAIN} training images, 1 epoch: tests the pipeline"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    dataset = load_dataset("mnist", args.data_dir)
    if args.smoke:
        dataset = dataset.first(SMOKE_TRAIN, SMOKE_TEST)
    teacher_dir = args.teacher or str(out / "teacher")
    if args.teacher is None:
        config = RunConfig(
            model="lenet5",
            dataset="mnist",
            data_dir=args.data_dir,
            epochs=1 if args.smoke else args.epochs,
            batch_size=64 if args.smoke else 128,
            learning_rate=0.05,
        )
        fit(config, teacher_dir, dataset=dataset, progress=not args.quiet, label="teacher")
    logits = teacher_logits(teacher_dir, dataset)
    accuracy = float(np.mean(logits.argmax(-1) == dataset.y_test))

    images = choose_images(logits, dataset.y_test)
    mean_entropy = [
        float(np.mean(losses.entropy(losses.softened_probabilities(logits, temperature=t))))
        for t in TEMPERATURES
    ]
    results = {
        "teacher": teacher_dir,
        "teacher_accuracy": accuracy,
        "temperatures": list(TEMPERATURES),
        "mean_test_entropy": mean_entropy,
        "images": {},
    }
    sections = [
        (
            f"Teacher {teacher_dir}: test accuracy {100 * accuracy:.2f} % on {len(dataset.y_test)} images. "
            f"Probabilities softmax(z / T) and entropy (nats; log 10 = {np.log(10):.3f}).\n"
        ),
        "Mean entropy over the test set: "
        + ", ".join(f"T = {t:g}: {h:.3f}" for t, h in zip(TEMPERATURES, mean_entropy))
        + "\n",
    ]
    curves = {}
    for kind, index in images.items():
        label, predicted = int(dataset.y_test[index]), int(logits[index].argmax())
        text = show(logits[index], dataset.x_test[index], label, out / kind, name=f"{kind}: ")
        curves[f"{kind} (test image {index}, label {label})"] = logits[index]
        results["images"][kind] = {
            "index": index,
            "label": label,
            "predicted": predicted,
            "logits": [round(float(z), 4) for z in logits[index]],
            "probabilities": {
                f"{t:g}": [
                    round(float(p), 6) for p in losses.softened_probabilities(logits[index], temperature=t)
                ]
                for t in TEMPERATURES
            },
        }
        sections.append(
            f"## {kind}: test image {index}, label {label}, teacher predicts {predicted}\n\n"
            f"Logits: {', '.join(f'{z:.2f}' for z in logits[index])}\n\n{text}"
        )
    plot_entropy(curves, out / "entropy.png")
    table = "\n".join(sections)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()

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
        # 38 s on 2 otherwise idle CPU cores (2026-12-03; the teacher's 2 epochs 18 s of it);
        # 4.4 min when the cores were shared with four other jobs (load average ~17).
    python experiments/temperature_mnist.py --data-dir DIR --out DIR --smoke   # the pipeline in seconds

Writes ``table.md``, ``results.json`` (the teacher run's summary), ``temperature.json`` (the
teacher's accuracy, the mean entropies, and each image's logits and probabilities) and the PNG
files to ``--out``.
"""

import json
import pathlib

import numpy as np

from jdistill import losses
from jdistill.experiment import Experiment, Run, main
from jdistill.temperature import TEMPERATURES, plot_entropy, show, teacher_logits
from jdistill.train import RunConfig


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


def add_options(parser):
    parser.add_argument(
        "--teacher", default=None, help="a finished MNIST run to reuse instead of training one"
    )
    parser.add_argument("--epochs", type=int, default=2, help="teacher epochs")


def teacher_dir(options) -> str:
    return str(pathlib.Path(options.args.teacher or options.out / "teacher").absolute())


def runs(options):
    if options.args.teacher is None:
        config = RunConfig(
            "lenet5", "mnist", options.args.epochs, data_dir=options.data_dir, learning_rate=0.05
        )
        yield Run("teacher", config, "teacher")


def table(results, options):
    """The table; it also writes the figures and temperature.json (``show`` draws an image's
    figures as it tabulates it)."""
    out, data, teacher = options.out, options.dataset, teacher_dir(options)
    logits = teacher_logits(teacher, data)
    accuracy = float(np.mean(logits.argmax(-1) == data.y_test))
    soft = {t: losses.softened_probabilities(logits, temperature=t) for t in TEMPERATURES}
    entropy = [float(np.mean(losses.entropy(p))) for p in soft.values()]
    means = ", ".join(f"T = {t:g}: {h:.3f}" for t, h in zip(TEMPERATURES, entropy))
    sections = [
        f"Teacher {teacher}: test accuracy {100 * accuracy:.2f} % on {len(data.y_test)} images. "
        f"Probabilities softmax(z / T) and entropy (nats; log 10 = {np.log(10):.3f}).\n",
        f"Mean entropy over the test set: {means}\n",
    ]
    images, curves = {}, {}
    for kind, i in choose_images(logits, data.y_test).items():
        label, predicted = int(data.y_test[i]), int(logits[i].argmax())
        text = show(logits[i], data.x_test[i], label, out / kind, name=f"{kind}: ")
        curves[f"{kind} (test image {i}, label {label})"] = logits[i]
        probabilities = {f"{t:g}": [round(float(q), 6) for q in p[i]] for t, p in soft.items()}
        logits_i = [round(float(z), 4) for z in logits[i]]
        images[kind] = dict(
            index=i, label=label, predicted=predicted, logits=logits_i, probabilities=probabilities
        )
        sections.append(
            f"## {kind}: test image {i}, label {label}, teacher predicts {predicted}\n\n"
            f"Logits: {', '.join(f'{z:.2f}' for z in logits[i])}\n\n{text}"
        )
    plot_entropy(curves, out / "entropy.png")
    details = dict(teacher=teacher, teacher_accuracy=accuracy, temperatures=list(TEMPERATURES))
    details.update(mean_test_entropy=entropy, images=images)
    (out / "temperature.json").write_text(json.dumps(details, indent=2) + "\n")
    return "\n".join(sections)


EXPERIMENT = Experiment(__doc__, "mnist", runs, table, add_options=add_options, seeds=1,
                        default_out="runs/temperature_mnist")  # fmt: skip

if __name__ == "__main__":
    main(EXPERIMENT)

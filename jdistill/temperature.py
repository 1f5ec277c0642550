"""Seeing the temperature: a teacher's probabilities for one test image at several T, their
entropy against T, printed and plotted (``jdistill temperature``)."""

import pathlib
from collections.abc import Sequence

import jax
import numpy as np

from jdistill import losses
from jdistill.data import Dataset
from jdistill.report import markdown_table

TEMPERATURES = (1.0, 2.0, 4.0, 8.0, 20.0)
CURVE_TEMPERATURES = tuple(float(t) for t in np.geomspace(0.25, 100.0, 33))  # the entropy curve


def teacher_logits(run_dir: str, dataset: Dataset, *, batch_size: int = 500) -> np.ndarray:
    """[N, C] logits of the finished run in ``run_dir`` on ``dataset``'s test images."""
    from jdistill.train import load_teacher, teacher_forward

    teacher = load_teacher(run_dir, dataset)
    forward = jax.jit(lambda images: teacher_forward(teacher.graphdef, teacher.variables, images)[0])
    images = dataset.normalise(dataset.x_test)
    return np.concatenate(
        [np.asarray(forward(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    )


def soften(logits: np.ndarray, temperatures: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities [T, C], entropies [T] in nats)`` of one logit vector at each temperature."""
    probs = np.stack([np.asarray(losses.softened_probabilities(logits, temperature=t)) for t in temperatures])
    return probs, np.asarray(losses.entropy(probs))


def table(logits: np.ndarray, temperatures: Sequence[float]) -> str:
    """A markdown table: one row per T with each class's probability (below 0.001 in scientific
    notation, so that the small ones stay visible) and the entropy."""
    probs, entropies = soften(logits, temperatures)
    num_classes = probs.shape[1]
    headers = ["T", *(f"p({c})" for c in range(num_classes)), "entropy (nats)", "entropy / log C"]
    rows = [
        [
            f"{t:g}",
            *(f"{p:.4f}" if p >= 1e-3 else f"{p:.1e}" for p in row),
            f"{h:.3f}",
            f"{h / np.log(num_classes):.3f}",
        ]
        for t, row, h in zip(temperatures, probs, entropies)
    ]
    return markdown_table(headers, rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bars(image: np.ndarray, logits: np.ndarray, temperatures: Sequence[float], path, *, title: str = ""):
    """Grouped bars (class on x, one bar per T) beside the image itself."""
    plt = _pyplot()
    probs, entropies = soften(logits, temperatures)
    num_classes = probs.shape[1]
    fig, (ax_img, ax) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 4]})
    ax_img.imshow(np.squeeze(image), cmap="gray")
    ax_img.set_axis_off()
    ax_img.set_title(title, fontsize=9)
    width = 0.8 / len(temperatures)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(temperatures)))
    for k, (t, row, h) in enumerate(zip(temperatures, probs, entropies)):
        x = np.arange(num_classes) - 0.4 + (k + 0.5) * width
        ax.bar(x, row, width, color=colours[k], label=f"T = {t:g} (H = {h:.2f} nats)")
    ax.axhline(1 / num_classes, color="grey", linestyle=":", linewidth=1, label="uniform")
    ax.set_xticks(range(num_classes))
    ax.set_xlabel("class")
    ax.set_ylabel("softmax(z / T)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_entropy(curves: dict[str, np.ndarray], path, *, marked: Sequence[float] = TEMPERATURES):
    """Entropy (nats) against T on a log axis, one line per ``label -> logits [C]``, with ``log C``
    and the ``marked`` temperatures shown."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    num_classes = 0
    for label, logits in curves.items():
        num_classes = logits.shape[-1]
        _, entropies = soften(logits, CURVE_TEMPERATURES)
        line = ax.plot(CURVE_TEMPERATURES, entropies, label=label)[0]
        _, at_marked = soften(logits, marked)
        ax.plot(marked, at_marked, "o", color=line.get_color())
    ax.axhline(np.log(num_classes), color="grey", linestyle=":", label=f"log C = {np.log(num_classes):.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("entropy of softmax(z / T) (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def show(
    logits: np.ndarray, image: np.ndarray, label: int, out, *, temperatures=TEMPERATURES, name=""
) -> str:
    """Write ``temperature_bars.png`` and ``entropy.png`` for one image to ``out``; return the
    table of numbers (markdown)."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{name}label {label}, teacher says {int(np.argmax(logits))}"
    title = title.replace(": ", ":\n", 1) if name else title
    plot_bars(image, logits, temperatures, out / "temperature_bars.png", title=title)
    plot_entropy({title: logits}, out / "entropy.png", marked=temperatures)
    return table(logits, temperatures)


def cmd_temperature(args) -> None:
    from jdistill.data import load_dataset

    dataset = load_dataset(args.dataset, args.data_dir)
    if not 0 <= args.index < len(dataset.y_test):
        raise ValueError(f"--index must be in [0, {len(dataset.y_test)}), got {args.index}")
    if min(args.temperatures) <= 0:
        raise ValueError(f"--temperatures must be positive, got {args.temperatures}")
    logits = teacher_logits(args.teacher, dataset)[args.index]
    label = int(dataset.y_test[args.index])
    text = show(logits, dataset.x_test[args.index], label, args.out, temperatures=args.temperatures)
    print(f"Test image {args.index} (label {label}); teacher logits: {np.array2string(logits, precision=3)}")
    print(text)
    print(f"Wrote {args.out}/temperature_bars.png and {args.out}/entropy.png.")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "temperature",
        help="show what temperature does to a teacher's probabilities on one test image",
        description="Load a finished teacher run, take one test image, print its probability vector "
        "softmax(z / T) and entropy at each T, and plot them (temperature_bars.png, entropy.png).",
    )
    p.add_argument("--teacher", required=True, help="run directory of a finished 'train-teacher' run")
    p.add_argument("--dataset", required=True, help="the teacher's data set (e.g. mnist, digits)")
    p.add_argument("--data-dir", default=None, help="where the data set's files are (see train-teacher)")
    p.add_argument("--index", type=int, default=0, help="position of the image in the test set (0)")
    p.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        default=list(TEMPERATURES),
        help="temperatures of the table and the bars (1 2 4 8 20)",
    )
    p.add_argument("--out", required=True, help="directory for the two PNG files")
    p.set_defaults(func=cmd_temperature)

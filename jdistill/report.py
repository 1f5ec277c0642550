"""Tables, plots and statistics of finished runs: markdown tables, learning curves from
``metrics.jsonl``, two groups of seeds compared (a permutation test, a bootstrap interval)."""

import itertools
import math
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from jdistill.train.rundir import RunDir

MAX_EXACT_SPLITS = 1_000_000  # permutation_p_value: C(22, 11) = 705,432 (11 seeds a side) is exact


def evaluated(record: dict, metric: str = "accuracy"):
    """``metric`` of a summary or metrics line: ``val/<metric>`` for a run evaluated on held-out
    training data, else ``test/<metric>``."""
    return record[f"val/{metric}"] if f"val/{metric}" in record else record[f"test/{metric}"]


def mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 2, signed: bool = False) -> str:
    """``"97.12 +- 0.34"`` (population std over seeds; scaled to percent by default); a single
    value is shown without a spread. ``signed``: the mean with its sign (``"+1.27 +- 0.53"``), for
    differences."""
    values = np.asarray(values, dtype=np.float64) * scale
    mean = f"{values.mean():{'+' if signed else ''}.{digits}f}"
    return mean if len(values) == 1 else f"{mean} +- {values.std():.{digits}f}"


def paired_difference(values: Mapping, reference: Mapping) -> str:
    """``values[k] - reference[k]`` over the keys (seeds) both have, as :func:`mean_std` with its
    sign; ``""`` when they share none."""
    pairs = [v - reference[k] for k, v in values.items() if k in reference]
    return mean_std(pairs, signed=True) if pairs else ""


def permutation_is_exact(n: int, m: int, max_exact: int | None = None) -> bool:
    """Whether :func:`permutation_p_value` counts every split of ``n`` and ``m`` values (at most
    ``max_exact``, default ``MAX_EXACT_SPLITS``) rather than sampling them."""
    return math.comb(n + m, n) <= (MAX_EXACT_SPLITS if max_exact is None else max_exact)


def permutation_p_value(
    a: Sequence[float],
    b: Sequence[float],
    *,
    samples: int = 200_000,
    seed: int = 0,
    max_exact: int | None = None,
) -> float:
    """Two-sided p-value of ``mean(b) - mean(a)`` under exchangeability (Fisher's permutation test):
    the fraction of the ``C(n + m, n)`` ways to split the pooled values into groups of ``n = len(a)``
    and ``m = len(b)`` whose difference of means is at least as large in size. Exact (every split)
    up to ``max_exact`` splits (default ``MAX_EXACT_SPLITS``); beyond, estimated from ``samples``
    random splits as ``(hits + 1) / (samples + 1)`` (the observed split counted, so never 0). For
    unpaired seeds of two implementations, where a t-test's normality is not assumed."""
    a, b = _two_groups(a, b, samples)
    pooled, n = np.concatenate([a, b]), len(a)
    observed = abs(b.mean() - a.mean()) * (1 - 1e-12) - 1e-12  # ties count as extreme
    exact = permutation_is_exact(n, len(b), max_exact)
    if exact:  # the first group's members of every split, one row each
        count = math.comb(len(pooled), n)
        splits = itertools.chain.from_iterable(itertools.combinations(range(len(pooled)), n))
        members = np.fromiter(splits, np.intp, count * n).reshape(count, n)
    else:
        members = np.argsort(np.random.default_rng(seed).random((samples, len(pooled))), axis=1)[:, :n]
    sum_a = pooled[members].sum(axis=1)
    hits = int(np.sum(np.abs((pooled.sum() - sum_a) / len(b) - sum_a / n) >= observed))
    return hits / len(members) if exact else (hits + 1) / (samples + 1)


def bootstrap_interval(
    a: Sequence[float], b: Sequence[float], *, level: float = 0.95, samples: int = 20_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(b) - mean(a)`` at ``level`` (Efron & Tibshirani 1993,
    ch. 13): each group resampled with replacement, on its own, ``samples`` times; the interval holds
    the middle ``level`` of the resampled differences. For unpaired seeds: the differences the data
    leave plausible, beside :func:`permutation_p_value`'s test of none."""
    a, b = _two_groups(a, b, samples)
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    rng = np.random.default_rng(seed)
    differences = b[rng.integers(len(b), size=(samples, len(b)))].mean(axis=1) - a[
        rng.integers(len(a), size=(samples, len(a)))
    ].mean(axis=1)
    low, high = np.percentile(differences, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def _two_groups(a, b, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The two groups as float64 vectors, or one ``ValueError`` line."""
    a, b = np.atleast_1d(np.asarray(a, np.float64)), np.atleast_1d(np.asarray(b, np.float64))
    if a.ndim != 1 or b.ndim != 1 or not len(a) or not len(b):
        raise ValueError(f"need two non-empty lists of values, got shapes {a.shape} and {b.shape}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    return a, b


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_learning_curves(
    groups: Mapping[str, Sequence[str | pathlib.Path]],
    path: str | pathlib.Path,
    *,
    metric: str = "test/accuracy",
    title: str = "",
    zoom: float | None = None,
    percent: bool = True,
) -> None:
    """One line per group (label -> run directories): ``metric`` (a fraction, plotted in %; as it is
    without ``percent``) against training step, mean over the group's runs with a band of +- one
    standard deviation. ``zoom``: show only ``zoom`` points below the lowest final value and above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    finals = []
    for label, run_dirs in groups.items():
        curves = [[m for m in RunDir(d).metrics() if metric in m] for d in run_dirs]
        steps = np.array([m["step"] for m in curves[0]])
        values = np.array([[m[metric] for m in c] for c in curves]) * (100 if percent else 1)
        mean, std = values.mean(0), values.std(0)
        ax.plot(steps, mean, label=f"{label} (n={len(curves)})")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        finals.append(mean[-1])
    if zoom:  # the end of training, where runs differ, fills the plot
        ax.set_ylim(min(finals) - zoom, min(100.0, max(finals) + zoom / 2))
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{metric} (%)" if percent else metric)
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_run(run_dir: str | pathlib.Path, path: str | pathlib.Path | None = None) -> pathlib.Path:
    """The learning curves of one run: its training loss terms (left) and its train and
    evaluation accuracy (right) by epoch, from ``metrics.jsonl``; written to ``path`` (default
    ``<run_dir>/learning_curves.png``), which is returned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = RunDir(run_dir).metrics()
    path = pathlib.Path(path or pathlib.Path(run_dir) / "learning_curves.png")
    fig, (losses, accuracy) = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({k for m in metrics for k in m if k.startswith("train/loss")}):
        points = [(m["epoch"], m[key]) for m in metrics if key in m]
        losses.plot(*zip(*points), label=key)
    for key in sorted({k for m in metrics for k in m if k.endswith("/accuracy") and "best" not in k}):
        points = [(m["epoch"], 100 * m[key]) for m in metrics if key in m]
        accuracy.plot(*zip(*points), marker="o" if len(points) < 30 else None, label=key)
    losses.set_yscale("log")
    for ax, label in ((losses, "loss"), (accuracy, "accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

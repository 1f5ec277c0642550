"""Two groups of DAFL runs side by side over unpaired seeds: jdistill's against the reference's
PyTorch loop, or the loop from two kinds of first weights.

    python experiments/dafl_compare.py --runs runs/data_free_dafl_cpu \\
        --against runs/dafl_torch_cpu --window 100 450 --out runs/dafl_compare.md --plot runs/dafl_compare.png

Each directory is an ``experiments/data_free_mnist.py --methods dafl`` output (its ``dafl_seed*``
runs, finished or not: jdistill) or an ``experiments/dafl_reference_torch.py`` output (its
``results.json``: the reference's loop, from PyTorch's first weights or, run with ``--init
jdistill``, from jdistill's); the two kinds cannot be mixed in one group. All should share one
teacher. Per iteration, the mean +- std (over seeds) of the students' test accuracy; then each
seed's mean accuracy over the evaluations in ``--window`` and Fisher's permutation test of the
two groups' means of those (:func:`jdistill.report.permutation_p_value`): whether one group's
students learn faster than chance explains; with the 95 % bootstrap interval of that difference
(:func:`jdistill.report.bootstrap_interval`), the differences the seeds leave plausible. The seeds
are not paired: a float32 DAFL run parts from any other after a few rounds
(``tests/parity/test_dafl_game.py``), so only such distributions over seeds compare. A run without one of the listed iterations (stopped early) is left out, with a line
saying so.
"""

import argparse
import collections
import json
import math
import pathlib
import sys

import numpy as np

from jdistill.report import (
    bootstrap_interval,
    markdown_table,
    mean_std,
    permutation_is_exact,
    permutation_p_value,
)
from jdistill.train import RunDir

COLUMNS = 10  # iterations shown when none are given
SAMPLES = 200_000  # random splits of the permutation test where there are too many to count
KINDS = {
    "jdistill": "jdistill",
    "torch": "PyTorch, the reference's loop",
    "jdistill-init": "PyTorch, the reference's loop from jdistill's first weights",
}


def jdistill_curves(directory: pathlib.Path) -> dict[str, dict[int, float]]:
    """``{"seed K": {iteration: test accuracy}}`` of a data_free_mnist.py output's DAFL runs, by seed."""
    files = sorted(
        directory.glob("dafl_seed*/metrics.jsonl"), key=lambda f: (len(f.parent.name), f.parent.name)
    )
    return {
        f"seed {f.parent.name.removeprefix('dafl_seed')}": {
            m["step"]: m["test/accuracy"] for m in RunDir(f.parent).metrics() if "test/accuracy" in m
        }
        for f in files
    }


def read_runs(directory: pathlib.Path) -> tuple[str, dict[str, dict[int, float]]]:
    """``(kind, {"seed K": {iteration: test accuracy}})`` of either script's output directory."""
    path = directory / "results.json"
    if path.exists() and not any(directory.glob("dafl_seed*")):
        try:
            results = json.loads(path.read_text())
            curves = {
                f"seed {k}": dict(zip(v["iteration"], v["accuracy"])) for k, v in results["seeds"].items()
            }
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{path}: not a results.json of dafl_reference_torch.py") from None
        init = results.get("settings", {}).get("init", "torch")
        return ("jdistill-init" if init == "jdistill" else "torch"), curves
    curves = jdistill_curves(directory)
    if not curves:
        raise ValueError(
            f"{directory}: neither a data_free_mnist.py output with DAFL runs (dafl_seed*/metrics.jsonl) "
            "nor a dafl_reference_torch.py output (results.json)"
        )
    return "jdistill", curves


def gather(directories, option: str) -> tuple[str, dict[str, dict[int, float]]]:
    """One group: its kind and every seed's curve over its directories. A seed found twice (the
    same run, or two runs under one name) and a mix of kinds are refused."""
    curves, where, kinds = {}, {}, {}
    for directory in map(pathlib.Path, directories):
        kind, found = read_runs(directory)
        kinds[kind] = directory
        if len(kinds) > 1:
            (a, first), (b, second) = kinds.items()
            raise ValueError(
                f"{option}: {first} holds {KINDS[a]} runs, {second} {KINDS[b]} runs; compare them as two groups"
            )
        for seed, curve in found.items():
            if seed in curves:
                raise ValueError(f"{option}: {seed} is in both {where[seed]} and {directory}")
            curves[seed], where[seed] = curve, directory
    return next(iter(kinds)), curves


def shared_by_half(curves, window: tuple[int, int] = (0, 10**9)) -> list[int]:
    """The iterations in ``window`` (inclusive) that half the ``curves`` or more evaluated, in order."""
    counts = collections.Counter(i for curve in curves for i in curve if window[0] <= i <= window[1])
    return sorted(i for i, n in counts.items() if 2 * n >= len(curves))


def compare(groups: list[tuple[str, dict]], iterations: list[int] | None, window: tuple[int, int]):
    """The markdown report of two groups ``(label, {seed: curve})``: per-iteration
    mean +- std (``iterations``, or at most ``COLUMNS`` of the evaluations in the window that half
    the runs or more have), and the permutation test of each seed's mean over every evaluation in
    ``window`` (inclusive) that all compared runs have."""
    if iterations is None:
        shared = shared_by_half([curve for _, curves in groups for curve in curves.values()], window)
        if not shared:
            raise ValueError(
                f"no evaluation in iterations {window[0]}-{window[1]} is shared by half the runs"
            )
        iterations = [shared[round(k)] for k in np.linspace(0, len(shared) - 1, min(COLUMNS, len(shared)))]
    notes, kept = [], []
    for label, curves in groups:
        complete = {}
        for seed, curve in curves.items():
            missing = [i for i in iterations if i not in curve]
            if missing:
                notes.append(f"{label}: {seed} left out, no evaluation at iteration {missing[0]}")
            else:
                complete[seed] = curve
        if not complete:
            raise ValueError(
                f"no run of {label} has every iteration asked for ({', '.join(map(str, iterations))})"
            )
        kept.append((label, complete))
    runs = [set(curve) for _, curves in kept for curve in curves.values()]
    in_window = sorted(i for i in set.intersection(*runs) if window[0] <= i <= window[1])
    if not in_window:
        raise ValueError(f"the compared runs share no evaluation in iterations {window[0]}-{window[1]}")
    rows, means = [], []
    for label, curves in kept:
        rows.append(
            [f"{label} ({len(curves)} seeds)"]
            + [mean_std([c[i] for c in curves.values()], digits=1) for i in iterations]
        )
        means.append({seed: 100 * float(np.mean([c[i] for i in in_window])) for seed, c in curves.items()})
    a, b = list(means[0].values()), list(means[1].values())
    p = permutation_p_value(a, b, samples=SAMPLES)
    exact = permutation_is_exact(len(a), len(b))
    low, high = bootstrap_interval(a, b)
    how = (
        f"exact, all {math.comb(len(a) + len(b), len(a)):,} splits"
        if exact
        else f"from {SAMPLES:,} random splits"
    )
    lines = [markdown_table(["test accuracy (%) at iteration"] + [str(i) for i in iterations], rows)]
    span = f"the {len(in_window)} evaluations at iterations {in_window[0]}-{in_window[-1]}"
    for (label, _), per_seed in zip(kept, means):
        lines.append(
            f"- {label}, each seed's mean over {span}: "
            + ", ".join(f"{s} {v:.1f}" for s, v in per_seed.items())
        )
    lines.append(
        f"- the second minus the first, the means of those: {np.mean(b) - np.mean(a):+.2f} points "
        f"(95 % bootstrap interval {low:+.2f} to {high:+.2f}); "
        f"two-sided permutation p = {p:.3f} ({len(a)} and {len(b)} seeds, unpaired; {how})"
    )
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plot(groups: list[tuple[str, dict]], window: tuple[int, int], path: pathlib.Path) -> None:
    """Each group's mean test accuracy against the iteration, with a band of +- one standard
    deviation over its seeds, at every evaluation that half its runs have; ``window`` shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curves in groups:
        steps = shared_by_half(list(curves.values()))
        values = [[100 * c[i] for c in curves.values() if i in c] for i in steps]
        mean, std = np.array([np.mean(v) for v in values]), np.array([np.std(v) for v in values])
        ax.plot(steps, mean, label=f"{label} ({len(curves)} seeds)")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    low, high = ax.get_xlim()
    ax.axvspan(max(window[0], low), min(window[1], high), color="grey", alpha=0.1, label="window of the test")
    ax.set_xlabel("iteration")
    ax.set_ylabel("student's test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="the first group's output directories")
    parser.add_argument("--against", nargs="+", required=True, help="the second group's output directories")
    parser.add_argument("--iterations", type=int, nargs="+",
                        help=f"columns (default: at most {COLUMNS} of the window's evaluations that half the runs have)")  # fmt: skip
    parser.add_argument("--window", type=int, nargs=2, default=(0, 10**9), metavar=("FIRST", "LAST"),
                        help="iterations whose accuracies make each seed's mean for the test (inclusive)")  # fmt: skip
    parser.add_argument("--out", type=pathlib.Path, help="also write the report to this markdown file")
    parser.add_argument(
        "--plot", type=pathlib.Path, help="also plot both groups' curves (mean +- std) to this PNG"
    )
    a = parser.parse_args(argv)
    try:
        if a.window[0] > a.window[1]:
            raise ValueError(f"--window {a.window[0]} {a.window[1]}: the first iteration is after the last")
        groups = [gather(a.runs, "--runs"), gather(a.against, "--against")]
        if groups[0][0] == groups[1][0]:
            labels = [f"{KINDS[groups[0][0]]}, group {k}" for k in (1, 2)]
        else:
            labels = [KINDS[kind] for kind, _ in groups]
        labelled = [(label, curves) for label, (_, curves) in zip(labels, groups)]
        report = compare(labelled, a.iterations, tuple(a.window))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report, end="")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(report)
    if a.plot:
        plot(labelled, tuple(a.window), a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DAFL's learning curve in jdistill beside the reference's PyTorch loop, over unpaired seeds.

    python experiments/dafl_compare.py --jdistill runs/data_free_dafl_cpu \\
        --reference runs/dafl_torch_cpu --window 100 450 --out runs/dafl_compare.md

``--jdistill``: ``experiments/data_free_mnist.py --methods dafl`` output directories (their
``dafl_seed*`` runs, finished or not); ``--reference``: ``experiments/dafl_reference_torch.py``
output directories (their ``results.json``). Both should share one teacher. Per iteration, the mean
+- std (over seeds) of the students' test accuracy; then each seed's mean accuracy over the
evaluations in ``--window`` and Fisher's exact permutation test of the two frameworks' means of
those (:func:`jdistill.report.permutation_p_value`): whether one framework's students learn faster
than chance explains. The seeds are not paired (each framework draws its own weights and noise), and
a float32 DAFL run parts from any other after a few rounds (``tests/parity/test_dafl_game.py``), so
only such distributions over seeds compare. A run without one of the listed iterations (stopped
early) is left out, with a line saying so.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

from jdistill.report import markdown_table, mean_std, permutation_p_value
from jdistill.train import RunDir

COLUMNS = 10  # iterations shown when none are given


def jdistill_curves(directory: pathlib.Path) -> dict[str, dict[int, float]]:
    """``{"seed K": {iteration: test accuracy}}`` of a data_free_mnist.py output's DAFL runs."""
    runs = sorted(directory.glob("dafl_seed*/metrics.jsonl"))
    if not runs:
        raise ValueError(
            f"{directory}: no dafl_seed*/metrics.jsonl (not a data_free_mnist.py --out with DAFL runs)"
        )
    return {
        f"seed {f.parent.name.removeprefix('dafl_seed')}": {
            m["step"]: m["test/accuracy"] for m in RunDir(f.parent).metrics() if "test/accuracy" in m
        }
        for f in runs
    }


def reference_curves(directory: pathlib.Path) -> dict[str, dict[int, float]]:
    """``{"seed K": {iteration: test accuracy}}`` of a dafl_reference_torch.py output."""
    path = directory / "results.json"
    try:
        seeds = json.loads(path.read_text())["seeds"]
    except FileNotFoundError:
        raise ValueError(f"{path}: not found (not a dafl_reference_torch.py --out)") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{path}: not a results.json of dafl_reference_torch.py") from None
    return {f"seed {k}": dict(zip(v["iteration"], v["accuracy"])) for k, v in seeds.items()}


def gather(directories, read, side: str) -> dict[str, dict[int, float]]:
    """Every seed's curve over the directories; a seed found twice is refused (the same run, or two
    runs under one name)."""
    curves, where = {}, {}
    for directory in map(pathlib.Path, directories):
        for seed, curve in read(directory).items():
            if seed in curves:
                raise ValueError(f"{side}: {seed} is in both {where[seed]} and {directory}")
            curves[seed], where[seed] = curve, directory
    return curves


def compare(jd: dict, ref: dict, iterations: list[int] | None, window: tuple[int, int]):
    """The markdown report and the figures: per-iteration mean +- std of both sides (``iterations``,
    or at most ``COLUMNS`` of the evaluations in the window that half the runs or more have), and the permutation test of each
    seed's mean over every evaluation in ``window`` (inclusive) that all compared runs have."""
    if iterations is None:
        runs = [*jd.values(), *ref.values()]
        counts = {}
        for curve in runs:
            for i in curve:
                counts[i] = counts.get(i, 0) + (window[0] <= i <= window[1])
        shared = sorted(i for i, n in counts.items() if n and 2 * n >= len(runs))
        if not shared:
            raise ValueError(
                f"no evaluation in iterations {window[0]}-{window[1]} is shared by half the runs"
            )
        iterations = [shared[round(k)] for k in np.linspace(0, len(shared) - 1, min(COLUMNS, len(shared)))]
    notes, kept = [], {}
    for side, curves in (("jdistill", jd), ("reference", ref)):
        kept[side] = {}
        for seed, curve in curves.items():
            missing = [i for i in iterations if i not in curve]
            if missing:
                notes.append(f"{side} {seed} left out: no evaluation at iteration {missing[0]}")
            else:
                kept[side][seed] = curve
        if not kept[side]:
            raise ValueError(
                f"no {side} run has every iteration asked for ({', '.join(map(str, iterations))})"
            )
    runs = [*kept["jdistill"].values(), *kept["reference"].values()]
    in_window = sorted(i for i in set.intersection(*map(set, runs)) if window[0] <= i <= window[1])
    if not in_window:
        raise ValueError(f"the compared runs share no evaluation in iterations {window[0]}-{window[1]}")
    rows, means = [], {}
    for side, label in (("jdistill", "jdistill"), ("reference", "PyTorch, the reference's loop")):
        curves = kept[side].values()
        rows.append(
            [f"{label} ({len(curves)} seeds)"]
            + [mean_std([c[i] for c in curves], digits=1) for i in iterations]
        )
        means[side] = {
            seed: 100 * float(np.mean([c[i] for i in in_window])) for seed, c in kept[side].items()
        }
    a, b = list(means["jdistill"].values()), list(means["reference"].values())
    p = permutation_p_value(a, b)
    lines = [markdown_table(["test accuracy (%) at iteration"] + [str(i) for i in iterations], rows)]
    span = f"the {len(in_window)} evaluations at iterations {in_window[0]}-{in_window[-1]}"
    for side in ("jdistill", "reference"):
        per_seed = ", ".join(f"{s} {v:.1f}" for s, v in means[side].items())
        lines.append(f"- {side}, each seed's mean over {span}: {per_seed}")
    lines.append(
        f"- reference minus jdistill, the means of those: {np.mean(b) - np.mean(a):+.2f} points; "
        f"two-sided exact permutation p = {p:.3f} ({len(a)} and {len(b)} seeds, unpaired)"
    )
    lines += [f"- {n}" for n in notes]
    figures = {
        "difference": float(np.mean(b) - np.mean(a)),
        "p_value": p,
        "means": means,
        "window": in_window,
    }
    return "\n".join(lines) + "\n", figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jdistill", nargs="+", required=True, help="data_free_mnist.py --out directories")
    parser.add_argument(
        "--reference", nargs="+", required=True, help="dafl_reference_torch.py --out directories"
    )
    parser.add_argument(
        "--iterations",
        type=int,
        nargs="+",
        help=f"columns (default: at most {COLUMNS} of the window's evaluations that half the runs have)",
    )
    parser.add_argument("--window", type=int, nargs=2, default=(0, 10**9), metavar=("FIRST", "LAST"),
                        help="iterations whose accuracies make each seed's mean for the test (inclusive)")  # fmt: skip
    parser.add_argument("--out", type=pathlib.Path, help="also write the report to this markdown file")
    a = parser.parse_args(argv)
    try:
        if a.window[0] > a.window[1]:
            raise ValueError(f"--window {a.window[0]} {a.window[1]}: the first iteration is after the last")
        jd = gather(a.jdistill, jdistill_curves, "jdistill")
        ref = gather(a.reference, reference_curves, "reference")
        report, _ = compare(jd, ref, a.iterations, tuple(a.window))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report, end="")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

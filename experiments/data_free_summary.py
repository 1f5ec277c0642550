"""The tables of several ``data_free_mnist.py`` output folders in one Markdown page (for
``data_free_gpu.sh``): each folder's ``table.md`` when its command finished, else, per data-free run
so far, its last evaluation (iteration, test accuracy, best accuracy so far and where, the test
accuracy of the student's parameter average when it keeps one (``--student-ema``), the class
entropy of the teacher on generated samples, the iteration by which the generator collapsed into
one class if it did, and its restarts after a collapse: ``--restarts``) read from its
``metrics.jsonl`` and ``restarts.jsonl``. A ``dafl_reference_torch.py`` output
(``data_free_gpu.sh``'s ``reference_dafl_seedK``, or any folder whose ``results.json`` is that
script's) gives its ``table.md``.

    python experiments/data_free_summary.py OUT    # every folder under OUT that holds a run
"""

import json
import pathlib
import sys

from jdistill.adversarial.inspection import collapse_iteration
from jdistill.train import RunDir

COLUMNS = ("run", "last iteration", "test accuracy (%)", "best (%) at iteration", "parameter average (%)",
           "class entropy", "collapsed by iteration", "restarts (collapsed at -> back to)")  # fmt: skip


def run_line(run_dir: pathlib.Path) -> str:
    """One data-free run's last evaluation, from its metrics (a table row); a last line cut off by
    the time limit is dropped with a warning, as :meth:`RunDir.metrics` does."""
    run = RunDir(run_dir)
    records = run.metrics()
    evaluated = [r for r in records if "test/accuracy" in r]
    if not evaluated:
        return f"| {run_dir.name} | no evaluation yet |" + " |" * (len(COLUMNS) - 2)
    last, best = evaluated[-1], max(evaluated, key=lambda r: r["test/accuracy"])
    entropy = last.get("generated/class_entropy", float("nan"))
    collapsed = collapse_iteration(records) or "no"
    restarts = ", ".join(f"{r['step']} -> {r['back_to_step']}" for r in run.restarts()) or "none"
    average = f"{100 * last['test/ema/accuracy']:.2f}" if "test/ema/accuracy" in last else "-"
    cells = (run_dir.name, last["step"], f"{100 * last['test/accuracy']:.2f}",
             f"{100 * best['test/accuracy']:.2f} at {best['step']}", average, f"{entropy:.2f}", collapsed,
             restarts)  # fmt: skip
    return f"| {' | '.join(map(str, cells))} |"


def folder_summary(folder: pathlib.Path) -> str:
    table = folder / "table.md"
    if folder.name.startswith("reference_") or "teacher_accuracy" in _results(folder):
        return reference_summary(folder)
    if table.exists():
        return f"## {folder.name} (finished)\n\n{table.read_text()}"
    runs = sorted(p for p in folder.glob("*_seed*") if p.is_dir())
    head = f"| {' | '.join(COLUMNS)} |\n" + "|---" * len(COLUMNS) + "|"
    lines = "\n".join(run_line(r) for r in runs) or "(no data-free run started)"
    return f"## {folder.name} (stopped before its end)\n\n{head}\n{lines}\n"


def reference_summary(folder: pathlib.Path) -> str:
    """A ``dafl_reference_torch.py`` output: its ``table.md`` (written at the end, or when the time
    limit stopped it after an evaluation), finished when every seed's run recorded its seconds."""
    table = folder / "table.md"
    runs = _results(folder).get("seeds")
    finished = isinstance(runs, dict) and bool(runs) and all("seconds" in run for run in runs.values())
    state = "finished" if finished else "stopped before its end"
    body = table.read_text() if table.exists() else "(no evaluation yet)\n"
    return f"## {folder.name} (the reference's loop in PyTorch, {state})\n\n{body}"


def _results(folder: pathlib.Path) -> dict:
    """The folder's ``results.json``, or ``{}`` where there is none (yet) or it is cut off."""
    try:
        results = json.loads((folder / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return results if isinstance(results, dict) else {}


def main(out: str) -> None:
    folders = sorted(p for p in pathlib.Path(out).iterdir() if p.is_dir())
    print("\n".join(folder_summary(f) for f in folders) or f"no output folder under {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python experiments/data_free_summary.py OUT")
    main(sys.argv[1])

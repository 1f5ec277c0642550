"""experiments/digits_label_budget.py: every run gets the step budget on the data it trains on,
and a smoke run writes its table, results and plot."""

import dataclasses
import json
import pathlib
import runpy
import sys

import pytest

from jdistill.data import load_digits
from jdistill.experiment import options_from, parser_for

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "digits_label_budget.py"


@pytest.mark.parametrize("validate", [False, True])
def test_every_run_gets_1500_steps_of_the_images_it_trains_on(tmp_path, validate):
    """Teacher and student alone see the labelled images (60 of 1,257 at 5 %), the KD student
    all of them; under --validate, the training set without its held-out sixth."""
    experiment = runpy.run_path(str(SCRIPT))["EXPERIMENT"]
    argv = ["--out", str(tmp_path), "--fractions", "0.05,1.0", "--seeds", "2"] + ["--validate"] * validate
    options = options_from(experiment, parser_for(experiment).parse_args(argv))
    runs = list(experiment.runs(dataclasses.replace(options, dataset=load_digits())))
    assert [r.name for r in runs][:5] == ["frac0.05/teacher", "frac0.05/alone0", "frac0.05/kd0",
                                          "frac0.05/alone1", "frac0.05/kd1"]  # fmt: skip
    assert [r.row for r in runs] == ["0.05"] * 5 + ["1.0"] * 5
    images = {"0.05": 50 if validate else 60, "1.0": 1047 if validate else 1257}
    for run in runs:
        seen = images["1.0" if "kd" in run.name else run.row]
        assert run.config.loop.epochs * (seen // 32) >= 1500 > (run.config.loop.epochs - 1) * (seen // 32)
        assert run.config.model.name == ("mlp1200" if "teacher" in run.name else "mlp32")
        assert run.config.distill.teacher == (
            str(tmp_path / run.name.split("/")[0] / "teacher") if "kd" in run.name else None
        )


@pytest.mark.slow
def test_the_experiment_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """--smoke: a teacher, a student alone and a KD student per fraction, one epoch each."""
    out = tmp_path / "budget"
    argv = [str(SCRIPT), "--out", str(out), "--fractions", "0.1,1.0", "--smoke", "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    table = (out / "table.md").read_text()
    assert table in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())  # fraction -> the summaries of its runs
    assert {row: [s["run"] for s in runs] for row, runs in results.items()} == {
        "0.1": ["frac0.1/teacher", "frac0.1/alone0", "frac0.1/kd0"],
        "1.0": ["frac1.0/teacher", "frac1.0/alone0", "frac1.0/kd0"],
    }
    for row, (teacher, alone, kd) in results.items():
        assert (teacher["model"], alone["model"], kd["methods"]) == ("mlp1200", "mlp32", ["ce", "kd"])
        assert all(s["epochs"] == 1 and 0 <= s["test/accuracy"] <= 1 for s in (teacher, alone, kd))
    lines = table.splitlines()
    assert lines[0].startswith("| labelled fraction | labelled images | teacher % |") and len(lines) == 4
    for line, (row, (teacher, alone, kd)), labelled in zip(lines[2:], results.items(), (100, 1000)):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:3] == [f"{float(row):.0%}", str(labelled), f"{100 * teacher['test/accuracy']:.2f}"]
        assert cells[5] == f"{100 * (kd['test/accuracy'] - alone['test/accuracy']):+.2f}"
    assert (out / "label_budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

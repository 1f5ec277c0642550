"""experiments/crd_column.py --smoke: every method of the column (resnet20 teacher -> resnet8
student, the recipe shortened to one epoch) on random 32x32 images, end to end; its table against
hand values."""

import argparse
import json
import pathlib
import runpy
import sys

import numpy as np
import pytest

from jdistill.train import RunDir

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "crd_column.py"
COLUMN = ("teacher", "student", "kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp",
          "nst", "crd", "crd+kd", "dkd", "dist")  # fmt: skip


@pytest.mark.slow
def test_the_whole_column_runs_and_writes_its_table(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["crd_column.py", "--smoke", "--quiet", "--out", str(tmp_path)])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    results = json.loads((tmp_path / "results.json").read_text())
    assert tuple(results) == COLUMN
    for name, runs in results.items():
        assert len(runs) == 1 and all(0 <= r["last"] <= 1 and 0 <= r["best"] <= 1 for r in runs), name
    table = (tmp_path / "table.md").read_text()
    assert all(f"| {name} |" in table for name in COLUMN)
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    # The initialisation stages ran before the epoch of training, and were logged as such.
    for name in ("ab", "ft", "fsp"):
        stages = [json.loads(line)["stage"] for line in (tmp_path / name / "seed0" / "metrics.jsonl").open()]
        assert stages == ["init", "train"], name
    crd = [json.loads(line) for line in (tmp_path / "crd" / "seed0" / "metrics.jsonl").open()]
    assert np.isfinite(crd[-1]["train/loss/crd"])


@pytest.mark.slow
def test_validate_evaluates_on_held_out_training_images_and_a_changed_option_is_not_reused(
    tmp_path, monkeypatch
):
    args = ["crd_column.py", "--smoke", "--quiet", "--out", str(tmp_path), "--methods", "kd", "--validate"]
    monkeypatch.setattr(sys, "argv", args)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    for run in ("teacher", "student/seed0", "kd/seed0"):
        config = RunDir(tmp_path / run).flat_config()
        assert config["holdout_fraction"] == 0.2, run
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        assert "val/best_accuracy" in summary and not any(k.startswith("test/") for k in summary), run
    assert "accuracy on 0.2 of the training set held out" in (tmp_path / "table.md").read_text()
    # The same directory with another option: refused, not silently answered with the old runs.
    monkeypatch.setattr(sys, "argv", [*args, "--holdout", "0.3"])
    with pytest.raises(SystemExit, match=r"different configuration \(differs in: holdout_fraction\)"):
        runpy.run_path(str(SCRIPT), run_name="__main__")
    # A teacher that trained on other images than --validate holds out is refused before training.
    monkeypatch.setattr(
        sys, "argv", [*args[:4], str(tmp_path / "other"), *args[5:], "--holdout", "0.3",
                      "--teacher-dir", str(tmp_path / "teacher")]
    )  # fmt: skip
    with pytest.raises(SystemExit, match="the teacher would have trained on the evaluation images"):
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert not any((tmp_path / "other").iterdir())  # no run directory


def test_table_gives_each_seed_and_the_gain_over_the_student_alone_paired_by_seed():
    table = runpy.run_path(str(SCRIPT))["table"]
    args = argparse.Namespace(
        teacher_model="resnet20", student="resnet8", dataset="npz", epochs=20, batch_size=64, methods="kd,dkd",
        weight=[],
    )  # fmt: skip
    options = argparse.Namespace(args=args, smoke=False, validate=False, holdout_fraction=0.2)

    def runs(*lasts, seeds=(2, 0, 1)):  # listed out of seed order
        return [{"seed": s, "last": v, "best": v, "train_seconds": 60.0} for s, v in zip(seeds, lasts)]

    results = {"teacher": runs(0.70, seeds=(0,)), "student": runs(0.595, 0.582, 0.586),
               "kd": runs(0.626, 0.651, 0.643), "dkd": runs(0.60, 0.62, seeds=(0, 5))}  # fmt: skip
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table(results, options).splitlines()
            if line.startswith("| ")}  # fmt: skip
    assert rows["kd"][2] == "65.1 / 64.3 / 62.6"  # seeds 0, 1, 2
    assert rows["kd"][4] == "+5.23 +- 1.59"  # 6.9, 5.7, 3.1 points: std 1.586
    assert rows["dkd"][4] == "+1.80"  # only seed 0 has a student alone
    assert rows["student"][4] == rows["teacher"][4] == rows["teacher"][2] == ""


def test_weight_changes_a_term_only_in_the_runs_whose_methods_have_it(tmp_path):
    from jdistill.train import groups

    column = runpy.run_path(str(SCRIPT))
    args = argparse.Namespace(
        teacher_model="resnet56", student="resnet20", dataset="cifar100", epochs=24, batch_size=64,
        teacher_epochs=None, teacher_dir=None, crd_negatives=None, methods="kd,dkd,crd+kd",
        weight=["dkd_nckd=2.5", "kd=0.5"],
    )  # fmt: skip
    options = argparse.Namespace(args=args, smoke=False, validate=False, holdout_fraction=0.2, out=tmp_path,
                                 seeds=(0,), data_dir=None)  # fmt: skip
    weights = {run.name: groups.flat(run.config)["weights"] for run in column["runs"](options)}
    assert weights == {
        "teacher": {}, "student/seed0": {},  # never changed
        "kd/seed0": {"ce": 0.1, "kd": 0.5},  # the benchmark's ce 0.1 kept
        "dkd/seed0": {"dkd_nckd": 2.5},  # the benchmark's 2 for this pair replaced
        "crd+kd/seed0": {"ce": 1.0, "kd": 0.5},
    }  # fmt: skip
    # The paper's number of a method whose weights changed is not set beside it; the others are.
    paper = column["paper"](options)
    assert "dkd" not in paper and "kd" not in paper and paper["crd"] == 71.16
    header = column["table"]({}, options).splitlines()[0]
    assert "weights changed by --weight: kd: kd 0.5; dkd: dkd_nckd 2.5; crd+kd: kd 0.5" in header
    args.methods = "kd,dkd"
    for weight, message in (
        (["crd=1"], "no method of --methods has: crd; their terms: ce, dkd_nckd, dkd_tckd, kd$"),
        (["dkd_nckd"], "--weight expects NAME=NUMBER"),
        (["dkd_nckd=two"], "--weight expects NAME=NUMBER"),
    ):
        args.weight = weight
        with pytest.raises(ValueError, match=message):
            list(column["runs"](options))

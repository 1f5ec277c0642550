"""The ``irg`` method through the trainer, and experiments/irg_mnist.py end to end (--smoke) on a
small MNIST-format directory made from scikit-learn's digits."""

import contextlib
import io
import json
import pathlib
import runpy
import sys

import numpy as np
import pytest
from idx_files import write_mnist_like

from jdistill.methods import build_method, check_features
from jdistill.train import RunDir

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "irg_mnist.py"


@pytest.fixture(scope="module")
def mnist_like_dir(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("mnist_like"))


# Feature shapes as `jdistill models --features` lists them (only the names matter here).
LENET5 = {"conv1": (28, 28, 6), "conv2": (10, 10, 16), "fc1": (120,), "embedding": (84,)}
LENET5_HALF = {"conv1": (28, 28, 3), "conv2": (10, 10, 8), "fc1": (60,), "embedding": (42,)}
MLP1200 = {"hidden1": (1200,), "hidden2": (1200,), "embedding": (1200,)}
MLP256 = {"hidden1": (256,), "hidden2": (256,), "embedding": (256,)}
MLP32 = {"hidden1": (32,), "embedding": (32,)}
SMALL_CNN = {"conv1": (28, 28, 32), "conv2": (14, 14, 64), "embedding": (128,)}


def test_default_layers_per_model_family():
    irg = build_method("irg")
    lenet, lenet_half = LENET5, LENET5_HALF
    assert irg.features(lenet_half, lenet) == (("fc1", "embedding"), ("fc1", "embedding"))
    assert irg.features(MLP256, MLP1200)[0] == ("hidden1", "embedding")
    # A conv model without fc1: the second-to-last conv stage (the last is what the embedding pools).
    assert irg.features(SMALL_CNN, SMALL_CNN)[0] == ("conv1", "embedding")
    # mlp32 has one hidden layer, which is its embedding: no earlier layer to default to.
    with pytest.raises(ValueError, match="irg.layers"):
        irg.features(MLP32, MLP1200)
    # Layers given as an option (JSON gives a list) are read from both models and checked.
    chosen = build_method("irg", {"layers": ["conv2", "fc1", "embedding"]})
    assert chosen.features(lenet_half, lenet)[0] == ("conv2", "fc1", "embedding")
    with pytest.raises(ValueError, match="no feature 'hidden1'"):
        check_features([build_method("irg", {"layers": ["hidden1"]})], lenet_half, lenet)
    with pytest.raises(ValueError, match="at least one"):
        build_method("irg", {"layers": []})


@pytest.fixture(scope="module")
def smoke_out(mnist_like_dir, tmp_path_factory):
    """experiments/irg_mnist.py --smoke, run once for the tests below (the KD and RKD rows differ
    from these only in their methods, which tests/test_methods.py covers)."""
    out = tmp_path_factory.mktemp("irg_mnist")
    argv = [str(SCRIPT), "--data-dir", str(mnist_like_dir), "--out", str(out), "--smoke", "--quiet"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", [*argv, "--rows", "alone,irg,irg_kd"])
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            runpy.run_path(str(SCRIPT), run_name="__main__")
    return out, printed.getvalue()


@pytest.mark.slow
def test_irg_distils_through_the_trainer(smoke_out):
    out, _ = smoke_out
    for name in ("irg", "irg_kd"):
        summary = json.loads((out / name / "seed0" / "summary.json").read_text())
        assert summary["extra_params"] == 0  # the size matching has no parameters
        assert 0 <= summary["test/agreement"] <= 1
        config = RunDir(out / name / "seed0").flat_config()
        assert config["methods"][:2] == ["ce", "irg"] and config["teacher"].endswith("teacher")
        for line in (out / name / "seed0" / "metrics.jsonl").read_text().splitlines():
            for term in ("irg_vertex", "irg_edge", "irg_transformation"):
                value = json.loads(line)[f"train/loss/{term}"]
                assert np.isfinite(value) and value > 0, (name, term, value)


@pytest.mark.slow
def test_smoke_runs_the_whole_table(smoke_out):
    out, printed = smoke_out
    results = json.loads((out / "results.json").read_text())
    students = ["student alone (known labels)", "IRG (vertex 0.1, edge 5, transformation 5)", "IRG + KD"]
    assert list(results) == ["teacher lenet5 (all labels)", *students]
    assert [s["run"] for (s,) in results.values()] == ["teacher", "alone/seed0", "irg/seed0", "irg_kd/seed0"]
    for (summary,) in results.values():
        assert summary | json.loads((out / summary["run"] / "summary.json").read_text()) == summary
    # The teacher learns every label; the students know half of them under --smoke.
    config = {run: RunDir(out / run).flat_config() for run in ("teacher", "alone/seed0")}
    assert config["teacher"]["labelled_fraction"] == 1.0 and config["alone/seed0"]["labelled_fraction"] == 0.5
    # The student alone takes as many optimizer steps on the labelled images as a distilled one.
    steps = {
        name: json.loads((out / name / "seed0" / "metrics.jsonl").read_text().splitlines()[-1])["step"]
        for name in ("alone", "irg")
    }
    assert steps["alone"] >= steps["irg"] > 0
    table = (out / "table.md").read_text()
    assert table in printed and "known labels (50%)" in table and "1 epoch(s) of 256 images" in table
    cells = {c[0]: c[1:] for c in (line.strip("| ").split(" | ") for line in table.splitlines()[4:])}
    teacher = results["teacher lenet5 (all labels)"][0]
    assert cells["teacher lenet5 (all labels)"] == [f"{100 * teacher['test/accuracy']:.2f}", "-", "1", "-"]
    for row in students:  # accuracy, agreement with the teacher, seeds, training seconds
        (summary,) = results[row]
        accuracy, agreement, seeds, _ = cells[row]
        assert accuracy == f"{100 * summary['test/accuracy']:.2f}" and seeds == "1"
        assert agreement == ("-" if row == students[0] else f"{100 * summary['test/agreement']:.2f}")
    for plot in ("accuracy.png", "learning_curves.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rows_must_be_known(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--out", "unused", "--rows", "kd,irg2"])
    with pytest.raises(SystemExit):
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert "argument --rows: unknown irg2; choose from alone, kd, rkd, irg, irg_kd" in capsys.readouterr().err

"""Symmetric label noise: Dataset.with_label_noise, RunConfig.label_noise, --label-noise, and
experiments/noisy_labels_mnist.py end to end on a small MNIST-like directory (--smoke)."""

import json
import pathlib
import runpy
import sys

import numpy as np
import pytest
from idx_files import write_mnist_like

from jdistill.cli import _common_config, build_parser
from jdistill.data import Dataset
from jdistill.train import RunConfig
from jdistill.train.distill import prepare_dataset

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "noisy_labels_mnist.py"
N, C = 20_000, 10


def _dataset(n=N):
    rng = np.random.default_rng(0)
    return Dataset(
        name="toy",
        x_train=rng.random((n, 2, 2, 1), dtype=np.float32),
        y_train=rng.integers(0, C, n).astype(np.int32),
        x_test=rng.random((50, 2, 2, 1), dtype=np.float32),
        y_test=rng.integers(0, C, 50).astype(np.int32),
        num_classes=C,
    )


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6])
def test_the_right_fraction_changes_and_never_to_the_same_class(rate):
    clean = _dataset()
    noisy = clean.with_label_noise(rate, seed=1)
    changed = noisy.y_train != clean.y_train
    # Binomial(N, rate): the standard deviation of the fraction is below 0.0035 at N = 20,000.
    assert abs(changed.mean() - rate) < 0.015
    # Each corrupted label is another class, uniformly: every wrong class gets about 1 / (C - 1).
    offsets = (noisy.y_train[changed] - clean.y_train[changed]) % C
    assert offsets.min() >= 1
    np.testing.assert_allclose(np.bincount(offsets, minlength=C)[1:] / changed.sum(), 1 / (C - 1), atol=0.02)
    assert noisy.y_train.dtype == clean.y_train.dtype
    np.testing.assert_array_equal(noisy.x_train, clean.x_train)
    np.testing.assert_array_equal(noisy.y_test, clean.y_test)
    np.testing.assert_array_equal(noisy.x_test, clean.x_test)


def test_the_noise_is_fixed_by_its_seed():
    clean = _dataset(2000)
    a, b, c = (clean.with_label_noise(0.4, seed=s).y_train for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert clean.with_label_noise(0.0) is clean


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_rates_outside_zero_one_are_refused(rate):
    with pytest.raises(ValueError, match="label noise rate must be in"):
        _dataset(100).with_label_noise(rate)
    with pytest.raises(ValueError, match="label_noise must be in"):
        RunConfig(model="mlp32", dataset="digits", epochs=1, label_noise=rate)


def test_prepare_corrupts_the_training_labels_only():
    clean = _dataset(1000)
    config = RunConfig(model="mlp32", dataset="toy", epochs=1, label_noise=0.4, label_noise_seed=2)
    dataset = prepare_dataset(config, clean)
    np.testing.assert_array_equal(dataset.y_train, clean.with_label_noise(0.4, seed=2).y_train)
    np.testing.assert_array_equal(dataset.y_test, clean.y_test)
    assert RunConfig.from_json(config.to_json()) == config


def test_the_cli_passes_label_noise_to_both_training_commands():
    parser = build_parser()
    for command in (
        ["train-teacher", "--model", "mlp32"],
        ["distill", "--teacher", "t", "--student", "mlp32", "--method", "kd"],
    ):
        args = parser.parse_args([*command, "--dataset", "digits", "--out", "o", "--label-noise", "0.2"])
        assert _common_config(args)["label_noise"] == 0.2  # what both commands pass to RunConfig
    default = parser.parse_args(["train-teacher", "--model", "m", "--dataset", "digits", "--out", "o"])
    assert default.label_noise == 0.0


@pytest.fixture(scope="module")
def mnist_like_dir(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("mnist_like"))


@pytest.mark.slow
def test_the_experiment_runs_and_distils_from_the_noisy_teacher(
    mnist_like_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "noisy"
    args = ["--data-dir", str(mnist_like_dir), "--out", str(out), "--smoke", "--quiet"]
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    printed = capsys.readouterr().out

    results = json.loads((out / "results.json").read_text())
    rates = [row["rate"] for row in results["rows"]]
    assert rates == [0.4]
    for row in results["rows"]:
        rate_dir = out / f"noise{row['rate']:g}"
        teacher = json.loads((rate_dir / "teacher" / "config.json").read_text())["config"]
        assert teacher["label_noise"] == row["rate"] and teacher["teacher"] is None
        assert abs(row["changed_fraction"] - 0.4) < 0.05  # of 1,400 training labels
        teacher_on_train = row["teacher"]
        assert teacher_on_train["corrupted_true_class"] + teacher_on_train["corrupted_noisy_label"] <= 1
        for name, run in row["kd"].items():
            config = json.loads((rate_dir / name / "seed0" / "config.json").read_text())["config"]
            assert pathlib.Path(config["teacher"]) == (rate_dir / "teacher").absolute()
            assert config["label_noise"] == row["rate"]
            assert config["weights"] == {"ce": run["alpha"], "kd": 1 - run["alpha"]}
            assert config["temperature"] == run["temperature"]
            assert len(run["final"]) == len(run["best"]) == 1
        assert len(row["alone"]["final"]) == 1
    table = (out / "table.md").read_text()
    assert table in printed and "| 40 |" in table
    assert (out / "accuracy_vs_noise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

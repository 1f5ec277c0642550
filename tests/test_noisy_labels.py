"""Symmetric label noise: Dataset.with_label_noise, RunConfig.label_noise, --label-noise, and
experiments/noisy_labels_mnist.py end to end on a small MNIST-like directory (--smoke)."""

import collections
import json
import pathlib
import runpy
import sys

import numpy as np
import pytest
from idx_files import write_mnist_like

from jdistill.cli import build_parser, run_config
from jdistill.data import Dataset, load_dataset
from jdistill.experiment import options_from, parser_for
from jdistill.train import RunConfig, RunDir
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
        ["distill", "--teacher", "t", "--model", "mlp32", "--method", "kd"],
    ):
        argv = [*command, "--dataset", "digits", "--epochs", "1", "--out", "o", "--label-noise", "0.2"]
        assert run_config(parser.parse_args(argv), command[0])[0].data.label_noise == 0.2
    default = ["train-teacher", "--model", "m", "--dataset", "digits", "--epochs", "1", "--out", "o"]
    assert run_config(parser.parse_args(default), "train-teacher")[0].data.label_noise == 0.0


def test_the_experiment_declares_64_runs_each_teacher_before_its_students(tmp_path):
    """4 rates x (a teacher, 3 students alone, 2 alphas x 2 temperatures x 3 seeds distilled), every
    run 10 epochs on the rate's noisy labels (noise seed 0)."""
    experiment = runpy.run_path(str(SCRIPT))["EXPERIMENT"]
    options = options_from(experiment, parser_for(experiment).parse_args(["--out", str(tmp_path)]))
    runs = list(experiment.runs(options))
    assert len(runs) == 64
    assert [r.name for r in runs[::16]] == [f"noise{rate}/teacher" for rate in ("0", "0.2", "0.4", "0.6")]
    assert [r.name for r in runs[1:5]] == [
        *[f"noise0/alone/seed{s}" for s in range(3)],
        "noise0/kd_a0_T1/seed0",
    ]
    rows = [
        f"noise0.6/{name}"
        for name in ("teacher", "alone", "kd_a0_T1", "kd_a0_T4", "kd_a0.5_T1", "kd_a0.5_T4")
    ]
    assert collections.Counter(r.row for r in runs[48:]) == dict(zip(rows, [1, 3, 3, 3, 3, 3]))
    for run in runs:
        rate = float(run.name.split("/")[0].removeprefix("noise"))
        config = run.config
        assert (config.data.label_noise, config.data.label_noise_seed, config.loop.epochs) == (rate, 0, 10)
        assert (config.optimizer.learning_rate, config.loop.batch_size) == (0.05, 128)
        assert config.model.name == ("mlp256" if run.name.endswith("teacher") else "mlp32")
        if "/kd_" in run.name:
            alpha, temperature = (float(v[1:]) for v in run.row.split("/kd_")[1].split("_"))
            assert config.distill.teacher == str(tmp_path / f"noise{rate:g}" / "teacher")
            assert config.distill.methods == ("ce", "kd") and config.distill.temperature == temperature
            assert config.distill.weights == {"ce": alpha, "kd": 1 - alpha}
        else:
            assert config.distill.teacher is None and config.distill.methods == ("ce",)


@pytest.fixture(scope="module")
def mnist_like_dir(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("mnist_like"))


@pytest.mark.slow
def test_the_experiment_runs_and_distils_from_the_noisy_teacher(
    mnist_like_dir, tmp_path, monkeypatch, capsys
):
    """--smoke: rate 0.4, a teacher, a student alone and one distilled (alpha 0.5, T = 4), 1 epoch."""
    out = tmp_path / "noisy"
    args = ["--data-dir", str(mnist_like_dir), "--out", str(out), "--smoke", "--quiet"]
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    printed = capsys.readouterr().out

    results = json.loads((out / "results.json").read_text())  # row -> the summaries of its seeds
    assert {row: [s["run"] for s in summaries] for row, summaries in results.items()} == {
        "noise0.4/teacher": ["noise0.4/teacher"],
        "noise0.4/alone": ["noise0.4/alone/seed0"],
        "noise0.4/kd_a0.5_T4": ["noise0.4/kd_a0.5_T4/seed0"],
    }
    (teacher,), (alone,), (kd,) = results.values()
    configs = [RunDir(out / s["run"]).flat_config() for s in (teacher, alone, kd)]
    assert [(c["model"], c["label_noise"], c["epochs"], c["batch_size"]) for c in configs] == [
        ("mlp256", 0.4, 1, 32),
        ("mlp32", 0.4, 1, 32),
        ("mlp32", 0.4, 1, 32),
    ]
    assert configs[0]["teacher"] is None and configs[1]["teacher"] is None
    assert pathlib.Path(configs[2]["teacher"]) == out / "noise0.4" / "teacher"
    assert configs[2]["weights"] == {"ce": 0.5, "kd": 0.5} and configs[2]["temperature"] == 4.0

    table = (out / "table.md").read_text()
    assert table in printed
    # --smoke keeps the first 512 training images; the noise corrupts those that the runs saw.
    clean = load_dataset("mnist", str(mnist_like_dir)).first(512, 200)
    changed = np.mean(clean.with_label_noise(0.4, seed=0).y_train != clean.y_train)
    cells = [
        f"{100 * s['test/accuracy']:.2f} ({100 * s['test/best_accuracy']:.2f})" for s in (teacher, alone, kd)
    ]
    assert f"| 40 | {100 * changed:.2f} | {' | '.join(cells)} |" in table
    gain = 100 * (kd["test/accuracy"] - alone["test/accuracy"])
    assert f"| 40 | {gain:.2f} |" in table
    assert "Training time: " in table and " s over 3 runs." in table
    clean_predicted, true_class, noisy_label = (
        float(v) for v in table.strip().splitlines()[-1].split("|")[2:5]
    )
    assert 0 <= clean_predicted <= 100 and 0 <= true_class + noisy_label <= 100
    assert (out / "accuracy_vs_noise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

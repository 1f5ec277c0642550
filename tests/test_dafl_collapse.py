"""experiments/dafl_collapse.py: a DAFL run to a checkpoint, then branches from it under changed
settings. A branch left unchanged plays the very rounds of a run never branched."""

import json
import pathlib
import runpy

import pytest
from idx_files import write_mnist_like

from jdistill.train import RunDir

collapse = runpy.run_path(str(pathlib.Path(__file__).parents[1] / "experiments" / "dafl_collapse.py"))


def test_set_reads_json_values_and_keeps_text():
    assert collapse["changes"]("information_entropy_weight=10") == {"information_entropy_weight": 10}
    assert collapse["changes"]("generator_learning_rate=2e-2") == {"generator_learning_rate": 0.02}
    assert collapse["changes"]("generator_schedule=cosine") == {"generator_schedule": "cosine"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "one_hot_weight"], "--set takes FIELD=VALUE, got 'one_hot_weight'"),
        (["--set", "=3"], "--set takes FIELD=VALUE, got '=3'"),
        (["--set", "seed=1"], "--set cannot change seed: a branch plays the run's own rounds"),
        (["--set", "iterations=10"], "--set cannot change iterations"),
        (["--branch-epochs", "0"], "--branch-at, --branch-epochs and --every must be at least 1"),
    ],
)
def test_bad_options_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit):
        collapse["parse_args"](["--data-dir", "d", "--out", "o", "--branch-at", "2", *argv])
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
    assert message in line


def test_an_unknown_field_is_named_before_any_training(tmp_path, capsys):
    with pytest.raises(SystemExit, match="DataFreeConfig got unknown field"):
        collapse["main"](["--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "out"),
                          "--branch-at", "1", "--set", "entropy_weight=3"])  # fmt: skip
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_branches_play_the_runs_own_rounds(tmp_path, capsys):
    """The unchanged branch from epoch 2's checkpoint equals, line for line, a run of 3 epochs never
    branched; a branch with a 20 times larger class-balance weight shares the run's first 2 epochs
    and logs another value of that term in its third; a branch with another generator rate trains at
    that rate (the checkpoint's optimizer state holds it); table.md names each branch's verdict."""
    (tmp_path / "mnist").mkdir()
    data, out = write_mnist_like(tmp_path / "mnist"), tmp_path / "out"
    common = ["--data-dir", str(data), "--config", "smoke", "--seed", "1", "--quiet"]
    collapse["main"]([*common, "--out", str(out), "--branch-at", "2", "--branch-epochs", "1",
                      "--set", "information_entropy_weight=43.43", "--set", "generator_learning_rate=0.5"])  # fmt: skip
    straight = tmp_path / "straight"
    collapse["main"]([*common, "--out", str(straight), "--teacher", str(out / "teacher_dafl"), "--branch-at", "3",
                      "--branch-epochs", "1"])  # fmt: skip
    never_branched = RunDir(straight / "base").metrics()
    same, stronger = (
        RunDir(out / "same").metrics(),
        RunDir(out / "information_entropy_weight=43.43").metrics(),
    )
    drop = lambda r: {k: v for k, v in r.items() if k != "seconds"}
    assert [r["epoch"] for r in same] == [1, 2, 3]
    assert list(map(drop, same)) == list(map(drop, never_branched))
    assert list(map(drop, stronger[:2])) == list(map(drop, same[:2]))
    term = "train/generator/information_entropy"
    assert stronger[2][term] != same[2][term]
    # the optimizer state holds the rate: the branch's checkpoint carries its own
    faster = RunDir(out / "generator_learning_rate=0.5").metrics()
    assert list(map(drop, faster[:2])) == list(map(drop, same[:2]))
    rate = "train/generator/learning_rate"
    assert same[2][rate] == pytest.approx(0.2) and faster[2][rate] == pytest.approx(0.5)
    assert json.loads((out / "information_entropy_weight=43.43" / "branched_from.json").read_text()) == {
        "run": str((out / "base").resolve()), "epoch": 2, "changed": {"information_entropy_weight": 43.43}}  # fmt: skip
    table = (out / "table.md").read_text()
    assert "| base | 2 | 4 |" in table and "| same | 3 | 6 |" in table
    assert "- same: " in table and "- information_entropy_weight=43.43: " in table
    assert "The teacher on the blank image (every pixel at the training set's mean" in table
    assert (out / "trajectory.png").read_bytes()[:4] == b"\x89PNG"

"""A user's own .npz data: every problem is one line naming the file before anything is written,
vector data [N, D] trains with the MLPs, and no benchmark recipe is applied unless asked."""

import json

import numpy as np
import pytest

from jdistill.cli import main
from jdistill.data import load_npz

RNG = np.random.default_rng(0)
GOOD = {
    "x_train": RNG.integers(0, 256, (40, 8, 8), dtype=np.uint8),
    "y_train": np.arange(40) % 4,
    "x_test": RNG.integers(0, 256, (12, 8, 8), dtype=np.uint8),
    "y_test": np.arange(12) % 4,
}


def saved(tmp_path, **changes) -> str:
    arrays = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    np.savez(tmp_path / "set.npz", **arrays)
    return str(tmp_path / "set.npz")


NAN_AT_7 = np.full((40, 8, 8), 0.5)
NAN_AT_7[7, 3, 4] = np.nan  # one pixel
ONE_BASED = {"y_train": np.arange(40) % 4 + 1, "y_test": np.arange(12) % 4 + 1}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"x_test": None}, "lacks array\\(s\\) x_test \\(has"),
        ({"x_train": np.zeros((40, 2, 8, 8, 1))}, "x_train must be images .* got shape \\(40, 2, 8, 8, 1\\)"),
        ({"x_train": np.full((40, 8, 8), "a")}, "x_train must hold integers or floats, got <U1"),
        ({"x_test": np.zeros((0, 8, 8)), "y_test": np.zeros(0, int)}, "x_test is empty"),
        ({"y_train": np.arange(40) % 4 + 0.5}, "y_train must be integer labels \\[N\\], got float64"),
        ({"y_train": np.arange(39) % 4}, "x_train has 40 examples but y_train 39 labels"),
        ({"x_train": NAN_AT_7}, "x_train holds NaN or inf \\(first in example 7\\)"),
        ({"x_test": np.zeros((12, 8, 9))}, "x_train examples are \\(8, 8\\) but x_test's \\(8, 9\\)"),
        (ONE_BASED, "labels run 1..4 and class 0 never occurs"),
        ({"y_test": np.arange(12) % 4 - 1}, "labels must be 0..C-1, got a label -1"),
        ({"num_classes": np.int64(3)}, "labels run 0..3, outside \\[0, num_classes=3\\)"),
        ({"num_classes": np.array([4, 4])}, "num_classes must be one integer"),
    ],
)
def test_each_problem_is_one_line_naming_the_file(tmp_path, changes, message):
    path = saved(tmp_path, **changes)
    with pytest.raises(ValueError, match=f"^{path}: {message}"):
        load_npz(path)


def test_a_file_that_is_not_an_npz_or_is_truncated_is_one_line(tmp_path):
    (tmp_path / "text.npz").write_text("x_train,y_train\n1,2\n")
    with pytest.raises(
        ValueError, match="text.npz: not a .npz file \\(it is not a zip archive\\); write it with"
    ):
        load_npz(tmp_path / "text.npz")
    whole = open(saved(tmp_path), "rb").read()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="cut.npz: not a readable .npz file"):
        load_npz(tmp_path / "cut.npz")


def test_a_declared_class_count_allows_classes_without_examples(tmp_path):
    data = load_npz(saved(tmp_path, num_classes=np.int64(6)))
    assert data.num_classes == 6


def test_bad_data_on_the_command_line_is_one_line_and_writes_nothing(tmp_path):
    path = saved(tmp_path, **ONE_BASED)
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="^jdistill train-teacher: error: .*class 0 never occurs"):
        main(["train-teacher", "--model", "mlp32", "--dataset", "npz", "--data-dir", path, "--epochs", "1",
              "--out", str(out), "--quiet"])  # fmt: skip
    assert not out.exists()


def test_vector_data_trains_with_an_mlp_and_gets_no_recipe(tmp_path):
    centres = RNG.normal(size=(3, 20)) * 3
    y_train, y_test = np.arange(300) % 3, np.arange(60) % 3
    x_train = (centres[y_train] + RNG.normal(size=(300, 20))).astype(np.float32)
    x_test = (centres[y_test] + RNG.normal(size=(60, 20))).astype(np.float32)
    np.savez(tmp_path / "vectors.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data = load_npz(tmp_path / "vectors.npz")
    assert data.x_train.shape == (300, 1, 1, 20) and data.num_classes == 3
    np.testing.assert_allclose(data.mean, x_train.mean(0), rtol=1e-5, atol=1e-6)  # per feature
    out, path = tmp_path / "run", str(tmp_path / "vectors.npz")
    main(["train-teacher", "--model", "mlp32", "--dataset", "npz", "--data-dir", path, "--epochs", "5",
          "--out", str(out), "--quiet"])  # fmt: skip
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["data"]["max_shift"], config["data"]["hflip"], config["loop"]["batch_size"]) == (
        0,
        False,
        128,
    )
    assert json.loads((out / "summary.json").read_text())["test/accuracy"] > 0.9


def test_a_teacher_is_checked_against_the_data_class_count_and_normalisation(tmp_path):
    def train(name, **changes):
        path = str(tmp_path / f"{name}.npz")
        np.savez(path, **{**GOOD, **changes})
        return path

    teacher, data = str(tmp_path / "teacher"), train("four")
    main(["train-teacher", "--model", "mlp32", "--dataset", "npz", "--data-dir", data, "--epochs", "1",
          "--batch-size", "16", "--out", teacher, "--quiet"])  # fmt: skip
    summary = json.loads((tmp_path / "teacher" / "summary.json").read_text())
    assert summary["num_classes"] == 4 and len(summary["normalisation"]["mean"]) == 1

    def distill(path, out):
        main(["distill", "--teacher", teacher, "--model", "mlp32", "--method", "kd", "--dataset", "npz",
              "--data-dir", path, "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / out),
              "--quiet"])  # fmt: skip

    five = train("five", y_train=np.arange(40) % 5, y_test=np.arange(12) % 5)
    with pytest.raises(SystemExit, match="teacher .* was trained on 4 classes, this data has 5"):
        distill(five, "s5")
    brighter = train("brighter", x_train=GOOD["x_train"] // 2 + 100)
    with pytest.raises(
        SystemExit, match="trained on data normalised with .* the teacher would see other inputs"
    ):
        distill(brighter, "sb")
    assert not (tmp_path / "s5").exists() and not (tmp_path / "sb").exists()
    distill(data, "s4")  # the teacher's own data

    # a run that predates the records: the mismatch still comes as one line
    for key in ("num_classes", "normalisation"):
        del summary[key]
    (tmp_path / "teacher" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(
        SystemExit, match="teacher .* \\(mlp32\\) does not fit this data \\(5 classes, 8x8x1 inputs\\): "
    ):
        distill(five, "s5_unrecorded")

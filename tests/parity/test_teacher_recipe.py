"""experiments/teacher_recipe_parity.py: a data-free paper's teacher recipe trained by jdistill and by
PyTorch on the same arrays (the README's figures come from its full-MNIST run)."""

import json
import pathlib
import runpy

import pytest
from idx_files import write_mnist_like

pytest.importorskip("torch", reason="the parity tier needs PyTorch: pip install -e '.[parity]'")
pytestmark = pytest.mark.parity

SCRIPT = pathlib.Path(__file__).parents[2] / "experiments" / "teacher_recipe_parity.py"
parity = runpy.run_path(str(SCRIPT))


@pytest.mark.parametrize("method, epochs", [("dafl", 3), ("dfad", 10)])  # SGD 0.01 learns slower than Adam
def test_both_frameworks_learn_the_recipe_and_the_table_reports_them(method, epochs, tmp_path):
    (tmp_path / "mnist").mkdir()
    data = write_mnist_like(tmp_path / "mnist")
    argv = ["--data-dir", str(data), "--out", str(tmp_path / "out"), "--method", method, "--seeds", "0", "1"]
    results = parity["main"]([*argv, "--epochs", str(epochs)])
    for framework in ("jdistill", "pytorch"):
        for seed in ("0", "1"):
            accuracies = results[framework][seed]
            assert len(accuracies) == epochs
            assert accuracies[-1] > 0.4, (framework, seed, accuracies)  # chance: 0.1 on 397 test images
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["method"] == method and written["epochs"] == epochs
    assert written["jdistill"] == results["jdistill"] and written["pytorch"] == results["pytorch"]
    table = (tmp_path / "out" / "table.md").read_text()
    for framework in ("jdistill", "pytorch"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {framework} |"))
        cells = row.strip("|").split("|")
        assert [float(c) for c in cells[1:3]] == [round(100 * results[framework][s][-1], 2) for s in "01"]
    # Run again: jdistill's finished runs are read back, not trained again.
    again = parity["main"]([*argv, "--epochs", str(epochs)])
    assert again["jdistill"] == results["jdistill"]


def test_a_missing_data_directory_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        parity["main"](["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere" in err

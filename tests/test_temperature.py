"""``jdistill temperature`` and experiments/temperature_mnist.py on tiny MNIST-like data."""

import json
import pathlib
import runpy
import sys

import numpy as np
import pytest
from idx_files import write_mnist_like

from jdistill.cli import main
from jdistill.report import evaluated
from jdistill.temperature import soften

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "temperature_mnist.py"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """The experiment's --smoke run (it trains the teacher the CLI test reuses)."""
    root = tmp_path_factory.mktemp("temperature")
    data, out = write_mnist_like(root), root / "out"
    argv = [str(SCRIPT), "--data-dir", str(data), "--out", str(out), "--smoke", "--quiet"]
    saved = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        sys.argv = saved
    return data, out


@pytest.mark.slow
def test_the_experiment_chooses_images_by_entropy_and_writes_its_outputs(experiment):
    _, out = experiment
    runs = json.loads((out / "results.json").read_text())
    assert [s["run"] for s in runs["teacher"]] == ["teacher"] and runs["teacher"][0]["epochs"] == 1
    results = json.loads((out / "temperature.json").read_text())
    assert results["teacher_accuracy"] == pytest.approx(evaluated(runs["teacher"][0]), abs=1e-6)
    images = results["images"]
    assert set(images) == {"confident", "median", "ambiguous"}
    assert images["confident"]["label"] == images["confident"]["predicted"]
    entropy_at_1 = {k: soften(np.array(v["logits"]), [1.0])[1][0] for k, v in images.items()}
    assert entropy_at_1["confident"] <= entropy_at_1["median"] <= entropy_at_1["ambiguous"]
    assert np.all(np.diff(results["mean_test_entropy"]) > 0)
    table = (out / "table.md").read_text()
    for kind, image in images.items():
        assert f"## {kind}: test image {image['index']}" in table
        assert sum(image["probabilities"]["20"]) == pytest.approx(1.0, abs=1e-4)
        for name in ("temperature_bars.png", "entropy.png"):
            assert (out / kind / name).read_bytes()[:8] == PNG
    assert (out / "entropy.png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_the_cli_prints_probabilities_and_entropy_per_temperature(experiment, tmp_path, capsys):
    data, out = experiment
    args = ["temperature", "--teacher", str(out / "teacher"), "--dataset", "mnist", "--data-dir", str(data)]
    main([*args, "--index", "3", "--temperatures", "1", "5", "--out", str(tmp_path / "t")])
    printed = capsys.readouterr().out
    assert "Test image 3 (label " in printed
    rows = [line for line in printed.splitlines() if line.startswith(("| 1 |", "| 5 |"))]
    assert len(rows) == 2
    probs = [float(c) for c in rows[0].split("|")[2:12]]
    assert sum(probs) == pytest.approx(1.0, abs=1e-3)
    entropies = [float(row.split("|")[12]) for row in rows]
    assert entropies[1] > entropies[0]
    for name in ("temperature_bars.png", "entropy.png"):
        assert (tmp_path / "t" / name).read_bytes()[:8] == PNG
    with pytest.raises(SystemExit, match="--index must be in"):
        main([*args, "--index", "100000", "--out", str(tmp_path / "bad")])

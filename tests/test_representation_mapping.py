"""Representation mapping through the trainer (repmap, srrl), the student used with the teacher's
head, and experiments/representation_mapping_mnist.py end to end on tiny MNIST-like data."""

import json
import pathlib
import runpy
import sys

import chex
import jax
import numpy as np
import pytest
from idx_files import write_mnist_like

from jdistill.data import load_dataset
from jdistill.experiment import options_from, parser_for
from jdistill.methods import build_method
from jdistill.methods.representation import load_run, test_accuracy, with_teacher_head
from jdistill.train import RunConfig, fit, load_teacher, parse_methods

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "representation_mapping_mnist.py"
COMMON = {"dataset": "digits", "batch_size": 64, "learning_rate": 0.05}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("teacher") / "run"
    fit(RunConfig(model="mlp256", epochs=2, **COMMON), out, dataset=digits, progress=False)
    return str(out)


def _distill(out, teacher, digits, methods, options):
    config = RunConfig(
        model="mlp32",
        epochs=1,
        teacher=teacher,
        methods=parse_methods(methods),
        method_options=options,
        **COMMON,
    )
    return fit(config, out, dataset=digits, progress=False)


@pytest.fixture(scope="module")
def l2_student(tmp_path_factory, teacher, digits):
    out = tmp_path_factory.mktemp("l2") / "run"
    _distill(out, teacher, digits, ["repmap"], {"repmap": {"distance": "l2"}})
    return str(out)


def _metrics(run_dir):
    return [json.loads(line) for line in open(pathlib.Path(run_dir) / "metrics.jsonl")]


def test_repmap_trains_a_projection_to_the_teachers_width(l2_student, tmp_path, teacher, digits):
    summary = json.loads((pathlib.Path(l2_student) / "summary.json").read_text())
    assert summary["extra_params"] == 32 * 256 + 256  # the linear projection 32 -> 256
    assert np.isfinite(_metrics(l2_student)[-1]["train/loss/repmap"])
    cosine = _distill(tmp_path / "cos", teacher, digits, ["repmap"], {"repmap": {"distance": "cosine"}})
    assert cosine["extra_params"] == 32 * 256 + 256
    assert 0 <= _metrics(tmp_path / "cos")[-1]["train/loss/repmap"] <= 2


def test_srrl_holds_the_teachers_head_fixed_and_learns_both_terms(tmp_path, teacher, digits):
    out = tmp_path / "srrl"
    _distill(out, teacher, digits, ["kd", "srrl"], {"srrl": {"teacher_run": teacher}})
    terms = _metrics(out)[-1]
    assert all(np.isfinite(terms[f"train/loss/{t}"]) for t in ("kd", "srrl_feature", "srrl_head"))
    head = load_run(str(out), digits).extras["srrl"]["head"]
    teacher_head = load_teacher(teacher, digits).variables[0]["model"]["head"]
    chex.assert_trees_all_close(
        (head.kernel[...], head.bias[...]), (teacher_head["kernel"], teacher_head["bias"]), rtol=0, atol=0
    )


def test_the_student_with_the_teachers_head_is_the_hand_composition(l2_student, teacher, digits):
    classifier = with_teacher_head(l2_student, teacher, digits)
    student = load_run(l2_student, digits)
    s_params = jax.tree.map(np.asarray, dict(_params(student.model)))
    proj = {k: np.asarray(v) for k, v in _params(student.extras["repmap"]["projection"])}
    head = {k: np.asarray(v) for k, v in load_teacher(teacher, digits).variables[0]["model"]["head"].items()}
    x = digits.x_test[:7].reshape(7, -1)
    embedding = np.maximum(x @ s_params["hidden/0/kernel"] + s_params["hidden/0/bias"], 0)
    projected = embedding @ proj["map/kernel"] + proj["map/bias"]
    expected = projected @ head["kernel"] + head["bias"]
    chex.assert_trees_all_close(np.asarray(classifier(digits.x_test[:7])), expected, rtol=1e-4, atol=1e-4)
    all_logits = np.asarray(classifier(digits.x_test))
    assert test_accuracy(classifier, digits, batch_size=100) == pytest.approx(
        np.mean(all_logits.argmax(-1) == digits.y_test)
    )


def _params(module):
    from flax import nnx

    state = nnx.to_pure_dict(nnx.state(module, nnx.Param))
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return [("/".join(str(getattr(k, "key", k)) for k in path), leaf) for path, leaf in flat]


def test_bad_options_and_runs_without_a_projection_are_explained(tmp_path, teacher, digits):
    with pytest.raises(ValueError, match="repmap: distance must be one of l2, cosine"):
        build_method("repmap", {"distance": "manhattan"})
    with pytest.raises(ValueError, match="srrl.teacher_run=DIR"):
        _distill(tmp_path / "no_teacher_run", teacher, digits, ["srrl"], {})
    with pytest.raises(ValueError, match="trained without a projection"):
        with_teacher_head(teacher, teacher, digits)


def test_the_experiment_declares_the_teacher_then_8_rows_of_3_seeds(tmp_path):
    experiment = runpy.run_path(str(SCRIPT))["EXPERIMENT"]
    parser = parser_for(experiment)
    runs = list(experiment.runs(options_from(experiment, parser.parse_args(["--out", str(tmp_path)]))))
    assert [(r.name, r.row, r.config.model.name, r.config.loop.epochs) for r in runs[:2]] == [
        ("teacher", "teacher", "lenet5", 3),
        ("alone/seed0", "alone", "mlp32", 3),
    ]
    repmap, kd_repmap = ("repmap",), ("kd", "repmap")
    methods = {"alone": (), "kd": ("kd",), "l2": repmap, "cosine": repmap, "l2_kd": kd_repmap,
               "cosine_kd": kd_repmap, "srrl": ("srrl",), "srrl_kd": ("kd", "srrl")}  # fmt: skip
    assert [r.row for r in runs[1:]] == [row for row in methods for _ in range(3)]
    assert [r.config.loop.seed for r in runs] == [0] + [0, 1, 2] * 8
    for run in runs[1:]:
        assert (
            run.config.distill.methods == ("ce", *methods[run.row]) and run.config.distill.temperature == 4.0
        )
        assert run.config.distill.teacher == (str(tmp_path / "teacher") if run.row != "alone" else None)
        if "srrl" in run.row:
            assert run.config.distill.method_options == {"srrl": {"teacher_run": str(tmp_path / "teacher")}}
            assert run.config.distill.weights == {"srrl_head": 0.01}
        elif "repmap" in run.config.distill.methods:
            assert run.config.distill.method_options == {"repmap": {"distance": run.row.split("_")[0]}}
    argv = ["--out", str(tmp_path), "--rows", "alone,sideways"]
    with pytest.raises(ValueError, match="unknown row.s. sideways; rows: alone, kd, l2"):
        next(experiment.runs(options_from(experiment, parser.parse_args(argv))))


@pytest.mark.slow
def test_the_experiment_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """--smoke --rows alone,srrl: the teacher and two students, 1 epoch each, on 512 images."""
    data, out = write_mnist_like(tmp_path), tmp_path / "repmap"
    argv = ["--data-dir", str(data), "--out", str(out), "--smoke", "--quiet", "--rows", "alone,srrl"]
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    table = (out / "table.md").read_text()
    assert table in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())  # row -> the summaries of its seeds
    assert {row: [s["run"] for s in summaries] for row, summaries in results.items()} == {
        "teacher": ["teacher"],
        "alone": ["alone/seed0"],
        "srrl": ["srrl/seed0"],
    }
    (teacher,), (alone,), (srrl,) = results.values()
    assert (teacher["model"], alone["methods"], srrl["methods"]) == ("lenet5", ["ce"], ["ce", "srrl"])
    assert srrl["extra_params"] == 32 * 84 + 84  # the projection to the teacher's embedding
    smoke = load_dataset("mnist", str(data)).first(512, 200)
    head = test_accuracy(with_teacher_head(str(out / "srrl/seed0"), str(out / "teacher"), smoke), smoke)
    assert srrl["teacher_head_accuracy"] == head and "teacher_head_accuracy" not in alone  # kept in results
    assert f"Teacher lenet5 (61,706 parameters, 1 epochs): {100 * teacher['test/accuracy']:.2f} %" in table
    assert "Student mlp32 (25,450 parameters, 1 epochs; projection 2,772 parameters)" in table
    assert f"| student alone | {100 * alone['test/accuracy']:.2f} | - | 1 |" in table
    own = 100 * srrl["test/accuracy"]
    assert f"| SRRL: L2 mapping + teacher-head term x 0.01 | {own:.2f} | {100 * head:.2f} | 1 |" in table
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""experiments/hinton_mnist.py end to end, on a small MNIST-format directory made from scikit-learn's
digits (8x8 images scaled to 24x24 and padded to 28x28), with the 'smoke' schedule."""

import json
import pathlib
import runpy
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from idx_files import write_mnist_like

from jdistill.data.mnist import load_mnist_dir
from jdistill.train import RunDir, load_teacher

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "hinton_mnist.py"


@pytest.fixture(scope="module")
def mnist_like_dir(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("mnist_like"))


def _numpy_forward(run_dir, dataset, images):
    """Logits and hidden activations of a finished MLP run from its checkpoint's arrays, in NumPy
    (inference: no dropout)."""
    params = load_teacher(str(run_dir), dataset).variables[0]["model"]
    h, hidden = images.reshape(len(images), -1), []
    for layer in params["hidden"].values():
        h = np.maximum(h @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"]), 0)
        hidden.append(h)
    return h @ np.asarray(params["head"]["kernel"]) + np.asarray(params["head"]["bias"]), hidden


def _run(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    runpy.run_path(str(SCRIPT), run_name="__main__")


@pytest.mark.slow
def test_the_whole_table_runs_and_reports_against_the_paper(mnist_like_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "hinton"
    args = ["--data-dir", str(mnist_like_dir), "--out", str(out), "--schedule", "smoke", "--quiet"]
    _run(monkeypatch, *args, "--seeds", "2", "--sweep-seeds", "1", "--temperatures", "4,20")
    printed = capsys.readouterr().out

    results = json.loads((out / "results.json").read_text())  # row -> its runs' summaries
    num_test = 1797 - 1400
    assert list(results) == ["teacher", "alone", "kd_T4", "kd_T20", "kd_T20_no3"]
    assert [s["run"] for s in results["kd_T4"]] == ["kd_T4/seed0"]
    assert [s["run"] for s in results["kd_T20"]] == ["kd_T20/seed0", "kd_T20/seed1"]
    assert [s["run"] for s in results["alone"]] == ["alone/seed0", "alone/seed1"]
    for summaries in results.values():
        for s in summaries:  # every run's errors: a count out of the test images, from its own summary
            summary = json.loads((out / s["run"] / "summary.json").read_text())
            assert isinstance(s["errors"], int) and 0 <= s["errors"] <= num_test
            assert s["errors"] == round((1 - summary["test/accuracy"]) * num_test)
    errors = {row: [s["errors"] for s in summaries] for row, summaries in results.items()}
    table = (out / "table.md").read_text()
    assert table in printed
    assert table.startswith(f"Errors out of {num_test} test images")
    (teacher,), alone, kd = errors["teacher"], np.mean(errors["alone"]), np.mean(errors["kd_T20"])
    if alone > teacher:
        closed = (alone - kd) / (alone - teacher)
        assert f"closed by distillation: {100 * closed:.0f} % (paper, test set: 91 %)" in table
    else:
        assert "closed by distillation" not in table

    # Omitted 3s: the students never saw a 3; the bias shift is chosen on the training set.
    assert [s["run"] for s in results["kd_T20_no3"]] == ["kd_T20_no3/seed0", "kd_T20_no3/seed1"]
    for study in results["kd_T20_no3"]:
        assert 0 <= study["errors_on_threes"] <= study["errors"]
        assert 0 <= study["errors_on_threes_after_shift"] <= study["errors_after_shift"] <= num_test
        assert study["bias_shift"] >= 0
        config = RunDir(out / study["run"]).flat_config()
        assert config["exclude_classes"] == [3]

    (kd0, kd1), kd_std = errors["kd_T20"], np.std(errors["kd_T20"])  # per seed, in seed order
    assert (
        f"soft targets T = 20 | {kd:.1f} +- {kd_std:.1f} | {kd0} / {kd1} | 2 | 74 | {kd - 74:+.1f} |" in table
    )
    for paper in ("| 67 |", "| 146 |", "| 74 |", "206 (133 on 3s)", "109 (bias + 3.5)"):
        assert paper in table
    for plot in ("temperature.png", "learning_curves.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Re-running the command finds every run finished and rebuilds the same table.
    _run(monkeypatch, *args, "--seeds", "2", "--sweep-seeds", "1", "--temperatures", "4,20")
    assert (out / "table.md").read_text() == table


@pytest.mark.slow
def test_validate_holds_out_training_images_and_teacher_lr_sets_the_teachers_rate(
    mnist_like_dir, tmp_path, monkeypatch
):
    out = tmp_path / "val"
    args = ["--data-dir", str(mnist_like_dir), "--out", str(out), "--schedule", "smoke", "--quiet",
            "--validate", "--seeds", "1", "--sweep-seeds", "0", "--teacher-lr", "0.5"]  # fmt: skip
    _run(monkeypatch, *args, "--no-omitted-threes")  # the main table alone
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["teacher", "alone", "kd_T20"] and not (out / "kd_T20_no3").exists()
    main_table, teacher_summary = (out / "table.md").read_text(), (out / "teacher/summary.json").read_text()
    assert "| student 784-800-800-10, soft targets T = 20 |" in main_table and "Omitted 3s" not in main_table
    assert "not comparable with the paper's test errors" in main_table and "| 146 |" not in main_table
    _run(monkeypatch, *args)  # reads the three runs back and adds the omitted-3s students
    results = json.loads((out / "results.json").read_text())
    assert "Omitted 3s" in (out / "table.md").read_text()
    assert (out / "teacher/summary.json").read_text() == teacher_summary  # not trained again
    assert list(results) == ["teacher", "alone", "kd_T20", "kd_T20_no3"]
    assert (out / "table.md").read_text().startswith(f"Errors out of {round(1400 / 6)} held-out training")
    for run in ("teacher", "alone/seed0", "kd_T20/seed0"):
        config = RunDir(out / run).flat_config()
        assert config["holdout_fraction"] == pytest.approx(1 / 6)
        assert config["learning_rate"] == (0.5 if run == "teacher" else 0.1)  # --teacher-lr: the teacher's
        summary = json.loads((out / run / "summary.json").read_text())
        assert "val/accuracy" in summary and not any(
            k.startswith("test/") for k in summary
        )  # not the test set
        (measured,) = [s for summaries in results.values() for s in summaries if s["run"] == run]
        assert measured["errors"] == round((1 - summary["val/accuracy"]) * round(1400 / 6))


@pytest.mark.slow
def test_the_transfer_study_translates_only_its_jittered_arms_and_never_reads_the_test_set(
    mnist_like_dir, tmp_path, monkeypatch, capsys
):
    script = SCRIPT.with_name("hinton_transfer.py")
    out = tmp_path / "transfer"
    args = ["--data-dir", str(mnist_like_dir), "--out", str(out), "--teacher-epochs", "1"]
    args += ["--student-epochs", "1", "--temperatures", "20", "--quiet"]
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    runpy.run_path(str(script), run_name="__main__")
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {
        "teacher",
        "alone, clean",
        "alone, jitter2",
        "KD T = 20, clean",
        "KD T = 20, jitter2",
    }
    held_out = round(1400 / 6)
    for run, shift, teacher in [
        ("alone_clean/seed0", 0, False),
        ("alone_jitter2/seed0", 2, False),
        ("T20_clean/seed0", 0, True),
        ("T20_jitter2/seed0", 2, True),
    ]:
        config = RunDir(out / run).flat_config()
        assert config["max_shift"] == shift and config["holdout_fraction"] == pytest.approx(1 / 6)
        assert (config["teacher"] == str((out / "teacher").absolute())) == teacher
        summary = json.loads((out / run / "summary.json").read_text())
        name = (
            {"alone": "alone", "T20": "KD T = 20"}[run.split("_")[0]] + ", " + run.split("_")[1].split("/")[0]
        )
        assert [s["errors"] for s in results[name]] == [round((1 - summary["val/accuracy"]) * held_out)]
    assert (out / "table.md").read_text() in capsys.readouterr().out


@pytest.mark.slow
def test_the_student_recipe_study_changes_only_its_arms_and_flags_a_teacher_that_saw_the_held_out_images(
    mnist_like_dir, tmp_path, monkeypatch, capsys
):
    script = SCRIPT.with_name("hinton_student_recipe.py")
    common = ["--data-dir", str(mnist_like_dir), "--student-epochs", "1", "--quiet"]
    out = tmp_path / "recipe"
    args = [*common, "--out", str(out), "--teacher-epochs", "1", "--arms", "alone,hard05,adam"]
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    runpy.run_path(str(script), run_name="__main__")
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["alone", "hard05", "adam"] and len(results["hard05"]) == 2
    assert "teacher_saw_held_out" not in results["alone"][0]  # no teacher
    assert all(s["teacher_saw_held_out"] is False for s in results["hard05"] + results["adam"])
    held_out = round(1400 / 6)
    configs = {}
    for arm in ("alone", "hard05", "adam"):
        for seed, errors in enumerate(s["errors"] for s in results[arm]):
            config = RunDir(out / arm / f"seed{seed}").flat_config()
            assert config["holdout_fraction"] == pytest.approx(1 / 6) and config["seed"] == seed
            summary = json.loads((out / arm / f"seed{seed}" / "summary.json").read_text())
            assert errors == round((1 - summary["val/accuracy"]) * held_out)
            configs[arm] = config
    assert configs["alone"]["teacher"] is None and configs["alone"]["methods"] == ["ce"]
    assert configs["hard05"]["weights"] == {"ce": 0.5, "kd": 0.5} and configs["hard05"]["temperature"] == 20
    assert configs["adam"]["optimizer"] == "adam" and configs["adam"]["clip_norm"] is None
    assert configs["adam"]["weights"] == {"ce": 0.1, "kd": 0.9}
    # how far a student is from a copy of its teacher, again from the checkpoints' arrays in NumPy
    dataset = load_mnist_dir(mnist_like_dir)
    held = dataset.holdout(1 / 6)
    (teacher_logits, _), (student_logits, _) = (
        _numpy_forward(out / run, dataset, images)
        for run, images in (("teacher", held.x_test), ("hard05/seed0", held.x_test))
    )
    t, s = teacher_logits.argmax(-1), student_logits.argmax(-1)
    summary = results["hard05"][0]
    assert summary["disagreements"] == int((t != s).sum())
    assert summary["teacher_right_student_wrong"] == int(((t == held.y_test) & (s != held.y_test)).sum())
    assert summary["errors"] == int((s != held.y_test).sum())
    _, hidden = _numpy_forward(out / "hard05/seed0", dataset, dataset.x_train[:2000])
    np.testing.assert_allclose(
        list(summary["dead"].values()), [(h.max(0) <= 0).mean() for h in hidden], atol=1e-6
    )
    teacher = json.loads((out / "teacher" / "summary.json").read_text())  # trained here, held out too
    table = (out / "table.md").read_text()
    assert f"| teacher 784-1200-1200-10 | {round((1 - teacher['val/accuracy']) * held_out)} |" in table
    assert "trained on these images" not in table

    # a teacher trained on every training image (the table's) is flagged as a proxy
    table_out = tmp_path / "table"
    _run(monkeypatch, "--data-dir", str(mnist_like_dir), "--out", str(table_out), "--schedule", "smoke",
         "--quiet", "--seeds", "1", "--sweep-seeds", "0")  # fmt: skip
    proxy = tmp_path / "proxy"
    args = [*common, "--out", str(proxy), "--teacher-dir", str(table_out / "teacher"), "--arms", "base"]
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    runpy.run_path(str(script), run_name="__main__")
    proxied = json.loads((proxy / "results.json").read_text())["base"]
    assert [s["teacher_saw_held_out"] for s in proxied] == [True, True]
    assert "trained on these images: the rows rank recipes only" in (proxy / "table.md").read_text()
    assert not (proxy / "teacher").exists()


@pytest.mark.slow
def test_the_teacher_rate_study_counts_dead_units_as_a_plain_forward_pass_does(
    mnist_like_dir, tmp_path, monkeypatch
):
    script = SCRIPT.with_name("hinton_teacher_rate.py")
    out = tmp_path / "rate"
    args = ["--data-dir", str(mnist_like_dir), "--out", str(out), "--quiet", "--rates", "1", "3",
            "--inits", "flax", "--compressed", "--students", "1", "--student-epochs", "1", "--jitter", "1"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    runpy.run_path(str(script), run_name="__main__")
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["lr1_flax", "lr1_flax_kd", "lr3_flax", "lr3_flax_kd"]
    held_out = round(1400 / 6)
    dataset = load_mnist_dir(mnist_like_dir)
    for rate in (1, 3):
        teacher = out / f"lr{rate}_flax"
        config = RunDir(teacher).flat_config()
        assert config["learning_rate"] == rate and config["init"] == "flax" and config["dampening"]
        assert config["holdout_fraction"] == pytest.approx(1 / 6) and config["batch_size"] == 100
        assert config["max_shift"] == 1  # --jitter
        assert config["lr_decay"] == pytest.approx(0.998**3000)  # compressed to its one epoch
        (summary,) = results[f"lr{rate}_flax"]
        assert summary["errors"] == round((1 - summary["val/accuracy"]) * held_out)
        # the dead units again, from the checkpoint's arrays in NumPy (inference: no dropout)
        _, hidden = _numpy_forward(teacher, dataset, dataset.x_train[:2000])
        dead = [float((h.max(0) <= 0).mean()) for h in hidden]
        assert list(summary["dead"]) == ["hidden1", "hidden2"]
        np.testing.assert_allclose(list(summary["dead"].values()), dead, atol=1e-6)
        (student,) = results[f"lr{rate}_flax_kd"]
        student_config = RunDir(out / student["run"]).flat_config()
        assert student_config["teacher"] == str(teacher.absolute()) and student_config["temperature"] == 20
        assert student_config["holdout_fraction"] == pytest.approx(1 / 6) and student_config["epochs"] == 1
    table_rows = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table_rows) == 3  # the header and a row per teacher
    table = "\n".join(table_rows)
    assert f"| 1 | flax | {results['lr1_flax'][0]['errors']} |" in table
    assert "inputs translated by up to 1 pixels" in (out / "table.md").read_text()


def test_both_teachers_are_the_2012_recipe_at_half_its_rate_the_default_compressed_to_900_epochs():
    hinton = runpy.run_path(str(SCRIPT))
    default, long = (
        hinton["teacher_config"](None, hinton["SCHEDULES"][name]) for name in ("default", "long")
    )
    assert (default.loop.epochs, default.optimizer.learning_rate) == (900, 0.5)  # chosen on held-out images
    assert default.optimizer.lr_decay == pytest.approx(0.998 ** (3000 / 900))  # ends where 3,000 epochs end
    assert default.optimizer.momentum_ramp_epochs == 150 and default.loop.batch_size == 100
    assert (long.loop.epochs, long.optimizer.learning_rate, long.optimizer.lr_decay) == (3000, 0.5, 0.998)
    assert long.optimizer.momentum_ramp_epochs == 500 and long.loop.batch_size == 100
    # --teacher-lr 1: the hinton2012 preset's rate, the rest of the long recipe unchanged
    preset = hinton["teacher_config"](None, hinton["SCHEDULES"]["long"], lr=1.0).optimizer
    assert (preset.learning_rate, preset.lr_decay, preset.momentum_ramp_epochs) == (1.0, 0.998, 500)
    assert default.optimizer.max_norm == long.optimizer.max_norm == pytest.approx(15**0.5)
    assert (
        hinton["teacher_config"](None, hinton["SCHEDULES"]["default"], lr=1.0).optimizer.learning_rate == 1.0
    )
    # the students are the same in both: 80 epochs, converged by then on held-out images
    students = [hinton["student_config"](None, hinton["SCHEDULES"][name], 0) for name in ("default", "long")]
    assert students[0].loop.epochs == students[1].loop.epochs == 80


def test_the_student_gap_arms_change_what_they_name_and_keep_the_rest_of_the_distilled_recipe(tmp_path):
    study = runpy.run_path(str(SCRIPT.with_name("hinton_student_recipe.py")))
    args = SimpleNamespace(teacher_dir=str(tmp_path / "teacher"), student_epochs=40,
                           arms="base,wide,dropout,teacher_net,jitter,sgd2012,epochs120,T8")  # fmt: skip
    options = SimpleNamespace(args=args, data_dir=None, seeds=[0, 1])
    configs = {run.name: run.config for run in study["runs"](options)}
    assert list(configs) == [
        "base/seed0",
        "base/seed1",
        *(f"{arm}/seed0" for arm in args.arms.split(",")[1:]),
    ]
    base = configs["base/seed0"]
    assert (base.model.name, base.loop.epochs, base.distill.temperature) == ("mlp800", 40, 20.0)
    assert base.optimizer.clip_norm == 1.0 and base.distill.teacher == str(tmp_path / "teacher")
    models = {arm: configs[f"{arm}/seed0"].model.name for arm in ("wide", "dropout", "teacher_net")}
    assert models == {"wide": "mlp1200_plain", "dropout": "mlp800_dropout", "teacher_net": "mlp1200"}
    assert configs["jitter/seed0"].data.max_shift == 2 and base.data.max_shift == 0
    assert configs["epochs120/seed0"].loop.epochs == 120 and configs["T8/seed0"].distill.temperature == 8.0
    sgd = configs["sgd2012/seed0"]  # the 2012 recipe compressed to the students' 40 epochs, no max-norm
    assert sgd.optimizer.lr_decay == pytest.approx(0.998 ** (3000 / 40)) and sgd.optimizer.max_norm is None
    assert (sgd.optimizer.learning_rate, sgd.loop.batch_size, sgd.optimizer.dampening) == (0.5, 100, True)
    assert sgd.distill.weights == base.distill.weights and sgd.optimizer.clip_norm == 1.0
    for arm in ("wide", "dropout", "teacher_net", "jitter", "sgd2012", "epochs120", "T8"):
        config = configs[f"{arm}/seed0"]
        assert config.data.holdout_fraction == pytest.approx(1 / 6) and config.distill.methods == ("ce", "kd")

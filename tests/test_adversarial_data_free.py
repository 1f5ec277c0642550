"""Data-free distillation (DFAD, DAFL, ZSKT): the generator, each player's step, the game and
the run directory, on scikit-learn's 8x8 digits with a small CNN teacher."""

import dataclasses
import json
import pathlib
import runpy
import shutil
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from idx_files import write_mnist_like

from jdistill import cli, losses
from jdistill.adversarial import data_free as df
from jdistill.adversarial.data_free import DataFreeConfig
from jdistill.data import load_digits
from jdistill.models import create_model
from jdistill.models.generator import Generator
from jdistill.train import RunConfig, Trainable, create_state, fit, load_teacher

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "data_free_mnist.py"
BATCH = 32


@pytest.fixture(scope="module")
def digits():
    return df.teacher_dataset(load_digits())


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("teacher")
    fit(RunConfig(model="small_cnn", dataset="digits", epochs=3, batch_size=32, learning_rate=0.1), out,
        dataset=digits, progress=False)  # fmt: skip
    return str(out)


def config(teacher_dir, **changes) -> DataFreeConfig:
    base = {"teacher_dir": teacher_dir, "dataset": "digits", "student": "small_cnn", "batch_size": BATCH,
            "generator_width": 4, "iterations": 4, "iterations_per_epoch": 2, "samples_every": 2,
            "histogram_samples": 40, "at_features": ("conv1", "conv2"), "activation_feature": "embedding"}  # fmt: skip
    return DataFreeConfig(**{**base, **changes})


def players(cfg, digits, teacher):
    rngs = nnx.Rngs(0)
    student_graphdef, student = create_state(
        Trainable(create_model(cfg.student, digits.input_shape, 10, rngs=rngs), {}),
        df.student_optimizer(cfg),
        0,
    )
    generator_graphdef, generator = create_state(
        Generator(digits.input_shape, width=cfg.generator_width, rngs=rngs), df.generator_optimizer(cfg), 0
    )
    return (student_graphdef, student), (generator_graphdef, generator)


def host(tree):
    return jax.tree.map(np.array, tree)


def changed(before, after) -> list[bool]:
    return jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after))


# ---------------------------------------------------------------- generator and configuration


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_generator_makes_standardised_images_of_the_papers_sizes(shape):
    gen = Generator(shape, noise_dim=10, width=4, rngs=nnx.Rngs(0))
    images = gen(jax.random.normal(jax.random.key(1), (16, 10)))
    chex.assert_shape(images, (16, *shape))
    # The last BatchNorm (no affine) standardises each channel over the batch.
    chex.assert_trees_all_close(images.mean(axis=(0, 1, 2)), jnp.zeros(shape[-1]), atol=1e-4)
    chex.assert_trees_all_close(images.std(axis=(0, 1, 2)), jnp.ones(shape[-1]), atol=1e-2)


def test_generator_refuses_bad_shapes():
    with pytest.raises(ValueError, match="divisible by 4"):
        Generator((30, 30, 1), width=4, rngs=nnx.Rngs(0))
    gen = Generator((8, 8, 1), noise_dim=10, width=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"noise must be \[batch, 10\]"):
        gen(jnp.zeros((4, 7)))


def test_config_takes_each_papers_settings_unless_given():
    dfad = DataFreeConfig(teacher_dir="t")
    assert (dfad.student_optimizer, dfad.student_lr, dfad.student_weight_decay, dfad.student_steps) == (
        "sgd", 0.01, 1e-4, 5)  # fmt: skip
    assert (dfad.generator_lr, dfad.generator_bn_epsilon) == (1e-3, 1e-5)
    dafl = DataFreeConfig(teacher_dir="t", method="dafl")
    assert (dafl.student_optimizer, dafl.student_lr, dafl.generator_lr, dafl.student_steps) == (
        "adam",
        2e-3,
        0.2,
        1,
    )
    assert dafl.generator_bn_epsilon == 0.8
    zskt = DataFreeConfig(teacher_dir="t", method="zskt", student_steps=3, student_lr=0.5)
    assert zskt.game == df.Game(student_steps=3, generator_first=True, same_noise=True)
    assert zskt.student_lr == 0.5


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"method": "gan"}, "unknown data-free method 'gan'; choose one of dfad, dafl, zskt"),
        ({"iterations": 10, "iterations_per_epoch": 3}, "must be a multiple of iterations_per_epoch"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"student_optimizer": "rmsprop"}, "student_optimizer must be 'sgd' or 'adam'"),
        ({"generator_schedule": "step"}, "generator_schedule must be 'constant' or 'cosine'"),
    ],
)
def test_config_errors_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        DataFreeConfig(teacher_dir="t", **changes)


# ---------------------------------------------------------------- steps


@pytest.fixture(scope="module")
def teacher(teacher_dir, digits):
    return load_teacher(teacher_dir, digits)


@pytest.mark.parametrize("method", df.METHODS)
def test_each_step_moves_only_its_own_player(method, teacher_dir, digits, teacher):
    cfg = config(teacher_dir, method=method)
    (sg, student), (gg, generator) = players(cfg, digits, teacher)
    z = jax.random.normal(jax.random.key(0), (BATCH, cfg.noise_dim))
    teacher_before, student_before, generator_before = host(teacher.variables), host(student), host(generator)

    new_student, metrics = df.make_student_step(cfg, sg, gg, teacher.graphdef)(
        student, generator, teacher.variables, z
    )
    assert all(changed(student_before.params, new_student.params))
    assert int(new_student.step) == 1
    chex.assert_trees_all_equal(host(generator), generator_before)
    chex.assert_trees_all_equal(host(teacher.variables), teacher_before)
    chex.assert_tree_all_finite(metrics)

    new_generator, metrics = df.make_generator_step(cfg, sg, gg, teacher.graphdef)(
        generator, student, teacher.variables, z
    )
    # Every generator parameter gets a gradient and moves.
    assert all(changed(generator_before.params, new_generator.params))
    chex.assert_trees_all_equal(host(student), student_before)
    chex.assert_trees_all_equal(host(teacher.variables), teacher_before)
    chex.assert_tree_all_finite(metrics)


def test_dafl_generator_gradient_flows_through_the_teacher(teacher_dir, digits, teacher):
    """DAFL's generator objective depends on the teacher alone: a stopped teacher would leave the
    generator without gradient."""
    cfg = config(teacher_dir, method="dafl")
    _, (gg, generator) = players(cfg, digits, teacher)
    z = jax.random.normal(jax.random.key(0), (BATCH, cfg.noise_dim))

    def objective(params):
        images, _ = df._generate(gg, generator, params, z)
        logits, feats = df._teacher_apply(teacher.graphdef, teacher.variables, images)
        return losses.dafl_generator(logits, feats["embedding"])

    grads = jax.grad(objective)(generator.params)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads["linear"]))


def test_dfad_generator_plays_the_negative_of_the_students_objective(teacher_dir, digits, teacher):
    cfg = config(teacher_dir, method="dfad")
    (sg, student), (gg, generator) = players(cfg, digits, teacher)
    z = jax.random.normal(jax.random.key(0), (BATCH, cfg.noise_dim))
    _, s_metrics = df.make_student_step(cfg, sg, gg, teacher.graphdef)(
        student, generator, teacher.variables, z
    )
    _, g_metrics = df.make_generator_step(cfg, sg, gg, teacher.graphdef)(
        generator, student, teacher.variables, z
    )
    # Same states, same noise, a student without dropout or BatchNorm: the two losses are opposite.
    chex.assert_trees_all_close(g_metrics["generator/loss"], -s_metrics["student/loss"], rtol=1e-5)


@pytest.mark.parametrize("method", df.METHODS)
def test_one_iteration_plays_the_methods_game(method, teacher_dir, digits, teacher):
    cfg = config(teacher_dir, method=method)
    (sg, student), (gg, generator) = players(cfg, digits, teacher)
    iteration = df.make_iteration(cfg, sg, gg, teacher.graphdef)
    student, generator, metrics = iteration(student, generator, teacher.variables, jax.random.key(0))
    assert (int(student.step), int(generator.step)) == (cfg.student_steps, 1)
    expected = {"dfad": {"student/l1", "generator/l1"}, "zskt": {"student/kl", "student/at", "generator/kl"},
                "dafl": {"student/kl", "generator/one_hot", "generator/information_entropy",
                         "generator/activation"}}[method]  # fmt: skip
    assert expected <= set(metrics)


# ---------------------------------------------------------------- runs


def test_run_writes_grids_histograms_and_metrics_and_resumes(teacher_dir, digits, tmp_path):
    cfg = config(teacher_dir, method="dfad")
    out = tmp_path / "run"
    summary = df.run(cfg, out, dataset=digits, progress=False)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for m in lines:
        assert sum(m["generated/class_counts"]) == cfg.histogram_samples
        assert 0.0 <= m["generated/class_entropy"] <= 1.0
    for png in ("samples/iter_000002.png", "samples/iter_000004.png", "samples.png", "class_histogram.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["test/accuracy"] == lines[-1]["test/accuracy"]

    # Lose the last epoch: the run resumes from the checkpoint of the first and ends where it did.
    shutil.rmtree(out / "checkpoints" / "2")
    (out / "summary.json").unlink()
    resumed = df.run(cfg, out, dataset=digits, progress=False)
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert resumed["test/accuracy"] == pytest.approx(summary["test/accuracy"], abs=1e-6)

    with pytest.raises(ValueError, match="different configuration"):
        df.run(dataclasses.replace(cfg, iterations=6), out, dataset=digits, progress=False)


def test_a_missing_teacher_feature_is_named(teacher_dir, digits, tmp_path):
    with pytest.raises(ValueError, match="the teacher has no feature 'fc1'.*its features: "):
        df.run(config(teacher_dir, method="dafl", activation_feature="fc1"), tmp_path / "r", dataset=digits)


def test_command_line_runs_a_data_free_student(teacher_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    cli.main(["data-free", "--teacher", teacher_dir, "--method", "zskt", "--dataset", "digits", "--out", str(out),
              "--student", "small_cnn", "--batch-size", "16", "--generator-width", "4", "--iterations", "2",
              "--iterations-per-epoch", "1", "--histogram-samples", "16", "--student-steps", "2", "--at-features", "conv2", "--quiet"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "zskt" and summary["iterations"] == 2
    recorded = json.loads((out / "config.json").read_text())["config"]
    assert (recorded["student_steps"], recorded["generator_width"], recorded["student_lr"]) == (2, 4, 2e-3)
    assert recorded["at_features"] == ["conv2"]


@pytest.fixture(scope="module")
def mnist_like_dir(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("mnist_like"))


def test_the_experiment_writes_its_table_and_plot(mnist_like_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "experiment"
    argv = [str(SCRIPT), "--data-dir", str(mnist_like_dir), "--out", str(out), "--config", "smoke",
            "--methods", "dfad", "--no-progress"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    table = (out / "table.md").read_text()
    assert table in capsys.readouterr().out
    for row in (
        "teacher LeNet-5",
        "hard labels",
        "KD on the real data",
        "DFAD data-free: 4 it. x 5 student steps",
    ):
        assert row in table
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "dfad_seed0" / "class_histogram.png").exists()

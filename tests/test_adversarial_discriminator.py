"""Adversarial KD with a discriminator: the discriminators' shapes and conditioning, each step
updates only its own player (the teacher never), the objective and the gradient penalty reach the
steps, configurations are checked, runs resume, the command and experiments/adversarial_kd_mnist.py
run end to end."""

import argparse
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

from jdistill import losses
from jdistill.adversarial import discriminator as adv
from jdistill.adversarial.discriminator import (
    AdversarialKDConfig,
    ConvDiscriminator,
    VectorDiscriminator,
    input_shape,
    make_discriminator_step,
    make_student_step,
    prepare,
)
from jdistill.data import load_digits
from jdistill.train import RunConfig, fit, teacher_forward

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "adversarial_kd_mnist.py"
BATCH = 64


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def batch(digits):
    return {"image": jnp.asarray(digits.x_train[:BATCH]), "label": jnp.asarray(digits.y_train[:BATCH])}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("teacher")
    fit(
        RunConfig(model="small_cnn", dataset="digits", epochs=3, batch_size=32, learning_rate=0.1),  # ~92 %
        out,
        dataset=digits,
        progress=False,
    )
    return str(out)


def config(teacher_dir, **changes) -> AdversarialKDConfig:
    base = AdversarialKDConfig(
        teacher_dir=teacher_dir, model="mlp32", epochs=2, dataset="digits", batch_size=BATCH
    )
    return dataclasses.replace(base, **changes)


def host_copy(tree):
    return jax.tree.map(np.array, tree)


def fresh(tree):
    """New buffers: a step donates the state it updates."""
    return jax.tree.map(jnp.array, tree)


def all_leaves_changed(before, after) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after)))


# ---------------------------------------------------------------- modules


@jax.jit
def vector_scores(x, labels):
    """Scores of an unconditional and a conditional discriminator (built inside jit: one compilation)."""
    conditional = VectorDiscriminator(10, num_classes=3, widths=(16,), rngs=nnx.Rngs(0))
    assert conditional.hidden[0].in_features == 10 + 3  # the one-hot label is concatenated
    return VectorDiscriminator(10, rngs=nnx.Rngs(0))(x), conditional(x, labels), conditional(x, labels + 1)


def test_vector_discriminator_scores_each_example_and_conditions_on_the_label():
    x = jax.random.normal(jax.random.key(0), (5, 10))
    plain, label0, label1 = vector_scores(x, jnp.zeros(5, jnp.int32))
    assert plain.shape == label0.shape == (5,)
    assert not np.allclose(label0, label1)
    with pytest.raises(ValueError, match="needs the labels"):
        jax.eval_shape(lambda x: VectorDiscriminator(10, num_classes=3, rngs=nnx.Rngs(0))(x), x)


def test_conv_discriminator_scores_feature_maps():
    maps, labels = jax.random.normal(jax.random.key(0), (4, 8, 8, 6)), jnp.arange(4)
    plain = jax.eval_shape(lambda maps: ConvDiscriminator(6, rngs=nnx.Rngs(0))(maps), maps)
    assert plain.shape == (4,)

    @jax.jit
    def conditional_scores(maps, labels):
        conditional = ConvDiscriminator(6, num_classes=10, channels=(8,), widths=(16,), rngs=nnx.Rngs(0))
        return conditional(maps, labels), conditional(maps, labels + 1)

    label0, label1 = conditional_scores(maps, labels)
    assert label0.shape == (4,) and not np.allclose(label0, label1)


def test_discriminator_input_shapes_and_their_errors():
    student = {"conv1": (8, 8, 32), "embedding": (32,)}
    teacher = {"conv1": (8, 8, 32), "embedding": (128,), "fc": (2, 3)}
    assert input_shape("logits", 10, student, teacher) == (10,)
    assert input_shape("probs", 10, student, teacher) == (10,)
    assert input_shape("feature:conv1", 10, student, teacher) == (8, 8, 32)
    with pytest.raises(ValueError, match=r"student has no feature 'hidden9'.*conv1, embedding"):
        input_shape("feature:hidden9", 10, student, teacher)
    with pytest.raises(ValueError, match=r"\(32,\) but the teacher's \(128,\).*connector"):
        input_shape("feature:embedding", 10, student, teacher)
    with pytest.raises(ValueError, match="neither a vector"):
        input_shape("feature:fc", 10, {"fc": (2, 3)}, teacher)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"disc_input": "pixels"}, "disc_input"),
        ({"disc_input": "feature:"}, "disc_input"),
        ({"objective": "wasserstein"}, "objective"),
        ({"disc_steps": 0}, "disc_steps"),
        ({"adv_weight": -1.0}, "adv_weight"),
        ({"gp_weight": -0.1}, "gp_weight"),
        ({"ce_weight": 0.0, "kd_weight": 0.0, "adv_weight": 0.0}, "nothing to learn"),
        ({"disc_learning_rate": 0.0}, "disc_learning_rate"),
        ({"disc_schedule": "step"}, "disc_schedule"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"disc_widths": ()}, "disc_widths"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_config_errors_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        config("teacher", **changes)


# ---------------------------------------------------------------- steps


@pytest.fixture(scope="module")
def games(teacher_dir, digits):
    """A logit discriminator and a label-conditional feature-map one with a gradient penalty
    (student and teacher are both small CNNs, so their ``conv1`` maps have equal shapes)."""
    return {
        "logits": prepare(config(teacher_dir), digits),
        "feature map": prepare(
            config(
                teacher_dir, model="small_cnn", disc_input="feature:conv1", conditional=True, gp_weight=1.0
            ),
            digits,
        ),
    }


@pytest.mark.parametrize("name", ["logits", "feature map"])
def test_each_step_updates_only_its_own_player(games, batch, name):
    game = games[name]
    student, disc, teacher_vars = game.states["student"], game.states["discriminator"], game.teacher.variables
    teacher_before, student_before, disc_before = map(host_copy, (teacher_vars, student, disc))

    new_disc, metrics = game.discriminator_step(fresh(disc), student, teacher_vars, batch)
    assert 0 <= float(metrics["real_accuracy"]) <= 1 and 0 <= float(metrics["fake_accuracy"]) <= 1
    assert int(new_disc.step) == 1 and all_leaves_changed(disc_before.params, host_copy(new_disc.params))
    chex.assert_trees_all_equal(host_copy(student), student_before)
    chex.assert_trees_all_equal(host_copy(teacher_vars), teacher_before)

    disc_after_its_step = host_copy(new_disc)
    new_student, metrics = game.student_step(fresh(student), new_disc, teacher_vars, batch)
    assert set(metrics) >= {"loss/ce", "loss/kd", "loss/adversarial", "fooled", "agreement"}
    assert int(new_student.step) == 1
    assert all_leaves_changed(student_before.params, host_copy(new_student.params))
    chex.assert_trees_all_equal(host_copy(new_disc), disc_after_its_step)
    chex.assert_trees_all_equal(host_copy(teacher_vars), teacher_before)


@pytest.mark.parametrize("name", ["logits", "feature map"])
def test_no_gradient_reaches_the_teacher_or_the_other_player(games, batch, name):
    game = games[name]
    student, disc, teacher_vars = game.states["student"], game.states["discriminator"], game.teacher.variables
    student_step = make_student_step(game.config, game.graphdefs, game.student_tx, jit=False)
    disc_step = make_discriminator_step(game.config, game.graphdefs, game.disc_tx, jit=False)

    def student_loss(teacher_vars):
        return student_step(student, disc, teacher_vars, batch)[1]["loss"]

    def disc_loss(student_params, teacher_vars):
        return disc_step(disc, student.replace(params=student_params), teacher_vars, batch)[1]["loss"]

    zeros = lambda tree: all(not np.any(leaf) for leaf in jax.tree.leaves(tree))
    assert zeros(jax.jit(jax.grad(student_loss))(teacher_vars))
    to_student, to_teacher = jax.jit(jax.grad(disc_loss, argnums=(0, 1)))(student.params, teacher_vars)
    assert zeros(to_student) and zeros(to_teacher)


def scores_of_both(game, batch):
    """D's raw scores of the teacher's and the (unconditional, logit-fed) student's logits."""
    student, disc = game.states["student"], game.states["discriminator"]
    critic = nnx.merge(game.graphdefs.discriminator, disc.params, disc.rest)
    teacher_logits = teacher_forward(game.graphdefs.teacher, game.teacher.variables, batch["image"])[0]
    model = nnx.merge(game.graphdefs.student, student.params, student.rest).model
    return critic(teacher_logits), critic(model(batch["image"], train=True)[0])


def test_the_chosen_objective_is_what_the_steps_minimise(games, batch):
    game = games["logits"]
    student, disc, teacher_vars = game.states["student"], game.states["discriminator"], game.teacher.variables

    @jax.jit  # the three objectives' steps in one compilation
    def metrics_of_each_objective(batch):
        metrics = {}
        for objective in adv.OBJECTIVES:
            chosen = dataclasses.replace(game.config, objective=objective)
            disc_step = make_discriminator_step(chosen, game.graphdefs, game.disc_tx, jit=False)
            student_step = make_student_step(chosen, game.graphdefs, game.student_tx, jit=False)
            metrics[objective] = (
                disc_step(disc, student, teacher_vars, batch)[1],
                student_step(student, disc, teacher_vars, batch)[1],
            )
        return scores_of_both(game, batch), metrics

    (real, fake), metrics = metrics_of_each_objective(batch)
    for objective, (d_metrics, s_metrics) in metrics.items():
        expected = losses.discriminator_loss(real, fake, objective=objective)
        np.testing.assert_allclose(d_metrics["loss/adversarial"], expected, rtol=1e-5)
        fooling = losses.fooling_loss(fake, objective=objective)
        np.testing.assert_allclose(s_metrics["loss/adversarial"], fooling, rtol=1e-5)
        threshold = adv.DECISION_THRESHOLD[objective]
        np.testing.assert_allclose(d_metrics["real_accuracy"], np.mean(real > threshold))
    assert len({float(m[0]["loss/adversarial"]) for m in metrics.values()}) == 3


def test_gradient_penalty_adds_to_the_discriminator_loss(games, batch):
    game = games["logits"]
    student, disc, teacher_vars = game.states["student"], game.states["discriminator"], game.teacher.variables

    def metrics(gp_weight):
        chosen = dataclasses.replace(game.config, gp_weight=gp_weight)
        step = make_discriminator_step(chosen, game.graphdefs, game.disc_tx)
        return step(fresh(disc), student, teacher_vars, batch)[1]

    without, penalised = metrics(0.0), metrics(10.0)
    assert "loss/gradient_penalty" not in without and float(penalised["loss/gradient_penalty"]) > 0
    np.testing.assert_allclose(penalised["loss/adversarial"], without["loss"], rtol=1e-6)
    np.testing.assert_allclose(
        penalised["loss"], without["loss"] + 10.0 * penalised["loss/gradient_penalty"], rtol=1e-5
    )


# ---------------------------------------------------------------- runs


def test_run_writes_metrics_and_summary_and_resumes_where_it_stopped(teacher_dir, digits, tmp_path):
    cfg = config(teacher_dir, disc_steps=2, learning_rate=0.1)
    full = adv.run(cfg, tmp_path / "run", dataset=digits, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for key in ("test/accuracy", "test/agreement", "train/loss/adversarial", "train/disc/real_accuracy"):
        assert all(key in m for m in lines), key
    assert full["test/accuracy"] > 0.6, full  # chance is 0.1
    assert full["model"] == "mlp32" and full["teacher"] == "small_cnn" and full["disc_params"] > 0
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["config"]["disc_steps"] == 2

    # As if the run had died during epoch 2: both players resume from epoch 1's checkpoint.
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "2")
    (tmp_path / "run" / "summary.json").unlink()
    resumed = adv.run(cfg, tmp_path / "run", dataset=digits, progress=False)
    assert resumed["test/accuracy"] == full["test/accuracy"]
    assert resumed["test/loss"] == pytest.approx(full["test/loss"], rel=1e-6)
    again = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in again] == [1, 2]
    assert again[1]["train/disc/loss"] == pytest.approx(lines[1]["train/disc/loss"], rel=1e-5)


def test_command_maps_its_options_onto_the_configuration(teacher_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    adv.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = parser.parse_args(
        ["adversarial-kd", "--teacher", teacher_dir, "--student", "mlp32", "--dataset", "digits",
         "--epochs", "1", "--batch-size", "64", "--adv-weight", "0", "--objective", "hinge", "--conditional",
         "--disc-widths", "16,8", "--disc-steps", "3", "--gp-weight", "0.5", "--out", str(out), "--quiet"]
    )  # fmt: skip
    args.func(args)
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads((out / "summary.json").read_text())
    fields = json.loads((out / "config.json").read_text())["config"]
    assert (
        fields["objective"] == "hinge" and fields["conditional"] is True and fields["disc_widths"] == [16, 8]
    )
    assert (fields["disc_steps"], fields["gp_weight"], fields["adv_weight"]) == (3, 0.5, 0.0)
    # Without the adversarial term the discriminator is neither trained nor consulted.
    line = json.loads((out / "metrics.jsonl").read_text())
    assert not any(k.startswith("train/disc/") for k in line) and "train/loss/adversarial" not in line


# ---------------------------------------------------------------- the experiment


@pytest.fixture(scope="module")
def mnist_like_dir(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("mnist_like"))


def test_the_experiment_runs_end_to_end_and_skips_finished_runs(
    mnist_like_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "experiment"
    argv = [str(SCRIPT), "--data-dir", str(mnist_like_dir), "--out", str(out), "--smoke", "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    table = (out / "table.md").read_text()
    assert table in capsys.readouterr().out
    for row in ("teacher LeNet-5", "hard labels only", "student, KD (", "KD + adversarial"):
        assert row in table
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("alone", "kd", "kd_adv"):
        cfg = json.loads((out / name / "seed0" / "config.json").read_text())["config"]
        assert cfg["model"] == "lenet5_half" and cfg["epochs"] == 1
    assert json.loads((out / "kd_adv" / "seed0" / "config.json").read_text())["config"]["adv_weight"] > 0

    # Re-running finds every run finished: nothing trains again and the table is the same.
    runpy.run_path(str(SCRIPT), run_name="__main__")
    assert (out / "table.md").read_text() == table
    assert len((out / "kd_adv" / "seed0" / "metrics.jsonl").read_text().splitlines()) == 1

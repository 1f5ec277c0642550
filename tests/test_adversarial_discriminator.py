"""Adversarial KD with a discriminator as a game of the training engine: the discriminators'
shapes and conditioning, the configuration's checks, each move updates only its own player and no
gradient reaches the teacher or the other player, the chosen objective and the gradient penalty
are what the moves minimise, the ``adversarial-kd`` command and experiments/adversarial_kd_mnist.py
run end to end; on scikit-learn's 8x8 digits with a small CNN teacher.

What the engine does for every form (resuming after a lost epoch, checkpoint contents, the
non-finite rule, 1 vs 4 devices, steps_per_call, golden metrics) is tested in tests/test_engine.py
and tests/test_golden.py, not here."""

import contextlib
import dataclasses
import functools
import io
import json
import pathlib
import runpy
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from idx_files import write_mnist_like

from jdistill import cli, losses
from jdistill.adversarial import discriminator as adv
from jdistill.adversarial.discriminator import AdversarialKDConfig, input_shape
from jdistill.data import load_digits
from jdistill.losses.adversarial import OBJECTIVES
from jdistill.models.discriminator import ConvDiscriminator, VectorDiscriminator
from jdistill.train import Frozen, Move, RunConfig, View, fit, groups
from jdistill.train.game import LOSS, round_key
from jdistill.train.rounds import play_move, round_batch

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "adversarial_kd_mnist.py"
BATCH = 64
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("teacher")
    fit(RunConfig(model="small_cnn", dataset="digits", epochs=1, batch_size=32, learning_rate=0.1), out,
        dataset=digits, progress=False)  # fmt: skip
    return str(out)


def config(teacher_dir, **changes) -> AdversarialKDConfig:
    base = AdversarialKDConfig(
        teacher=teacher_dir, model="mlp32", epochs=2, dataset="digits", batch_size=BATCH
    )
    return base.replace(**changes)


@pytest.fixture(scope="module")
def games(teacher_dir, digits):
    """A logit discriminator (student mlp32, without dropout), and a label-conditional feature-map
    one with a gradient penalty and two steps per student step (student and teacher are both small
    CNNs, so their ``conv1`` maps have equal shapes)."""
    return {
        "logits": adv.build(config(teacher_dir), digits),
        "feature map": adv.build(
            config(
                teacher_dir,
                model="small_cnn",
                disc_input="feature:conv1",
                conditional=True,
                gp_weight=1.0,
                disc_steps=2,
            ),
            digits,
        ),  # fmt: skip
    }


def host(tree):
    return jax.tree.map(np.array, tree)


def state(player):
    """A player's arrays, copied to the host."""
    return host((player.params, player.rest, player.opt_state, player.step))


def all_changed(before, after) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after)))


def move_of(game, player):
    (move,) = [m for m in game.phases[0].moves if m.player == player]
    return move


def view(game, players, mover, params, batch, teachers=None):
    """What a move of ``mover`` sees in round 0 (its first repeat), with ``params`` differentiated."""
    return View(players, mover, params, dict(game.teachers) if teachers is None else teachers, batch,
                dict(game.hparams), round_key(game.seed, 0), jnp.int32(0), 0, jnp.float32(0))  # fmt: skip


# ---------------------------------------------------------------- modules


@jax.jit
def vector_scores(x, labels):
    """Scores of an unconditional and a conditional discriminator (built inside jit: one compilation)."""
    conditional = VectorDiscriminator(10, num_classes=3, widths=(16,), rngs=nnx.Rngs(0))
    assert conditional.hidden[0].in_features == 10 + 3  # the one-hot label is concatenated
    return VectorDiscriminator(10, rngs=nnx.Rngs(0))(x), conditional(x, labels), conditional(x, labels + 1)


def test_vector_discriminator_scores_each_example_and_conditions_on_the_label():
    """A vector discriminator gives one score per example; a conditional one depends on the label
    and refuses to run without labels."""
    x = jax.random.normal(jax.random.key(0), (5, 10))
    plain, label0, label1 = vector_scores(x, jnp.zeros(5, jnp.int32))
    assert plain.shape == label0.shape == (5,)
    assert not np.allclose(label0, label1)
    with pytest.raises(ValueError, match="needs the labels"):
        jax.eval_shape(lambda x: VectorDiscriminator(10, num_classes=3, rngs=nnx.Rngs(0))(x), x)


def test_conv_discriminator_scores_feature_maps():
    """A convolutional discriminator gives one score per feature map; a conditional one depends
    on the label."""
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
    """What D sees has the logits' shape or the named feature's; a feature missing, of unequal
    shapes in student and teacher, or neither a vector nor a map is refused."""
    student = {"conv1": (8, 8, 32), "embedding": (32,)}
    teacher = {"conv1": (8, 8, 32), "embedding": (128,), "fc": (2, 3)}
    assert input_shape("logits", 10, student, teacher) == (10,)
    assert input_shape("probs", 10, student, teacher) == (10,)
    assert input_shape("feature:conv1", 10, student, teacher) == (8, 8, 32)
    with pytest.raises(ValueError, match=r"student has no feature 'hidden9'.*conv1, embedding"):
        input_shape("feature:hidden9", 10, student, teacher)
    with pytest.raises(ValueError, match=r"teacher has no feature 'hidden9'.*conv1, embedding, fc"):
        input_shape("feature:hidden9", 10, {"hidden9": (4,)}, teacher)
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
        ({"disc_learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"disc_schedule": "linear"}, "schedule: choose"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"disc_widths": ()}, "disc_widths"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_config_errors_name_the_field(changes, message):
    """An invalid configuration is refused with a message naming the field."""
    with pytest.raises(ValueError, match=message):
        config("teacher", **changes)


def test_the_game_has_the_configured_discriminator_and_moves(games, teacher_dir, digits):
    """Per round the discriminator moves ``disc_steps`` times (logged under ``disc/``), then the
    student once; a vector D for logits, a conditional convolutional D for a feature map; without
    the adversarial term only the student moves."""
    logits, maps = games["logits"], games["feature map"]
    assert [(m.player, m.repeats, m.prefix) for m in logits.phases[0].moves] == [
        ("discriminator", 1, "disc/"), ("student", 1, "")]  # fmt: skip
    assert [(m.player, m.repeats) for m in maps.phases[0].moves] == [("discriminator", 2), ("student", 1)]
    d = logits.players["discriminator"].module()
    assert isinstance(d, VectorDiscriminator) and d.hidden[0].in_features == 10 and d.num_classes == 0
    d = maps.players["discriminator"].module()
    assert isinstance(d, ConvDiscriminator) and d.convs[0].in_features == 32 and d.head.num_classes == 10
    plain = adv.build(config(teacher_dir, adv_weight=0.0), digits)
    assert [m.player for m in plain.phases[0].moves] == ["student"]


# ---------------------------------------------------------------- moves


@pytest.fixture(scope="module")
def batches(games):
    return {name: round_batch(game) for name, game in games.items()}


@pytest.mark.parametrize("name", ["logits", "feature map"])
def test_each_move_updates_only_its_own_player(games, batches, name):
    """D's move updates every D parameter and leaves the student and the teacher bit-identical;
    the student's move that follows updates every student parameter and leaves D and the teacher
    bit-identical."""
    game, batch = games[name], batches[name]
    teacher = host(game.teachers["teacher"].variables)
    student, disc = state(game.players["student"]), state(game.players["discriminator"])

    @jax.jit
    def moves(players, batch):
        after_disc = play_move(game, players, move_of(game, "discriminator"), batch)
        return after_disc, play_move(game, after_disc[0], move_of(game, "student"), batch)

    (players, metrics), (after, student_metrics) = moves(dict(game.players), batch)
    assert 0 <= float(metrics["real_accuracy"]) <= 1 and 0 <= float(metrics["fake_accuracy"]) <= 1
    assert ("loss/gradient_penalty" in metrics) == (name == "feature map")
    assert int(players["discriminator"].step) == 1
    assert all_changed(disc[0], host(players["discriminator"].params))
    chex.assert_trees_all_equal(state(players["student"]), student)

    assert {"loss/ce", "loss/kd", "loss/adversarial", "fooled", "agreement"} <= set(student_metrics)
    assert int(after["student"].step) == 1
    assert all_changed(student[0], host(after["student"].params))
    chex.assert_trees_all_equal(state(after["discriminator"]), state(players["discriminator"]))
    chex.assert_trees_all_equal(host(game.teachers["teacher"].variables), teacher)
    chex.assert_tree_all_finite((metrics, student_metrics))


@pytest.mark.parametrize("name", ["logits", "feature map"])
def test_no_gradient_reaches_the_teacher_or_the_other_player(games, batches, name):
    """The teacher's outputs (computed as the engine does, from its parameters) and the student's
    inputs to D are constants of D's loss; the teacher's are constants of the student's loss."""
    game, batch = games[name], batches[name]
    players, frozen = dict(game.players), game.teachers["teacher"]

    def loss(mover, params, student_params, teacher_params):
        teachers = {"teacher": Frozen(frozen.graphdef, teacher_params, frozen.rest)}
        with_teacher = {**batch, "frozen": game.frozen_outputs(teachers, batch["image"])}
        movers = {**players, "student": players["student"].replace(params=student_params)}
        return move_of(game, mover).loss(view(game, movers, mover, params, with_teacher, teachers))[0]

    @jax.jit
    def gradients(disc_params, student_params, teacher_params):
        to_teacher_from_student = jax.grad(functools.partial(loss, "student"), argnums=2)(
            student_params, student_params, teacher_params)  # fmt: skip
        to_student, to_teacher = jax.grad(functools.partial(loss, "discriminator"), argnums=(1, 2))(
            disc_params, student_params, teacher_params)  # fmt: skip
        return to_teacher_from_student, to_student, to_teacher

    grads = gradients(players["discriminator"].params, players["student"].params, frozen.params)
    for tree in grads:
        assert jax.tree.leaves(tree) and not any(np.any(leaf) for leaf in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def scored(games, batches):
    """On the logit game's players at step 0 and round 0's batch: D's raw scores of the teacher's
    and the student's logits (computed independently of the moves), and the metrics of D's and
    the student's moves under each objective, and of D's move with a gradient penalty of 10."""
    game, batch = games["logits"], batches["logits"]
    players = dict(game.players)

    def moves_of(chosen):
        return (Move("discriminator", functools.partial(adv.discriminator_loss, chosen)),
                Move("student", functools.partial(adv.student_loss, chosen)))  # fmt: skip

    @jax.jit
    def everything(players, batch):
        critic = players["discriminator"].module()
        teacher_logits = game.teachers["teacher"].module().model(batch["image"], train=False)[0]
        student_logits = players["student"].module().model(batch["image"], train=True)[0]
        metrics = {}
        for objective in OBJECTIVES:
            d_move, s_move = moves_of(dataclasses.replace(game.config, objective=objective))
            metrics[objective] = tuple(play_move(game, players, m, batch)[1] for m in (d_move, s_move))
        d_move, _ = moves_of(dataclasses.replace(game.config, gp_weight=10.0))
        penalised = play_move(game, players, d_move, batch)[1]
        # The penalty as the engine's key convention gives D's first repeat of round 0.
        key = jax.random.fold_in(jax.random.fold_in(round_key(game.seed, 0), LOSS), 0)
        penalty = losses.gradient_penalty(critic, teacher_logits, student_logits, key)
        scores = critic(teacher_logits), critic(student_logits)
        return scores, teacher_logits, student_logits, metrics, penalised, penalty

    return everything(players, batch)


def test_the_chosen_objective_is_what_the_moves_minimise(games, batches, scored):
    """D's adversarial loss is ``discriminator_loss`` of its scores of the teacher's (real) and the
    student's (fake) logits, the student's is ``fooling_loss`` of the fake scores, each under the
    chosen objective; the student's total adds the weighted CE and KD; the accuracies use the
    objective's decision threshold."""
    cfg, labels = games["logits"].config, batches["logits"]["label"]
    (real, fake), teacher_logits, student_logits, metrics, _, _ = scored
    ce = jnp.mean(losses.cross_entropy(student_logits, labels))
    kd = jnp.mean(losses.kd(student_logits, teacher_logits, temperature=cfg.temperature))
    for objective, (d_metrics, s_metrics) in metrics.items():
        expected = losses.discriminator_loss(real, fake, objective=objective)
        np.testing.assert_allclose(d_metrics["loss/adversarial"], expected, rtol=1e-5)
        np.testing.assert_allclose(d_metrics["loss"], expected, rtol=1e-5)
        fooling = losses.fooling_loss(fake, objective=objective)
        np.testing.assert_allclose(s_metrics["loss/adversarial"], fooling, rtol=1e-5)
        total = cfg.ce_weight * ce + cfg.kd_weight * kd + cfg.adv_weight * fooling
        np.testing.assert_allclose(s_metrics["loss"], total, rtol=1e-5)
        threshold = adv.DECISION_THRESHOLD[objective]
        np.testing.assert_allclose(d_metrics["real_accuracy"], np.mean(real > threshold))
        np.testing.assert_allclose(d_metrics["fake_accuracy"], np.mean(fake <= threshold))
        np.testing.assert_allclose(s_metrics["fooled"], np.mean(fake > threshold))
    assert len({float(m[0]["loss/adversarial"]) for m in metrics.values()}) == 3
    assert len({float(m[1]["loss/adversarial"]) for m in metrics.values()}) == 3


def test_gradient_penalty_adds_to_the_discriminator_loss(scored):
    """With ``gp_weight`` 10, D's loss is its adversarial loss plus 10 times WGAN-GP's penalty at
    mixtures of the teacher's and the student's logits; without, there is no penalty term."""
    _, _, _, metrics, penalised, penalty = scored
    without = metrics["bce"][0]
    assert "loss/gradient_penalty" not in without and float(penalised["loss/gradient_penalty"]) > 0
    np.testing.assert_allclose(penalised["loss/gradient_penalty"], penalty, rtol=1e-5)
    np.testing.assert_allclose(penalised["loss/adversarial"], without["loss"], rtol=1e-6)
    np.testing.assert_allclose(penalised["loss"], without["loss"] + 10.0 * penalty, rtol=1e-5)


# ---------------------------------------------------------------- the command


@pytest.mark.slow
def test_command_maps_its_options_onto_the_configuration(teacher_dir, tmp_path):
    """``jdistill adversarial-kd`` builds its configuration from the options and prints the
    summary; with ``--adv-weight 0`` no discriminator trains (no ``train/disc/`` metrics, no
    adversarial term)."""
    out = tmp_path / "cli"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        cli.main(["adversarial-kd", "--teacher", teacher_dir, "--model", "mlp32", "--dataset", "digits",
                  "--epochs", "1", "--batch-size", "64", "--adv-weight", "0", "--objective", "hinge",
                  "--conditional", "--disc-widths", "16,8", "--disc-steps", "3", "--gp-weight", "0.5",
                  "--learning-rate", "0.05", "--disc-learning-rate", "0.001", "--disc-input", "probs", "--out", str(out),
                  "--quiet"])  # fmt: skip
    summary = json.loads(printed.getvalue())
    assert summary == json.loads((out / "summary.json").read_text())
    assert (summary["model"], summary["teacher"], summary["objective"], summary["disc_input"]) == (
        "mlp32", "small_cnn", "hinge", "probs")  # fmt: skip
    fields = groups.flat_record(AdversarialKDConfig, json.loads((out / "config.json").read_text())["config"])
    assert (fields["objective"], fields["conditional"], fields["disc_widths"]) == ("hinge", True, [16, 8])
    assert (fields["disc_steps"], fields["gp_weight"], fields["adv_weight"]) == (3, 0.5, 0.0)
    assert (fields["learning_rate"], fields["disc_learning_rate"], fields["disc_input"]) == (
        0.05, 0.001, "probs")  # fmt: skip
    assert (fields["ce_weight"], fields["kd_weight"], fields["temperature"]) == (0.1, 0.9, 4.0)  # defaults
    # Without the adversarial term the discriminator is neither trained nor consulted.
    (line,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"train/loss/ce", "train/loss/kd", "test/accuracy"} <= set(line)
    assert not any(k.startswith("train/disc/") for k in line) and "train/loss/adversarial" not in line


# ---------------------------------------------------------------- the experiment


@pytest.fixture(scope="module")
def mnist_like_dir(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("mnist_like"))


@pytest.mark.slow
def test_the_experiment_runs_end_to_end_and_skips_finished_runs(
    mnist_like_dir, tmp_path, monkeypatch, capsys
):
    """experiments/adversarial_kd_mnist.py --smoke trains its teacher and three students (the
    adversarial one with a discriminator), writes the table, results and curves, and a re-run
    trains nothing again."""
    out = tmp_path / "experiment"
    argv = [str(SCRIPT), "--data-dir", str(mnist_like_dir), "--out", str(out), "--smoke", "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    table = (out / "table.md").read_text()
    assert table in capsys.readouterr().out
    for row in ("teacher LeNet-5", "hard labels only", "student, KD (", "KD + adversarial"):
        assert row in table
    assert "after 1 student epochs" in table and "The discriminator in the last epoch" in table
    results = json.loads((out / "results.json").read_text())  # row -> the summaries of its seeds
    assert {row: [s["run"] for s in runs] for row, runs in results.items()} == {
        "student, hard labels only": ["alone/seed0"],
        "student, KD": ["kd/seed0"],
        "student, KD + adversarial": ["kd_adv/seed0"],
    }
    for (run,) in results.values():
        assert run["model"] == "lenet5_half" and run["teacher"] == "lenet5" and run["epochs"] == 1
        assert 0 <= run["test/accuracy"] <= 1 and 0 <= run["test/agreement"] <= 1
        assert f"{100 * run['test/accuracy']:.2f}" in table
    assert (out / "curves.png").read_bytes()[:8] == PNG
    for name in ("alone", "kd", "kd_adv"):
        cfg = json.loads((out / name / "seed0" / "config.json").read_text())["config"]
        assert cfg["model"] == "lenet5_half" and cfg["epochs"] == 1
    assert json.loads((out / "kd_adv" / "seed0" / "config.json").read_text())["config"]["adv_weight"] > 0
    adversarial = (out / "kd_adv" / "seed0" / "metrics.jsonl").read_text().splitlines()
    assert len(adversarial) == 1
    line = json.loads(adversarial[0])
    adversarial_keys = {
        "train/disc/loss",
        "train/disc/real_accuracy",
        "train/loss/adversarial",
        "train/fooled",
    }
    assert adversarial_keys <= set(line)

    # Re-running finds every run finished: nothing trains again and the table is the same; so
    # does naming the finished teacher with --teacher-dir (the students' configurations name it).
    for extra in ([], ["--teacher-dir", str(out / "teacher")]):
        monkeypatch.setattr(sys, "argv", argv + extra)
        runpy.run_path(str(SCRIPT), run_name="__main__")
        assert (out / "table.md").read_text() == table
        assert len((out / "kd_adv" / "seed0" / "metrics.jsonl").read_text().splitlines()) == 1

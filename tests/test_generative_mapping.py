"""Generative latent mapping as two games: the VAE move trains the VAE on the negative ELBO, the
mapping move moves only the student (the teacher stays bit-identical and receives no gradient),
each student term reaches only its own part, finished runs load back and are only read, the
metrics and scores have their reference values, and experiments/generative_mapping_mnist.py runs
end to end.

What the engine does for every form (resume after a lost epoch, checkpoints, the non-finite rule,
1 vs 4 devices, steps_per_call) is tested in tests/test_engine.py and tests/test_golden.py."""

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

from jdistill.data import load_digits
from jdistill.generative import (
    Frozen,
    MappingConfig,
    VAEConfig,
    classifier_scores,
    heldout_latents,
    load_mapping,
    load_vae,
    mapping_loss,
    mapping_metrics,
    real_image_metrics,
    save_grid,
    throughput,
    train_mapping,
    train_vae,
    training,
)
from jdistill.generative.training import mapping_objective, vae_test_metrics
from jdistill.models import LatentMapper
from jdistill.train import RunDir, checkpoint
from jdistill.train.game import View, round_key
from jdistill.train.rounds import play_move, round_batch

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "generative_mapping_mnist.py"
SMALL = {"latent_dim": 4, "widths": (16,)}


def changed(before, after) -> dict:
    """``{path: whether any value differs}`` for every leaf."""
    flat_before = dict(jax.tree_util.tree_flatten_with_path(before)[0])
    flat_after = jax.tree_util.tree_flatten_with_path(after)[0]
    return {path: not np.array_equal(a, flat_before[path]) for path, a in flat_after}


def jitted_move(game):
    """One step of the first phase's only move, in round 0, jitted."""
    (move,) = game.phases[0].moves
    return jax.jit(lambda players, batch: play_move(game, players, move, batch))


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def teacher_config():
    return VAEConfig(dataset="digits", epochs=1, batch_size=64, **SMALL)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("gen") / "teacher"
    train_vae(teacher_config(), out, dataset=digits, progress=False)
    return out


def student_config(teacher_dir, **changes):
    fields = {"encoder_widths": (8,), "decoder_widths": (8,), "epochs": 2, "steps_per_epoch": 3,
              "batch_size": 16}  # fmt: skip
    return MappingConfig(teacher=str(teacher_dir), eval_points=50, **{**fields, **changes})


@pytest.fixture(scope="module")
def mapping_game(teacher_dir):
    return student_config(teacher_dir).build()


def test_the_vae_move_moves_every_vae_parameter_and_lowers_the_loss(digits):
    """One VAE move changes every parameter; 20 more lower the loss, which is nll + kl (beta 1)."""
    game = VAEConfig(dataset="digits", epochs=5, batch_size=64, learning_rate=1e-2, **SMALL).build(digits)
    step, batch = jitted_move(game), round_batch(game)
    assert set(game.players) == {"vae"}
    assert float(batch["image"].min()) >= 0 and float(batch["image"].max()) <= 1  # raw intensities
    players, first = step(game.players, batch)
    assert all(changed(game.players["vae"].params, players["vae"].params).values())
    for _ in range(20):
        players, metrics = step(players, batch)
    chex.assert_tree_all_finite(metrics)
    assert int(players["vae"].step) == 21
    assert float(metrics["loss"]) < float(first["loss"])
    chex.assert_trees_all_close(metrics["loss"], metrics["nll"] + metrics["kl"], rtol=1e-6)


def test_the_mapping_move_moves_both_student_parts_and_leaves_the_teacher_bit_identical(mapping_game):
    """Two mapping moves change every student parameter and nothing of the frozen teacher."""
    game = mapping_game
    teacher_before = jax.tree.map(np.array, game.teachers["teacher"].params)
    step, batch = jitted_move(game), round_batch(game)
    chex.assert_shape(batch["z"], (16, 4))
    players, _ = step(game.players, batch)
    players, metrics = step(players, batch)
    assert set(players) == {"student"} and int(players["student"].step) == 2
    chex.assert_trees_all_equal(game.teachers["teacher"].params, teacher_before)
    assert all(changed(game.players["student"].params, players["student"].params).values())
    assert set(metrics) >= {"loss", "encoder_loss", "decoder_loss", "learning_rate"}
    chex.assert_tree_all_finite(metrics)


def test_no_gradient_of_the_mapping_loss_reaches_the_teacher(mapping_game):
    """The mapping loss depends on the teacher's parameters, yet its gradient w.r.t. them is 0."""
    game = mapping_game
    teacher, batch = game.teachers["teacher"], round_batch(game)
    student = game.players["student"]

    def loss(teacher_params):
        teachers = {"teacher": Frozen(teacher.graphdef, teacher_params, teacher.rest)}
        r = jnp.int32(0)
        rkey = round_key(game.seed, r)
        view = View(game.players, "student", student.params, teachers, batch, {}, rkey, r, 0, jnp.float32(0))
        return mapping_loss(view)[0]

    grads = jax.jit(jax.grad(loss))(teacher.params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
    scaled = jax.tree.map(lambda p: 1.5 * p, teacher.params)
    assert float(loss(scaled)) != float(loss(teacher.params))


@pytest.mark.parametrize(
    ("term", "own", "other"), [("encoder_loss", "encoder", "decoder"), ("decoder_loss", "decoder", "encoder")]
)
def test_each_student_term_reaches_only_its_own_part(mapping_game, term, own, other):
    """The encoder term's gradient is zero on the decoder and nonzero on the encoder; and vice versa."""
    student = mapping_game.players["student"]
    z = jax.random.normal(jax.random.key(1), (8, 4))
    teacher_logits = jax.random.normal(jax.random.key(2), (8, 8, 8, 1))

    def term_of(params):
        module = nnx.merge(student.graphdef, params, student.rest)
        return mapping_objective(module, z, teacher_logits)[1][term]

    grads = jax.jit(jax.grad(term_of))(student.params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads[other]))
    assert all(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads[own]))


def test_load_vae_returns_the_finished_teacher(teacher_dir, digits):
    """load_vae gives the run's configuration, image shape and checkpointed VAE, whose test
    metrics are the summary's."""
    teacher, config, image_shape = load_vae(teacher_dir)
    assert config == teacher_config() and image_shape == digits.input_shape
    game = config.build(digits)
    players = checkpoint.restore(checkpoint.manager(teacher_dir), game.players)
    chex.assert_trees_all_equal(teacher.params, players["vae"].params)
    summary = RunDir(teacher_dir).summary()
    x_test = digits.x_test.astype(np.float32)
    metrics = vae_test_metrics(teacher.graphdef, teacher.params, teacher.rest, x_test)
    for name in ("neg_elbo", "nll", "kl"):
        assert metrics[name] == pytest.approx(summary[f"test/{name}"], rel=1e-5)
    assert summary["test/neg_elbo"] == pytest.approx(summary["test/nll"] + summary["test/kl"], rel=1e-6)


def test_a_finished_student_run_loads_back_and_is_only_read(teacher_dir, tmp_path, monkeypatch):
    """load_mapping gives the checkpointed student, whose held-out metrics are the summary's; fit
    returns a finished run's summary without building or training; a different configuration in
    the directory is refused."""
    config = student_config(teacher_dir)
    run = RunDir(tmp_path / "student")
    summary = train_mapping(config, run.path, progress=False)
    lines = run.metrics()
    assert [m["epoch"] for m in lines] == [1, 2] and lines[-1]["step"] == 6
    student, loaded = load_mapping(run.path)
    assert loaded == config
    game = config.build()
    players = checkpoint.restore(checkpoint.manager(run.path), game.players)
    chex.assert_trees_all_equal(student.params, players["student"].params)
    assert int(players["student"].step) == 6
    assert all(changed(game.players["student"].params, student.params).values())
    teacher = load_vae(teacher_dir)[0]
    metrics = mapping_metrics(teacher, student, heldout_latents(config.eval_points, SMALL["latent_dim"]))
    for name, value in metrics.items():
        assert value == pytest.approx(summary[f"test/{name}"], rel=1e-5)

    with pytest.raises(ValueError, match="different configuration \\(differs in: batch_size\\)"):
        train_mapping(student_config(teacher_dir, batch_size=8), run.path, progress=False)

    def no_build(*args):
        raise AssertionError("a finished run was built again")

    monkeypatch.setattr(training, "build_mapping", no_build)
    assert train_mapping(config, run.path, progress=False) == summary
    assert run.metrics() == lines


def test_a_student_that_copies_the_teacher_decoder_has_zero_decoder_error(teacher_dir, digits):
    """With the teacher's decoder the student's decoder errors vanish; the held-out points are fixed."""
    teacher, config, image_shape = load_vae(teacher_dir)
    student = LatentMapper(
        image_shape, latent_dim=config.latent_dim, decoder_widths=config.widths, rngs=nnx.Rngs(0)
    )
    graphdef, params, rest = nnx.split(student, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    params["decoder"] = teacher.params["decoder"]
    frozen = Frozen(graphdef, params, nnx.to_pure_dict(rest))
    z = heldout_latents(300, config.latent_dim)
    metrics = mapping_metrics(teacher, frozen, z)
    assert metrics["decoder/pixel_mse"] < 1e-12
    assert abs(metrics["decoder/kl"]) < 1e-4
    assert metrics["encoder/latent_mse"] > 0.0
    chex.assert_trees_all_close(heldout_latents(300, 4), z)  # fixed points
    real = real_image_metrics(teacher, frozen, digits.x_test)
    assert 0 <= real["real/active_dims"] <= config.latent_dim
    assert all(np.isfinite(v) for v in real.values())


def test_classifier_scores_have_their_reference_values():
    """Confidence, class entropy and inception score of three hand-computed cases."""
    confident = np.eye(10)[np.arange(1000) % 10]
    scores = classifier_scores(confident)
    chex.assert_trees_all_close(
        (scores["confidence"], scores["class_entropy"], scores["inception_score"]),
        (1.0, np.log(10), 10.0),
        rtol=1e-9,
    )
    collapsed = classifier_scores(np.tile([0.7, 0.2, 0.1], (50, 1)))
    chex.assert_trees_all_close(
        (collapsed["confidence"], collapsed["class_entropy"], collapsed["inception_score"]), (0.7, 0.0, 1.0)
    )
    # two equiprobable classes, each image 90 % sure: IS = exp(log 2 - H(0.9, 0.1))
    half = classifier_scores(np.array([[0.9, 0.1], [0.1, 0.9]]))
    entropy = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
    chex.assert_trees_all_close(half["inception_score"], np.exp(np.log(2) - entropy), rtol=1e-9)


def test_throughput_and_grid_write_what_they_promise(tmp_path):
    """throughput gives a positive rate; save_grid writes a PNG."""
    rate = throughput(lambda x: x * 2.0, jnp.ones((10, 3)), repeats=2, min_seconds=0.01)
    assert rate > 0
    save_grid(tmp_path / "g.png", {"a": np.zeros((3, 5, 5, 1)), "b": np.ones((3, 5, 5, 1))}, title="t")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: VAEConfig(latent_dim=0), "latent_dim"),
        (lambda: VAEConfig(widths=()), "widths"),
        (lambda: VAEConfig(beta=-1.0), "beta"),
        (lambda: MappingConfig(teacher="t", decoder_widths=(0,)), "decoder_widths"),
        (lambda: MappingConfig(teacher="t", learning_rate=0.0), "learning_rate"),
    ],
)
def test_config_errors_name_the_field(make, field):
    """An invalid field is refused with its name first."""
    with pytest.raises(ValueError, match=f"^{field}"):
        make()


@pytest.mark.slow
def test_the_experiment_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """experiments/generative_mapping_mnist.py --smoke writes its table, results and figures."""
    data = write_mnist_like(tmp_path)
    out = tmp_path / "generative"
    argv = [str(SCRIPT), "--data-dir", str(data), "--out", str(out), "--smoke", "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    table = (out / "table.md").read_text()
    assert table in capsys.readouterr().out
    for row in ("teacher encoder mean (reference)", "student h32", "teacher samples", "real test images"):
        assert row in table
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"teacher", "classifier", "h32"}  # --smoke: the h32 students, one seed
    (student,) = results["h32"]
    assert student["run"] == "student_h32/seed0" and student["encoder_params"] > 0
    assert 0 <= student["classifier"]["agreement_with_teacher"] <= 1
    assert 0 <= student["real/active_dims"] == results["teacher"][0]["active_dims"] <= 16
    assert results["teacher"][0]["heldout_points"] == 500 and results["teacher"][0]["test_images"] == 200
    assert 0 < results["classifier"][0]["real_test_images"]["inception_score"] <= 10
    for name in ("samples.png", "curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for run in ("teacher", "classifier", "student_h32/seed0"):
        assert (out / run / "summary.json").exists()

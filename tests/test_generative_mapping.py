"""Generative latent mapping: the steps move only their own parameters (the teacher stays
bit-identical and receives no gradient), each student term reaches only its own part, runs resume
to the same result, the metrics and scores have their reference values, and
experiments/generative_mapping_mnist.py runs end to end."""

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

from jdistill.data import load_digits
from jdistill.generative import (
    Frozen,
    MappingConfig,
    VAEConfig,
    classifier_scores,
    heldout_latents,
    load_mapping,
    load_vae,
    make_mapping_step,
    make_vae_step,
    mapping_metrics,
    real_image_metrics,
    save_grid,
    throughput,
    train_mapping,
    train_vae,
)
from jdistill.generative.training import _adam, create_student, mapping_objective
from jdistill.models import VAE, LatentMapper
from jdistill.train import RunDir, create_state

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "generative_mapping_mnist.py"
SMALL = {"latent_dim": 4, "widths": (16,)}


def copy(tree):
    """Fresh buffers: the steps donate the state they update."""
    return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def changed(before, after) -> dict:
    """``{path: whether any value differs}`` for every leaf."""
    flat_before = dict(jax.tree_util.tree_flatten_with_path(before)[0])
    return {
        path: not np.array_equal(a, flat_before[path])
        for path, a in jax.tree_util.tree_flatten_with_path(after)[0]
    }


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("gen") / "teacher"
    train_vae(
        VAEConfig(dataset="digits", epochs=1, batch_size=64, **SMALL), out, dataset=digits, progress=False
    )
    return out


def student_config(teacher_dir, **changes):
    fields = {
        "encoder_widths": (8,),
        "decoder_widths": (8,),
        "epochs": 2,
        "steps_per_epoch": 3,
        "batch_size": 16,
    }
    return MappingConfig(teacher=str(teacher_dir), eval_points=50, **{**fields, **changes})


def test_the_vae_step_moves_every_vae_parameter_and_lowers_the_loss(digits):
    model = VAE(digits.input_shape, rngs=nnx.Rngs(0), **SMALL)
    tx = _adam(1e-2, 100)
    graphdef, state = create_state(model, tx, 0)
    step = make_vae_step(graphdef, tx, beta=1.0)
    images = jnp.asarray(digits.x_train[:64])
    before = copy(state.params)
    state, first = step(state, images)
    assert all(changed(before, state.params).values())
    for _ in range(20):
        state, metrics = step(state, images)
    chex.assert_tree_all_finite(metrics)
    assert float(metrics["loss"]) < float(first["loss"])
    chex.assert_trees_all_close(metrics["loss"], metrics["nll"] + metrics["kl"], rtol=1e-6)


def test_the_mapping_step_moves_both_student_parts_and_leaves_the_teacher_bit_identical(teacher_dir):
    teacher, teacher_config, image_shape = load_vae(teacher_dir)
    config = student_config(teacher_dir)
    tx = _adam(1e-3, 10)
    graphdef, state = create_state(create_student(config, teacher_config.latent_dim, image_shape), tx, 0)
    step = make_mapping_step(graphdef, teacher, tx, batch_size=16, jit=False)
    # the teacher's decoding is outside the gradient
    grads = jax.jit(jax.grad(lambda tp: step(state, tp)[1]["loss"]))(teacher.params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
    step = jax.jit(step, donate_argnums=0)
    teacher_before, student_before = copy(teacher.params), copy(state.params)
    state, metrics = step(state, teacher.params)
    state, metrics = step(state, teacher.params)
    chex.assert_trees_all_equal(jax.device_get(teacher.params), teacher_before)
    assert all(changed(student_before, state.params).values())
    assert int(state.step) == 2
    chex.assert_tree_all_finite(metrics)


@pytest.mark.parametrize(
    ("term", "own", "other"), [("encoder_loss", "encoder", "decoder"), ("decoder_loss", "decoder", "encoder")]
)
def test_each_student_term_reaches_only_its_own_part(term, own, other):
    student = LatentMapper(
        (6, 6, 1), latent_dim=3, encoder_widths=(5,), decoder_widths=(7,), rngs=nnx.Rngs(0)
    )
    graphdef, params, rest = nnx.split(student, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    z = jax.random.normal(jax.random.key(1), (8, 3))
    teacher_logits = jax.random.normal(jax.random.key(2), (8, 6, 6, 1))
    grads = jax.jit(jax.grad(lambda p: mapping_objective(graphdef, p, rest, z, teacher_logits)[1][term]))(
        params
    )
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads[other]))
    assert all(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads[own]))


def test_an_interrupted_student_run_resumes_to_the_uninterrupted_result(teacher_dir, tmp_path):
    config = student_config(teacher_dir)
    run = RunDir(tmp_path / "student")
    whole = train_mapping(config, run.path, progress=False)
    whole_lines, whole_params = run.metrics(), load_mapping(run.path)[0].params
    # undo the second epoch, as if the process had been killed during it
    shutil.rmtree(run.path / "checkpoints" / "2")
    run.keep_metrics_until(1)
    run.summary_file.unlink()
    resumed = train_mapping(config, run.path, progress=False)
    assert [m["epoch"] for m in run.metrics()] == [1, 2]
    for key in ("train/loss", "test/encoder/latent_mse", "test/decoder/kl"):
        assert resumed[key] == whole[key]
    assert [{k: v for k, v in m.items() if k != "seconds"} for m in run.metrics()] == [
        {k: v for k, v in m.items() if k != "seconds"} for m in whole_lines
    ]
    chex.assert_trees_all_equal(load_mapping(run.path)[0].params, whole_params)
    # a finished run is read, not trained again
    lines = run.metrics()
    assert train_mapping(config, run.path, progress=False) == resumed
    assert run.metrics() == lines
    with pytest.raises(ValueError, match="different configuration"):
        train_mapping(student_config(teacher_dir, epochs=3), run.path, progress=False)


def test_a_student_that_copies_the_teacher_decoder_has_zero_decoder_error(teacher_dir, digits):
    teacher, teacher_config, image_shape = load_vae(teacher_dir)
    student = LatentMapper(
        image_shape,
        latent_dim=teacher_config.latent_dim,
        decoder_widths=teacher_config.widths,
        rngs=nnx.Rngs(0),
    )
    graphdef, params, rest = nnx.split(student, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    params["decoder"] = teacher.params["decoder"]
    frozen = Frozen(graphdef, params, nnx.to_pure_dict(rest))
    z = heldout_latents(300, teacher_config.latent_dim)
    metrics = mapping_metrics(teacher, frozen, z)
    assert metrics["decoder/pixel_mse"] < 1e-12
    assert abs(metrics["decoder/kl"]) < 1e-4
    assert metrics["encoder/latent_mse"] > 0.0
    chex.assert_trees_all_close(heldout_latents(300, 4), z)  # fixed points
    real = real_image_metrics(teacher, frozen, digits.x_test)
    assert 0 <= real["real/active_dims"] <= teacher_config.latent_dim
    assert all(np.isfinite(v) for v in real.values())


def test_classifier_scores_have_their_reference_values():
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
    with pytest.raises(ValueError, match=f"^{field}"):
        make()


def test_the_experiment_runs_end_to_end(tmp_path, monkeypatch, capsys):
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
    assert set(results["students"]) == {"h32"}
    assert 0 <= results["students"]["h32"]["seeds"][0]["classifier"]["agreement_with_teacher"] <= 1
    for name in ("samples.png", "curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for run in ("teacher", "classifier", "student_h32/seed0"):
        assert (out / run / "summary.json").exists()

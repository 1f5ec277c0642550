"""The training loop: distillation learns, the teacher stays frozen, steps compile once,
one device and four give the same trajectory, runs are deterministic and resumable."""

import dataclasses
import json
import shutil
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jdistill import losses
from jdistill.data import UNLABELLED, load_digits
from jdistill.methods import METHODS, Method, check_features, feature_shapes
from jdistill.methods.feature_maps import AttentionMaps, FeatureHint
from jdistill.methods.logits import HardLabels
from jdistill.models import create_model
from jdistill.train import (
    RunConfig,
    RunDir,
    fit,
    load_teacher,
    make_train_step,
    parse_methods,
    prepare,
    resolve_weights,
)
from jdistill.train.optim import max_norm


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("teacher")
    fit(
        RunConfig(model="mlp256", dataset="digits", epochs=4, batch_size=64),
        out,
        dataset=digits,
        progress=False,
    )
    return str(out)


def distill_config(teacher_dir, **changes):
    config = RunConfig(
        model="mlp32",
        dataset="digits",
        epochs=3,
        batch_size=64,
        teacher=teacher_dir,
        methods=parse_methods("kd+fitnet"),
        weights={"fitnet": 1.0},
        temperature=4.0,
    )
    if "methods" in changes and "fitnet" not in changes["methods"]:
        changes.setdefault("weights", {})
    return dataclasses.replace(config, **changes)


def host_copy(tree):
    return jax.tree.map(lambda a: np.array(a), tree)


def test_teacher_learns(teacher_dir):
    summary = json.load(open(f"{teacher_dir}/summary.json"))
    assert summary["test/accuracy"] > 0.85, summary


def test_distilled_student_learns_and_teacher_is_unchanged(teacher_dir, digits, tmp_path):
    before = host_copy(load_teacher(teacher_dir, digits).variables)
    summary = fit(distill_config(teacher_dir, epochs=6), tmp_path / "student", dataset=digits, progress=False)
    assert summary["test/accuracy"] > 0.7, summary  # chance is 0.1
    assert summary["test/agreement"] > 0.7, summary
    assert summary["extra_params"] == 32 * 256 + 256  # the fitnet connector 32 -> 256
    chex.assert_trees_all_equal(host_copy(load_teacher(teacher_dir, digits).variables), before)


def test_step_leaves_teacher_buffers_alive_and_equal(teacher_dir, digits):
    setup = prepare(distill_config(teacher_dir), digits)
    before = host_copy(setup.teacher.variables)
    state = setup.state
    batch = {"image": jnp.asarray(digits.x_train[:64]), "label": jnp.asarray(digits.y_train[:64])}
    for _ in range(3):
        state, _ = setup.step_fn(state, setup.teacher.variables, batch, setup.hparams)
    # The teacher is not donated (its buffers are still readable) and not updated.
    chex.assert_trees_all_equal(host_copy(setup.teacher.variables), before)
    # The student and its connector are.
    assert int(state.step) == 3


def test_step_traces_once_for_new_hyperparameter_values(teacher_dir, digits):
    setup = prepare(distill_config(teacher_dir), digits)
    raw = make_train_step(
        setup.graphdef, setup.methods, setup.tx, setup.schedule, setup.teacher.graphdef, jit=False
    )
    step = jax.jit(chex.assert_max_traces(raw, n=1))
    batch = {"image": jnp.asarray(digits.x_train[:64]), "label": jnp.asarray(digits.y_train[:64])}
    kd_losses = []
    for temperature, kd_weight, lr in [(1.0, 1.0, 0.1), (8.0, 0.5, 0.01), (20.0, 3.0, 0.0)]:
        hparams = dict(
            setup.hparams,
            learning_rate=jnp.float32(lr),
            temperature=jnp.float32(temperature),
            weights=dict(setup.hparams["weights"], kd=jnp.float32(kd_weight)),
        )
        _, metrics = step(setup.state, setup.teacher.variables, batch, hparams)
        kd_losses.append(float(metrics["loss/kd"]))
    assert len(set(kd_losses)) == 3  # the temperature really changes the loss
    # The library's own jitted step also holds a single compiled version.
    state = setup.state
    for lr in (0.1, 0.2):
        state, _ = setup.step_fn(
            state, setup.teacher.variables, batch, dict(setup.hparams, learning_rate=jnp.float32(lr))
        )
    assert setup.step_fn._cache_size() == 1


def test_one_and_four_devices_give_the_same_trajectory(teacher_dir, digits, tmp_path):
    assert jax.device_count() == 4, "conftest.py sets four CPU devices"
    config = distill_config(teacher_dir, methods=parse_methods("kd+rkd"), max_shift=1)
    one = fit(config, tmp_path / "one", dataset=digits, devices=jax.devices()[:1], progress=False)
    four = fit(config, tmp_path / "four", dataset=digits, progress=False)
    assert (one["devices"], four["devices"]) == (1, 4)
    m1 = [json.loads(line) for line in open(tmp_path / "one" / "metrics.jsonl")]
    m4 = [json.loads(line) for line in open(tmp_path / "four" / "metrics.jsonl")]
    for a, b in zip(m1, m4, strict=True):
        for key in ("train/loss", "train/loss/kd", "train/loss/rkd_angle", "test/loss"):
            np.testing.assert_allclose(a[key], b[key], rtol=2e-4, err_msg=key)


def test_same_seed_same_metrics_other_seed_different(teacher_dir, digits, tmp_path):
    def metrics(seed, name):
        fit(
            distill_config(teacher_dir, seed=seed, max_shift=1),
            tmp_path / name,
            dataset=digits,
            progress=False,
        )
        return [
            {k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in open(tmp_path / name / "metrics.jsonl")
        ]

    first = metrics(0, "a")
    assert metrics(0, "b") == first
    assert metrics(1, "c") != first


def test_resume_after_losing_the_last_epoch_matches_an_uninterrupted_run(teacher_dir, digits, tmp_path):
    config = distill_config(teacher_dir, epochs=4)
    full = fit(config, tmp_path / "full", dataset=digits, progress=False)
    fit(config, tmp_path / "cut", dataset=digits, progress=False)
    # As if the run had died during epoch 4: its checkpoint, summary and metric line are gone.
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "4")
    (tmp_path / "cut" / "summary.json").unlink()
    resumed = fit(config, tmp_path / "cut", dataset=digits, progress=False)
    assert resumed["test/accuracy"] == full["test/accuracy"]
    assert resumed["test/loss"] == pytest.approx(full["test/loss"], rel=1e-6)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_a_different_configuration_in_the_same_directory_is_refused(teacher_dir, digits, tmp_path):
    fit(distill_config(teacher_dir, epochs=1), tmp_path / "run", dataset=digits, progress=False)
    with pytest.raises(ValueError, match="different configuration.*learning_rate"):
        fit(
            distill_config(teacher_dir, epochs=1, learning_rate=0.5),
            tmp_path / "run",
            dataset=digits,
            progress=False,
        )
    record = json.load(open(tmp_path / "run" / "config.json"))
    assert record["jdistill_version"] and record["config"]["learning_rate"] == 0.05


def test_a_run_made_before_a_field_was_added_still_resumes(tmp_path):
    """A saved configuration that lacks a newer field (here label_noise) counts it as its
    default; a saved non-default value of an existing field is still a difference."""
    config = RunConfig(model="mlp32", dataset="digits", epochs=1)
    RunDir(tmp_path / "old").claim(config)
    record = json.loads((tmp_path / "old" / "config.json").read_text())
    del record["config"]["label_noise"], record["config"]["label_noise_seed"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(record))
    RunDir(tmp_path / "old").claim(config)
    with pytest.raises(ValueError, match=r"differs in: label_noise\)"):
        RunDir(tmp_path / "old").claim(dataclasses.replace(config, label_noise=0.2))


def test_epoch_means_average_the_steps_and_stop_at_a_non_finite_metric(tmp_path):
    run = RunDir(tmp_path / "run")
    steps = [{"loss": 1.0, "loss/kd": 0.5}, {"loss": 3.0, "loss/kd": 1.5}]
    assert run.epoch_means(steps, epoch=2, last_checkpoint=1) == {"loss": 2.0, "loss/kd": 1.0}
    steps[1]["loss/kd"] = float("nan")
    with pytest.raises(FloatingPointError, match=r"non-finite loss/kd in epoch 2.*checkpoint \(epoch 1\)"):
        run.epoch_means(steps, epoch=2, last_checkpoint=1)


def test_non_finite_loss_names_the_step_and_term(digits, tmp_path):
    config = RunConfig(model="mlp32", dataset="digits", epochs=3, batch_size=64, learning_rate=1e12)
    with pytest.raises(
        FloatingPointError, match=r"non-finite loss/ce at step \d+ \(epoch 1\).*checkpoint \(epoch 0\)"
    ):
        fit(config, tmp_path / "run", dataset=digits, progress=False)
    assert not (tmp_path / "run" / "checkpoints" / "1").exists()


def test_hard_labels_average_over_labelled_examples_only():
    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    labels = jnp.array([UNLABELLED, 1, UNLABELLED, 0])
    terms = HardLabels().loss((logits, {}), None, {"label": labels}, {}, {})
    log_softmax = np.log(np.exp(np.asarray(logits)) / np.exp(np.asarray(logits)).sum(1, keepdims=True))
    expected = -(log_softmax[1, 1] + log_softmax[3, 0]) / 2
    np.testing.assert_allclose(float(jnp.mean(terms["ce"])), expected, rtol=1e-6)


def test_method_and_weight_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown method 'nope'.*kd"):
        parse_methods("kd+nope")
    assert parse_methods("kd+fitnet") == ("ce", "kd", "fitnet")
    methods = [METHODS[n]() for n in parse_methods("kd")]
    with pytest.raises(ValueError, match="unknown term.*kdd.*ce, kd"):
        resolve_weights(methods, {"kdd": 1.0})
    assert resolve_weights(methods, {"ce": 0.0}) == {"ce": 0.0, "kd": 1.0}
    with pytest.raises(ValueError, match="need a teacher"):
        RunConfig(model="mlp32", dataset="digits", epochs=1, methods=("ce", "kd"))


def test_feature_methods_check_the_models_features():
    mlp = create_model("mlp32", (8, 8, 1), 10, rngs=nnx.Rngs(0))
    cnn = create_model("small_cnn", (8, 8, 1), 10, rngs=nnx.Rngs(0))
    mlp_shapes, cnn_shapes = feature_shapes(mlp, (8, 8, 1)), feature_shapes(cnn, (8, 8, 1))
    with pytest.raises(
        ValueError, match="at: pairs the student's and the teacher's stages, but the student has 0"
    ):
        check_features([AttentionMaps()], mlp_shapes, cnn_shapes)
    with pytest.raises(ValueError, match="student model has no feature 'conv1'"):
        check_features([AttentionMaps(layers=[["conv1", "conv1"]])], mlp_shapes, cnn_shapes)
    with pytest.raises(ValueError, match="fitnet: the teacher model has no feature 'nope'"):
        check_features([FeatureHint(teacher_layer="nope")], mlp_shapes, cnn_shapes)
    # Same shape: no connector.
    assert FeatureHint().modules(cnn_shapes, cnn_shapes, None, nnx.Rngs(0)) == {}
    assert "connector" in FeatureHint().modules(mlp_shapes, cnn_shapes, None, nnx.Rngs(0))


def test_teacher_must_be_finished_and_on_the_same_dataset(teacher_dir, digits, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a jdistill run directory"):
        fit(distill_config(str(tmp_path / "nothing")), tmp_path / "a", dataset=digits, progress=False)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(teacher_dir, unfinished)
    (unfinished / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="no finished run"):
        fit(distill_config(str(unfinished)), tmp_path / "b", dataset=digits, progress=False)
    other = dataclasses.replace(digits, name="mnist")
    with pytest.raises(ValueError, match="trained on 'digits'"):
        prepare(distill_config(teacher_dir), other)


def test_evaluation_is_exact_with_a_padded_last_batch(teacher_dir, digits):
    from jdistill.train.loop import TestEvaluator

    setup = prepare(distill_config(teacher_dir), digits)
    assert len(digits.y_test) % 500 != 0  # the last eval batch is padded
    result = TestEvaluator(digits, setup.graphdef, setup.teacher, setup.mesh)(setup.state)
    model = nnx.merge(setup.graphdef, setup.state.params, setup.state.rest).model
    teacher = nnx.merge(setup.teacher.graphdef, *setup.teacher.variables).model
    predictions = np.asarray(jnp.argmax(model(jnp.asarray(digits.x_test))[0], -1))
    teacher_predictions = np.asarray(jnp.argmax(teacher(jnp.asarray(digits.x_test))[0], -1))
    assert result["accuracy"] == pytest.approx(np.mean(predictions == digits.y_test), abs=1e-6)
    assert result["agreement"] == pytest.approx(np.mean(predictions == teacher_predictions), abs=1e-6)


@dataclasses.dataclass(frozen=True)
class LogitMatching(Method):
    """Ba & Caruana 2014: regress the teacher's logits (a method defined outside the library)."""

    name = "logit_mse"
    default_weights: ClassVar = {"logit_mse": 0.5}

    def loss(self, student, teacher, batch, modules, hparams):
        return {"logit_mse": losses.feature_mse(student[0], teacher[0])}


@dataclasses.dataclass(frozen=True)
class Mislabelled(LogitMatching):
    def loss(self, student, teacher, batch, modules, hparams):
        return {"something_else": losses.feature_mse(student[0], teacher[0])}


def test_a_new_method_is_a_small_registered_class(monkeypatch, teacher_dir, digits, tmp_path):
    monkeypatch.setitem(METHODS, "logit_mse", LogitMatching)
    config = distill_config(teacher_dir, methods=parse_methods("logit_mse"), epochs=2)
    fit(config, tmp_path / "run", dataset=digits, progress=False)
    metrics = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert metrics[1]["train/loss/logit_mse"] < metrics[0]["train/loss/logit_mse"]
    total = metrics[0]["train/loss/ce"] + 0.5 * metrics[0]["train/loss/logit_mse"]
    assert metrics[0]["train/loss"] == pytest.approx(total, rel=1e-4)  # the default weight is used


def test_a_method_returning_undeclared_terms_is_refused(monkeypatch, teacher_dir, digits):
    monkeypatch.setitem(METHODS, "logit_mse", Mislabelled)
    setup = prepare(distill_config(teacher_dir, methods=parse_methods("logit_mse")), digits)
    batch = {"image": jnp.asarray(digits.x_train[:64]), "label": jnp.asarray(digits.y_train[:64])}
    with pytest.raises(
        ValueError, match="returned terms \\['something_else'\\] but declares \\['logit_mse'\\]"
    ):
        setup.step_fn(setup.state, setup.teacher.variables, batch, setup.hparams)


def test_a_checkpoint_half_written_when_killed_is_discarded_on_resume(digits, tmp_path):
    config = RunConfig(model="mlp32", dataset="digits", epochs=3, batch_size=64)
    full = fit(config, tmp_path / "full", dataset=digits, progress=False)
    fit(config, tmp_path / "cut", dataset=digits, progress=False)
    checkpoints = tmp_path / "cut" / "checkpoints"
    # What a SIGKILL during the last save leaves: a temporary directory instead of checkpoint 3.
    shutil.move(checkpoints / "3", checkpoints / "3.orbax-checkpoint-tmp-1234")
    (tmp_path / "cut" / "summary.json").unlink()
    resumed = fit(config, tmp_path / "cut", dataset=digits, progress=False)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["2", "3"]
    assert resumed["test/accuracy"] == full["test/accuracy"]


def test_method_options_choose_the_layers(teacher_dir, digits):
    options = {"fitnet": {"student_layer": "hidden1", "teacher_layer": "hidden2"}}
    setup = prepare(distill_config(teacher_dir, method_options=options), digits)
    assert FeatureHint(student_layer="hidden1", teacher_layer="hidden2") in setup.methods
    with pytest.raises(
        ValueError, match="method 'fitnet' has no option layer; its options are: student_layer, teacher_layer"
    ):
        prepare(distill_config(teacher_dir, method_options={"fitnet": {"layer": "hidden1"}}), digits)
    with pytest.raises(
        ValueError, match="method_options given for at, which is not among the methods ce\\+kd\\+fitnet"
    ):
        distill_config(teacher_dir, method_options={"at": {"layers": []}})


def test_max_norm_projects_each_units_incoming_weights_and_nothing_else():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(6, 4)).astype(np.float32) * np.array([0.1, 1.0, 3.0, 10.0], np.float32)
    conv = rng.normal(size=(3, 3, 2, 5)).astype(np.float32) * 4
    params = {"dense": {"kernel": kernel, "bias": np.full(4, 50.0, np.float32)}, "conv": {"kernel": conv}}
    out = jax.device_get(max_norm(params, 2.0))
    # numpy reference: scale column j by min(1, 2 / ||w_j||)
    norms = np.linalg.norm(kernel, axis=0)
    np.testing.assert_allclose(out["dense"]["kernel"], kernel * np.minimum(1.0, 2.0 / norms), rtol=1e-6)
    conv_norms = np.sqrt((conv**2).sum(axis=(0, 1, 2)))
    np.testing.assert_allclose(out["conv"]["kernel"], conv * np.minimum(1.0, 2.0 / conv_norms), rtol=1e-6)
    np.testing.assert_array_equal(out["dense"]["bias"], params["dense"]["bias"])
    assert np.linalg.norm(out["dense"]["kernel"], axis=0)[0] == pytest.approx(
        norms[0]
    )  # short unit untouched


def test_a_run_with_max_norm_keeps_every_kernel_within_it(digits, tmp_path):
    config = RunConfig(
        model="mlp256", dataset="digits", epochs=2, batch_size=64, learning_rate=0.5, max_norm=0.3
    )
    fit(config, tmp_path / "run", dataset=digits, progress=False)
    variables = load_teacher(str(tmp_path / "run"), digits).variables[0]
    kernels = [
        w for p, w in jax.tree_util.tree_leaves_with_path(variables) if "kernel" in jax.tree_util.keystr(p)
    ]
    assert len(kernels) == 3
    for w in kernels:
        norms = np.linalg.norm(np.asarray(w), axis=0)
        assert norms.max() <= 0.3 + 1e-5 and norms.max() > 0.29  # the constraint binds at this learning rate


def test_holdout_evaluates_on_training_images_and_exclude_classes_empties_the_transfer_set(digits):
    setup = prepare(
        RunConfig(
            model="mlp32",
            dataset="digits",
            epochs=1,
            batch_size=64,
            holdout_fraction=0.2,
            exclude_classes=[3],
        )
    )
    n_train = len(digits.y_train)
    assert len(setup.dataset.y_test) == round(0.2 * n_train)
    held_out = {x.tobytes() for x in setup.dataset.x_test}
    assert held_out <= {x.tobytes() for x in digits.x_train}
    assert 3 not in setup.dataset.y_train and 3 in setup.dataset.y_test
    assert not held_out & {x.tobytes() for x in setup.dataset.x_train}
    with pytest.raises(ValueError, match="holdout_fraction"):
        RunConfig(model="mlp32", dataset="digits", epochs=1, holdout_fraction=1.0)
    with pytest.raises(ValueError, match=r"no class \[12\]"):
        digits.without_classes([12])
    with pytest.raises(ValueError, match="max_norm"):
        RunConfig(model="mlp32", dataset="digits", epochs=1, max_norm=0.0)

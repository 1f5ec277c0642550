"""Teacher training and distillation (the ``RunConfig`` game): distillation learns, the teacher stays
frozen, runs are deterministic, configurations are checked, methods plug in, run directories
refuse another configuration. (The engine's resumption, non-finite rule, devices and steps per
call: tests/test_engine.py and tests/test_golden.py.)"""

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
from jdistill.train import RunConfig, RunDir, fit, load_teacher, parse_methods, resolve_weights
from jdistill.train.distill import prepare_dataset
from jdistill.train.rounds import play_move, round_batch


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
    return config.replace(**changes)


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


@pytest.mark.slow
def test_a_student_with_memory_banks_serves_as_a_teacher(teacher_dir, digits, tmp_path):
    """CRD's banks are in the student's saved ``rest``; a model without any must still load from it."""
    config = distill_config(teacher_dir, epochs=1, methods=parse_methods("kd+crd"))
    fit(
        config.replace(method_options={"crd": {"num_negatives": 64}}),
        tmp_path / "crd",
        dataset=digits,
        progress=False,
    )
    teacher = load_teacher(str(tmp_path / "crd"), digits)
    assert jax.tree.leaves(teacher.variables[0]) and not jax.tree.leaves(teacher.variables[1])


@pytest.mark.slow
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
    assert record["jdistill_version"] and record["config"]["optimizer"]["learning_rate"] == 0.05


def test_a_run_made_before_a_field_was_added_still_resumes(tmp_path):
    """A saved configuration that lacks a newer field (here label_noise) counts it as its
    default; a saved non-default value of an existing field is still a difference."""
    config = RunConfig(model="mlp32", dataset="digits", epochs=1)
    RunDir(tmp_path / "old").claim(config)
    record = json.loads((tmp_path / "old" / "config.json").read_text())
    del record["config"]["data"]["label_noise"], record["config"]["data"]["label_noise_seed"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(record))
    RunDir(tmp_path / "old").claim(config)
    with pytest.raises(ValueError, match=r"differs in: label_noise\)"):
        RunDir(tmp_path / "old").claim(config.replace(label_noise=0.2))


def test_a_run_of_the_flat_layout_still_resumes_and_loads(tmp_path):
    """jdistill 0.2 saved config.json flat ({"learning_rate": ...}); such a run is the same run as
    its nested configuration, loads as one, and a change is named by its flat name."""
    config = RunConfig(model="mlp32", dataset="digits", epochs=2, learning_rate=0.1, init="torch")
    RunDir(tmp_path / "old").claim(config)
    record = json.loads((tmp_path / "old" / "config.json").read_text())
    record["config"] = json.loads(json.dumps(config.flat()))
    assert record["config"]["learning_rate"] == 0.1 and record["config"]["model"] == "mlp32"
    (tmp_path / "old" / "config.json").write_text(json.dumps(record))
    assert RunDir(tmp_path / "old").config() == config
    RunDir(tmp_path / "old").claim(config)
    with pytest.raises(ValueError, match=r"differs in: init, optimizer\)"):
        RunDir(tmp_path / "old").claim(config.replace(init="flax", optimizer="adam"))


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
        distill_config(teacher_dir).build(other)


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
    game = distill_config(teacher_dir, methods=parse_methods("logit_mse")).build(digits)
    with pytest.raises(
        ValueError, match="returned terms \\['something_else'\\] but declares \\['logit_mse'\\]"
    ):
        play_move(game, game.players, game.phases[0].moves[0], round_batch(game))


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
    game = distill_config(teacher_dir, method_options=options).build(digits)
    connector = game.players["student"].params["extras"]["fitnet"]["connector"]["map"]["kernel"]
    assert connector.shape == (32, 256)  # hidden1 of mlp32 (32) -> hidden2 of mlp256 (256)
    with pytest.raises(
        ValueError, match="method 'fitnet' has no option layer; its options are: student_layer, teacher_layer"
    ):
        distill_config(teacher_dir, method_options={"fitnet": {"layer": "hidden1"}}).build(digits)
    with pytest.raises(
        ValueError, match="method_options given for at, which is not among the methods ce\\+kd\\+fitnet"
    ):
        distill_config(teacher_dir, method_options={"at": {"layers": []}})


def test_torch_init_draws_the_model_as_pytorch_and_other_values_are_refused(digits):
    """``init="torch"``: every kernel and bias within PyTorch's bound ``1 / sqrt(fan_in)``, biases
    drawn; the default keeps Flax's zero biases; another value is refused."""
    for init in ("flax", "torch"):
        game = RunConfig(model="small_cnn", dataset="digits", epochs=1, init=init).build(digits)
        model = game.players["student"].module().model
        layers = [m for _, m in nnx.iter_modules(model) if hasattr(m, "kernel")]
        assert len(layers) == 4
        for layer in layers:
            kernel, bias = np.asarray(layer.kernel[...]), np.asarray(layer.bias[...])
            if init == "torch":
                bound = 1 / np.sqrt(np.prod(kernel.shape[:-1]))
                assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound and np.all(bias != 0)
            else:
                assert not np.any(bias)
    with pytest.raises(ValueError, match="init: choose 'flax' or 'torch', got 'he'"):
        RunConfig(model="mlp32", dataset="digits", epochs=1, init="he")


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


def test_holdout_evaluates_on_training_images_and_exclude_classes_empties_the_transfer_set(digits, tmp_path):
    config = RunConfig(model="mlp32", dataset="digits", epochs=1, batch_size=64, holdout_fraction=0.2,
                       exclude_classes=[3])  # fmt: skip
    dataset = prepare_dataset(config, digits)
    n_train = len(digits.y_train)
    assert len(dataset.y_test) == round(0.2 * n_train)
    held_out = {x.tobytes() for x in dataset.x_test}
    assert held_out <= {x.tobytes() for x in digits.x_train}
    assert 3 not in dataset.y_train and 3 in dataset.y_test
    assert not held_out & {x.tobytes() for x in dataset.x_train}
    assert len(config.build(digits).evaluate.dataset.y_test) == round(0.2 * n_train)  # evaluated on them
    summary = fit(config, tmp_path / "run", dataset=digits, progress=False)
    (line,) = RunDir(tmp_path / "run").metrics()
    assert {"val/accuracy", "val/loss"} <= set(line) and not any(k.startswith("test/") for k in line)
    assert summary["val/best_accuracy"] == summary["val/accuracy"] == line["val/accuracy"]
    with pytest.raises(ValueError, match="holdout_fraction"):
        RunConfig(model="mlp32", dataset="digits", epochs=1, holdout_fraction=1.0)
    with pytest.raises(ValueError, match=r"no class \[12\]"):
        digits.without_classes([12])
    with pytest.raises(ValueError, match="max_norm"):
        RunConfig(model="mlp32", dataset="digits", epochs=1, max_norm=0.0)


def test_a_path_counts_by_where_it_points_not_how_it_is_spelled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    run = RunDir(tmp_path / "run")
    run.claim(RunConfig(model="mlp256", dataset="mnist", epochs=1, data_dir="data"))
    assert run.config().data.data_dir == str(tmp_path.resolve() / "data")  # stored resolved
    run.claim(RunConfig(model="mlp256", dataset="mnist", epochs=1, data_dir=str(tmp_path / "data")))
    run.claim(RunConfig(model="mlp256", dataset="mnist", epochs=1, data_dir="./data/../data"))
    with pytest.raises(ValueError, match="differs in: data_dir"):
        run.claim(RunConfig(model="mlp256", dataset="mnist", epochs=1, data_dir="other"))
    (tmp_path / "run" / "summary.json").write_text("{}")
    assert run.finished(RunConfig(model="mlp256", dataset="mnist", epochs=1, data_dir=str(tmp_path / "data")))
    assert not run.finished(RunConfig(model="mlp256", dataset="mnist", epochs=1, data_dir="other"))

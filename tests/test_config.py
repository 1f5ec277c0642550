"""Typed nested configurations: flat names, construction, replace, records of jdistill 0.2, former
names, and the command-line options and configuration printout generated from them."""

import dataclasses
import json

import pytest

from jdistill.adversarial.data_free import DataFreeConfig, paper_optimizers
from jdistill.adversarial.discriminator import AdversarialKDConfig
from jdistill.adversarial.online import OnlineConfig
from jdistill.cli import build_parser
from jdistill.cli_options import print_configuration
from jdistill.train import RunConfig, RunDir, groups
from jdistill.train.config import DataConfig, DistillConfig, LoopConfig, ModelConfig, OptimizerConfig

CONFIGS = (RunConfig, DataFreeConfig, AdversarialKDConfig, OnlineConfig)


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_leaf_has_one_flat_name_and_a_help_text(cls):
    names = groups.leaf_map(cls)  # raises on a name used twice
    assert len(names) == len(list(groups.leaves(cls)))
    grouped = [leaf for leaf in names.values() if leaf.group]
    assert all(leaf.field.metadata.get("help") for leaf in grouped)


def test_flat_names_build_the_same_configuration_as_groups():
    flat = RunConfig(
        model="mlp32", dataset="digits", epochs=3, learning_rate=0.1, init="torch", methods=("ce",)
    )
    nested = RunConfig(
        model=ModelConfig("mlp32", init="torch"),
        data=DataConfig("digits"),
        loop=LoopConfig(epochs=3),
        optimizer=OptimizerConfig(learning_rate=0.1),
        distill=DistillConfig(),
    )
    assert flat == nested and flat.optimizer.learning_rate == 0.1 and flat.model.init == "torch"
    mixed = RunConfig(model="mlp32", data=DataConfig("digits"), epochs=3, optimizer=OptimizerConfig("adam"))
    assert (mixed.optimizer.name, mixed.loop.epochs, mixed.data.dataset) == ("adam", 3, "digits")
    assert flat.flat()["learning_rate"] == 0.1 and flat.flat()["optimizer"] == "sgd"


def test_replace_changes_one_leaf_and_keeps_the_rest_of_its_group():
    config = RunConfig(model="mlp32", dataset="digits", epochs=3, learning_rate=0.1, init="torch")
    changed = config.replace(optimizer="adam", model="mlp256", epochs=5)
    assert (changed.optimizer.name, changed.optimizer.learning_rate) == ("adam", 0.1)
    assert (changed.model.name, changed.model.init, changed.loop.epochs) == ("mlp256", "torch", 5)
    assert dataclasses.replace(config, seed=4).loop.seed == 4
    # dataclasses.replace cannot tell the model's name from its group: refused, never a silent reset
    with pytest.raises(TypeError, match=r"use config.replace\(model=...\)"):
        dataclasses.replace(config, model="mlp256")


def test_an_unknown_or_missing_name_is_one_clear_error():
    with pytest.raises(TypeError, match="RunConfig got unknown field.*lr; known: "):
        RunConfig(model="m", dataset="d", epochs=1, lr=0.1)
    with pytest.raises(TypeError, match="RunConfig needs epochs"):
        RunConfig(model="m", dataset="d")
    with pytest.raises(ValueError, match=r"lr_milestones must be epochs in \(0, epochs=4\)"):
        RunConfig(model="m", dataset="d", epochs=4, schedule="step", lr_milestones=(5,))


def test_a_flat_read_works_with_a_deprecation_warning():
    config = RunConfig(model="m", dataset="d", epochs=2)
    with pytest.warns(DeprecationWarning, match=r"RunConfig.epochs is deprecated; use RunConfig.loop.epochs"):
        assert config.epochs == 2
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        config.nonsense


@pytest.mark.parametrize(
    "config",
    [
        RunConfig(
            model="mlp32", dataset="digits", epochs=3, teacher="/t", methods=("ce", "kd"), weights={"kd": 1}
        ),
        DataFreeConfig(teacher="/t", method="dafl", student_learning_rate=0.5),
        AdversarialKDConfig(teacher="/t", model="mlp32", epochs=2, disc_learning_rate=1e-3),
        OnlineConfig(model="mlp32", dataset="digits", epochs=2, learning_rate=0.2, disc_input="probs"),
    ],
)
def test_a_record_nested_or_flat_reads_back_as_the_same_configuration(config):
    record = json.loads(json.dumps(dataclasses.asdict(config)))
    flat = json.loads(json.dumps(config.flat()))
    assert groups.from_record(type(config), record) == config
    assert groups.from_record(type(config), flat) == config
    assert groups.flat_record(type(config), record) == groups.flat_record(type(config), flat) == flat


def test_a_data_free_record_of_jdistill_0_2_is_the_same_run(tmp_path):
    """0.2 saved DataFreeConfig flat, with teacher_dir, student, student_lr, generator_lr and
    grad_clip; such a run directory accepts today's configuration of the same run."""
    old = {
        "teacher_dir": "/t", "method": "zskt", "student": "lenet5_half", "dataset": "mnist", "data_dir": None,
        "image_size": 32, "seed": 1, "iterations": 100, "iterations_per_epoch": 50, "batch_size": 64,
        "noise_dim": 100, "generator_width": 16, "generator_bn_epsilon": 1e-5, "init": "torch",
        "student_steps": 10, "student_optimizer": "adam", "student_lr": 2e-3, "student_weight_decay": 0.0,
        "student_schedule": "cosine", "generator_lr": 1e-3, "generator_schedule": "cosine", "grad_clip": 5.0,
        "at_weight": 250.0, "at_features": ["conv1", "conv2"], "activation_feature": "fc1",
        "samples_every": 500, "checkpoint_every": 1, "histogram_samples": 2048,
    }  # fmt: skip
    now = DataFreeConfig(
        teacher="/t", method="zskt", image_size=32, seed=1, iterations=100, batch_size=64, generator_width=16,
        init="torch", student_schedule="cosine", generator_schedule="cosine", student_clip_norm=5.0,
        generator_clip_norm=5.0,
    )  # fmt: skip
    assert groups.from_record(DataFreeConfig, old) == now
    run = RunDir(tmp_path / "run")
    run.make()
    (run.path / "config.json").write_text(json.dumps({"config": old, "format": 2}))
    run.claim(now)  # the same run: accepted
    with pytest.raises(ValueError, match=r"differs in: student_learning_rate\)"):
        run.claim(now.replace(student_learning_rate=0.1))


def test_the_papers_optimizers_are_the_data_free_defaults_and_a_flat_name_changes_one_leaf():
    config = DataFreeConfig(teacher="t", method="dfad", student_optimizer="adam")
    assert config.student_optimizer == dataclasses.replace(
        paper_optimizers("dfad")["student_optimizer"], name="adam"
    )
    assert config.generator_optimizer == paper_optimizers("dfad")["generator_optimizer"]


@pytest.mark.parametrize("command", ["train-teacher", "distill", "data-free", "adversarial-kd", "online"])
def test_every_leaf_is_an_option_of_its_command(command):
    classes = {"train-teacher": RunConfig, "distill": RunConfig, "data-free": DataFreeConfig,
               "adversarial-kd": AdversarialKDConfig, "online": OnlineConfig}  # fmt: skip
    parser = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    dests = {a.dest for a in parser._actions}
    expected = set(groups.leaf_map(classes[command]))
    if command == "train-teacher":
        expected -= {"teacher", "methods", "weights", "method_options", "temperature", "teacher_cache"}
    if command == "data-free":
        expected -= {"dtype"}  # data-free games compute in float32 only
    assert expected <= dests, expected - dests


def test_the_printout_names_every_leaf_under_its_group_with_its_source(capsys):
    config = DataFreeConfig(teacher="t", method="dafl", student_learning_rate=0.5)
    print_configuration("data-free", config, {"teacher": "given"})
    lines = capsys.readouterr().err.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:] if not line.endswith(":")}
    assert set(rows) == set(groups.leaf_map(DataFreeConfig))
    assert rows["student_learning_rate"] == ["0.5", "given"]
    assert rows["generator_learning_rate"] == ["0.2", "default"]  # DAFL's paper's
    assert " student_optimizer:" in lines and " generator_optimizer:" in lines

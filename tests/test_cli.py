"""The jdistill command: subcommands, options, run directories, error messages, and the demo."""

import json

import jax
import numpy as np
import pytest

from jdistill.cli import build_parser, main
from jdistill.demo import run_demo
from jdistill.models import MODELS
from jdistill.train import RunConfig


@pytest.mark.slow
def test_models_lists_every_model_with_its_parameter_count(capsys):
    main(["models"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(MODELS)
    counts = {line.split()[0]: line.split()[1] for line in lines}
    assert counts["mlp1200"] == "2,395,210" and counts["lenet5"] == "61,706"


@pytest.mark.slow
def test_models_with_100_classes_prints_the_cifar_zoo_counts(capsys):
    main(["models", "--num-classes", "100"])
    counts = {line.split()[0]: line.split()[1:3] for line in capsys.readouterr().out.splitlines()}
    assert counts["resnet8"] == ["83,892", "32x32x3"] and counts["ResNet50"] == ["23,705,252", "32x32x3"]
    assert counts["MobileNetV2"] == ["812,836", "32x32x3"] and counts["mlp800"][1] == "28x28x1"


def test_models_on_small_images_explains_models_that_do_not_fit(capsys):
    main(["models", "--input-shape", "8x8x1"])
    out = capsys.readouterr().out
    assert "mlp1200" in out and "1,531,210" in out
    assert "lenet5" in out and "input_shape must be 28x28xC or 32x32xC" in out


@pytest.mark.parametrize(
    "command, options",
    [
        (
            "train-teacher",
            [
                "--model",
                "--dataset",
                "--data-dir",
                "--epochs",
                "--seed",
                "--out",
                "--preset",
                "--learning-rate",
            ],
        ),
        (
            "distill",
            [
                "--teacher",
                "--model",
                "--method",
                "--weight",
                "--temperature",
                "--dataset",
                "--data-dir",
                "--epochs",
                "--seed",
                "--out",
            ],
        ),
        ("demo", ["--out", "--seeds"]),
        ("models", ["--num-classes"]),
    ],
)
def test_help_documents_each_option(command, options, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in options:
        assert option in out, option


def test_init_option_reaches_the_run_configuration(monkeypatch, capsys):
    """``--init torch`` becomes ``RunConfig.init`` (PyTorch's initialisation); the default is Flax's."""
    played = []
    monkeypatch.setattr("jdistill.train.fit", lambda config, out, **options: played.append(config) or {})
    monkeypatch.setattr("jdistill.train.RunConfig.build", lambda config, dataset=None: config)
    command = ["train-teacher", "--model", "mlp32", "--dataset", "digits", "--epochs", "1", "--out", "o"]
    main([*command, "--init", "torch"])
    main(command)
    assert [config.model.init for config in played] == ["torch", "flax"]


def test_every_run_prints_its_effective_configuration_and_where_each_value_came_from(monkeypatch, capsys):
    monkeypatch.setattr("jdistill.train.fit", lambda config, out, **options: {})
    monkeypatch.setattr("jdistill.train.RunConfig.build", lambda config, dataset=None: config)
    command = ["train-teacher", "--model", "resnet8", "--epochs", "24", "--out", "o", "--quiet"]
    main([*command, "--dataset", "digits", "--learning-rate", "0.1"])
    lines = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().err.splitlines()[1:]}
    assert lines["learning_rate"] == ["0.1", "given"] and lines["epochs"] == ["24", "given"]
    assert lines["batch_size"] == ["128", "default"] and lines["methods"] == ['["ce"]', "default"]
    main([*command, "--dataset", "npz", "--preset", "crd", "--batch-size", "128", "--seed", "3"])
    lines = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().err.splitlines()[1:]}
    assert lines["weight_decay"] == ["0.0005", "preset", "crd"] and lines["hflip"] == [
        "true",
        "preset",
        "crd",
    ]
    assert lines["lr_milestones"] == [
        "[15,",
        "18,",
        "21]",
        "preset",
        "crd",
    ]  # 150/180/210 scaled to 24 epochs
    assert lines["learning_rate"] == ["0.1", "preset", "crd"]  # 0.05 scaled with the batch
    assert lines["batch_size"] == ["128", "given"] and lines["seed"] == ["3", "given"]


def test_old_option_names_still_work_and_say_what_replaces_them(monkeypatch, capsys):
    """--lr, --student and --recipe (jdistill 0.2) set --learning-rate, --model and --preset, each with
    one warning line; the configuration is the one the new names give."""
    played = []
    monkeypatch.setattr("jdistill.train.fit", lambda config, out, **options: played.append(config) or {})
    monkeypatch.setattr("jdistill.train.RunConfig.build", lambda config, dataset=None: config)
    monkeypatch.setattr(
        "jdistill.train.RunDir.config", lambda self: RunConfig(model="mlp256", dataset="npz", epochs=1)
    )
    common = [
        "--teacher",
        "t",
        "--method",
        "kd",
        "--dataset",
        "npz",
        "--epochs",
        "24",
        "--out",
        "o",
        "--quiet",
    ]
    main(["distill", *common, "--student", "mlp32", "--lr", "0.3", "--recipe", "crd"])
    old = capsys.readouterr().err.splitlines()
    main(["distill", *common, "--model", "mlp32", "--learning-rate", "0.3", "--preset", "crd"])
    new = capsys.readouterr().err.splitlines()
    assert played[0] == played[1] and played[0].optimizer.learning_rate == 0.3
    assert played[0].model.name == "mlp32" and played[0].distill.weights == {"ce": 0.1, "kd": 0.9}
    assert old[:3] == [
        "jdistill distill: warning: --student is deprecated; use --model",
        "jdistill distill: warning: --lr is deprecated; use --learning-rate",
        "jdistill distill: warning: --recipe is deprecated; use --preset",
    ]
    assert old[3:] == new


def test_presets_name_the_papers_recipes_and_given_options_override_them(monkeypatch, capsys):
    played = []
    monkeypatch.setattr("jdistill.train.fit", lambda config, out, **options: played.append(config) or {})
    monkeypatch.setattr("jdistill.train.RunConfig.build", lambda config, dataset=None: config)
    command = ["train-teacher", "--model", "mlp1200", "--dataset", "mnist", "--out", "o", "--quiet"]
    main([*command, "--preset", "hinton2012", "--epochs", "3000", "--max-shift", "2"])
    main([*command, "--preset", "dafl-teacher", "--learning-rate", "0.01"])
    hinton, dafl = played
    assert (hinton.loop.batch_size, hinton.optimizer.schedule, hinton.optimizer.lr_decay) == (
        100,
        "exponential",
        0.998,
    )
    assert (hinton.optimizer.initial_momentum, hinton.optimizer.momentum, hinton.optimizer.dampening) == (
        0.5,
        0.99,
        True,
    )
    assert hinton.data.max_shift == 2 and hinton.loop.epochs == 3000
    assert (dafl.optimizer.name, dafl.optimizer.learning_rate, dafl.loop.epochs, dafl.model.init) == (
        "adam", 0.01, 9, "torch")  # fmt: skip
    lines = capsys.readouterr().err.splitlines()
    assert any(line.split() == ["learning_rate", "0.01", "given"] for line in lines)
    assert any(line.split() == ["epochs", "9", "preset", "dafl-teacher"] for line in lines)
    with pytest.raises(SystemExit, match="--epochs is required without a preset"):
        main(command)


def test_the_imagenet_kd_preset_scales_its_rate_and_milestones():
    from jdistill.presets import Context, preset_values

    values = preset_values(
        "imagenet-kd", Context("resnet18_imagenet", ("ce", "kd"), "resnet34_imagenet", 10, 256)
    )
    assert (values["learning_rate"], values["lr_milestones"], values["lr_decay"]) == (0.1, (3, 6, 9), 0.1)
    assert (values["temperature"], values["weights"], values["weight_decay"]) == (
        1.0,
        {"ce": 0.5, "kd": 0.5},
        1e-4,
    )
    assert preset_values("imagenet-kd", Context("resnet34_imagenet"))["lr_milestones"] == (30, 60, 90)


def test_train_teacher_then_distill_writes_complete_run_directories(tmp_path, capsys):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    main(
        [
            "train-teacher",
            "--model",
            "mlp256",
            "--dataset",
            "digits",
            "--epochs",
            "3",
            "--batch-size",
            "64",
            "--seed",
            "0",
            "--out",
            str(teacher),
            "--quiet",
        ]
    )
    main(
        [
            "distill",
            "--teacher",
            str(teacher),
            "--model",
            "mlp32",
            "--method",
            "kd+fitnet",
            "--weight",
            "kd=0.9",
            "--weight",
            "ce=0.1",
            "--weight",
            "fitnet=1",
            "--temperature",
            "8",
            "--dataset",
            "digits",
            "--epochs",
            "3",
            "--batch-size",
            "64",
            "--seed",
            "1",
            "--out",
            str(student),
            "--quiet",
        ]
    )
    for run in (teacher, student):
        assert {"config.json", "metrics.jsonl", "summary.json", "checkpoints", "tensorboard"} <= {
            p.name for p in run.iterdir()
        }
        assert (run / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr()
    assert printed.err.count("learning curves: ") == 2
    config = json.load(open(student / "config.json"))["config"]
    assert config["distill"]["methods"] == ["ce", "kd", "fitnet"]
    assert config["distill"]["weights"] == {"kd": 0.9, "ce": 0.1, "fitnet": 1.0}
    assert config["distill"]["temperature"] == 8.0
    metrics = [json.loads(line) for line in open(student / "metrics.jsonl")]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert {"train/loss/ce", "train/loss/kd", "train/loss/fitnet", "test/accuracy", "test/agreement"} <= set(
        metrics[0]
    )
    summary = json.loads(printed.out.split("\n}\n")[1] + "\n}")
    assert summary["test/accuracy"] > 0.5


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            [
                "distill",
                "--teacher",
                "t",
                "--model",
                "mlp32",
                "--method",
                "kd",
                "--weight",
                "kd",
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--out",
                "o",
            ],
            "--weight expects NAME=NUMBER",
        ),
        (
            [
                "distill",
                "--teacher",
                "t",
                "--model",
                "mlp32",
                "--method",
                "kd+magic",
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--out",
                "o",
            ],
            "unknown method 'magic'",
        ),
        (
            [
                "train-teacher",
                "--model",
                "mlp32",
                "--dataset",
                "mnist",
                "--data-dir",
                "/no/such/dir",
                "--epochs",
                "1",
                "--out",
                "o",
            ],
            "MNIST data directory '/no/such/dir' does not exist",
        ),
        (
            ["train-teacher", "--model", "resnet9000", "--dataset", "digits", "--epochs", "1", "--out", "o"],
            "unknown model 'resnet9000'",
        ),
        (
            ["train-teacher", "--model", "mlp32", "--dataset", "cifar7", "--epochs", "1", "--out", "o"],
            "unknown dataset 'cifar7'",
        ),
    ],
)
def test_bad_input_exits_with_a_message_naming_the_problem(argv, message, tmp_path, monkeypatch, capsys):
    """One line, before the configuration is printed or anything is written."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert message in str(exit_info.value.code)
    assert capsys.readouterr().err == "" and not (tmp_path / "o").exists()


def test_parser_has_the_twelve_subcommands():
    actions = [a for a in build_parser()._actions if a.dest == "command"]
    assert set(actions[0].choices) == {
        "demo", "train-teacher", "distill", "models", "data-free", "adversarial-kd", "online", "temperature",
        "cache-teacher", "write-records", "lm", "cache-lm-teacher",
    }  # fmt: skip


@pytest.mark.slow
def test_demo_shows_distillation_beating_the_student_alone(tmp_path, capsys):
    """The demo's claim, checked on its real output: every distilled row beats the student
    alone by more than the seeds' spread (runs the whole demo on one device, about two minutes)."""
    out = tmp_path / "demo"
    table = run_demo(out, progress=False, devices=jax.devices()[:1])
    assert "10% of training labels" in capsys.readouterr().out and "| student alone |" in table
    assert (out / "table.md").read_text().endswith(table)
    assert (out / "learning_curves.png").stat().st_size > 10_000
    results = [json.loads(line) for line in open(out / "results.jsonl")]
    accuracy = {}
    for r in results:
        accuracy.setdefault(r["row"], []).append(r["test/accuracy"])
    alone = np.array(accuracy.pop("student alone"))
    assert len(alone) >= 3
    for row in ("student KD (soft labels)", "student KD + feature matching"):
        distilled = np.array(accuracy[row])
        assert distilled.mean() - alone.mean() > max(alone.std(), distilled.std()), (row, distilled, alone)


@pytest.mark.slow
def test_models_features_lists_named_features(capsys):
    main(["models", "--features"])
    out = capsys.readouterr().out
    assert "conv1 28x28x6" in out and "embedding 84" in out and "hidden2 800" in out


@pytest.mark.slow
def test_attention_transfer_on_a_chosen_layer_from_the_command_line(tmp_path, capsys):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    common = ["--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--quiet"]
    main(["train-teacher", "--model", "small_cnn", "--out", str(teacher), *common])
    distill = ["distill", "--teacher", str(teacher), "--model", "small_cnn", *common]
    main(
        [
            *distill,
            "--method",
            "kd+at",
            "--method-option",
            'at.layers=[["conv2", "conv2"]]',
            "--out",
            str(student),
        ]
    )
    config = json.load(open(student / "config.json"))["config"]
    assert config["distill"]["method_options"] == {"at": {"layers": [["conv2", "conv2"]]}}
    metrics = [json.loads(line) for line in open(student / "metrics.jsonl")]
    assert np.isfinite(metrics[-1]["train/loss/at"]) and metrics[-1]["train/loss/at"] > 0
    with pytest.raises(SystemExit, match="--method-option expects METHOD.FIELD=VALUE"):
        main([*distill, "--method", "at", "--method-option", "layers=conv1", "--out", str(tmp_path / "x")])


@pytest.mark.parametrize(
    "argv, line",
    [
        (
            ["train-teacher", "--model", "m", "--dataset", "digits", "--epochs", "x", "--out", "o"],
            "jdistill train-teacher: error: argument --epochs: invalid int value: 'x' "
            "(see jdistill train-teacher --help)",
        ),
        (
            [
                "train-teacher",
                "--model",
                "m",
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--out",
                "o",
                "--learning-rat",
                "1",
            ],
            "jdistill: error: unrecognized arguments: --learning-rat 1 (see jdistill --help)",
        ),
    ],
)
def test_a_parse_error_is_one_line_and_a_misspelt_option_is_not_taken_for_another(argv, line, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and capsys.readouterr().err == line + "\n"

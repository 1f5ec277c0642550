"""CIFAR data (official python format, .npz), the benchmark recipe, the step schedule, and the
command line under the recipe."""

import json
import pickle

import numpy as np
import pytest

from jdistill.cli import main
from jdistill.data import CIFAR_STATS, Dataset, load_cifar_dir, load_dataset, load_npz
from jdistill.recipes import crd_benchmark, dkd_beta, learning_rate, milestones
from jdistill.train import RunConfig, RunDir


def write_cifar(folder, name, n_train=20, n_test=10, seed=0):
    """Tiny archives in the official layout: pickled dicts with [N, 3072] channel-major rows."""
    rng = np.random.default_rng(seed)
    layout = {
        "cifar10": (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            "test_batch",
            b"labels",
            10,
        ),
        "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels", 100),
    }
    sub, train_files, test_file, key, classes = layout[name]
    (folder / sub).mkdir(parents=True)
    images = {}
    for file, n in [*((f, n_train // len(train_files)) for f in train_files), (test_file, n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, n).tolist()
        with open(folder / sub / file, "wb") as f:
            pickle.dump({b"data": data, key: labels, b"batch_label": b"x"}, f)
        images[file] = (data, labels)
    return images


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_python_format_is_read_in_hwc_order_with_its_labels(tmp_path, name):
    written = write_cifar(tmp_path, name)
    for data_dir in (
        tmp_path,
        tmp_path / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"),
    ):
        ds = load_dataset(name, str(data_dir))
        assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (10, 32, 32, 3)
        assert ds.num_classes == (10 if name == "cifar10" else 100)
        assert (ds.mean, ds.std) == CIFAR_STATS[name]
        test_file = "test_batch" if name == "cifar10" else "test"
        data, labels = written[test_file]
        # Pixel (row 2, column 5) of image 3: red at 2*32+5, green 1024 later, blue 2048 later.
        expected = [data[3, 2 * 32 + 5 + 1024 * c] / 255 for c in range(3)]
        np.testing.assert_allclose(ds.x_test[3, 2, 5], expected, rtol=1e-6)
        np.testing.assert_array_equal(ds.y_test, labels)


def test_missing_or_corrupt_cifar_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-100-python.*lacks train, test"):
        load_cifar_dir("cifar100", tmp_path)
    write_cifar(tmp_path, "cifar100")
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="test: not a CIFAR python-format batch"):
        load_cifar_dir("cifar100", tmp_path)


def test_npz_data_set_is_scaled_and_normalised_with_its_training_statistics(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8),
        "y_train": rng.integers(0, 4, 30).astype(np.uint8),
        "x_test": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
        "y_test": rng.integers(0, 4, 8).astype(np.uint8),
    }
    np.savez(tmp_path / "set.npz", **arrays)
    ds = load_npz(tmp_path / "set.npz")
    np.testing.assert_allclose(ds.x_train, arrays["x_train"] / 255, rtol=1e-6)
    np.testing.assert_allclose(ds.mean, (arrays["x_train"] / 255).mean(axis=(0, 1, 2)), rtol=1e-5)
    normalised = ds.normalise(ds.x_train)
    np.testing.assert_allclose(normalised.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(normalised.std(axis=(0, 1, 2)), 1, atol=1e-4)
    assert ds.num_classes == 4 and ds.y_train.dtype == np.int32
    np.savez(tmp_path / "bad.npz", x_train=arrays["x_train"], y_train=arrays["y_train"])
    with pytest.raises(ValueError, match="lacks array\\(s\\) x_test, y_test"):
        load_npz(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("npz", str(tmp_path / "missing.npz"))


def test_recipe_scales_the_schedule_with_the_epochs_and_the_rate_with_the_batch():
    full = crd_benchmark("resnet20", ("ce", "kd"), teacher_model="resnet56")
    assert full["epochs"] == 240 and full["lr_milestones"] == (150, 180, 210)
    assert (full["batch_size"], full["learning_rate"], full["weight_decay"]) == (64, 0.05, 5e-4)
    assert full["weights"] == {"ce": 0.1, "kd": 0.9} and full["nesterov"] is False
    assert milestones(24) == (15, 18, 21) and milestones(2) == (1,) and milestones(1) == ()
    assert learning_rate("ShuffleV1") == 0.01 and learning_rate("resnet8", 256) == pytest.approx(0.2)
    short = crd_benchmark("resnet8x4", ("ce", "ab", "dkd"), teacher_model="resnet32x4", epochs=24)
    assert short["method_options"] == {
        "ab": {"init_epochs": 3},
        "dkd": {"warmup_epochs": 2.0, "ramp_increments": 20},
    }
    assert short["weights"] == {"dkd_nckd": 8.0}
    assert crd_benchmark("resnet20", ("ce", "dkd"), teacher_model="resnet56")["weights"] == {"dkd_nckd": 2.0}
    # pairs mdistiller does not configure: thin CIFAR ResNets take their family's 2, the others 8
    pairs = {("resnet20", "resnet8"): 2.0, ("resnet110", "resnet14"): 2.0, ("resnet56", "resnet8x4"): 8.0,
             ("resnet32x4", "resnet20"): 8.0, ("resnet18_imagenet", "resnet8"): 8.0, (None, "resnet8"): 8.0,
             ("ResNet50", "vgg8"): 8.0, ("wrn_40_2", "wrn_16_2"): 6.0}  # fmt: skip
    assert {pair: dkd_beta(*pair) for pair in pairs} == pairs
    crd_kd = crd_benchmark("resnet20", ("ce", "crd", "kd"), teacher_model="resnet56")
    assert crd_kd["weights"] == {"ce": 1.0, "kd": 1.0}  # and crd's default 0.8


def test_step_schedule_decays_from_the_first_step_of_each_milestone_epoch():
    x = np.zeros((40, 8, 8, 1), np.float32)
    data = Dataset("d", x, np.arange(40) % 2, x[:4], np.arange(4) % 2, num_classes=2)
    config = RunConfig(
        model="mlp32", dataset="d", epochs=10, batch_size=8, schedule="step", lr_milestones=(4, 8)
    )
    multiplier = config.build(data).players["student"].optimizer.schedule  # 5 steps per epoch
    values = [float(multiplier(s)) for s in (19, 20, 39, 40)]
    np.testing.assert_allclose(values, [1.0, 0.1, 0.1, 0.01], rtol=1e-6)
    with pytest.raises(ValueError, match="lr_milestones must be epochs in \\(0, epochs=10\\)"):
        RunConfig(model="m", dataset="d", epochs=10, schedule="step", lr_milestones=(10,))


@pytest.mark.slow
def test_command_line_applies_the_recipe_when_asked_and_explicit_options_win(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8)
    y = (np.arange(128) % 4).astype(np.uint8)
    np.savez(tmp_path / "set.npz", x_train=x, y_train=y, x_test=x[:32], y_test=y[:32])
    common = ["--dataset", "npz", "--data-dir", str(tmp_path / "set.npz"), "--epochs", "2", "--quiet"]
    main(["train-teacher", "--model", "resnet8", "--out", str(tmp_path / "plain"), *common])
    plain = RunDir(tmp_path / "plain").flat_config()
    assert (plain["max_shift"], plain["hflip"], plain["weight_decay"]) == (0, False, 0.0)  # npz: no recipe
    common.extend(["--preset", "crd"])
    main(["train-teacher", "--model", "resnet8", "--out", str(tmp_path / "t"), *common])
    teacher = RunDir(tmp_path / "t").flat_config()
    expected = {
        "batch_size": 64,
        "learning_rate": 0.05,
        "schedule": "step",
        "lr_milestones": [1],
        "momentum": 0.9,
    }
    assert {k: teacher[k] for k in expected} == expected
    assert (teacher["nesterov"], teacher["weight_decay"], teacher["max_shift"], teacher["hflip"]) == (
        False,
        5e-4,
        4,
        True,
    )
    student = tmp_path / "s"
    main(["distill", "--teacher", str(tmp_path / "t"), "--model", "resnet8", "--method", "dkd", "--out", str(student),
          "--batch-size", "32", "--weight", "dkd_tckd=0.5", *common])  # fmt: skip
    config = RunDir(student).flat_config()
    assert config["weights"] == {"dkd_nckd": 2.0, "dkd_tckd": 0.5}  # resnet8 -> resnet8: thin ResNets, NCKD 2
    assert config["learning_rate"] == pytest.approx(0.025)  # 0.05 x 32 / 64
    assert config["method_options"] == {"dkd": {"warmup_epochs": 20 * 2 / 240, "ramp_increments": 20}}
    metrics = [json.loads(line) for line in (student / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(np.isfinite(m["train/loss/dkd_nckd"]) for m in metrics)


def test_random_flip_mirrors_whole_images_about_half_the_time():
    import jax

    from jdistill.data import random_flip

    images = np.random.default_rng(0).uniform(size=(400, 4, 5, 3)).astype(np.float32)
    flipped = np.asarray(random_flip(jax.random.key(0), images))
    mirrored = np.all(flipped == images[:, :, ::-1], axis=(1, 2, 3))
    unchanged = np.all(flipped == images, axis=(1, 2, 3))
    assert np.all(mirrored ^ unchanged)  # each image is either mirrored or untouched
    assert 160 < mirrored.sum() < 240

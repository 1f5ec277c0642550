"""Tests for jdistill.data: the IDX/MNIST reader, tensorflow-datasets and scikit-learn loaders,
the Dataset helpers (hidden labels, holdout) and the on-device batching and augmentation."""

import gzip
import pathlib
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from idx_files import idx_bytes as _idx_bytes
from idx_files import write_idx as _write_idx

from jdistill.data import (
    DATASETS,
    UNLABELLED,
    Dataset,
    epoch_indices,
    load_dataset,
    load_digits,
    load_mnist_dir,
    load_tfds,
    random_shift,
    read_idx,
)
from jdistill.data.mnist import FILES

SHARED_MNIST = pathlib.Path(__file__).parents[2] / "shared/data/mnist"

X_TRAIN, Y_TRAIN, X_TEST, Y_TEST = (FILES[k] for k in ("x_train", "y_train", "x_test", "y_test"))


# ---------------------------------------------------------------------------------------------
# IDX files written by hand


def _known_arrays(n_train=20, n_test=8):
    """Images whose pixels are a known function of (example, row, col), covering 0 and 255, and
    labels in a fixed, non-sorted order."""

    def images(n, offset):
        i, r, c = np.meshgrid(np.arange(n), np.arange(28), np.arange(28), indexing="ij")
        return ((offset + 31 * i + 7 * r + 3 * c) % 256).astype(np.uint8)

    y_train = np.array([(7 * k + 3) % 10 for k in range(n_train)], np.uint8)
    y_test = np.array([(3 * k + 5) % 10 for k in range(n_test)], np.uint8)
    return images(n_train, 0), y_train, images(n_test, 11), y_test


def _make_mnist_dir(root: pathlib.Path, n_train=20, n_test=8):
    root.mkdir(parents=True, exist_ok=True)
    arrays = _known_arrays(n_train, n_test)
    for name, array in zip((X_TRAIN, Y_TRAIN, X_TEST, Y_TEST), arrays):
        _write_idx(root / name, array)
    return arrays


def test_load_mnist_dir_round_trips_known_files(tmp_path):
    x_train, y_train, x_test, y_test = _make_mnist_dir(tmp_path / "mnist")
    ds = load_mnist_dir(tmp_path / "mnist")
    assert ds.name == "mnist" and ds.num_classes == 10
    chex.assert_shape(ds.x_train, (20, 28, 28, 1))
    chex.assert_shape(ds.x_test, (8, 28, 28, 1))
    chex.assert_shape(ds.y_train, (20,))
    chex.assert_shape(ds.y_test, (8,))
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert np.issubdtype(ds.y_train.dtype, np.integer) and np.issubdtype(ds.y_test.dtype, np.integer)
    assert ds.input_shape == (28, 28, 1)
    # Scaled by 1/255: exactly 0 and 1 at the extremes, every pixel as written.
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    np.testing.assert_allclose(ds.x_train[..., 0], x_train / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_allclose(ds.x_test[..., 0], x_test / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.y_test, y_test)


def test_load_mnist_dir_accepts_a_string_path(tmp_path):
    _, y_train, _, _ = _make_mnist_dir(tmp_path)
    np.testing.assert_array_equal(load_mnist_dir(str(tmp_path)).y_train, y_train)


def test_load_dataset_mnist_with_a_directory_reads_the_files(tmp_path):
    _, _, _, y_test = _make_mnist_dir(tmp_path)
    ds = load_dataset("mnist", data_dir=str(tmp_path))
    np.testing.assert_array_equal(ds.y_test, y_test)


def test_read_idx_returns_the_raw_bytes_in_shape(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array)
    out = read_idx(tmp_path / "a.gz", 3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, array)


def test_missing_directory_names_it_and_the_expected_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        load_mnist_dir(missing)
    message = str(info.value)
    assert str(missing) in message
    for name in FILES.values():
        assert name in message


def test_a_file_that_is_not_a_directory_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "file"))):
        load_mnist_dir(tmp_path / "file")


@pytest.mark.parametrize("missing", [(Y_TRAIN,), (X_TEST, Y_TEST)])
def test_missing_files_are_named(tmp_path, missing):
    _make_mnist_dir(tmp_path)
    for name in missing:
        (tmp_path / name).unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_mnist_dir(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    # The message names the absent files before it lists the four expected ones.
    head = message.split("expected")[0]
    for name in FILES.values():
        assert (name in head) == (name in missing), (name, message)


def test_a_file_that_is_not_gzip_is_refused(tmp_path):
    _make_mnist_dir(tmp_path)
    x_train, *_ = _known_arrays()
    (tmp_path / X_TRAIN).write_bytes(_idx_bytes(x_train))  # valid IDX, but not compressed
    with pytest.raises(ValueError, match="gzip") as info:
        load_mnist_dir(tmp_path)
    assert X_TRAIN in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"type_code": 0x0D}, id="float-type"),  # IDX type of 32-bit floats
        pytest.param({"rank": 2}, id="wrong-rank"),
    ],
)
def test_a_wrong_idx_header_is_refused(tmp_path, kwargs):
    _make_mnist_dir(tmp_path)
    _, _, x_test, _ = _known_arrays()
    array = x_test if "type_code" in kwargs else x_test.reshape(8, 28 * 28)
    _write_idx(tmp_path / X_TEST, array, **kwargs)
    with pytest.raises(ValueError, match="not an IDX file") as info:
        load_mnist_dir(tmp_path)
    assert X_TEST in str(info.value)
    assert "header" in str(info.value)


def test_a_labels_file_with_image_rank_is_refused(tmp_path):
    _make_mnist_dir(tmp_path)
    _write_idx(tmp_path / Y_TEST, np.zeros((8, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=re.escape(Y_TEST)):
        load_mnist_dir(tmp_path)


def test_truncated_data_is_refused(tmp_path):
    _make_mnist_dir(tmp_path)
    x_train, *_ = _known_arrays()
    data = _idx_bytes(x_train)  # header says 20 images
    (tmp_path / X_TRAIN).write_bytes(gzip.compress(data[: len(data) - 28 * 28 - 5]))
    with pytest.raises(ValueError, match="truncated") as info:
        load_mnist_dir(tmp_path)
    assert X_TRAIN in str(info.value)
    assert "(20, 28, 28)" in str(info.value)


def test_extra_trailing_data_is_refused(tmp_path):
    _make_mnist_dir(tmp_path)
    _, y_train, _, _ = _known_arrays()
    (tmp_path / Y_TRAIN).write_bytes(gzip.compress(_idx_bytes(y_train) + b"\x01\x02"))
    with pytest.raises(ValueError, match=re.escape(Y_TRAIN)):
        load_mnist_dir(tmp_path)


def test_image_and_label_counts_must_agree(tmp_path):
    _make_mnist_dir(tmp_path)
    _, y_train, _, _ = _known_arrays()
    _write_idx(tmp_path / Y_TRAIN, y_train[:19])
    with pytest.raises(ValueError) as info:
        load_mnist_dir(tmp_path)
    message = str(info.value)
    assert "20 images" in message and "19 labels" in message
    assert X_TRAIN in message and Y_TRAIN in message


def test_labels_above_nine_are_refused(tmp_path):
    _make_mnist_dir(tmp_path)
    _, _, _, y_test = _known_arrays()
    y_test = y_test.copy()
    y_test[3] = 10
    _write_idx(tmp_path / Y_TEST, y_test)
    with pytest.raises(ValueError, match="label 10") as info:
        load_mnist_dir(tmp_path)
    assert Y_TEST in str(info.value)


def test_a_file_of_official_name_and_size_with_wrong_content_fails_the_md5_check(tmp_path):
    labels = (np.arange(10000) % 10).astype(np.uint8)  # the official t10k count, wrong content
    _write_idx(tmp_path / Y_TEST, labels)
    with pytest.raises(ValueError, match="md5") as info:
        read_idx(tmp_path / Y_TEST, 1)
    assert Y_TEST in str(info.value)
    # The same bytes under another name are not an official file: no check, read as written.
    _write_idx(tmp_path / "labels.gz", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels.gz", 1), labels)


def test_a_corrupt_gzip_stream_is_reported_as_value_error(tmp_path):
    data = bytearray(gzip.compress(bytes(range(200)) * 50))
    for i in range(12, len(data) - 8):  # keep the gzip header and trailer, garble the stream
        data[i] ^= 0xFF
    (tmp_path / "corrupt.gz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="gzip"):
        read_idx(tmp_path / "corrupt.gz", 1)


def test_a_train_labels_file_of_test_size_is_not_md5_checked(tmp_path):
    labels = (np.arange(10000) % 10).astype(np.uint8)
    _write_idx(tmp_path / Y_TRAIN, labels)
    np.testing.assert_array_equal(read_idx(tmp_path / Y_TRAIN, 1), labels)


# ---------------------------------------------------------------------------------------------
# The real MNIST files, when the shared data directory holds them


def test_real_mnist_from_the_shared_directory():
    if not all((SHARED_MNIST / name).is_file() for name in FILES.values()):
        pytest.skip(f"no MNIST files in {SHARED_MNIST}")
    ds = load_mnist_dir(SHARED_MNIST)  # also passes the md5 check of all four files
    chex.assert_shape(ds.x_train, (60000, 28, 28, 1))
    chex.assert_shape(ds.x_test, (10000, 28, 28, 1))
    assert ds.x_train.dtype == np.float32
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    train_hist = np.bincount(ds.y_train, minlength=10)
    test_hist = np.bincount(ds.y_test, minlength=10)
    assert len(train_hist) == 10 and len(test_hist) == 10
    assert train_hist.sum() == 60000 and test_hist.sum() == 10000
    np.testing.assert_array_equal(train_hist, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    np.testing.assert_array_equal(test_hist, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    np.testing.assert_array_equal(ds.y_test[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])


# ---------------------------------------------------------------------------------------------
# tensorflow-datasets, offline through its mock data


def test_load_dataset_mnist_without_a_directory_uses_tfds():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        ds = load_dataset("mnist")
    assert isinstance(ds, Dataset)
    assert ds.name == "mnist" and ds.num_classes == 10
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        chex.assert_shape(x, (12, 28, 28, 1))
        chex.assert_shape(y, (12,))
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert x.max() > 0.0  # not all black: the pixels were really read
        np.testing.assert_allclose(x * 255, np.round(x * 255), atol=1e-4)  # uint8 / 255
        assert set(np.unique(y)) <= set(range(10))


def test_what_tensorflow_datasets_imports_lazily_on_its_download_path_is_installed():
    """tensorflow-datasets' builder imports these only when it downloads and prepares, and does not
    declare them all: a fresh install without them failed there (``importlib_resources``)."""
    import importlib

    source = pathlib.Path(importlib.import_module("tensorflow_datasets.core.dataset_builder").__file__)
    block = source.read_text().split("with epy.lazy_imports():", 1)[1].split("\n\n\n", 1)[0]
    modules = [line.split()[1] for line in block.splitlines() if line.strip().startswith("import ")]
    assert "importlib_resources" in modules
    for name in modules:
        importlib.import_module(name)


def test_load_tfds_of_an_unknown_name_raises_value_error_naming_it():
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match="no_such_dataset_jdistill"):
        load_tfds("no_such_dataset_jdistill")


# ---------------------------------------------------------------------------------------------
# scikit-learn digits and dataset names


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_load_digits_shapes_range_and_split(digits):
    assert digits.name == "digits" and digits.num_classes == 10
    assert digits.input_shape == (8, 8, 1)
    assert len(digits.y_train) + len(digits.y_test) == 1797
    assert len(digits.y_test) == 540  # ceil(0.3 * 1797)
    chex.assert_shape(digits.x_train, (1257, 8, 8, 1))
    chex.assert_shape(digits.x_test, (540, 8, 8, 1))
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int32
    assert digits.x_train.min() == 0.0 and digits.x_train.max() == 1.0  # 0..16 scaled by 1/16
    # Stratified: each class's share of the test split is within one example of 30%.
    train_hist = np.bincount(digits.y_train, minlength=10)
    test_hist = np.bincount(digits.y_test, minlength=10)
    assert np.all(np.abs(test_hist - 0.3 * (train_hist + test_hist)) <= 1)


def test_load_digits_is_deterministic_for_a_seed(digits):
    again = load_digits()
    np.testing.assert_array_equal(again.x_train, digits.x_train)
    np.testing.assert_array_equal(again.y_test, digits.y_test)
    other = load_digits(seed=1)
    assert not np.array_equal(other.y_train, digits.y_train)
    smaller = load_digits(test_fraction=0.5)
    assert len(smaller.y_test) == 899  # ceil(0.5 * 1797)


def test_load_dataset_digits(digits):
    ds = load_dataset("digits")
    np.testing.assert_array_equal(ds.x_test, digits.x_test)
    with pytest.raises(ValueError, match="digits"):
        load_dataset("digits", data_dir="/some/where")


def test_load_dataset_of_an_unknown_name_lists_the_choices():
    with pytest.raises(ValueError) as info:
        load_dataset("cifar-1000")
    message = str(info.value)
    assert "cifar-1000" in message
    assert set(DATASETS) == {"digits", "mnist", "cifar10", "cifar100", "npz", "records", "imagefolder"}
    for name in DATASETS:
        assert name in message


# ---------------------------------------------------------------------------------------------
# Dataset: validation, hidden labels, labelled subset, holdout

CLASS_SIZES = (40, 32, 20, 8)  # fraction 0.25 keeps 10, 8, 5, 2 (no rounding ties)


def _toy_dataset() -> Dataset:
    """100 training examples of 4 unbalanced classes in shuffled order; image i is filled with
    i / 100 so every row can be traced back to its example."""
    y = np.repeat(np.arange(len(CLASS_SIZES)), CLASS_SIZES).astype(np.int32)
    y = np.random.default_rng(123).permutation(y)
    n = len(y)
    x = np.broadcast_to((np.arange(n, dtype=np.float32) / n)[:, None, None, None], (n, 3, 3, 1)).copy()
    return Dataset("toy", x, y, x[:10].copy(), y[:10].copy(), num_classes=len(CLASS_SIZES))


def _ids(x):
    return np.rint(x[:, 0, 0, 0] * 100).astype(int)


def test_dataset_rejects_bad_shapes():
    x = np.zeros((5, 4, 4, 1), np.float32)
    y = np.zeros(5, np.int32)
    with pytest.raises(ValueError, match="x_train"):
        Dataset("bad", x[..., 0], y, x, y, num_classes=2)  # 3-D images
    with pytest.raises(ValueError, match="x_test"):
        Dataset("bad", x, y, x, y[:4], num_classes=2)  # one label short
    with pytest.raises(ValueError, match="x_train"):
        Dataset("bad", x, y[:, None], x, y, num_classes=2)  # labels [N, 1]


def test_hide_labels_keeps_a_stratified_fraction():
    ds = _toy_dataset()
    hidden = ds.hide_labels(0.25, seed=3)
    kept = hidden.y_train != UNLABELLED
    assert UNLABELLED == -1
    np.testing.assert_array_equal(hidden.y_train[kept], ds.y_train[kept])
    assert set(np.unique(hidden.y_train[~kept])) == {UNLABELLED}
    np.testing.assert_array_equal(np.bincount(hidden.y_train[kept], minlength=4), [10, 8, 5, 2])
    # Images and the test split are untouched; the original is not modified.
    np.testing.assert_array_equal(hidden.x_train, ds.x_train)
    np.testing.assert_array_equal(hidden.y_test, ds.y_test)
    assert np.all(ds.y_train != UNLABELLED)
    # Deterministic for a seed, different for another.
    np.testing.assert_array_equal(ds.hide_labels(0.25, seed=3).y_train, hidden.y_train)
    assert not np.array_equal(ds.hide_labels(0.25, seed=4).y_train, hidden.y_train)


def test_hide_labels_keeps_at_least_one_label_per_class():
    hidden = _toy_dataset().hide_labels(0.001, seed=0)
    np.testing.assert_array_equal(np.bincount(hidden.y_train[hidden.y_train >= 0], minlength=4), [1] * 4)
    assert np.sum(hidden.y_train == UNLABELLED) == 100 - 4


def test_hide_labels_with_fraction_one_keeps_everything():
    ds = _toy_dataset()
    np.testing.assert_array_equal(ds.hide_labels(1.0).y_train, ds.y_train)


def test_labelled_keeps_only_the_labelled_rows():
    ds = _toy_dataset()
    hidden = ds.hide_labels(0.25, seed=3)
    labelled = hidden.labelled()
    assert len(labelled.y_train) == 25 and labelled.x_train.shape == (25, 3, 3, 1)
    assert np.all(labelled.y_train != UNLABELLED)
    ids = _ids(labelled.x_train)
    np.testing.assert_array_equal(ids, np.flatnonzero(hidden.y_train != UNLABELLED))
    np.testing.assert_array_equal(labelled.y_train, ds.y_train[ids])  # labels still match images
    np.testing.assert_array_equal(labelled.x_test, ds.x_test)


def test_first_keeps_the_leading_examples_of_each_split():
    ds = _toy_dataset()
    head = ds.first(7, 3)
    np.testing.assert_array_equal(_ids(head.x_train), np.arange(7))
    np.testing.assert_array_equal(head.y_train, ds.y_train[:7])
    np.testing.assert_array_equal(head.x_test, ds.x_test[:3])
    np.testing.assert_array_equal(head.y_test, ds.y_test[:3])
    whole_test = ds.first(7)
    np.testing.assert_array_equal(whole_test.y_test, ds.y_test)


def test_holdout_splits_the_training_set_disjointly():
    ds = _toy_dataset()
    split = ds.holdout(0.2, seed=5)
    assert len(split.y_train) == 80 and len(split.y_test) == 20
    assert split.x_train.shape == (80, 3, 3, 1) and split.x_test.shape == (20, 3, 3, 1)
    train_ids, test_ids = _ids(split.x_train), _ids(split.x_test)
    assert not set(train_ids) & set(test_ids)
    assert sorted([*train_ids, *test_ids]) == list(range(100))
    np.testing.assert_array_equal(split.y_train, ds.y_train[train_ids])
    np.testing.assert_array_equal(split.y_test, ds.y_train[test_ids])
    assert split.name == ds.name  # still the same data set (a teacher check compares names)
    np.testing.assert_array_equal(ds.holdout(0.2, seed=5).x_test, split.x_test)
    assert set(_ids(ds.holdout(0.2, seed=6).x_test)) != set(test_ids)


# ---------------------------------------------------------------------------------------------
# epoch_indices


def test_epoch_indices_is_a_permutation_cut_into_full_batches():
    idx = np.asarray(epoch_indices(jax.random.key(0), 103, 10))
    chex.assert_shape(idx, (10, 10))  # 103 // 10 steps; the 3 left over are dropped
    assert np.issubdtype(idx.dtype, np.integer)
    assert len(np.unique(idx)) == 100
    assert idx.min() >= 0 and idx.max() < 103
    assert not np.array_equal(idx.ravel(), np.arange(100))  # shuffled


def test_epoch_indices_depends_on_the_key():
    a = np.asarray(epoch_indices(jax.random.key(0), 103, 10))
    b = np.asarray(epoch_indices(jax.random.key(1), 103, 10))
    np.testing.assert_array_equal(a, np.asarray(epoch_indices(jax.random.key(0), 103, 10)))
    assert not np.array_equal(a, b)
    assert set(a.ravel()) != set(b.ravel())  # a different key also drops different examples


def test_epoch_indices_with_batch_equal_to_data_is_one_step():
    idx = np.asarray(epoch_indices(jax.random.key(0), 103, 103))
    chex.assert_shape(idx, (1, 103))
    assert sorted(idx.ravel()) == list(range(103))


def test_epoch_indices_refuses_a_batch_larger_than_the_data():
    with pytest.raises(ValueError, match="batch_size 11"):
        epoch_indices(jax.random.key(0), 10, 11)


# ---------------------------------------------------------------------------------------------
# random_shift


def _np_translate(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[i, j] = image[i - dy, j - dx]``, zero where that falls outside."""
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _find_offsets(images: np.ndarray, shifted: np.ndarray, max_shift: int) -> list[tuple[int, int]]:
    """For each example, the offset (dy, dx) in [-s, s]^2 that reproduces it exactly."""
    found = []
    candidates = [
        (dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)
    ]
    for image, out in zip(images, shifted):
        matches = [o for o in candidates if np.array_equal(_np_translate(image, *o), out)]
        assert len(matches) == 1, f"no single offset in [-{max_shift}, {max_shift}]^2 matches: {matches}"
        found.append(matches[0])
    return found


def _images(batch, h, w, c, seed=0):
    # Strictly positive, so the zero fill can be told apart from the image.
    return np.random.default_rng(seed).uniform(0.1, 1.0, (batch, h, w, c)).astype(np.float32)


def test_random_shift_by_zero_is_the_identity():
    images = _images(4, 6, 6, 1)
    out = random_shift(jax.random.key(0), jnp.asarray(images), 0)
    np.testing.assert_array_equal(np.asarray(out), images)


def test_random_shift_translates_each_image_with_zero_fill():
    max_shift = 2
    images = _images(32, 9, 7, 3)
    out = np.asarray(random_shift(jax.random.key(1), jnp.asarray(images), max_shift))
    assert out.shape == images.shape and out.dtype == images.dtype
    offsets = _find_offsets(images, out, max_shift)
    assert len(set(offsets)) > 1  # independent offsets per example
    dys, dxs = zip(*offsets)
    assert min(dys) < 0 < max(dys) and min(dxs) < 0 < max(dxs)  # both directions occur
    # A different key gives different offsets.
    other = np.asarray(random_shift(jax.random.key(2), jnp.asarray(images), max_shift))
    assert _find_offsets(images, other, max_shift) != offsets


def test_random_shift_under_jit_matches_eager():
    images = jnp.asarray(_images(8, 8, 8, 1, seed=1))
    key = jax.random.key(3)
    shift = jax.jit(random_shift, static_argnums=2)
    jitted = shift(key, images, 1)
    chex.assert_shape(jitted, images.shape)
    assert jitted.dtype == images.dtype
    chex.assert_trees_all_close(jitted, random_shift(key, images, 1), rtol=0, atol=0)
    _find_offsets(np.asarray(images), np.asarray(jitted), 1)


def test_a_download_without_a_network_is_refused_at_once_in_one_line(monkeypatch):
    """tensorflow-datasets retries an unreachable server for minutes; an unprepared data set is
    refused before that when the download server cannot be reached."""
    tfds = pytest.importorskip("tensorflow_datasets")

    def unprepared(name, split, download):
        assert not download, "a download was attempted"
        raise KeyError("splits is empty")

    def unreachable(address, timeout):
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(tfds, "data_source", unprepared)
    monkeypatch.setattr("socket.create_connection", unreachable)
    with pytest.raises(ValueError) as error:
        load_tfds("mnist")
    assert str(error.value) == (
        "mnist is not in tensorflow-datasets' cache and its download server storage.googleapis.com cannot be "
        "reached (Name or service not known): pass --data-dir with the data set's files"
    )

"""Data sets by name: a directory of files, tensorflow-datasets, or data bundled with a package."""

import dataclasses

import numpy as np

from jdistill.data.cifar import CIFAR_STATS, load_cifar_dir
from jdistill.data.dataset import Dataset
from jdistill.data.mnist import load_mnist_dir
from jdistill.data.npz import load_npz

DATASETS = ("digits", "mnist", "cifar10", "cifar100", "npz", "records", "imagefolder")


def load_digits(*, test_fraction: float = 0.3, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, UCI), split stratified into train/test.

    Pixel values 0-16 are scaled to [0, 1]. Needs no download.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = (bunch.images[..., None] / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return Dataset("digits", x_train, y_train, x_test, y_test, num_classes=10)


DOWNLOAD_HOST = ("storage.googleapis.com", 443)  # tensorflow-datasets' servers (and MNIST's)


def _check_download_reachable(name: str) -> None:
    """Refuse at once, in one line, a download that cannot happen (no network): tensorflow-datasets
    would otherwise retry for minutes before failing."""
    import socket

    try:
        socket.create_connection(DOWNLOAD_HOST, timeout=5).close()
    except OSError as error:
        raise ValueError(
            f"{name} is not in tensorflow-datasets' cache and its download server {DOWNLOAD_HOST[0]} cannot "
            f"be reached ({error.strerror or error}): pass --data-dir with the data set's files"
        ) from None


def load_tfds(name: str) -> Dataset:
    """A tensorflow-datasets image-classification set with ``image`` and ``label`` features,
    read through ``tfds.data_source`` (no TensorFlow needed). Downloads on first use (refused at
    once when the download server cannot be reached)."""
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # not tfds' notes on its cache folders

    def sources(download: bool) -> dict:
        return {split: tfds.data_source(name, split=split, download=download) for split in ("train", "test")}

    def failure(error: Exception) -> ValueError:  # tfds raises many types: a missing name, no network, ...
        return ValueError(
            f"tensorflow-datasets could not provide {name!r} ({type(error).__name__}: {error}); "
            f"pass --data-dir with the files instead"
        )

    try:
        builder = tfds.builder(name)
    except Exception as e:
        raise failure(e) from e
    try:
        splits = sources(download=False)
    except Exception:  # not prepared yet: a download, which needs the network
        _check_download_reachable(name)
        try:
            splits = sources(download=True)
        except Exception as e:
            raise failure(e) from e
    arrays = {}
    for split, source in splits.items():
        examples = [source[i] for i in range(len(source))]
        arrays[f"x_{split}"] = (np.stack([ex["image"] for ex in examples]) / np.float32(255)).astype(
            np.float32
        )
        arrays[f"y_{split}"] = np.array([ex["label"] for ex in examples], dtype=np.int32)
    return Dataset(name, num_classes=builder.info.features["label"].num_classes, **arrays)


def load_dataset(name: str, data_dir: str | None = None, *, crop_size: int | None = None):
    """Load ``name``: ``digits`` (bundled), ``mnist`` (IDX files in ``data_dir``, else
    tensorflow-datasets), ``cifar10`` / ``cifar100`` (the official python-format folder in
    ``data_dir``, else tensorflow-datasets; normalised with the benchmark's statistics) or ``npz``
    (``data_dir`` is the file), each a :class:`Dataset` in memory; or, streamed from disk as
    training runs (:class:`jdistill.data.streamed.StreamedDataset`), ``records`` (record
    directories ``data_dir/train`` and ``data_dir/test``) or ``imagefolder`` (``data_dir/train``
    and ``data_dir/val``, ImageNet's layout, in crops of side ``crop_size``)."""
    if crop_size is not None and name != "imagefolder":
        raise ValueError(f"crop_size is for the imagefolder data set, not {name!r}")
    if name in ("records", "imagefolder"):
        from jdistill.data.streamed import load_image_folder, load_records

        return load_records(data_dir) if name == "records" else load_image_folder(data_dir, crop_size)
    if name == "digits":
        if data_dir is not None:
            raise ValueError(
                "digits: the data set is bundled with scikit-learn; do not pass a data directory"
            )
        return load_digits()
    if name == "mnist":
        return load_mnist_dir(data_dir) if data_dir is not None else load_tfds("mnist")
    if name in CIFAR_STATS:
        if data_dir is not None:
            return load_cifar_dir(name, data_dir)
        mean, std = CIFAR_STATS[name]
        return dataclasses.replace(load_tfds(name), mean=mean, std=std)
    if name == "npz":
        if data_dir is None:
            raise ValueError("npz: pass --data-dir with the path of the .npz file")
        return load_npz(data_dir)
    raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")

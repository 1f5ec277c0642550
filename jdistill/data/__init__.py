"""Data sets as arrays (:class:`Dataset`) and on-device batching and augmentation."""

from jdistill.data.dataset import UNLABELLED, Dataset
from jdistill.data.mnist import load_mnist_dir, read_idx
from jdistill.data.pipeline import epoch_indices, random_shift
from jdistill.data.sources import DATASETS, load_dataset, load_digits, load_tfds

__all__ = [
    "Dataset",
    "UNLABELLED",
    "DATASETS",
    "load_dataset",
    "load_digits",
    "load_mnist_dir",
    "load_tfds",
    "read_idx",
    "epoch_indices",
    "random_shift",
]

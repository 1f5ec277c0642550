"""Data sets as arrays (:class:`Dataset`) and on-device batching and augmentation."""

from jdistill.data.cifar import CIFAR_STATS, load_cifar_dir
from jdistill.data.dataset import UNLABELLED, Dataset
from jdistill.data.mnist import load_mnist_dir, read_idx
from jdistill.data.npz import load_npz
from jdistill.data.pipeline import augment, epoch_indices, random_flip, random_shift, seeded_epoch_indices
from jdistill.data.sources import DATASETS, load_dataset, load_digits, load_tfds

__all__ = [
    "CIFAR_STATS",
    "DATASETS",
    "UNLABELLED",
    "Dataset",
    "augment",
    "epoch_indices",
    "load_cifar_dir",
    "load_dataset",
    "load_digits",
    "load_mnist_dir",
    "load_npz",
    "load_tfds",
    "random_flip",
    "random_shift",
    "read_idx",
    "seeded_epoch_indices",
]

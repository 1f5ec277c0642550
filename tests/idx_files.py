"""IDX files (the MNIST format) written by hand, for tests of the loaders and the experiments."""

import gzip
import pathlib

import numpy as np


def idx_bytes(array: np.ndarray, *, type_code: int = 0x08, rank: int | None = None) -> bytes:
    """An uncompressed IDX file: 0x00 0x00 <type> <rank>, big-endian uint32 dims, uint8 data."""
    rank = array.ndim if rank is None else rank
    header = bytes([0, 0, type_code, rank]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.asarray(array, np.uint8).tobytes()


def write_idx(path: pathlib.Path, array: np.ndarray, **kwargs) -> None:
    path.write_bytes(gzip.compress(idx_bytes(array, **kwargs)))


def write_mnist_like(root: pathlib.Path, train: int = 1400, test: int = 397) -> pathlib.Path:
    """The four MNIST files in ``root``, made from scikit-learn's digits (8x8 scaled to 24x24,
    padded to 28x28, values 0..255): the first ``train`` of the first 1,400 as training images and
    the first ``test`` of the 397 others as test images."""
    from sklearn.datasets import load_digits

    from jdistill.data.mnist import FILES

    digits = load_digits()
    images = np.pad(np.kron(digits.images, np.ones((3, 3))) * (255 / 16), ((0, 0), (2, 2), (2, 2)))
    split = 1400
    arrays = {"x_train": images[:train], "y_train": digits.target[:train],
              "x_test": images[split:][:test], "y_test": digits.target[split:][:test]}  # fmt: skip
    for key, array in arrays.items():
        write_idx(root / FILES[key], np.asarray(array, np.uint8))
    return root

"""CIFAR-10/100 in the official python format.

CIFAR (Krizhevsky 2009): ``cifar-10-batches-py/`` (``data_batch_1`` .. ``5``, ``test_batch``) or
``cifar-100-python/`` (``train``, ``test``): pickled dicts whose ``data`` is [N, 3072] uint8 in
channel-major order (1024 red, 1024 green, 1024 blue values, rows of 32).
"""

import pathlib
import pickle

import numpy as np

from jdistill.data.dataset import Dataset

# Per-channel mean and standard deviation of the training images / 255, as the CRD/RepDistiller
# benchmark normalises them (CIFAR-100), and the usual CIFAR-10 figures.
CIFAR_STATS = {
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
_LAYOUT = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "labels",
        10,
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}


def _read_batches(folder: pathlib.Path, files: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        path = folder / name
        try:
            with path.open("rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            y = np.asarray(batch[label_key.encode()], dtype=np.int32)
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{path}: not a CIFAR python-format batch with 'data' and {label_key!r} ({e})"
            ) from e
        if data.ndim != 2 or data.shape[1] != 3072 or len(y) != len(data):
            raise ValueError(
                f"{path}: 'data' must be [N, 3072] with N labels; got {data.shape} and {len(y)} labels"
            )
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def load_cifar_dir(name: str, data_dir: str | pathlib.Path) -> Dataset:
    """CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels) from ``data_dir``:
    the extracted archive folder itself or the directory that contains it."""
    folder_name, train_files, test_files, label_key, num_classes = _LAYOUT[name]
    data_dir = pathlib.Path(data_dir)
    folder = data_dir if data_dir.name == folder_name else data_dir / folder_name
    missing = [f for f in train_files + test_files if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name}: {str(folder)!r} lacks {', '.join(missing)}; pass --data-dir pointing at the "
            f"extracted {folder_name}/ folder (or its parent) of the official python-format archive"
        )
    x_train, y_train = _read_batches(folder, train_files, label_key)
    x_test, y_test = _read_batches(folder, test_files, label_key)
    return from_uint8(name, x_train, y_train, x_test, y_test, num_classes, CIFAR_STATS[name])


def from_uint8(name, x_train, y_train, x_test, y_test, num_classes, stats, *, scale=255.0) -> Dataset:
    """A :class:`Dataset` of images scaled to [0, 1] that the pipeline normalises by ``stats``."""
    return Dataset(
        name=name,
        x_train=(x_train.astype(np.float32) / np.float32(scale)).astype(np.float32),
        y_train=y_train.astype(np.int32),
        x_test=(x_test.astype(np.float32) / np.float32(scale)).astype(np.float32),
        y_test=y_test.astype(np.int32),
        num_classes=num_classes,
        mean=stats[0],
        std=stats[1],
    )

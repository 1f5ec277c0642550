"""A user's own data set in one ``.npz`` file: ``x_train``, ``y_train``, ``x_test``, ``y_test`` and
optionally ``num_classes``. Images are [N, H, W, C] or [N, H, W]; vectors [N, D] are stored as
[N, 1, 1, D] (D channels of one pixel), which the MLPs read as D features. uint8 values are scaled
to [0, 1]; the data is normalised with its training set's per-channel mean and standard deviation.

Everything is checked before a run writes anything, each problem in one line naming the file:
a file that is not a readable ``.npz``, missing arrays, shapes, dtypes, empty splits, NaN or inf,
labels that are not integers in [0, num_classes).
"""

import pathlib
import zipfile

import numpy as np

from jdistill.data.cifar import from_uint8
from jdistill.data.dataset import Dataset

KEYS = ("x_train", "y_train", "x_test", "y_test")


def _read(path: pathlib.Path) -> tuple[dict, int | None]:
    with path.open("rb") as f:
        if f.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise ValueError(f"{path}: not a .npz file (it is not a zip archive); write it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as archive:
            files = archive.files
            arrays = {k: np.asarray(archive[k]) for k in files if k in (*KEYS, "num_classes")}
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as error:
        raise ValueError(
            f"{path}: not a readable .npz file ({type(error).__name__}: {error}); write it with numpy.savez"
        ) from None
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{path}: lacks array(s) {', '.join(missing)} (has {', '.join(files)})")
    declared = arrays.pop("num_classes", None)
    if declared is not None and (declared.ndim != 0 or not np.issubdtype(declared.dtype, np.integer)):
        raise ValueError(f"{path}: num_classes must be one integer, got {declared.dtype} {declared.shape}")
    return arrays, None if declared is None else int(declared)


def _check(path: pathlib.Path, arrays: dict, declared: int | None) -> int:
    """The class count, after checking every array."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim not in (2, 3, 4):
            raise ValueError(
                f"{path}: x_{split} must be images [N, H, W, C] or [N, H, W], or vectors [N, D]; "
                f"got shape {x.shape}"
            )
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise ValueError(f"{path}: x_{split} must hold integers or floats, got {x.dtype}")
        if len(x) == 0:
            raise ValueError(f"{path}: x_{split} is empty")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: y_{split} must be integer labels [N], got {y.dtype} {y.shape}")
        if len(y) != len(x):
            raise ValueError(f"{path}: x_{split} has {len(x)} examples but y_{split} {len(y)} labels")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            first = int(np.flatnonzero((~np.isfinite(x.reshape(len(x), -1))).any(axis=1))[0])
            raise ValueError(f"{path}: x_{split} holds NaN or inf (first in example {first})")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(
            f"{path}: x_train examples are {arrays['x_train'].shape[1:]} "
            f"but x_test's {arrays['x_test'].shape[1:]}"
        )
    labels = np.concatenate([arrays["y_train"], arrays["y_test"]])
    low, high = int(labels.min()), int(labels.max())
    if declared is not None:
        if low < 0 or high >= declared:
            raise ValueError(f"{path}: labels run {low}..{high}, outside [0, num_classes={declared})")
        return declared
    if low < 0:
        raise ValueError(f"{path}: labels must be 0..C-1, got a label {low}")
    if low > 0:
        raise ValueError(
            f"{path}: labels run {low}..{high} and class 0 never occurs; labels must be 0..C-1 "
            f"(subtract {low}, or store num_classes in the file if class 0 is real but absent)"
        )
    return high + 1


def load_npz(path: str | pathlib.Path, name: str = "npz") -> Dataset:
    """The data set in ``path`` (see the module docstring), checked."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"npz data set {str(path)!r} does not exist; pass --data-dir with the path of a .npz file "
            f"holding x_train, y_train, x_test, y_test"
        )
    arrays, declared = _read(path)
    num_classes = _check(path, arrays, declared)
    x_train, x_test = (
        x[:, None, None, :] if x.ndim == 2 else x[..., None] if x.ndim == 3 else x
        for x in (arrays["x_train"], arrays["x_test"])
    )
    scale = np.float32(255) if x_train.dtype == np.uint8 else np.float32(1)
    x01 = x_train.astype(np.float32) / scale
    std = x01.std(axis=(0, 1, 2))
    stats = (tuple(x01.mean(axis=(0, 1, 2)).tolist()), tuple(np.where(std > 0, std, 1.0).tolist()))
    return from_uint8(
        name, x_train, arrays["y_train"], x_test, arrays["y_test"], num_classes, stats, scale=scale
    )

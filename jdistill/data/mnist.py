"""MNIST from the four original IDX ``.gz`` files (LeCun, Cortes, Burges)."""

import gzip
import hashlib
import pathlib
import zlib

import numpy as np

from jdistill.data.dataset import Dataset

FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
# md5 of the uncompressed official files; checked when a file has the official size.
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}
OFFICIAL_COUNT = {
    "train-images-idx3-ubyte.gz": 60000,
    "train-labels-idx1-ubyte.gz": 60000,
    "t10k-images-idx3-ubyte.gz": 10000,
    "t10k-labels-idx1-ubyte.gz": 10000,
}
_MAGIC_UBYTE = 0x08  # IDX type code for unsigned bytes


def read_idx(path: pathlib.Path, expected_rank: int) -> np.ndarray:
    """Parse one gzip-compressed IDX file of unsigned bytes into an array."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: not a readable gzip file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _MAGIC_UBYTE or raw[3] != expected_rank:
        raise ValueError(
            f"{path}: not an IDX file of unsigned bytes with {expected_rank} dimension(s) "
            f"(header {raw[:4].hex()}, expected 000008{expected_rank:02x})"
        )
    header_end = 4 + 4 * expected_rank
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_rank))
    if len(raw) != header_end + int(np.prod(shape)):
        raise ValueError(
            f"{path}: header says shape {shape} ({int(np.prod(shape))} bytes of data) "
            f"but the file holds {len(raw) - header_end}; the file is truncated or corrupt"
        )
    if path.name in OFFICIAL_MD5 and shape[0] == OFFICIAL_COUNT[path.name]:
        digest = hashlib.md5(raw).hexdigest()
        if digest != OFFICIAL_MD5[path.name]:
            raise ValueError(
                f"{path}: md5 of the uncompressed content is {digest}, the official "
                f"file's is {OFFICIAL_MD5[path.name]}; the file is corrupt"
            )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_end).reshape(shape)


def load_mnist_dir(data_dir: str | pathlib.Path) -> Dataset:
    """Load MNIST from ``data_dir`` holding the four IDX ``.gz`` files under their official names."""
    data_dir = pathlib.Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"MNIST data directory {str(data_dir)!r} does not exist; expected a "
            f"directory holding {', '.join(FILES.values())}"
        )
    missing = [f for f in FILES.values() if not (data_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"MNIST data directory {str(data_dir)!r} lacks {', '.join(missing)}; "
            f"expected the four IDX files {', '.join(FILES.values())}"
        )
    arrays = {key: read_idx(data_dir / name, 3 if key.startswith("x") else 1) for key, name in FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{data_dir}: {FILES['x_' + split]} holds {x.shape[0]} images but "
                f"{FILES['y_' + split]} holds {y.shape[0]} labels"
            )
        if y.size and y.max() > 9:
            raise ValueError(f"{data_dir}: {FILES['y_' + split]} has label {y.max()}, expected 0-9")
    return Dataset(
        name="mnist",
        x_train=(arrays["x_train"][..., None] / np.float32(255)).astype(np.float32),
        y_train=arrays["y_train"].astype(np.int32),
        x_test=(arrays["x_test"][..., None] / np.float32(255)).astype(np.float32),
        y_test=arrays["y_test"].astype(np.int32),
        num_classes=10,
    )

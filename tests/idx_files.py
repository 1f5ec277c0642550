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

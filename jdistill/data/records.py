"""A record store for data sets larger than memory: fixed-shape examples as memory-mapped ``.npy``
files in a directory (:func:`write_records`, :func:`write_record_chunks`), read at random by
:class:`RecordSource` (grain's ``RandomAccessDataSource`` protocol) as
:class:`jdistill.data.streaming.BatchStream` reads them; :class:`ArraySource` gives in-memory arrays
the same form."""

import dataclasses
import json
import pathlib

import numpy as np

MANIFEST = "manifest.json"
FORMAT = "jdistill-records"
CHUNK = 4096  # examples copied at a time by write_records


def write_records(directory, images, labels, *, num_classes=None, mean=None, std=None) -> pathlib.Path:
    """Store ``images`` [N, H, W, C] (uint8 or float; a memory map is copied a chunk at a time) and
    integer ``labels`` [N] as a record directory; see :func:`write_record_chunks`."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    chunks = ((images[i : i + CHUNK], labels[i : i + CHUNK]) for i in range(0, len(labels), CHUNK))
    return write_record_chunks(
        directory, chunks, count=len(labels), num_classes=num_classes, mean=mean, std=std
    )


def write_record_chunks(directory, chunks, *, count, num_classes=None, mean=None, std=None) -> pathlib.Path:
    """Store ``count`` examples arriving as ``(images, labels)`` chunks (so that no more than a chunk
    is ever in memory) as ``images.npy`` [count, H, W, C], ``labels.npy`` int32 [count] and
    ``manifest.json`` (shape, dtype, count, class count, the per-channel ``mean`` and ``std`` of the
    images scaled to [0, 1] if known). The manifest is written last: a directory without it is
    incomplete and :class:`RecordSource` refuses it. ``num_classes`` defaults to the largest label + 1."""
    directory = pathlib.Path(directory)
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    if (directory / MANIFEST).exists():
        raise ValueError(f"{directory} already holds records; write to a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    images_out = labels_out = None
    written, top = 0, -1
    for images, labels in chunks:
        images, labels = np.asarray(images), np.asarray(labels)
        _check_chunk(images, labels, written, num_classes)
        if images_out is None:
            images_out = np.lib.format.open_memmap(
                directory / "images.npy", mode="w+", dtype=images.dtype, shape=(count, *images.shape[1:])
            )
            labels_out = np.lib.format.open_memmap(
                directory / "labels.npy", mode="w+", dtype=np.int32, shape=(count,)
            )
        elif images.shape[1:] != images_out.shape[1:] or images.dtype != images_out.dtype:
            raise ValueError(
                f"images from example {written} are {images.dtype} {images.shape[1:]}, "
                f"the first ones {images_out.dtype} {images_out.shape[1:]}"
            )
        if written + len(labels) > count:
            raise ValueError(f"the chunks hold more than count={count} examples")
        images_out[written : written + len(labels)] = images
        labels_out[written : written + len(labels)] = labels
        written += len(labels)
        top = max(top, int(labels.max(initial=-1)))
    if written != count:
        raise ValueError(f"the chunks held {written} examples, not count={count}")
    images_out.flush()
    labels_out.flush()
    manifest = {
        "format": FORMAT,
        "count": count,
        "image_shape": list(images_out.shape[1:]),
        "dtype": images_out.dtype.str,
        "num_classes": top + 1 if num_classes is None else int(num_classes),
        "mean": _stat("mean", mean, images_out.shape[-1]),
        "std": _stat("std", std, images_out.shape[-1]),
    }
    del images_out, labels_out
    partial = directory / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=1) + "\n")
    partial.replace(directory / MANIFEST)
    return directory


def _check_chunk(images: np.ndarray, labels: np.ndarray, first: int, num_classes) -> None:
    if images.ndim != 4 or not (images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)):
        raise ValueError(f"images must be uint8 or float [N, H, W, C], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) != len(images):
        raise ValueError(
            f"labels must be integers [{len(images)}] beside the images, got {labels.dtype} {labels.shape}"
        )
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        raise ValueError(f"images from example {first} hold NaN or inf")
    if len(labels) and (labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes)):
        raise ValueError(
            f"labels from example {first} run {labels.min()}..{labels.max()}, outside [0, num_classes={num_classes})"
        )


def _stat(name: str, value, channels: int) -> list[float] | None:
    if value is None:
        return None
    value = [float(v) for v in value]
    if len(value) != channels or (name == "std" and min(value) <= 0):
        raise ValueError(
            f"{name} must be {channels} values" + (" above 0" if name == "std" else "") + f", got {value}"
        )
    return value


class RecordSource:
    """The examples of a record directory, memory-mapped (``np.load(mmap_mode="r")``): ``source[i]``
    is ``{"image", "label"}`` (grain's ``RandomAccessDataSource`` protocol). It pickles as its path,
    so worker processes map the files themselves instead of receiving a copy of the data."""

    def __init__(self, directory):
        self.directory = pathlib.Path(directory)
        path = self.directory / MANIFEST
        if not path.is_file():
            raise ValueError(
                f"{self.directory}: no {MANIFEST} (not a record directory, or its writing did not finish)"
            )
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} manifest")
        self.images = np.load(self.directory / "images.npy", mmap_mode="r")
        self.labels = np.load(self.directory / "labels.npy", mmap_mode="r")
        expected = (manifest["count"], *manifest["image_shape"])
        if (
            self.images.shape != expected
            or self.images.dtype != np.dtype(manifest["dtype"])
            or self.labels.shape != expected[:1]
        ):
            raise ValueError(
                f"{self.directory}: images {self.images.dtype} {self.images.shape} and labels {self.labels.shape} "
                f"do not match the manifest ({manifest['dtype']} {expected})"
            )
        self.num_classes = manifest["num_classes"]
        self.mean = None if manifest["mean"] is None else tuple(manifest["mean"])
        self.std = None if manifest["std"] is None else tuple(manifest["std"])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index) -> dict:
        return {"image": np.array(self.images[index]), "label": np.int32(self.labels[index])}

    def __getstate__(self) -> dict:
        return {"directory": str(self.directory)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"])


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySource:
    """In-memory ``images`` [N, ...] and ``labels`` [N] as a random-access source."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if np.ndim(self.labels) != 1 or len(self.images) != len(self.labels):
            raise ValueError(
                f"labels must be [N] beside images [N, ...], got {np.shape(self.labels)} and {np.shape(self.images)}"
            )

    @classmethod
    def training_set(cls, dataset) -> "ArraySource":
        """The training split of a :class:`jdistill.data.Dataset`."""
        return cls(dataset.x_train, dataset.y_train)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index) -> dict:
        return {"image": self.images[index], "label": self.labels[index]}


def write_dataset(dataset, directory) -> pathlib.Path:
    """A :class:`jdistill.data.Dataset`'s splits as ``directory/train`` and ``directory/test``, with
    its class count and normalisation: uint8 (x 255) when every pixel is a whole multiple of 1/255
    (MNIST, CIFAR), else float32."""
    directory = pathlib.Path(directory)
    whole = all(_whole_multiples_of_255(x) for x in (dataset.x_train, dataset.x_test))
    for split, x, y in (
        ("train", dataset.x_train, dataset.y_train),
        ("test", dataset.x_test, dataset.y_test),
    ):
        chunks = ((_as_stored(x[i : i + CHUNK], whole), y[i : i + CHUNK]) for i in range(0, len(y), CHUNK))
        write_record_chunks(directory / split, chunks, count=len(y), num_classes=dataset.num_classes,
                            mean=dataset.mean, std=dataset.std)  # fmt: skip
    return directory


def _whole_multiples_of_255(x) -> bool:
    return all(np.allclose(x[i : i + CHUNK] * 255, np.round(x[i : i + CHUNK] * 255), atol=1e-4)
               for i in range(0, len(x), CHUNK))  # fmt: skip


def _as_stored(x, whole: bool) -> np.ndarray:
    return np.round(np.asarray(x) * 255).astype(np.uint8) if whole else np.asarray(x, np.float32)

"""Data sets read from disk while training runs, never whole in memory: a record store
(:mod:`jdistill.data.records`; ``--dataset records``) or an ImageNet-style image folder
(:mod:`jdistill.data.image_folder`; ``--dataset imagefolder``). The training loop streams their
batches from the host (:class:`jdistill.train.sources.StreamSource`), each process reading its part
of every batch, and evaluates on their test split batch by batch."""

import dataclasses
import pathlib

import numpy as np

from jdistill.data.image_folder import ImageFolder, RandomResizedCrop, ResizeCenterCrop
from jdistill.data.records import RecordSource

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # of images in [0, 1]
DEFAULT_CROP = 224


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedDataset:
    """``train`` and ``test``: random-access sources of ``{"image", "label"}`` (raw images, scaled
    by ``scale`` into [0, 1] on the device); ``train_transform`` / ``test_transform``:
    ``transform(image, rng)`` on the host (a random-resized crop; a resize and centre crop), giving
    images of ``input_shape``; ``mean`` / ``std``: the normalisation after augmentation, as
    :class:`jdistill.data.Dataset`'s."""

    name: str
    train: object
    test: object
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float = 1.0
    train_transform: object = None
    test_transform: object = None

    streamed = True

    @property
    def y_train(self) -> np.ndarray:
        """Every training label (CRD's memory banks draw negatives by class)."""
        return np.asarray(self.train.labels, np.int32)

    def normalise(self, images):
        """``(images - mean) / std`` per channel; unchanged without statistics."""
        if self.mean is None:
            return images
        return (images - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)


def load_records(data_dir) -> StreamedDataset:
    """``data_dir/train`` and ``data_dir/test``: record directories of one image shape and class
    count (:func:`jdistill.data.records.write_records`)."""
    root = _directory(data_dir, "records")
    train, test = RecordSource(root / "train"), RecordSource(root / "test")
    if train.image_shape != test.image_shape or train.images.dtype != test.images.dtype:
        raise ValueError(
            f"{root}: train holds {train.images.dtype} {train.image_shape} images, test {test.images.dtype} "
            f"{test.image_shape}"
        )
    if train.num_classes != test.num_classes:
        raise ValueError(f"{root}: train has {train.num_classes} classes, test {test.num_classes}")
    if len(train.image_shape) != 3:
        raise ValueError(f"{root}: images must be [H, W, C], got {train.image_shape}")
    return StreamedDataset(
        "records",
        train,
        test,
        train.num_classes,
        train.image_shape,
        train.mean,
        train.std,
        scale=1 / 255 if train.images.dtype == np.uint8 else 1.0,
    )


def load_image_folder(data_dir, crop_size: int | None = None) -> StreamedDataset:
    """``data_dir/train`` and ``data_dir/val`` (ImageNet's layout; ``test`` if there is no
    ``val``), ``root/<class>/<images>``: training on random-resized crops of side ``crop_size``
    (default 224) and flips, evaluation on the centre crop of a resize to ``crop_size / 0.875``;
    ImageNet's normalisation."""
    root = _directory(data_dir, "imagefolder")
    held = root / "val" if (root / "val").is_dir() else root / "test"
    train, test = ImageFolder(root / "train"), ImageFolder(held)
    if train.classes != test.classes:
        raise ValueError(f"{root}: train/ and {held.name}/ have different class folders")
    size = DEFAULT_CROP if crop_size is None else crop_size
    if size < 1:
        raise ValueError(f"crop_size must be a positive integer, got {size}")
    mean, std = IMAGENET_STATS
    return StreamedDataset("imagefolder", train, test, train.num_classes, (size, size, 3), mean, std,
                           scale=1 / 255, train_transform=RandomResizedCrop(size),
                           test_transform=ResizeCenterCrop(size))  # fmt: skip


def _directory(data_dir, name: str) -> pathlib.Path:
    if data_dir is None:
        raise ValueError(f"{name}: pass --data-dir, the directory that holds its train and test splits")
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"{name}: --data-dir {root} is not a directory")
    return root

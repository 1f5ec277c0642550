"""ImageNet-style folders, ``root/<class>/<images>``, as a random-access source (the class folders
sorted by name give the labels, as in torchvision's ``ImageFolder``), and the standard ImageNet
transforms on the host with PIL's bilinear resampling: torchvision's ``RandomResizedCrop`` then a
horizontal flip for training, ``Resize`` then ``CenterCrop`` for evaluation. Every random choice
comes from the generator passed in: :class:`jdistill.data.streaming.BatchStream` seeds one per
seed, epoch and example, so the crop of an example depends on nothing else.
"""

import dataclasses
import math
import os
import pathlib

import numpy as np
from PIL import Image

EXTENSIONS = (".jpg", ".jpeg", ".png")  # compared in lower case
EVAL_CROP_FRACTION = 0.875  # the evaluation crop is 224 of a 256 resize


def load_rgb(path) -> np.ndarray:
    """The image file at ``path`` as uint8 [H, W, 3] RGB (grayscale, palette and RGBA converted)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class ImageFolder:
    """The images under ``root/<class name>/`` (searched recursively, files with ``extensions`` in
    any case), classes numbered in sorted name order and files in torchvision's order:
    ``folder[i]`` is ``{"image": uint8 [H, W, 3] at the file's own size, "label": int32}``."""

    def __init__(self, root, *, extensions=EXTENSIONS):
        self.root = pathlib.Path(root)
        if not self.root.is_dir():
            raise ValueError(f"image folder {str(self.root)!r} is not a directory")
        self.classes = tuple(sorted(entry.name for entry in os.scandir(self.root) if entry.is_dir()))
        if not self.classes:
            raise ValueError(f"{self.root}: no class folders (expected root/<class name>/<image files>)")
        suffixes = tuple(e.lower() for e in extensions)
        paths, labels, empty = [], [], []
        for label, name in enumerate(self.classes):
            found = [
                os.path.relpath(os.path.join(folder, file), self.root)
                for folder, _, files in sorted(os.walk(self.root / name, followlinks=True))
                for file in sorted(files)
                if file.lower().endswith(suffixes)
            ]
            empty += [] if found else [name]
            paths += found
            labels += [label] * len(found)
        if empty:
            raise ValueError(
                f"{self.root}: no {'/'.join(suffixes)} files in class folder(s) {', '.join(empty)}"
            )
        self.paths = tuple(paths)
        self.labels = np.asarray(labels, np.int32)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_to_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> dict:
        return {"image": load_rgb(self.root / self.paths[index]), "label": self.labels[index]}


def crop_box(rng: np.random.Generator, height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """``(top, left, box height, box width)`` of a random crop, torchvision's ``RandomResizedCrop``
    choice (Szegedy et al. 2015): up to 10 tries of an area fraction uniform in ``scale`` and an
    aspect ratio (width / height) log-uniform in ``ratio``, the first box that fits placed uniformly;
    if none fits, :func:`central_box`."""
    area = height * width
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_low, log_high))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return central_box(height, width, ratio)


def central_box(height: int, width: int, ratio=(3 / 4, 4 / 3)):
    """The largest centred box whose aspect ratio is the image's clamped to ``ratio`` (the whole
    image when its ratio is within): :func:`crop_box`'s fallback."""
    if width / height < min(ratio):
        h, w = round(width / min(ratio)), width
    elif width / height > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 image [H, W] or [H, W, C], got {image.dtype} {image.shape}")
    return Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image).convert(
        "RGB"
    )


def _check_range(name: str, value) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if not 0 < low <= high:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {tuple(value)}")
    return low, high


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop:
    """The ImageNet training augmentation: a :func:`crop_box` box resized to ``size`` x ``size``
    (bilinear), mirrored left-right with probability 1/2 when ``flip``; uint8 [size, size, 3]."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        object.__setattr__(self, "scale", _check_range("scale", self.scale))
        object.__setattr__(self, "ratio", _check_range("ratio", self.ratio))

    def __call__(self, image, rng: np.random.Generator) -> np.ndarray:
        image = _pil(image)
        top, left, h, w = crop_box(rng, image.height, image.width, self.scale, self.ratio)
        crop = image.crop((left, top, left + w, top + h)).resize(
            (self.size, self.size), Image.Resampling.BILINEAR
        )
        out = np.asarray(crop)
        if self.flip and rng.random() < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)


@dataclasses.dataclass(frozen=True)
class ResizeCenterCrop:
    """The ImageNet evaluation transform: the shorter side resized to ``resize`` (bilinear; default
    ``floor(size / 0.875)``, 256 for 224), then the central ``size`` x ``size``; uint8 [size, size, 3].
    Takes no randomness (``rng`` is ignored)."""

    size: int
    resize: int | None = None

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        if self.resize is None:
            object.__setattr__(self, "resize", math.floor(self.size / EVAL_CROP_FRACTION))
        if self.resize < self.size:
            raise ValueError(f"resize {self.resize} is smaller than the crop size {self.size}")

    def __call__(self, image, rng=None) -> np.ndarray:
        image = _pil(image)
        width, height = image.size
        if width <= height:  # torchvision's Resize(int): the longer side truncated
            new = (self.resize, int(self.resize * height / width))
        else:
            new = (int(self.resize * width / height), self.resize)
        if new != image.size:
            image = image.resize(new, Image.Resampling.BILINEAR)
        top, left = round((new[1] - self.size) / 2), round((new[0] - self.size) / 2)
        return np.asarray(image.crop((left, top, left + self.size, top + self.size)))

"""Where a game's batches come from: an in-memory data set (gathered, augmented and normalised on
the device), a data set streamed from disk (read on the host, augmented and normalised on the
device), or Gaussian noise (a generator's input, a latent point). The device's part runs inside
the jitted round; :func:`jdistill.train.fit` puts their arrays on the devices and shards each
batch."""

import dataclasses

import jax
import numpy as np

from jdistill.data import Dataset, augment, seeded_epoch_indices


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Batches of ``batch_size`` training examples of ``dataset`` in a fresh random order every
    epoch (the last partial batch dropped): ``{"image", "label", "index"}``, the images translated
    by up to ``max_shift`` pixels (zero fill), mirrored at random when ``hflip``, then normalised
    with the data set's statistics."""

    dataset: Dataset
    batch_size: int
    max_shift: int = 0
    hflip: bool = False

    def __post_init__(self):
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size {self.batch_size} is larger than the training set "
                f"({len(self.dataset.y_train)} examples)"
            )

    @property
    def steps_per_epoch(self) -> int:
        return len(self.dataset.y_train) // self.batch_size

    @property
    def augmented(self) -> bool:
        return bool(self.max_shift or self.hflip)

    def arrays(self) -> dict:
        return {"x": self.dataset.x_train, "y": self.dataset.y_train.astype(np.int32)}

    def order(self, seed: int, epoch: int) -> jax.Array:
        return seeded_epoch_indices(seed, epoch, len(self.dataset.y_train), self.batch_size)

    def batch(self, arrays: dict, indices: jax.Array, key: jax.Array) -> dict:
        images = augment(key, arrays["x"][indices], self.max_shift, self.hflip)
        return {"image": self.dataset.normalise(images), "label": arrays["y"][indices], "index": indices}

    def images(self) -> np.ndarray:
        """Every training image as the batches show them without augmentation."""
        return np.asarray(self.dataset.normalise(self.dataset.x_train), np.float32)


@dataclasses.dataclass(frozen=True)
class StreamSource:
    """Batches of a :class:`~jdistill.data.streamed.StreamedDataset` read from disk on the host in
    :class:`DataSource`'s order (:class:`~jdistill.data.streaming.BatchStream`: each process its part
    of every batch, after the data set's host transform such as a random-resized crop), then on the
    device scaled into [0, 1], translated, mirrored and normalised as :class:`DataSource` does.
    The loop passes each call's batches to the round (``streamed``); nothing of the training set
    stays on the devices."""

    dataset: object
    batch_size: int
    max_shift: int = 0
    hflip: bool = False
    augmented = True  # the teacher's outputs are computed on each batch
    streamed = True

    def __post_init__(self):
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size {self.batch_size} is larger than the training set ({len(self.dataset.train)} examples)"
            )

    @property
    def steps_per_epoch(self) -> int:
        return len(self.dataset.train) // self.batch_size

    def arrays(self) -> dict:
        return {}

    def order(self, seed: int, epoch: int) -> None:
        return None

    def stream(self, seed: int, epoch: int):
        """This process's stream of raw batches from the start of ``epoch``."""
        from jdistill.data.streaming import BatchStream

        return BatchStream(self.dataset.train, self.batch_size, seed=seed, epoch=epoch,
                           transform=self.dataset.train_transform, process_index=jax.process_index(),
                           process_count=jax.process_count())  # fmt: skip

    def batch(self, raw: dict, indices, key: jax.Array) -> dict:
        """The round's batch from its raw images ``raw`` (one row of the stream's batches)."""
        images = raw["image"].astype(np.float32) * np.float32(self.dataset.scale)
        images = augment(key, images, self.max_shift, self.hflip)
        return {"image": self.dataset.normalise(images), "label": raw["label"], "index": raw["index"]}


@dataclasses.dataclass(frozen=True)
class TokenSource:
    """Batches of ``batch_size`` packed token sequences (:class:`jdistill.data.text.Sequences`) in
    a fresh random order every epoch: ``{"tokens" [B, T + 1], "mask" [B, T + 1], "index"}``, and
    with ``teacher_top_k`` (a teacher's cached ``(indices, log_probs)`` [N, T, k] per sequence)
    ``"teacher_indices"`` and ``"teacher_log_probs"`` [B, T, k]."""

    sequences: object
    batch_size: int
    teacher_top_k: tuple | None = None
    augmented = False

    def __post_init__(self):
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size {self.batch_size} is larger than the training set ({len(self.sequences.tokens)} "
                "sequences)"
            )

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sequences.tokens) // self.batch_size

    def arrays(self) -> dict:
        arrays = {"tokens": self.sequences.tokens.astype(np.int32), "mask": self.sequences.mask}
        if self.teacher_top_k is not None:
            arrays["teacher_indices"], arrays["teacher_log_probs"] = self.teacher_top_k
        return arrays

    def order(self, seed: int, epoch: int) -> jax.Array:
        return seeded_epoch_indices(seed, epoch, len(self.sequences.tokens), self.batch_size)

    def batch(self, arrays: dict, indices: jax.Array, key: jax.Array) -> dict:
        return {**{name: array[indices] for name, array in arrays.items()}, "index": indices}


@dataclasses.dataclass(frozen=True)
class NoiseSource:
    """``{"z": [batch_size, dim]}`` drawn from N(0, I) in every round; an epoch is
    ``steps_per_epoch`` rounds."""

    batch_size: int
    dim: int
    steps_per_epoch: int
    augmented = True  # nothing to compute once: every round's batch is new

    def arrays(self) -> dict:
        return {}

    def order(self, seed: int, epoch: int) -> None:
        return None

    def batch(self, arrays: dict, indices, key: jax.Array) -> dict:
        return self.fresh(key)

    def fresh(self, key: jax.Array) -> dict:
        return {"z": jax.random.normal(key, (self.batch_size, self.dim))}

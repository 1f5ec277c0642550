"""The in-memory data set every loader returns."""

import dataclasses

import numpy as np

UNLABELLED = -1  # label of a training example whose label is hidden


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images as float32 NHWC in [0, 1] and integer labels, split into train and test."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    # Per-channel normalisation ``(x - mean) / std`` applied on the device after augmentation
    # (e.g. the CIFAR benchmark's statistics); ``None``: the images are used as they are.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 4 or y.shape != (x.shape[0],):
                raise ValueError(
                    f"{self.name}: x_{split} must be [N, H, W, C] with y_{split} [N]; "
                    f"got {x.shape} and {y.shape}"
                )
        for stat in ("mean", "std"):
            value = getattr(self, stat)
            if value is not None and len(value) != self.x_train.shape[-1]:
                raise ValueError(
                    f"{self.name}: {stat} has {len(value)} values for {self.x_train.shape[-1]} channels"
                )

    def normalise(self, images):
        """``(images - mean) / std`` per channel (NumPy or JAX arrays); unchanged without stats."""
        if self.mean is None:
            return images
        return (images - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def first(self, train: int | None = None, test: int | None = None) -> "Dataset":
        """The first ``train`` training and ``test`` test examples (``None``: the whole split),
        for smoke runs and fixed subsets."""
        return dataclasses.replace(
            self,
            x_train=self.x_train[:train],
            y_train=self.y_train[:train],
            x_test=self.x_test[:test],
            y_test=self.y_test[:test],
        )

    def hide_labels(self, labelled_fraction: float, *, seed: int = 0) -> "Dataset":
        """Keep the labels of a random ``labelled_fraction`` of the training set (stratified, so
        every class keeps labels) and set the others to ``UNLABELLED``: the images remain as an
        unlabelled transfer set."""
        if labelled_fraction == 1.0:
            return self
        rng = np.random.default_rng(seed)
        y = np.full_like(self.y_train, UNLABELLED)
        for c in np.unique(self.y_train):
            members = rng.permutation(np.flatnonzero(self.y_train == c))
            keep = members[: max(1, int(round(labelled_fraction * len(members))))]
            y[keep] = self.y_train[keep]
        return dataclasses.replace(self, y_train=y)

    def with_label_noise(self, rate: float, *, seed: int = 0) -> "Dataset":
        """Symmetric label noise on the training set: each training label, independently with
        probability ``rate``, is replaced by a class drawn uniformly from the *other* classes (so
        a corrupted label is always wrong, and the expected fraction of wrong labels is ``rate``).
        The test set is untouched; the same ``seed`` corrupts the same examples the same way."""
        if not 0 <= rate < 1:
            raise ValueError(f"label noise rate must be in [0, 1), got {rate}")
        if rate == 0:
            return self
        rng = np.random.default_rng(seed)
        flip = rng.random(len(self.y_train)) < rate
        # An offset in 1..C-1 added modulo C: uniform over the classes other than the true one.
        offset = rng.integers(1, self.num_classes, size=len(self.y_train))
        y = np.where(flip, (self.y_train + offset) % self.num_classes, self.y_train)
        return dataclasses.replace(self, y_train=y.astype(self.y_train.dtype))

    def labelled(self) -> "Dataset":
        """Only the training examples whose label is known."""
        keep = self.y_train != UNLABELLED
        return dataclasses.replace(self, x_train=self.x_train[keep], y_train=self.y_train[keep])

    def without_classes(self, classes) -> "Dataset":
        """The training set without the examples of ``classes`` (the test set keeps them)."""
        unknown = sorted(set(classes) - set(range(self.num_classes)))
        if unknown:
            raise ValueError(f"{self.name}: no class {unknown} (classes are 0..{self.num_classes - 1})")
        keep = ~np.isin(self.y_train, list(classes))
        return dataclasses.replace(self, x_train=self.x_train[keep], y_train=self.y_train[keep])

    def holdout(self, fraction: float, *, seed: int = 0) -> "Dataset":
        """Move a random ``fraction`` of the training set into the test split (for model choice
        without touching the real test set)."""
        order = np.random.default_rng(seed).permutation(len(self.y_train))
        n_held = int(round(fraction * len(order)))
        held, kept = order[:n_held], order[n_held:]
        return dataclasses.replace(
            self,
            x_train=self.x_train[kept],
            y_train=self.y_train[kept],
            x_test=self.x_train[held],
            y_test=self.y_train[held],
        )

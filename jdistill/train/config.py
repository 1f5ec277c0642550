"""One configuration for every run: teacher training (no teacher, method ``ce``) or distillation."""

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from jdistill.models.layers import INITS


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result. Saved as ``config.json`` in the run directory.

    Distillation runs name a ``teacher`` run directory and ``methods``; the objective is
    ``sum_term weight[term] * mean_batch(term)`` over the terms the methods return
    (see :mod:`jdistill.methods`). ``weights`` overrides the methods' default weights.
    The learning rate is ``learning_rate * schedule(step)``; ``schedule`` is ``cosine`` (to zero
    over the run), ``constant``, or ``step`` (times ``lr_decay`` at each of the epochs
    ``lr_milestones``), after a linear warm-up over ``warmup_epochs``. Training images are
    translated by up to ``max_shift`` pixels (zero fill: a random crop of the zero-padded image)
    and mirrored left-right at random when ``hflip``. Methods with an initialisation stage (AB,
    FT, FSP) run it before the ``epochs`` of training.
    ``max_norm`` caps the L2 norm of each unit's incoming weights after every update (Srivastava
    et al. 2014); ``clip_norm`` clips the gradient's global norm before the optimizer sees it.
    ``holdout_fraction`` > 0 evaluates on that (fixed) fraction of the training set
    instead of the test set, for hyperparameter choice; ``exclude_classes`` removes those classes
    from the training (transfer) set, not from the test set. ``label_noise`` corrupts that fraction
    of the training labels (symmetric noise, seeded by ``label_noise_seed``; see
    :meth:`jdistill.data.Dataset.with_label_noise`); the test labels stay clean. ``init`` is the
    model's initialisation: ``flax`` (LeCun-normal kernels, zero biases) or ``torch`` (PyTorch's
    defaults, :func:`jdistill.models.layers.torch_init`).
    """

    model: str
    dataset: str
    epochs: int
    seed: int = 0
    data_dir: str | None = None
    batch_size: int = 128
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    schedule: str = "cosine"
    lr_milestones: tuple[int, ...] = ()
    lr_decay: float = 0.1
    warmup_epochs: int = 0
    initial_momentum: float | None = None
    momentum_ramp_epochs: int = 0
    dampening: bool = False
    max_shift: int = 0
    hflip: bool = False
    max_norm: float | None = None
    clip_norm: float | None = None
    holdout_fraction: float = 0.0
    exclude_classes: tuple[int, ...] = ()
    teacher: str | None = None
    methods: tuple[str, ...] = ("ce",)
    weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    method_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    temperature: float = 4.0
    labelled_fraction: float = 1.0
    label_noise: float = 0.0
    label_noise_seed: int = 0
    checkpoint_every: int = 1
    eval_every: int = 1
    init: str = "flax"

    def __post_init__(self):
        for name in ("epochs", "batch_size", "checkpoint_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer: choose 'sgd' or 'adam', got {self.optimizer!r}")
        if self.init not in INITS:
            raise ValueError(f"init: choose {' or '.join(map(repr, INITS))}, got {self.init!r}")
        if self.schedule not in ("cosine", "constant", "step", "exponential"):
            raise ValueError(
                f"schedule: choose 'cosine', 'constant', 'step' or 'exponential', got {self.schedule!r}"
            )
        if (self.initial_momentum is not None or self.dampening) and self.optimizer != "sgd":
            raise ValueError("initial_momentum and dampening are options of the sgd optimizer")
        if self.initial_momentum is not None and not 0 <= self.initial_momentum < 1:
            raise ValueError(f"initial_momentum must be in [0, 1), got {self.initial_momentum}")
        if self.momentum_ramp_epochs < 0 or (self.momentum_ramp_epochs and self.initial_momentum is None):
            raise ValueError(
                f"momentum_ramp_epochs ({self.momentum_ramp_epochs}) needs initial_momentum and must be >= 0"
            )
        object.__setattr__(self, "lr_milestones", tuple(int(e) for e in self.lr_milestones))
        if self.schedule == "step" and not all(0 < e < self.epochs for e in self.lr_milestones):
            raise ValueError(
                f"lr_milestones must be epochs in (0, epochs={self.epochs}), got {list(self.lr_milestones)}"
            )
        if self.lr_milestones and self.schedule != "step":
            raise ValueError(f"lr_milestones are used by the 'step' schedule only, not {self.schedule!r}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        for name in ("max_norm", "clip_norm"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 (or None for no constraint), got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if not 0 <= self.label_noise < 1:
            raise ValueError(f"label_noise must be in [0, 1), got {self.label_noise}")
        if not 0 < self.labelled_fraction <= 1:
            raise ValueError(f"labelled_fraction must be in (0, 1], got {self.labelled_fraction}")
        if self.teacher is None and tuple(self.methods) != ("ce",):
            raise ValueError(f"methods {'+'.join(self.methods)} need a teacher run directory")
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "exclude_classes", tuple(int(c) for c in self.exclude_classes))
        object.__setattr__(self, "weights", dict(self.weights))
        object.__setattr__(self, "method_options", {k: dict(v) for k, v in self.method_options.items()})
        unused = sorted(set(self.method_options) - set(self.methods))
        if unused:
            raise ValueError(
                f"method_options given for {', '.join(unused)}, which is not among the methods "
                f"{'+'.join(self.methods)}"
            )

    def build(self, dataset=None):
        """The game of this run (:func:`jdistill.train.distill.build`)."""
        from jdistill.train.distill import build

        return build(self, dataset)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls(**json.loads(text))

"""One configuration for every run: teacher training (no teacher, method ``ce``) or distillation.

:class:`RunConfig` nests a :class:`ModelConfig`, a :class:`DataConfig`, a :class:`LoopConfig`, an
:class:`OptimizerConfig` (the one optimizer description of every player, in every game) and a
:class:`DistillConfig`; :mod:`jdistill.train.groups` gives every leaf one flat name.
"""

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from jdistill.models.layers import INITS
from jdistill.train import groups
from jdistill.train.groups import option

DTYPES = ("float32", "bfloat16")  # compute dtypes of ModelConfig.dtype

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant", "step", "exponential")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network trained: a built-in model and its initialisation (``flax``: LeCun-normal kernels,
    zero biases; ``torch``: PyTorch's defaults, :func:`jdistill.models.layers.torch_init`)."""

    name: str = option(help="built-in model name (see 'jdistill models')")
    init: str = option(
        "flax",
        choices=INITS,
        help="initialisation: flax (LeCun-normal kernels, zero biases) or torch (PyTorch's defaults: "
        "kernels and biases U(+-1/sqrt(fan_in)))",
    )
    dtype: str = option(
        "float32",
        choices=DTYPES,
        help="compute dtype of the training steps: bfloat16 computes the forward and backward passes in "
        "bfloat16 while the parameters, optimizer state, batch statistics, losses and evaluation stay "
        "float32 (train-teacher and distill)",
    )

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"init: choose {' or '.join(map(repr, INITS))}, got {self.init!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: choose {' or '.join(map(repr, DTYPES))}, got {self.dtype!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The data: which set, where, what is held out or changed, and the training augmentation.

    Training images are translated by up to ``max_shift`` pixels (a random crop of the zero-padded
    image) and mirrored at random when ``hflip``. ``holdout_fraction`` > 0 evaluates on that fixed
    fraction of the training set instead of the test set; ``exclude_classes`` removes classes from
    the training (transfer) set only; ``label_noise`` replaces that fraction of the training labels
    by another class (:meth:`jdistill.data.Dataset.with_label_noise`); ``labelled_fraction`` keeps
    the labels of that stratified fraction."""

    dataset: str = option(
        help="data set: 'digits' (bundled with scikit-learn), 'mnist', 'cifar10', 'cifar100', or 'npz' "
        "(one .npz file with x_train, y_train, x_test, y_test), held in memory; or, streamed from disk, "
        "'records' (jdistill write-records) or 'imagefolder' (ImageNet's train/ and val/ folders)"
    )
    data_dir: str | None = option(
        None,
        help="where the data set's files are: for mnist the directory of the four IDX .gz files, for "
        "cifar10/100 the extracted python-format folder or its parent, for npz the file, for records and "
        "imagefolder the directory of the splits; without it, mnist and cifar come through "
        "tensorflow-datasets",
    )
    crop_size: int | None = option(
        None, help="imagefolder: side of the training crops and the evaluation's centre crop (default 224)"
    )
    holdout_fraction: float = option(
        0.0,
        help="evaluate on this fraction of the training set, held out (fixed), instead of the test set: "
        "for choosing hyperparameters without touching the test set",
    )
    exclude_classes: tuple[int, ...] = option(
        (), help="classes removed from the training (transfer) set, comma-separated, e.g. 3"
    )
    labelled_fraction: float = option(
        1.0,
        help="keep the labels of this fraction of the training set (stratified, fixed); teacher runs "
        "train on those, distillation on every image",
    )
    label_noise: float = option(
        0.0,
        help="replace this fraction of the training labels by a random other class (symmetric noise); "
        "the test labels stay clean",
    )
    label_noise_seed: int = option(0, help="seed of the label noise")
    max_shift: int = option(
        0,
        help="random translation of each training image by up to this many pixels (4 = the CIFAR "
        "benchmark's random crop with 4-pixel padding)",
    )
    hflip: bool = option(False, help="random horizontal flips of the training images")

    def __post_init__(self):
        object.__setattr__(self, "exclude_classes", tuple(int(c) for c in self.exclude_classes))
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if not 0 <= self.label_noise < 1:
            raise ValueError(f"label_noise must be in [0, 1), got {self.label_noise}")
        if not 0 < self.labelled_fraction <= 1:
            raise ValueError(f"labelled_fraction must be in (0, 1], got {self.labelled_fraction}")
        if self.max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {self.max_shift}")


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How long and in what order: ``epochs`` passes of ``batch_size`` (the global batch, split
    over the devices), ``seed`` of initialisation, data order, dropout and augmentation
    (``data_seed``, if given, of the data order and augmentation instead); how often to evaluate and
    checkpoint (not part of a run's identity)."""

    epochs: int = option(help="passes over the training set (required unless a preset gives it)")
    batch_size: int = option(128, help="global batch, split over all devices")
    seed: int = option(0, help="seed of initialisation, data order, dropout, jitter")
    data_seed: int | None = option(
        None,
        help="seed of the data order and jitter alone (default: --seed); runs trained together with "
        "--seeds share their batches, and the teacher's outputs on them, when it is given",
    )
    eval_every: int = option(1, help="evaluate every N epochs (and at the end)")
    checkpoint_every: int = option(1, help="save a checkpoint every N epochs")

    def __post_init__(self):
        for name in ("epochs", "batch_size", "checkpoint_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """A player's optimizer, as :class:`jdistill.train.optim.Optimizer` runs it: ``sgd`` (momentum,
    coupled weight decay) or ``adam`` (``b1``, decoupled weight decay), at
    ``learning_rate * schedule(step)``.
    ``schedule``: ``cosine`` (to zero over the run), ``constant``, ``step`` (times ``lr_decay`` at
    each of the epochs ``lr_milestones``) or ``exponential`` (times ``lr_decay`` every epoch), after a
    linear warm-up over ``warmup_epochs``. ``initial_momentum`` ramps SGD's momentum up to
    ``momentum`` over ``momentum_ramp_epochs``; ``dampening`` scales each gradient by ``1 - momentum``
    (Hinton et al. 2012). ``clip_norm`` clips the gradient's global norm; ``max_norm`` caps each
    unit's incoming weight norm after every update (Srivastava et al. 2014). ``ema_decay`` keeps the
    debiased exponential moving average of the parameters, evaluated beside them (``ema/``
    metrics); it does not change the training."""

    name: str = option(
        "sgd",
        choices=OPTIMIZERS,
        help="sgd (momentum, coupled weight decay) or adam (decoupled weight decay)",
    )
    learning_rate: float = option(0.05, help="base learning rate")
    momentum: float = option(0.9, help="SGD momentum")
    nesterov: bool = option(True, help="Nesterov momentum (SGD)")
    weight_decay: float = option(0.0, help="weight decay")
    b1: float = option(0.9, help="Adam's first-moment decay (DCGAN's discriminators: 0.5)")
    schedule: str = option(
        "cosine",
        choices=SCHEDULES,
        help="learning-rate schedule over the run: cosine, constant, step (x lr-decay at --lr-milestones) "
        "or exponential (x lr-decay every epoch)",
    )
    lr_milestones: tuple[int, ...] = option((), help="epochs of the step schedule, comma-separated")
    lr_decay: float = option(0.1, help="factor of the step and exponential schedules")
    warmup_epochs: int = option(0, help="linear learning-rate warm-up from 0 over N epochs")
    initial_momentum: float | None = option(
        None, help="SGD momentum at the start, raised linearly to --momentum over --momentum-ramp-epochs"
    )
    momentum_ramp_epochs: int = option(0, help="epochs of the momentum ramp")
    dampening: bool = option(False, help="scale each gradient by 1 - momentum before the trace (SGD)")
    clip_norm: float | None = option(None, help="clip the gradient to this global norm before each update")
    max_norm: float | None = option(
        None, help="cap the L2 norm of each unit's incoming weights after every update (max-norm)"
    )
    ema_decay: float | None = option(
        None,
        help="keep an exponential moving average of the parameters with this decay (e.g. 0.999), "
        "debiased, and evaluate it too (metrics ema/...); training is unchanged",
    )

    def __post_init__(self):
        object.__setattr__(self, "lr_milestones", tuple(int(e) for e in self.lr_milestones))
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer: choose 'sgd' or 'adam', got {self.name!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule: choose 'cosine', 'constant', 'step' or 'exponential', got {self.schedule!r}"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.b1 < 1:
            raise ValueError(f"b1 must be in [0, 1), got {self.b1}")
        for name in ("momentum", "weight_decay", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if (self.initial_momentum is not None or self.dampening) and self.name != "sgd":
            raise ValueError("initial_momentum and dampening are options of the sgd optimizer")
        if self.initial_momentum is not None and not 0 <= self.initial_momentum < 1:
            raise ValueError(f"initial_momentum must be in [0, 1), got {self.initial_momentum}")
        if self.momentum_ramp_epochs < 0 or (self.momentum_ramp_epochs and self.initial_momentum is None):
            raise ValueError(
                f"momentum_ramp_epochs ({self.momentum_ramp_epochs}) needs initial_momentum and must be >= 0"
            )
        if self.lr_milestones and self.schedule != "step":
            raise ValueError(f"lr_milestones are used by the 'step' schedule only, not {self.schedule!r}")
        for name in ("max_norm", "clip_norm"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 (or None for no constraint), got {getattr(self, name)}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) (or None for no average), got {self.ema_decay}")

    def check_epochs(self, epochs: int) -> None:
        """Refuse milestones or a warm-up that do not fit in a run of ``epochs``."""
        if self.schedule == "step" and not all(0 < e < epochs for e in self.lr_milestones):
            raise ValueError(
                f"lr_milestones must be epochs in (0, epochs={epochs}), got {list(self.lr_milestones)}"
            )
        if not self.warmup_epochs < epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={epochs}), got {self.warmup_epochs}")

    def build(self, epochs: int, steps_per_epoch: int, trains=None, **options):
        """The :class:`jdistill.train.optim.Optimizer` of a run of ``epochs`` epochs of
        ``steps_per_epoch`` steps; ``options`` (``b1``, ...) pass through."""
        from jdistill.train import optim

        schedule = optim.schedule(
            self.schedule,
            epochs * steps_per_epoch,
            warmup_steps=self.warmup_epochs * steps_per_epoch,
            milestones=[e * steps_per_epoch for e in self.lr_milestones],
            decay=self.lr_decay,
            steps_per_epoch=steps_per_epoch,
        )
        momentum = None
        if self.initial_momentum is not None:
            momentum = optim.momentum_ramp(
                self.initial_momentum, self.momentum, self.momentum_ramp_epochs * steps_per_epoch
            )
        return optim.Optimizer(
            self.name,
            self.learning_rate,
            schedule,
            momentum=self.momentum,
            nesterov=self.nesterov,
            weight_decay=self.weight_decay,
            clip_norm=self.clip_norm,
            max_norm=self.max_norm,
            trains=trains,
            momentum_schedule=momentum,
            dampening=self.dampening,
            b1=self.b1,
            ema_decay=self.ema_decay,
            **options,
        )


def refuse_average(optimizer: OptimizerConfig, flag: str, player: str) -> None:
    """One line refusing a moving average (``ema_decay``) for ``player``, whose parameters no
    evaluation reads (a generator, a discriminator)."""
    if optimizer.ema_decay is not None:
        raise ValueError(
            f"{flag}: the {player} is never evaluated, so an average of its parameters would not be used"
        )


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """What the student learns from: a finished ``teacher`` run directory and the ``methods``; the
    objective is ``sum_term weights[term] * mean_batch(term)`` over the terms the methods return
    (:mod:`jdistill.methods`), ``weights`` overriding the methods' defaults. Methods with an
    initialisation stage (AB, FT, FSP) run it before the epochs of training."""

    teacher: str | None = option(None, help="run directory of a finished 'train-teacher' run")
    methods: tuple[str, ...] = option(("ce",), help="methods joined by '+', e.g. kd or kd+fitnet")
    weights: Mapping[str, float] = option(
        {}, help="weight of a loss term, TERM=W, repeatable (e.g. kd=0.9); an unknown term is an error"
    )
    method_options: Mapping[str, Mapping[str, Any]] = option(
        {}, help="a method's option, METHOD.FIELD=VALUE (JSON or a string), repeatable"
    )
    temperature: float = option(4.0, help="softmax temperature T of the kd and dkd terms")
    teacher_cache: str | None = option(
        None,
        help="a directory written by 'jdistill cache-teacher' for this teacher and data: its outputs are "
        "read instead of running the teacher (refused if they were written for another teacher or other "
        "images, or if the run augments its batches)",
    )

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "weights", dict(self.weights))
        object.__setattr__(self, "method_options", {k: dict(v) for k, v in self.method_options.items()})
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.teacher_cache is not None and self.teacher is None:
            raise ValueError("a teacher cache needs its teacher run directory (--teacher) too")
        if self.teacher is None and self.methods != ("ce",):
            raise ValueError(f"methods {'+'.join(self.methods)} need a teacher run directory")
        unused = sorted(set(self.method_options) - set(self.methods))
        if unused:
            raise ValueError(
                f"method_options given for {', '.join(unused)}, which is not among the methods "
                f"{'+'.join(self.methods)}"
            )


@dataclasses.dataclass(frozen=True, init=False)
class RunConfig(groups.Grouped):
    """Everything that determines a teacher-training or distillation run; saved as ``config.json``.

    Built from its groups, from flat names (``RunConfig(model="mlp", dataset="digits", epochs=3,
    learning_rate=0.1)``; :mod:`jdistill.train.groups`), or both (flat names set fields of the
    given groups); ``config.replace(...)`` changes some. Read the groups:
    ``config.optimizer.learning_rate``, ``config.loop.epochs``.
    """

    # jdistill 0.2's flat field order, for positional arguments: RunConfig("mlp32", "digits", 3)
    POSITIONAL = (
        "model", "dataset", "epochs", "seed", "data_dir", "batch_size", "optimizer", "learning_rate",
        "momentum", "nesterov", "weight_decay", "schedule", "lr_milestones", "lr_decay", "warmup_epochs",
        "initial_momentum", "momentum_ramp_epochs", "dampening", "max_shift", "hflip", "max_norm",
        "clip_norm", "holdout_fraction", "exclude_classes", "teacher", "methods", "weights",
        "method_options", "temperature", "labelled_fraction", "label_noise", "label_noise_seed",
        "checkpoint_every", "eval_every", "init",
    )  # fmt: skip

    model: ModelConfig
    data: DataConfig
    loop: LoopConfig
    optimizer: OptimizerConfig = OptimizerConfig()
    distill: DistillConfig = DistillConfig()

    def __post_init__(self):
        self.optimizer.check_epochs(self.loop.epochs)

    def build(self, dataset=None):
        """The game of this run (:func:`jdistill.train.distill.build`)."""
        from jdistill.train.distill import build

        return build(self, dataset)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return groups.from_record(cls, json.loads(text))

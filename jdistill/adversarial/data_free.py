"""Data-free distillation: a generator synthesises the transfer set, the frozen teacher judges it,
and the student never sees a real training image.

- DFAD (Fang et al. 2019): the student minimises the mean absolute logit difference
  (:func:`jdistill.losses.dfad`) on fresh noise, ``k`` steps (5), then the generator maximises it.
- DAFL (Chen et al. 2019): the generator makes the teacher confident, class-balanced and strongly
  activated (:func:`jdistill.losses.dafl_generator`); the student matches the teacher by KL at
  T = 1 on the same images; one step of each per iteration.
- ZSKT (Micaelli & Storkey 2019): the generator maximises the forward KL (:func:`jdistill.losses.
  zskt_belief`) for one step, then the student minimises it plus attention transfer for ``k``
  steps (10) on the same noise.

``build(DataFreeConfig) -> Game``: two players (``student``, ``generator``) with their own
optimizers and schedules; an iteration is one round of their moves. The run writes a sample grid
every ``samples_every`` iterations and, per epoch, statistics of generated samples
(:func:`jdistill.adversarial.inspection.make_generated_statistics`): the class histogram of the
teacher's predictions (where mode collapse shows), the teacher's mean absolute logit and the
largest absolute pixel (where a generator that exploits the teacher shows).

The teacher matters as much as the game: :func:`paper_teacher` is the configuration each
method's reference code trains its MNIST teacher with.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jdistill import losses
from jdistill.adversarial import inspection
from jdistill.data import Dataset, load_dataset
from jdistill.losses.adversarial import DAFL_INFORMATION_ENTROPY_WEIGHT
from jdistill.models import create_model
from jdistill.models.generator import Generator
from jdistill.models.layers import torch_init
from jdistill.train import groups, optim
from jdistill.train.config import ModelConfig, OptimizerConfig, RunConfig, refuse_average
from jdistill.train.distill import load_teacher
from jdistill.train.evaluate import ClassifierEvaluator
from jdistill.train.fit import deprecated_run
from jdistill.train.game import MODEL, Game, Move, Phase
from jdistill.train.groups import option
from jdistill.train.player import Player, Trainable
from jdistill.train.sources import NoiseSource

DATA_FREE_METHODS = ("dfad", "dafl", "zskt")


@dataclasses.dataclass(frozen=True)
class Alternation:
    """How a method's players alternate within one iteration."""

    student_steps: int  # student steps per generator step
    generator_first: bool  # ZSKT: generator step, then the student's
    same_noise: bool  # the student's steps reuse the generator step's noise (DAFL, ZSKT)


ALTERNATIONS = {
    "dfad": Alternation(student_steps=5, generator_first=False, same_noise=False),
    "dafl": Alternation(student_steps=1, generator_first=False, same_noise=True),
    "zskt": Alternation(student_steps=10, generator_first=True, same_noise=True),
}

# The papers' optimizers (see ../shared/reference/paper-tables.md): (optimizer, lr, weight decay).
PAPER_OPTIMIZERS = {
    "dfad": {"student": ("sgd", 0.01, 1e-4), "generator": ("adam", 1e-3, 0.0)},
    "dafl": {"student": ("adam", 2e-3, 0.0), "generator": ("adam", 0.2, 0.0)},
    "zskt": {"student": ("adam", 2e-3, 0.0), "generator": ("adam", 1e-3, 0.0)},
}

# The LeNet-5 teachers of the reference code, as RunConfig fields, on MNIST resized to 32x32
# (PyTorch, so PyTorch's initialisation). DFAD (train_teacher.py as run_mnist.sh calls it): SGD
# 0.01, momentum 0.9 (not Nesterov), coupled weight decay 1e-4, batch 256, constant, 10 epochs.
# DAFL (teacher-train.py): Adam 1e-3, batch 256, constant, 9 epochs (its loop is range(1, 10)).
# ZSKT has no MNIST teacher (its authors: any standard training will do): DFAD's.
PAPER_TEACHER_IMAGE_SIZE = 32
PAPER_TEACHERS = {
    "dfad": {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9, "nesterov": False,
             "weight_decay": 1e-4, "batch_size": 256, "schedule": "constant", "epochs": 10, "init": "torch"},
    "dafl": {"optimizer": "adam", "learning_rate": 1e-3, "weight_decay": 0.0, "batch_size": 256,
             "schedule": "constant", "epochs": 9, "init": "torch"},
}  # fmt: skip
PAPER_TEACHERS["zskt"] = PAPER_TEACHERS["dfad"]


def paper_teacher(method: str, **fields) -> RunConfig:
    """The :class:`RunConfig` of ``method``'s teacher: LeNet-5 on MNIST with
    ``PAPER_TEACHERS[method]``, ``fields`` added or overriding (``data_dir``, ``seed``, ...).
    Train it on ``teacher_dataset(dataset, PAPER_TEACHER_IMAGE_SIZE)``."""
    if method not in DATA_FREE_METHODS:
        raise ValueError(f"unknown data-free method {method!r}; choose one of {', '.join(DATA_FREE_METHODS)}")
    return RunConfig(**{"model": "lenet5", "dataset": "mnist", **PAPER_TEACHERS[method], **fields})


def paper_optimizers(method: str) -> dict[str, OptimizerConfig]:
    """The optimizers of ``method``'s paper (:data:`PAPER_OPTIMIZERS`), at a constant rate: SGD with
    plain momentum 0.9 and coupled weight decay, or Adam with decoupled weight decay."""
    (s_opt, s_lr, s_wd), (g_opt, g_lr, g_wd) = PAPER_OPTIMIZERS[method].values()
    common = {"momentum": 0.9, "nesterov": False, "schedule": "constant"}
    return {
        "student_optimizer": OptimizerConfig(s_opt, s_lr, weight_decay=s_wd, **common),
        "generator_optimizer": OptimizerConfig(g_opt, g_lr, weight_decay=g_wd, **common),
    }


@dataclasses.dataclass(frozen=True, init=False)
class DataFreeConfig(groups.Grouped):
    """One data-free run. ``data_dir`` is read for the teacher's test set only (to evaluate the
    student); the training images are read only for the normalisation statistics that the
    teacher was trained with (:func:`teacher_dataset`). The players' optimizers default to the
    method's paper's (:func:`paper_optimizers`); their schedules count each player's own steps.
    ``init="torch"`` draws the student's and the generator's dense and convolution layers as
    PyTorch does (:func:`jdistill.models.layers.torch_init`), as the papers' code runs them."""

    FORMER_NAMES = {
        "teacher_dir": "teacher",
        "student": "model",
        "student_lr": "student_learning_rate",
        "generator_lr": "generator_learning_rate",
        "grad_clip": ("student_clip_norm", "generator_clip_norm"),
    }

    teacher: str
    method: str = "dfad"
    model: ModelConfig = ModelConfig("lenet5_half")
    dataset: str = "mnist"
    data_dir: str | None = None
    image_size: int | None = None  # resize the data set's images (32: the papers' MNIST)
    seed: int = 0
    iterations: int = 2000
    iterations_per_epoch: int = 50  # metrics, evaluation and checkpoints once per epoch
    batch_size: int = 256
    noise_dim: int = 100
    generator_width: int = 64
    generator_bn_epsilon: float | None = None  # None: the method's (DAFL 0.8, else 1e-5)
    student_steps: int | None = None  # per generator step; None: the method's (DFAD 5, DAFL 1, ZSKT 10)
    student_optimizer: OptimizerConfig = option(OptimizerConfig(), prefix="student", help="the student's")
    generator_optimizer: OptimizerConfig = option(
        OptimizerConfig(), prefix="generator", help="the generator's"
    )
    at_weight: float = 250.0  # ZSKT's attention transfer
    at_features: tuple[str, ...] = ("conv1", "conv2")
    activation_feature: str = "fc1"  # DAFL's teacher features (LeNet-5's 120-d layer)
    # DAFL's generator objective (losses.dafl_generator), the reference code's --oh, --ie, --a on MNIST;
    # the class-balance weight is in natural-log units (the reference's 5 with log10 = 5 / ln 10).
    one_hot_weight: float = 1.0
    information_entropy_weight: float = DAFL_INFORMATION_ENTROPY_WEIGHT
    activation_weight: float = 0.1
    samples_every: int = 500  # iterations between sample grids
    checkpoint_every: int = 1  # epochs
    histogram_samples: int = 2048
    # On a collapse into one class (inspection.COLLAPSED), back to the last checkpoint with new noise,
    # at most this many times (the DAFL authors' remedy); 0: the collapse is only named.
    collapse_restarts: int = 0

    @classmethod
    def default_groups(cls, values) -> dict[str, OptimizerConfig]:
        method = values.get("method", "dfad")
        return paper_optimizers(method) if method in DATA_FREE_METHODS else {}

    def __post_init__(self):
        if self.method not in DATA_FREE_METHODS:
            raise ValueError(
                f"unknown data-free method {self.method!r}; choose one of {', '.join(DATA_FREE_METHODS)}"
            )
        defaults = {
            "student_steps": ALTERNATIONS[self.method].student_steps,
            "generator_bn_epsilon": 0.8 if self.method == "dafl" else 1e-5,
        }
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        object.__setattr__(self, "at_features", tuple(self.at_features))
        for name in (
            "iterations",
            "iterations_per_epoch",
            "batch_size",
            "noise_dim",
            "generator_width",
            "student_steps",
            "samples_every",
            "histogram_samples",
            "checkpoint_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.collapse_restarts < 0:
            raise ValueError(f"collapse_restarts must be at least 0, got {self.collapse_restarts}")
        refuse_average(self.generator_optimizer, "generator_ema_decay", "generator")
        if self.iterations % self.iterations_per_epoch:
            raise ValueError(
                f"iterations ({self.iterations}) must be a multiple of iterations_per_epoch "
                f"({self.iterations_per_epoch})"
            )
        for optimizer in (self.student_optimizer, self.generator_optimizer):
            optimizer.check_epochs(self.epochs)

    @property
    def alternation(self) -> Alternation:
        return dataclasses.replace(ALTERNATIONS[self.method], student_steps=self.student_steps)

    @property
    def epochs(self) -> int:
        return self.iterations // self.iterations_per_epoch

    def build(self, dataset: Dataset | None = None) -> Game:
        return build(self, dataset)


def teacher_dataset(dataset: Dataset, image_size: int | None = None) -> Dataset:
    """The images as a data-free teacher sees them: resized to ``image_size`` (bilinear) and
    standardised per channel with the training set's statistics, unless the data set already
    carries its own (CIFAR). The generator's last BatchNorm produces standardised images too."""
    if image_size is not None and dataset.input_shape[0] != image_size:

        def resize(x):
            shape = (x.shape[0], image_size, image_size, x.shape[-1])
            return np.asarray(jax.image.resize(x, shape, "bilinear"), np.float32)

        dataset = dataclasses.replace(dataset, x_train=resize(dataset.x_train), x_test=resize(dataset.x_test))
    if dataset.mean is None:
        mean, std = dataset.x_train.mean(axis=(0, 1, 2)), dataset.x_train.std(axis=(0, 1, 2))
        dataset = dataclasses.replace(dataset, mean=tuple(map(float, mean)), std=tuple(map(float, std)))
    return dataset


def student_loss(config: DataFreeConfig, view):
    """The student's step on the generator's images (held fixed) and the teacher's outputs."""
    images = jax.lax.stop_gradient(view.module("generator")(view.batch["z"]))
    t_logits, t_feats = jax.lax.stop_gradient(view.teacher().model(images, train=False))
    s_logits, s_feats = view.module("student").model(images, train=True, dropout_key=view.key(MODEL))
    if config.method == "dfad":
        terms = {"l1": jnp.mean(losses.dfad(s_logits, t_logits))}
    elif config.method == "dafl":
        terms = {"kl": jnp.mean(losses.kd(s_logits, t_logits, temperature=1.0))}
    else:
        terms = {"kl": jnp.mean(losses.zskt_belief(s_logits, t_logits))}
        at = sum(jnp.mean(losses.attention_transfer(s_feats[n], t_feats[n])) for n in config.at_features)
        terms["at"] = config.at_weight * at
    loss = sum(terms.values())
    agreement = jnp.mean(jnp.argmax(s_logits, -1) == jnp.argmax(t_logits, -1))
    return loss, {"loss": loss, "agreement": agreement, **terms}


def generator_loss(config: DataFreeConfig, view):
    """The generator's step against the frozen teacher (its gradient flows through the teacher to
    the images) and the current student in inference mode."""
    images = view.module("generator")(view.batch["z"])
    t_logits, t_feats = view.teacher().model(images, train=False)
    s_logits, _ = view.module("student").model(images, train=False)
    if config.method == "dfad":
        terms = {"l1": jnp.mean(losses.dfad_generator(s_logits, t_logits))}
    elif config.method == "zskt":
        terms = {"kl": jnp.mean(losses.zskt_generator(s_logits, t_logits))}
    else:
        terms = {
            "one_hot": config.one_hot_weight * jnp.mean(losses.dafl_one_hot(t_logits)),
            "information_entropy": config.information_entropy_weight
            * losses.dafl_information_entropy(t_logits),
            "activation": config.activation_weight
            * losses.dafl_activation(t_feats[config.activation_feature]),
        }
    loss = sum(terms.values())
    return loss, {"loss": loss, **terms}


def optimizers(config: DataFreeConfig) -> dict[str, optim.Optimizer]:
    """The players' optimizers: the schedules count each player's own steps."""
    per_epoch = config.iterations_per_epoch
    return {
        "student": config.student_optimizer.build(config.epochs, per_epoch * config.student_steps),
        "generator": config.generator_optimizer.build(config.epochs, per_epoch),
    }


def build(config: DataFreeConfig, dataset: Dataset | None = None) -> Game:
    """The data-free game ``config`` describes, at step 0."""
    if config.model.dtype != "float32":
        raise ValueError(f"data-free games compute in float32 only, not {config.model.dtype}")
    dataset = teacher_dataset(
        dataset if dataset is not None else load_dataset(config.dataset, config.data_dir), config.image_size
    )
    teacher = load_teacher(config.teacher, dataset)
    needed = {"dfad": (), "dafl": (config.activation_feature,), "zskt": config.at_features}[config.method]
    missing = [n for n in needed if n not in teacher.shapes]
    if missing:
        raise ValueError(
            f"the teacher has no feature {missing[0]!r} (method {config.method}); "
            f"its features: {', '.join(sorted(teacher.shapes))}"
        )
    rngs = nnx.Rngs(config.seed)
    model = create_model(config.model.name, dataset.input_shape, dataset.num_classes, rngs=rngs)
    generator = Generator(
        dataset.input_shape,
        noise_dim=config.noise_dim,
        width=config.generator_width,
        bn_epsilon=config.generator_bn_epsilon,
        rngs=rngs,
    )
    if config.model.init == "torch":
        torch_init(model, rngs)
        torch_init(generator, rngs)
    student = Trainable(model)
    opts = optimizers(config)
    players = {
        "student": Player.create(student, opts["student"]),
        "generator": Player.create(generator, opts["generator"]),
    }
    alternation = config.alternation
    moves = (
        Move(
            "student",
            functools.partial(student_loss, config),
            alternation.student_steps,
            fresh_batch=not alternation.same_noise,
            prefix="student/",
        ),
        Move("generator", functools.partial(generator_loss, config), prefix="generator/"),
    )
    return Game(
        config=config,
        players=players,
        phases=(Phase("train", config.epochs, moves[::-1] if alternation.generator_first else moves),),
        source=NoiseSource(config.batch_size, config.noise_dim, config.iterations_per_epoch),
        seed=config.seed,
        evaluate=ClassifierEvaluator(
            dataset, teacher="teacher", logits=lambda m, x: m.model(x, train=False)[0]
        ),
        teachers={"teacher": teacher.frozen},
        hooks=inspection.hooks(config, dataset, teacher.frozen),
        checkpoint_every=config.checkpoint_every,
        label=f"{config.method} {config.model.name}",
        unit="it",
        summary={
            "method": config.method,
            "student": config.model.name,
            "teacher": teacher.config.model.name,
            "seed": config.seed,
            "iterations": config.iterations,
        },
        summary_prefixes=("test/", "generated/"),
    )


run = deprecated_run("jdistill.adversarial.data_free.run")

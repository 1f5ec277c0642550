"""Adversarial KD with a discriminator: a discriminator learns to tell the teacher's outputs
(logits, softened probabilities or a named feature) from the student's, and the student learns
to fool it, alone or on top of the usual hard-label and KD terms.

Xu, Hsu & Huang 2017, "Training shallow and thin networks for acceleration via knowledge
distillation with conditional adversarial networks"; Belagiannis, Farshad & Galasso 2018,
"Adversarial Network Compression".

Two players with their own optimizers and schedules, per batch ``disc_steps`` moves of

- the discriminator ``D``: ``min discriminator_loss(D(t), D(sg(s))) + gp_weight * GP``, then one of
- the student ``S``: ``min ce_weight * CE(s, y) + kd_weight * KD_T(s, t) + adv_weight * fooling_loss(D(s))``,

where ``t``, ``s`` are the teacher's and student's inputs to D (``disc_input``), optionally
with the one-hot label concatenated (``conditional``). The teacher runs in inference mode, its
outputs computed once for the training set. D sees the student's outputs under the dropout of
the student's coming move.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jdistill import losses
from jdistill.data import Dataset, load_dataset
from jdistill.losses.adversarial import OBJECTIVES
from jdistill.methods import feature_shapes
from jdistill.models import count_params, create_model
from jdistill.models.discriminator import build_discriminator
from jdistill.train import groups
from jdistill.train.config import OptimizerConfig, refuse_average
from jdistill.train.distill import load_teacher, teacher_forward
from jdistill.train.evaluate import ClassifierEvaluator
from jdistill.train.fit import deprecated_run
from jdistill.train.game import LOSS, MODEL, Game, Move, Phase
from jdistill.train.groups import option
from jdistill.train.player import Player, Trainable
from jdistill.train.sources import DataSource

FEATURE_PREFIX = "feature:"
# Score above which D calls an input the teacher's: midway between its targets for real and fake.
DECISION_THRESHOLD = {"bce": 0.0, "least_squares": 0.5, "hinge": 0.0}


def input_shape(disc_input: str, num_classes: int, student_shapes: dict, teacher_shapes: dict) -> tuple:
    """The shape (without batch) of what D sees for ``disc_input``; a feature must exist in both
    networks with the same shape."""
    if disc_input in ("logits", "probs"):
        return (num_classes,)
    name = disc_input.removeprefix(FEATURE_PREFIX)
    for who, shapes in (("student", student_shapes), ("teacher", teacher_shapes)):
        if name not in shapes:
            raise ValueError(
                f"disc_input {disc_input!r}: the {who} has no feature {name!r}; "
                f"its features: {', '.join(sorted(shapes))}"
            )
    if student_shapes[name] != teacher_shapes[name]:
        raise ValueError(
            f"disc_input {disc_input!r}: the student's feature has shape {student_shapes[name]} but the "
            f"teacher's {teacher_shapes[name]}; one discriminator needs equal shapes (map the student's "
            f"feature with a connector first, or choose a feature of equal shape)"
        )
    if len(student_shapes[name]) not in (1, 3):
        raise ValueError(
            f"disc_input {disc_input!r}: a feature of shape {student_shapes[name]} is neither a vector [D] "
            f"nor a map [H, W, C]"
        )
    return student_shapes[name]


def discriminator_input(disc_input: str, output, temperature: float) -> jax.Array:
    """What D sees of a network's ``(logits, features)``: the logits, ``softmax(logits / T)``,
    or the named feature."""
    logits, features = output
    if disc_input == "logits":
        return logits
    if disc_input == "probs":
        return jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)
    return features[disc_input.removeprefix(FEATURE_PREFIX)]


@dataclasses.dataclass(frozen=True, init=False)
class AdversarialKDConfig(groups.Grouped):
    """Everything that determines an adversarial-KD run; saved as ``config.json``.

    Student: ``optimizer`` (an :class:`OptimizerConfig`; default SGD 0.02 with Nesterov momentum 0.9,
    cosine). Objective ``ce_weight * CE + kd_weight * KD(T=temperature) + adv_weight * fooling``.
    Discriminator: ``disc_optimizer`` (default Adam 2e-4 with beta1 0.5, as in DCGAN, constant),
    hidden ``disc_widths``, adversarial ``objective`` (bce, least_squares, hinge), gradient
    penalty weight ``gp_weight`` (0: none), input ``disc_input`` (``logits``, ``probs`` =
    ``softmax(logits / temperature)``, ``feature:<name>``), label-``conditional`` or not,
    ``disc_steps`` steps per student step. ``adv_weight = 0`` is plain KD: D is not trained.
    """

    FORMER_NAMES = {"teacher_dir": "teacher"}

    teacher: str
    model: str
    epochs: int
    dataset: str = "mnist"
    data_dir: str | None = None
    batch_size: int = 128
    seed: int = 0
    optimizer: OptimizerConfig = OptimizerConfig(learning_rate=0.02)
    ce_weight: float = 0.1
    kd_weight: float = 0.9
    adv_weight: float = 0.1
    temperature: float = 4.0
    objective: str = "bce"
    gp_weight: float = 0.0
    disc_input: str = "logits"
    conditional: bool = False
    disc_steps: int = 1
    disc_optimizer: OptimizerConfig = option(
        OptimizerConfig("adam", 2e-4, b1=0.5, schedule="constant"), prefix="disc", help="D's optimizer"
    )
    disc_widths: tuple[int, ...] = (256, 256)
    eval_every: int = 1

    def __post_init__(self):
        refuse_average(self.disc_optimizer, "disc_ema_decay", "discriminator")
        object.__setattr__(self, "disc_widths", tuple(int(w) for w in self.disc_widths))
        for name in ("epochs", "batch_size", "disc_steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("ce_weight", "kd_weight", "adv_weight", "gp_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.ce_weight == self.kd_weight == self.adv_weight == 0:
            raise ValueError(
                "ce_weight, kd_weight and adv_weight are all 0: the student has nothing to learn"
            )
        for optimizer in (self.optimizer, self.disc_optimizer):
            optimizer.check_epochs(self.epochs)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: choose one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.disc_input not in ("logits", "probs") and not (
            self.disc_input.startswith(FEATURE_PREFIX) and len(self.disc_input) > len(FEATURE_PREFIX)
        ):
            raise ValueError(
                f"disc_input: choose 'logits', 'probs' or 'feature:<name>', got {self.disc_input!r}"
            )
        if not self.disc_widths or min(self.disc_widths) < 1:
            raise ValueError(f"disc_widths must be one or more positive widths, got {list(self.disc_widths)}")

    def build(self, dataset: Dataset | None = None) -> Game:
        return build(self, dataset)


def _critic(config: AdversarialKDConfig, view):
    discriminator, labels = view.module("discriminator"), view.batch["label"]
    return lambda x: discriminator(x, labels if config.conditional else None)


def _student_out(view):
    return view.module("student").model(view.batch["image"], train=True, dropout_key=view.key(MODEL))


def discriminator_loss(config: AdversarialKDConfig, view):
    """D's move on the teacher's (real) and the student's (fake, held fixed) inputs, plus the
    gradient penalty of Gulrajani et al. 2017 at mixtures of the two."""
    real = discriminator_input(config.disc_input, view.batch["frozen"], config.temperature)
    fake = jax.lax.stop_gradient(
        discriminator_input(config.disc_input, _student_out(view), config.temperature)
    )
    critic = _critic(config, view)
    real_scores, fake_scores = critic(real), critic(fake)
    adversarial = losses.discriminator_loss(real_scores, fake_scores, objective=config.objective)
    terms, total = {"adversarial": adversarial}, adversarial
    if config.gp_weight:
        key = jax.random.fold_in(view.key(LOSS), view.repeat)
        terms["gradient_penalty"] = losses.gradient_penalty(critic, real, fake, key)
        total = total + config.gp_weight * terms["gradient_penalty"]
    threshold = DECISION_THRESHOLD[config.objective]
    return total, {
        "loss": total,
        **{f"loss/{k}": v for k, v in terms.items()},
        "real_accuracy": jnp.mean(real_scores > threshold),
        "fake_accuracy": jnp.mean(fake_scores <= threshold),
    }


def student_loss(config: AdversarialKDConfig, view):
    """The student's move: hard labels, KD and (``adv_weight`` > 0) fooling D, whose parameters
    are constants here."""
    labels, teacher_out = view.batch["label"], view.batch["frozen"]
    student_out = _student_out(view)
    logits = student_out[0]
    terms = {
        "ce": jnp.mean(losses.cross_entropy(logits, labels)),
        "kd": jnp.mean(losses.kd(logits, teacher_out[0], temperature=config.temperature)),
    }
    total, extra = config.ce_weight * terms["ce"] + config.kd_weight * terms["kd"], {}
    if config.adv_weight:  # without the term, D is neither trained nor consulted
        scores = _critic(config, view)(
            discriminator_input(config.disc_input, student_out, config.temperature)
        )
        terms["adversarial"] = losses.fooling_loss(scores, objective=config.objective)
        total = total + config.adv_weight * terms["adversarial"]
        extra["fooled"] = jnp.mean(scores > DECISION_THRESHOLD[config.objective])  # taken for the teacher's
    predictions = jnp.argmax(logits, -1)
    return total, {
        "loss": total,
        **{f"loss/{k}": v for k, v in terms.items()},
        "accuracy": jnp.mean(predictions == labels),
        "agreement": jnp.mean(predictions == jnp.argmax(teacher_out[0], -1)),
        **extra,
    }


def teacher_outputs(disc_input: str, teachers, images):
    """The teacher's logits and, when D reads one, the named feature."""
    logits, features = teacher_forward(teachers["teacher"].graphdef, teachers["teacher"].variables, images)
    name = disc_input.removeprefix(FEATURE_PREFIX)
    return logits, ({name: features[name]} if disc_input.startswith(FEATURE_PREFIX) else {})


def build(config: AdversarialKDConfig, dataset: Dataset | None = None) -> Game:
    """The players ``config`` describes (student seeded ``seed``, discriminator ``seed + 1``)."""
    dataset = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    source = DataSource(dataset, config.batch_size)
    teacher = load_teacher(config.teacher, dataset)
    model = create_model(config.model, dataset.input_shape, dataset.num_classes, rngs=nnx.Rngs(config.seed))
    shape = input_shape(
        config.disc_input, dataset.num_classes, feature_shapes(model, dataset.input_shape), teacher.shapes
    )
    discriminator = build_discriminator(
        shape,
        num_classes=dataset.num_classes if config.conditional else 0,
        widths=config.disc_widths,
        rngs=nnx.Rngs(config.seed + 1),
    )
    per_epoch = source.steps_per_epoch
    student_optimizer = config.optimizer.build(config.epochs, per_epoch)
    disc_optimizer = config.disc_optimizer.build(config.epochs, per_epoch * config.disc_steps)
    moves = (Move("student", functools.partial(student_loss, config)),)
    if config.adv_weight:
        moves = (
            Move(
                "discriminator",
                functools.partial(discriminator_loss, config),
                config.disc_steps,
                prefix="disc/",
            ),
            *moves,
        )
    return Game(
        config=config,
        players={
            "student": Player.create(Trainable(model), student_optimizer),
            "discriminator": Player.create(discriminator, disc_optimizer),
        },
        phases=(Phase("train", config.epochs, moves),),
        source=source,
        seed=config.seed,
        evaluate=ClassifierEvaluator(
            dataset, teacher="teacher", logits=lambda m, x: m.model(x, train=False)[0]
        ),
        teachers={"teacher": teacher.frozen},
        frozen_outputs=functools.partial(teacher_outputs, config.disc_input),
        eval_every=config.eval_every,
        label=config.model,
        summary={
            "model": config.model,
            "teacher": teacher.config.model.name,
            "disc_input": config.disc_input,
            "objective": config.objective,
            "epochs": config.epochs,
            "seed": config.seed,
            "params": count_params(model),
            "disc_params": count_params(discriminator),
        },
    )


run = deprecated_run("jdistill.adversarial.discriminator.run")

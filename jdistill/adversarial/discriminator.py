"""Adversarial KD with a discriminator: a discriminator learns to tell the teacher's outputs
(logits, softened probabilities or a named feature) from the student's, and the student learns
to fool it, alone or on top of the usual hard-label and KD terms.

Xu, Hsu & Huang 2017, "Training shallow and thin networks for acceleration via knowledge
distillation with conditional adversarial networks"; Belagiannis, Farshad & Galasso 2018,
"Adversarial Network Compression".

Two players, each a :class:`~jdistill.train.TrainState` with its own optimizer and schedule:

- discriminator ``D``: ``min discriminator_loss(D(t), D(sg(s))) + gp_weight * GP``;
- student ``S``: ``min ce_weight * CE(s, y) + kd_weight * KD_T(s, t) + adv_weight * fooling_loss(D(s))``,

where ``t``, ``s`` are the teacher's and student's inputs to D (``disc_input``), optionally
with the one-hot label concatenated (``conditional``). The teacher runs in inference mode
outside the gradient and is never updated. Each batch takes ``disc_steps`` discriminator steps,
then one student step.
"""

import argparse
import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from jdistill import losses
from jdistill.data import Dataset, epoch_indices, load_dataset
from jdistill.losses.adversarial import OBJECTIVES
from jdistill.methods import feature_shapes
from jdistill.models import count_params, create_model
from jdistill.train import checkpoint, parallel
from jdistill.train.loop import Teacher, TestEvaluator, load_teacher
from jdistill.train.rundir import RunDir
from jdistill.train.state import Trainable, TrainState, create_state
from jdistill.train.steps import DROPOUT, METHOD, step_key, teacher_forward

LEAKY_SLOPE = 0.2
FEATURE_PREFIX = "feature:"
# Score above which D calls an input the teacher's: midway between its targets for real and fake.
DECISION_THRESHOLD = {"bce": 0.0, "least_squares": 0.5, "hinge": 0.0}
SCHEDULES = ("cosine", "constant")


# ---------------------------------------------------------------- modules


def _with_labels(x: jax.Array, labels: jax.Array | None, num_classes: int) -> jax.Array:
    """``x ⊕ one_hot(labels)`` for a conditional discriminator (``num_classes`` > 0), else ``x``."""
    if not num_classes:
        return x
    if labels is None:
        raise ValueError("a conditional discriminator needs the labels")
    return jnp.concatenate([x, jax.nn.one_hot(labels, num_classes, dtype=x.dtype)], axis=-1)


class VectorDiscriminator(nnx.Module):
    """An MLP on vectors ``[B, D]`` (logits, probabilities, an embedding):
    ``x ⊕ one_hot(y) -> [Linear -> LeakyReLU(0.2)] per width -> Linear -> score [B]``.
    ``num_classes`` > 0 makes it conditional on the label (the one-hot is concatenated)."""

    def __init__(
        self, in_features: int, *, num_classes: int = 0, widths: Sequence[int] = (256, 256), rngs: nnx.Rngs
    ):
        sizes = [in_features + num_classes, *widths]
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])
        self.score = nnx.Linear(sizes[-1], 1, rngs=rngs)
        self.num_classes = num_classes

    def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        h = _with_labels(x.reshape(x.shape[0], -1), labels, self.num_classes)
        for layer in self.hidden:
            h = jax.nn.leaky_relu(layer(h), LEAKY_SLOPE)
        return self.score(h)[:, 0]


class ConvDiscriminator(nnx.Module):
    """A small convolutional discriminator on NHWC feature maps:
    ``[conv3x3 stride 2 -> LeakyReLU(0.2)] per channel count -> global average pool`` followed
    by a :class:`VectorDiscriminator` head (which adds the one-hot label when conditional)."""

    def __init__(
        self,
        in_channels: int,
        *,
        num_classes: int = 0,
        channels: Sequence[int] = (32, 64),
        widths: Sequence[int] = (256,),
        rngs: nnx.Rngs,
    ):
        sizes = [in_channels, *channels]
        self.convs = nnx.List(
            [nnx.Conv(a, b, (3, 3), strides=2, rngs=rngs) for a, b in itertools.pairwise(sizes)]
        )
        self.head = VectorDiscriminator(sizes[-1], num_classes=num_classes, widths=widths, rngs=rngs)

    def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        for conv in self.convs:
            x = jax.nn.leaky_relu(conv(x), LEAKY_SLOPE)
        return self.head(x.mean(axis=(1, 2)), labels)


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


def build_discriminator(shape: tuple, *, num_classes: int, widths: Sequence[int], rngs: nnx.Rngs):
    """A :class:`VectorDiscriminator` for vectors ``[D]``, a :class:`ConvDiscriminator` for maps
    ``[H, W, C]``; conditional when ``num_classes`` > 0."""
    if len(shape) == 3:
        return ConvDiscriminator(shape[-1], num_classes=num_classes, widths=widths, rngs=rngs)
    return VectorDiscriminator(shape[0], num_classes=num_classes, widths=widths, rngs=rngs)


def discriminator_input(disc_input: str, output, temperature: float) -> jax.Array:
    """What D sees of a network's ``(logits, features)``: the logits, ``softmax(logits / T)``,
    or the named feature."""
    logits, features = output
    if disc_input == "logits":
        return logits
    if disc_input == "probs":
        return jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)
    return features[disc_input.removeprefix(FEATURE_PREFIX)]


# ---------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class AdversarialKDConfig:
    """Everything that determines an adversarial-KD run; saved as ``config.json``.

    Student: ``optimizer`` (SGD with Nesterov ``momentum``, or Adam) at ``learning_rate`` on the
    ``schedule`` (cosine to 0 over the run, or constant), ``weight_decay`` (coupled for SGD,
    decoupled for Adam). Objective
    ``ce_weight * CE + kd_weight * KD(T=temperature) + adv_weight * fooling``.
    Discriminator: Adam (beta1 0.5, as in DCGAN) at ``disc_learning_rate`` on ``disc_schedule``,
    hidden ``disc_widths``, adversarial ``objective`` (bce, least_squares, hinge), gradient
    penalty weight ``gp_weight`` (0: none), input ``disc_input`` (``logits``, ``probs`` =
    ``softmax(logits / temperature)``, ``feature:<name>``), label-``conditional`` or not,
    ``disc_steps`` steps per student step. ``adv_weight = 0`` is plain KD: D is not trained.
    """

    teacher_dir: str
    model: str
    epochs: int
    dataset: str = "mnist"
    data_dir: str | None = None
    batch_size: int = 128
    seed: int = 0
    optimizer: str = "sgd"
    learning_rate: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    ce_weight: float = 0.1
    kd_weight: float = 0.9
    adv_weight: float = 0.1
    temperature: float = 4.0
    objective: str = "bce"
    gp_weight: float = 0.0
    disc_input: str = "logits"
    conditional: bool = False
    disc_steps: int = 1
    disc_learning_rate: float = 2e-4
    disc_schedule: str = "constant"
    disc_widths: tuple[int, ...] = (256, 256)
    eval_every: int = 1

    def __post_init__(self):
        object.__setattr__(self, "disc_widths", tuple(int(w) for w in self.disc_widths))
        for name in ("epochs", "batch_size", "disc_steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("learning_rate", "disc_learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("ce_weight", "kd_weight", "adv_weight", "gp_weight", "weight_decay", "momentum"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.ce_weight == self.kd_weight == self.adv_weight == 0:
            raise ValueError(
                "ce_weight, kd_weight and adv_weight are all 0: the student has nothing to learn"
            )
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer: choose 'sgd' or 'adam', got {self.optimizer!r}")
        for name in ("schedule", "disc_schedule"):
            if getattr(self, name) not in SCHEDULES:
                raise ValueError(f"{name}: choose one of {', '.join(SCHEDULES)}, got {getattr(self, name)!r}")
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


# ---------------------------------------------------------------- steps


class Graphdefs(NamedTuple):
    """The three networks' graph definitions; the student's and the teacher's are of a
    :class:`~jdistill.train.Trainable` (``.model``)."""

    student: nnx.GraphDef
    discriminator: nnx.GraphDef
    teacher: nnx.GraphDef


def optimizer(
    name: str,
    learning_rate: float,
    schedule: str,
    total_steps: int,
    *,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    b1: float = 0.9,
) -> optax.GradientTransformation:
    """``sgd`` (Nesterov ``momentum``, coupled ``weight_decay``) or ``adam`` (``b1``, decoupled
    ``weight_decay``: AdamW) at ``learning_rate`` times the ``schedule``: cosine to 0 over
    ``total_steps``, or constant. The schedule counts the player's own updates."""
    if schedule == "cosine":
        rate = optax.cosine_decay_schedule(learning_rate, decay_steps=max(total_steps, 1))
    else:
        rate = optax.constant_schedule(learning_rate)
    if name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(weight_decay), optax.sgd(rate, momentum=momentum, nesterov=True)
        )
    return optax.adamw(rate, b1=b1, weight_decay=weight_decay)


def _apply(state: TrainState, tx, grads, rest) -> TrainState:
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, rest=rest, opt_state=opt_state)


def _student_forward(graphdef, params, rest, images, dropout_key):
    """The student's ``(logits, features)`` in training mode and its updated other variables."""
    trainable = nnx.merge(graphdef, params, rest)
    output = trainable.model(images, train=True, dropout_key=dropout_key)
    return output, nnx.to_pure_dict(nnx.split(trainable, nnx.Param, ...)[2])


def _critic(graphdef, disc_state: TrainState, labels, conditional: bool) -> Callable:
    discriminator = nnx.merge(graphdef, disc_state.params, disc_state.rest)
    return lambda x: discriminator(x, labels if conditional else None)


def make_discriminator_step(
    config: AdversarialKDConfig, graphdefs: Graphdefs, tx: optax.GradientTransformation, *, jit: bool = True
) -> Callable:
    """``step(disc_state, student_state, teacher_vars, batch) -> (disc_state, metrics)``:
    one update of D on ``discriminator_loss(D(t), D(sg(s))) + gp_weight * GP`` (Gulrajani et
    al. 2017's penalty on mixtures of t and s). The student runs in training mode with the
    dropout key its next step will use, so D sees the outputs that step produces; the student
    and the teacher are not updated. Only ``disc_state`` is donated."""
    threshold = DECISION_THRESHOLD[config.objective]

    def step(disc_state, student_state, teacher_vars, batch):
        images, labels = batch["image"], batch["label"]
        teacher_out = teacher_forward(graphdefs.teacher, teacher_vars, images)
        student_out, _ = _student_forward(
            graphdefs.student,
            student_state.params,
            student_state.rest,
            images,
            step_key(student_state.seed, student_state.step, DROPOUT),
        )
        real = discriminator_input(config.disc_input, teacher_out, config.temperature)
        fake = jax.lax.stop_gradient(discriminator_input(config.disc_input, student_out, config.temperature))

        def loss_fn(params):
            critic = _critic(
                graphdefs.discriminator, disc_state.replace(params=params), labels, config.conditional
            )
            real_scores, fake_scores = critic(real), critic(fake)
            adversarial = losses.discriminator_loss(real_scores, fake_scores, objective=config.objective)
            terms, total = {"adversarial": adversarial}, adversarial
            if config.gp_weight:
                key = step_key(disc_state.seed, disc_state.step, METHOD)
                terms["gradient_penalty"] = losses.gradient_penalty(critic, real, fake, key)
                total = total + config.gp_weight * terms["gradient_penalty"]
            return total, (terms, real_scores, fake_scores)

        (total, (terms, real_scores, fake_scores)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            disc_state.params
        )
        metrics = {
            "loss": total,
            **{f"loss/{k}": v for k, v in terms.items()},
            "real_accuracy": jnp.mean(real_scores > threshold),
            "fake_accuracy": jnp.mean(fake_scores <= threshold),
        }
        return _apply(disc_state, tx, grads, disc_state.rest), metrics

    return jax.jit(step, donate_argnums=0) if jit else step


def make_student_step(
    config: AdversarialKDConfig, graphdefs: Graphdefs, tx: optax.GradientTransformation, *, jit: bool = True
) -> Callable:
    """``step(student_state, disc_state, teacher_vars, batch) -> (student_state, metrics)``:
    one update of the student on ``ce_weight * CE(s, y) + kd_weight * KD_T(s, t) + adv_weight *
    fooling_loss(D(s))``. D's parameters are constants of the step (its gradient reaches the
    student only through D's input); the teacher is frozen. Only ``student_state`` is donated."""
    threshold = DECISION_THRESHOLD[config.objective]

    def step(student_state, disc_state, teacher_vars, batch):
        images, labels = batch["image"], batch["label"]
        teacher_out = teacher_forward(graphdefs.teacher, teacher_vars, images)
        critic = _critic(graphdefs.discriminator, disc_state, labels, config.conditional)
        dropout_key = step_key(student_state.seed, student_state.step, DROPOUT)

        def loss_fn(params):
            student_out, rest = _student_forward(
                graphdefs.student, params, student_state.rest, images, dropout_key
            )
            logits = student_out[0]
            terms = {
                "ce": jnp.mean(losses.cross_entropy(logits, labels)),
                "kd": jnp.mean(losses.kd(logits, teacher_out[0], temperature=config.temperature)),
            }
            total = config.ce_weight * terms["ce"] + config.kd_weight * terms["kd"]
            extra = {}
            if config.adv_weight:  # without the term, D is neither trained nor consulted
                scores = critic(discriminator_input(config.disc_input, student_out, config.temperature))
                terms["adversarial"] = losses.fooling_loss(scores, objective=config.objective)
                total = total + config.adv_weight * terms["adversarial"]
                extra["fooled"] = jnp.mean(scores > threshold)  # student outputs D takes for the teacher's
            return total, (terms, logits, extra, rest)

        (total, (terms, logits, extra, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            student_state.params
        )
        predictions = jnp.argmax(logits, -1)
        metrics = {
            "loss": total,
            **{f"loss/{k}": v for k, v in terms.items()},
            "accuracy": jnp.mean(predictions == labels),
            "agreement": jnp.mean(predictions == jnp.argmax(teacher_out[0], -1)),
            **extra,
        }
        return _apply(student_state, tx, grads, rest), metrics

    return jax.jit(step, donate_argnums=0) if jit else step


# ---------------------------------------------------------------- run


@dataclasses.dataclass
class Game:
    """A run's players at step 0, their optimizers and steps, and the frozen teacher."""

    config: AdversarialKDConfig
    dataset: Dataset
    teacher: Teacher
    graphdefs: Graphdefs
    states: dict  # {"student": TrainState, "discriminator": TrainState}
    student_tx: optax.GradientTransformation
    disc_tx: optax.GradientTransformation
    student_step: Callable
    discriminator_step: Callable
    steps_per_epoch: int
    params: int
    disc_params: int


def prepare(config: AdversarialKDConfig, dataset: Dataset | None = None) -> Game:
    """Build the players ``config`` describes (student seeded ``seed``, discriminator ``seed + 1``)."""
    dataset = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    steps_per_epoch = len(dataset.y_train) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the training set ({len(dataset.y_train)} examples)"
        )
    teacher = load_teacher(config.teacher_dir, dataset)
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
    total_steps = config.epochs * steps_per_epoch
    student_tx = optimizer(
        config.optimizer,
        config.learning_rate,
        config.schedule,
        total_steps,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    disc_tx = optimizer(
        "adam", config.disc_learning_rate, config.disc_schedule, total_steps * config.disc_steps, b1=0.5
    )
    student_graphdef, student_state = create_state(Trainable(model, {}), student_tx, config.seed)
    disc_graphdef, disc_state = create_state(discriminator, disc_tx, config.seed + 1)
    graphdefs = Graphdefs(student_graphdef, disc_graphdef, teacher.graphdef)
    return Game(
        config=config,
        dataset=dataset,
        teacher=teacher,
        graphdefs=graphdefs,
        states={"student": student_state, "discriminator": disc_state},
        student_tx=student_tx,
        disc_tx=disc_tx,
        student_step=make_student_step(config, graphdefs, student_tx),
        discriminator_step=make_discriminator_step(config, graphdefs, disc_tx),
        steps_per_epoch=steps_per_epoch,
        params=count_params(model),
        disc_params=count_params(discriminator),
    )


def _epoch_means(step_metrics: list[dict], prefix: str) -> dict:
    """Means over the epoch's steps, keyed ``prefix + name``; a non-finite loss raises."""
    if not step_metrics:
        return {}
    step_metrics = jax.device_get(step_metrics)  # one transfer per epoch
    per_step = {k: np.array([m[k] for m in step_metrics]) for k in step_metrics[0]}
    for name, values in per_step.items():
        if "loss" in name and not np.all(np.isfinite(values)):
            raise FloatingPointError(f"non-finite {prefix}{name}")
    return {f"{prefix}{k}": float(v.mean()) for k, v in per_step.items()}


def _train_epoch(game: Game, states: dict, batches: Callable, on_step: Callable) -> tuple[dict, dict]:
    """One pass over the training set: per batch ``disc_steps`` discriminator steps (none
    without the adversarial term), then one student step. Returns the states and the means."""
    config = game.config
    student, disc = states["student"], states["discriminator"]
    student_metrics, disc_metrics = [], []
    for i in range(game.steps_per_epoch):
        batch = batches(i)
        for _ in range(config.disc_steps if config.adv_weight else 0):
            disc, metrics = game.discriminator_step(disc, student, game.teacher.variables, batch)
            disc_metrics.append(metrics)
        student, metrics = game.student_step(student, disc, game.teacher.variables, batch)
        student_metrics.append(metrics)
        on_step()
    means = {**_epoch_means(student_metrics, ""), **_epoch_means(disc_metrics, "disc/")}
    return {"student": student, "discriminator": disc}, means


def run(
    config: AdversarialKDConfig,
    out_dir,
    *,
    dataset: Dataset | None = None,
    progress: bool = True,
    label: str | None = None,
) -> dict:
    """Train the student against the discriminator as ``config`` says, into the run directory
    ``out_dir`` (config.json, metrics.jsonl with test metrics per epoch, a checkpoint of both
    players per epoch, summary.json); resume from its last checkpoint if it holds the same
    configuration, or return the summary of a finished one. Returns the summary. Runs on one
    device."""
    run_dir = RunDir(out_dir)
    run_dir.claim(config)
    if run_dir.summary_file.exists():  # finished
        return run_dir.summary()
    game = prepare(config, dataset)
    mngr = checkpoint.manager(run_dir.path)
    start_epoch = mngr.latest_step() or 0
    states = checkpoint.restore(mngr, game.states) if start_epoch else game.states
    run_dir.keep_metrics_until(start_epoch)

    data = game.dataset
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    # The arrays are arguments, not constants folded into the program.
    gather = jax.jit(lambda x, y, idx: {"image": data.normalise(x[idx]), "label": y[idx]})
    evaluate = TestEvaluator(
        data, game.graphdefs.student, game.teacher, parallel.make_mesh(jax.devices()[:1])
    )
    images_per_epoch = game.steps_per_epoch * config.batch_size
    bar = tqdm(
        total=config.epochs * images_per_epoch,
        initial=start_epoch * images_per_epoch,
        unit="img",
        unit_scale=True,
        desc=label or config.model,
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        key = jax.random.fold_in(jax.random.key(config.seed), epoch)
        order = epoch_indices(key, len(data.y_train), config.batch_size)

        batches = lambda i, order=order: gather(x_train, y_train, order[i])
        try:
            states, train = _train_epoch(game, states, batches, lambda: bar.update(config.batch_size))
        except FloatingPointError as e:
            raise FloatingPointError(
                f"{e} in epoch {epoch + 1}; stopped; the last good checkpoint "
                f"(epoch {mngr.latest_step() or 0}) is kept in {run_dir.path}"
            ) from None
        seconds = time.perf_counter() - started
        last = epoch + 1 == config.epochs
        test = evaluate(states["student"]) if (epoch + 1) % config.eval_every == 0 or last else {}
        run_dir.append_epoch(epoch + 1, (epoch + 1) * game.steps_per_epoch, seconds, train, test)
        if test:
            bar.set_postfix(epoch=epoch + 1, test_acc=f"{test['accuracy']:.4f}")
        checkpoint.save(mngr, epoch + 1, states)
    bar.close()
    return _write_summary(run_dir, config, game)


def _write_summary(run_dir: RunDir, config: AdversarialKDConfig, game: Game) -> dict:
    lines = run_dir.metrics()
    evaluated = [m for m in lines if "test/accuracy" in m]
    best = max(evaluated, key=lambda m: m["test/accuracy"])
    summary = {
        "model": config.model,
        "teacher": game.teacher.config.model,
        "disc_input": config.disc_input,
        "objective": config.objective,
        "epochs": config.epochs,
        "seed": config.seed,
        "params": game.params,
        "disc_params": game.disc_params,
        "train_seconds": round(sum(m["seconds"] for m in lines), 2),
        **{k: v for k, v in lines[-1].items() if k.startswith("test/")},
        "test/best_accuracy": best["test/accuracy"],
        "best_epoch": best["epoch"],
    }
    run_dir.write_summary(summary)
    return summary


# ---------------------------------------------------------------- command line


def _config_from_args(args) -> AdversarialKDConfig:
    return AdversarialKDConfig(
        teacher_dir=args.teacher,
        model=args.student,
        epochs=args.epochs,
        dataset=args.dataset,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        seed=args.seed,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        ce_weight=args.ce_weight,
        kd_weight=args.kd_weight,
        adv_weight=args.adv_weight,
        temperature=args.temperature,
        objective=args.objective,
        gp_weight=args.gp_weight,
        disc_input=args.disc_input,
        conditional=args.conditional,
        disc_steps=args.disc_steps,
        disc_learning_rate=args.disc_lr,
        disc_schedule=args.disc_schedule,
        disc_widths=_parse_widths(args.disc_widths),
        eval_every=args.eval_every,
    )


def _parse_widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise SystemExit(f"jdistill: --disc-widths expects integers separated by commas, got {text!r}")


def cmd_adversarial_kd(args) -> None:
    summary = run(_config_from_args(args), args.out, progress=not args.quiet)
    print(json.dumps(summary, indent=2))


def add_parser(subparsers) -> None:
    """Register the ``adversarial-kd`` subcommand on the ``jdistill`` command's subparsers."""
    defaults = {f.name: f.default for f in dataclasses.fields(AdversarialKDConfig)}
    p = subparsers.add_parser(
        "adversarial-kd",
        help="distil a teacher into a student that also learns to fool a discriminator",
        description="Adversarial KD (Xu et al. 2017; Belagiannis et al. 2018): a discriminator learns to "
        "tell the teacher's outputs from the student's; the student minimises ce_weight * CE + kd_weight * "
        "KD + adv_weight * fooling loss. Re-running the same command resumes from the last checkpoint.",
    )
    p.add_argument("--teacher", required=True, help="run directory of a finished 'train-teacher' run")
    p.add_argument("--student", required=True, help="built-in model name of the student")
    p.add_argument("--dataset", default=defaults["dataset"], help="data set of the teacher (mnist)")
    p.add_argument(
        "--data-dir", default=None, help="where the data set's files are (e.g. the MNIST IDX files)"
    )
    p.add_argument("--epochs", type=int, required=True, help="passes over the training set")
    p.add_argument("--out", required=True, help="run directory (config.json, metrics.jsonl, checkpoints/)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the student (the discriminator's is seed + 1)"
    )
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"], help="batch size (128)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="student's optimizer (sgd)")
    p.add_argument(
        "--lr", type=float, default=defaults["learning_rate"], help="student's learning rate (0.02)"
    )
    p.add_argument("--momentum", type=float, default=defaults["momentum"], help="SGD Nesterov momentum (0.9)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="student's weight decay (0)")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="student's learning-rate schedule")
    p.add_argument("--ce-weight", type=float, default=defaults["ce_weight"], help="hard-label weight (0.1)")
    p.add_argument("--kd-weight", type=float, default=defaults["kd_weight"], help="KD weight (0.9)")
    p.add_argument(
        "--adv-weight",
        type=float,
        default=defaults["adv_weight"],
        help="weight of the student's fooling loss (0.1); 0 is plain KD and trains no discriminator",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=defaults["temperature"],
        help="T of KD and of --disc-input probs (4)",
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="bce",
        help="adversarial objective: bce (non-saturating), least_squares (LSGAN) or hinge",
    )
    p.add_argument(
        "--gp-weight", type=float, default=0.0, help="weight of the WGAN-GP gradient penalty on D (0: off)"
    )
    p.add_argument(
        "--disc-input",
        default="logits",
        help="what D sees: logits, probs (softmax(logits / T)) or feature:NAME (a named feature, same shape "
        "in teacher and student; see 'jdistill models --features')",
    )
    p.add_argument(
        "--conditional",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="condition D on the one-hot label",
    )
    p.add_argument("--disc-steps", type=int, default=1, help="discriminator steps per student step (1)")
    p.add_argument(
        "--disc-lr", type=float, default=defaults["disc_learning_rate"], help="D's Adam learning rate (2e-4)"
    )
    p.add_argument(
        "--disc-schedule", choices=SCHEDULES, default="constant", help="D's learning-rate schedule"
    )
    p.add_argument("--disc-widths", default="256,256", help="D's hidden widths, comma-separated (256,256)")
    p.add_argument("--eval-every", type=int, default=1, help="evaluate on the test set every N epochs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_adversarial_kd)

"""Training a VAE teacher on images, and a student that maps into its latent space.

- :func:`train_vae`: a :class:`~jdistill.models.vae.VAE` on the training images (pixel intensities
  in [0, 1] as Bernoulli targets), Adam on a cosine schedule, the negative ELBO.
- :func:`train_mapping`: a :class:`~jdistill.models.vae.LatentMapper` from a finished VAE run.
  Every step draws fresh latent points ``z ~ N(0, I)`` and the teacher decoder's mean images
  ``x_t = sigmoid(decoder(z))``; the student's encoder regresses ``z`` from ``x_t``
  (:func:`~jdistill.losses.generative.latent_regression`) and its decoder reproduces the
  teacher's pixel distributions from ``z`` (:func:`~jdistill.losses.generative.decoder_distillation`).
  Neither sees a real image. The two terms touch disjoint parameters, so one Adam optimizer on
  their sum trains each part on its own term.

Both are run directories (``config.json``, ``metrics.jsonl``, ``checkpoints/``, ``summary.json``)
and resume from their last checkpoint; a finished run is not trained again. The teacher runs under
``stop_gradient`` and is never donated.
"""

import dataclasses
import functools
import json
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from jdistill.data import Dataset, epoch_indices, load_dataset
from jdistill.generative.evaluation import Frozen, heldout_latents, mapping_metrics
from jdistill.losses.generative import bernoulli_nll, decoder_distillation, gaussian_kl, latent_regression
from jdistill.models import count_params
from jdistill.models.vae import VAE, LatentMapper
from jdistill.train import checkpoint
from jdistill.train.rundir import RunDir
from jdistill.train.state import TrainState, create_state
from jdistill.train.steps import step_key

NOISE, LATENT = 0, 1  # random streams of a step: the VAE's reparameterisation noise, the student's z
EVAL_BATCH = 1000


def _check_positive(config, *names):
    for name in names:
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be > 0, got {getattr(config, name)}")


def _widths(config, *names):
    for name in names:
        widths = tuple(int(w) for w in getattr(config, name))
        if not widths or min(widths) < 1:
            raise ValueError(f"{name} must name at least one hidden layer of positive width, got {widths}")
        object.__setattr__(config, name, widths)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """A VAE teacher's run: ``latent_dim``, hidden ``widths`` (encoder; the decoder's reversed),
    ``epochs`` over the training set in batches of ``batch_size``, Adam at ``learning_rate``
    decayed to 0 on a cosine schedule, loss ``nll + beta * kl``."""

    dataset: str = "mnist"
    data_dir: str | None = None
    latent_dim: int = 16
    widths: tuple[int, ...] = (512, 256)
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    beta: float = 1.0
    seed: int = 0

    def __post_init__(self):
        _check_positive(self, "latent_dim", "epochs", "batch_size", "learning_rate")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        _widths(self, "widths")


@dataclasses.dataclass(frozen=True)
class MappingConfig:
    """A student's run against the VAE run directory ``teacher``: an encoder and a decoder with
    the hidden ``encoder_widths`` / ``decoder_widths``, ``epochs`` of ``steps_per_epoch`` Adam steps
    (``learning_rate``, cosine to 0) on batches of ``batch_size`` fresh latent points; after each
    epoch, the metrics on ``eval_points`` held-out latent points."""

    teacher: str
    encoder_widths: tuple[int, ...] = (128,)
    decoder_widths: tuple[int, ...] = (128,)
    epochs: int = 10
    steps_per_epoch: int = 500
    batch_size: int = 256
    learning_rate: float = 1e-3
    eval_points: int = 2000
    seed: int = 0

    def __post_init__(self):
        _check_positive(self, "epochs", "steps_per_epoch", "batch_size", "learning_rate", "eval_points")
        _widths(self, "encoder_widths", "decoder_widths")


def _adam(learning_rate: float, total_steps: int) -> optax.GradientTransformation:
    return optax.adam(optax.cosine_decay_schedule(learning_rate, total_steps))


def _descend(state: TrainState, grads, tx) -> TrainState:
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state)


# ---------------------------------------------------------------- the VAE teacher


def make_vae_step(graphdef, tx: optax.GradientTransformation, *, beta: float, jit: bool = True) -> Callable:
    """``step(state, images) -> (state, metrics)``: one Adam step on the batch's mean negative ELBO
    (one reparameterised sample per image, drawn from the step's key). ``state`` is donated."""

    def step(state: TrainState, images):
        key = step_key(state.seed, state.step, NOISE)

        def objective(params):
            logits, mean, log_variance = nnx.merge(graphdef, params, state.rest)(images, key)
            nll, kl = jnp.mean(bernoulli_nll(logits, images)), jnp.mean(gaussian_kl(mean, log_variance))
            return nll + beta * kl, (nll, kl)

        (loss, (nll, kl)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        return _descend(state, grads, tx), {"loss": loss, "nll": nll, "kl": kl}

    return jax.jit(step, donate_argnums=0) if jit else step


@functools.cache
def _vae_test_sums(graphdef) -> Callable:
    @jax.jit
    def sums(params, rest, images, key):
        logits, mean, log_variance = nnx.merge(graphdef, params, rest)(images, key)
        return jnp.sum(bernoulli_nll(logits, images)), jnp.sum(gaussian_kl(mean, log_variance))

    return sums


def vae_test_metrics(graphdef, params, rest, images: np.ndarray, *, seed: int = 0) -> dict:
    """Mean negative ELBO (one sample per image, fixed noise), its reconstruction (``nll``) and KL
    terms on ``images``, in nats per image."""
    sums = _vae_test_sums(graphdef)
    totals = np.zeros(2)
    for i in range(0, len(images), EVAL_BATCH):
        totals += np.asarray(sums(params, rest, images[i : i + EVAL_BATCH], jax.random.key(seed + i)))
    nll, kl = totals / len(images)
    return {"neg_elbo": float(nll + kl), "nll": float(nll), "kl": float(kl)}


def create_vae(config: VAEConfig, image_shape) -> VAE:
    return VAE(image_shape, latent_dim=config.latent_dim, widths=config.widths, rngs=nnx.Rngs(config.seed))


def train_vae(config: VAEConfig, out_dir, *, dataset: Dataset | None = None, progress: bool = True) -> dict:
    """Train the VAE teacher of ``config`` into the run directory ``out_dir`` (resumes; a finished
    run is only read). Metrics per epoch: mean training ``loss``, ``nll``, ``kl`` and the test
    set's ``neg_elbo``, ``nll``, ``kl``. Returns the summary (also ``summary.json``)."""
    run_dir = RunDir(out_dir)
    run_dir.claim(config)
    dataset = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    steps_per_epoch = len(dataset.y_train) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the training set")
    model = create_vae(config, dataset.input_shape)
    tx = _adam(config.learning_rate, config.epochs * steps_per_epoch)
    graphdef, state = create_state(model, tx, config.seed)
    step = make_vae_step(graphdef, tx, beta=config.beta)
    x_train = jax.device_put(dataset.x_train.astype(np.float32))
    x_test = dataset.x_test.astype(np.float32)
    batch = jax.jit(lambda x, order, i: x[order[i]])

    def epoch_steps(epoch):
        order = epoch_indices(
            jax.random.fold_in(jax.random.key(config.seed), epoch), len(x_train), config.batch_size
        )
        return lambda state, i: step(state, batch(x_train, order, i))

    state = run_epochs(
        run_dir,
        state,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        images_per_step=config.batch_size,
        epoch_steps=epoch_steps,
        evaluate=lambda s: vae_test_metrics(graphdef, s.params, s.rest, x_test),
        label="VAE teacher",
        progress=progress,
    )
    return _summarise(
        run_dir,
        image_shape=list(dataset.input_shape),
        encoder_params=count_params(model.encoder),
        decoder_params=count_params(model.decoder),
    )


def load_vae(run_dir) -> tuple[Frozen, VAEConfig, tuple[int, ...]]:
    """The final VAE of the finished run in ``run_dir``: ``(frozen model, config, image_shape)``."""
    run = RunDir(run_dir)
    summary = run.summary()  # refuses unfinished runs
    config = VAEConfig(**json.loads(run.config_file.read_text())["config"])
    image_shape = tuple(summary["image_shape"])
    model = create_vae(config, image_shape)
    graphdef, like = create_state(model, _adam(config.learning_rate, 1), config.seed)
    state = checkpoint.restore(checkpoint.manager(run.path), like)
    return Frozen(graphdef, state.params, state.rest), config, image_shape


# ---------------------------------------------------------------- the student


def mapping_objective(student_graphdef, params, rest, z, teacher_logits):
    """``(loss, terms)``: the student's encoder regresses ``z`` from the teacher's mean images
    ``sigmoid(teacher_logits)``, its decoder matches ``teacher_logits`` from ``z``; batch means."""
    student = nnx.merge(student_graphdef, params, rest)
    encoder = jnp.mean(latent_regression(student.encoder(jax.nn.sigmoid(teacher_logits)), z))
    decoder = jnp.mean(decoder_distillation(student.decoder(z), teacher_logits))
    return encoder + decoder, {"encoder_loss": encoder, "decoder_loss": decoder}


def make_mapping_step(
    student_graphdef, teacher: Frozen, tx: optax.GradientTransformation, *, batch_size: int, jit: bool = True
) -> Callable:
    """``step(state, teacher_params) -> (state, metrics)``: draw ``batch_size`` latent points from
    the step's key, decode them with the frozen teacher (``stop_gradient``; ``teacher_params`` is
    read, never donated), and take one Adam step of the student. ``state`` is donated."""

    latent_dim = teacher.module().latent_dim

    def step(state: TrainState, teacher_params):
        z = jax.random.normal(step_key(state.seed, state.step, LATENT), (batch_size, latent_dim))
        teacher_logits = jax.lax.stop_gradient(teacher.module(teacher_params).decoder(z))
        (loss, terms), grads = jax.value_and_grad(
            lambda p: mapping_objective(student_graphdef, p, state.rest, z, teacher_logits), has_aux=True
        )(state.params)
        return _descend(state, grads, tx), {"loss": loss, **terms}

    return jax.jit(step, donate_argnums=0) if jit else step


def create_student(config: MappingConfig, latent_dim: int, image_shape) -> LatentMapper:
    return LatentMapper(
        image_shape,
        latent_dim=latent_dim,
        encoder_widths=config.encoder_widths,
        decoder_widths=config.decoder_widths,
        rngs=nnx.Rngs(config.seed),
    )


def train_mapping(config: MappingConfig, out_dir, *, progress: bool = True, label: str | None = None) -> dict:
    """Train the student of ``config`` into the run directory ``out_dir`` (resumes; a finished run
    is only read). Metrics per epoch: the training terms, and :func:`mapping_metrics` on
    ``eval_points`` held-out latent points. Returns the summary (also ``summary.json``)."""
    run_dir = RunDir(out_dir)
    run_dir.claim(config)
    teacher, teacher_config, image_shape = load_vae(config.teacher)
    model = create_student(config, teacher_config.latent_dim, image_shape)
    tx = _adam(config.learning_rate, config.epochs * config.steps_per_epoch)
    graphdef, state = create_state(model, tx, config.seed)
    step = make_mapping_step(graphdef, teacher, tx, batch_size=config.batch_size)
    z_eval = heldout_latents(config.eval_points, teacher_config.latent_dim)
    state = run_epochs(
        run_dir,
        state,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        images_per_step=config.batch_size,
        epoch_steps=lambda epoch: lambda s, i: step(s, teacher.params),
        evaluate=lambda s: mapping_metrics(teacher, Frozen(graphdef, s.params, s.rest), z_eval),
        label=label or "student",
        progress=progress,
    )
    return _summarise(
        run_dir, encoder_params=count_params(model.encoder), decoder_params=count_params(model.decoder)
    )


def load_mapping(run_dir) -> tuple[Frozen, MappingConfig]:
    """The final student of the finished run in ``run_dir``: ``(frozen model, config)``."""
    run = RunDir(run_dir)
    run.summary()  # refuses unfinished runs
    config = MappingConfig(**json.loads(run.config_file.read_text())["config"])
    _, teacher_config, image_shape = load_vae(config.teacher)
    model = create_student(config, teacher_config.latent_dim, image_shape)
    graphdef, like = create_state(model, _adam(config.learning_rate, 1), config.seed)
    state = checkpoint.restore(checkpoint.manager(run.path), like)
    return Frozen(graphdef, state.params, state.rest), config


# ---------------------------------------------------------------- the loop


def run_epochs(
    run_dir: RunDir,
    state: TrainState,
    *,
    epochs: int,
    steps_per_epoch: int,
    images_per_step: int,
    epoch_steps: Callable[[int], Callable],
    evaluate: Callable[[TrainState], dict],
    label: str,
    progress: bool = True,
) -> TrainState:
    """Train from the last checkpoint in ``run_dir`` (if any) to ``epochs``: each epoch runs
    ``epoch_steps(epoch)(state, i) -> (state, metrics)`` for ``i < steps_per_epoch``, appends its
    mean metrics and ``evaluate(state)`` to ``metrics.jsonl`` and saves a checkpoint. Returns the
    final state."""
    mngr = checkpoint.manager(run_dir.path)
    start = mngr.latest_step() or 0
    if start:
        state = checkpoint.restore(mngr, state)
    run_dir.keep_metrics_until(start)
    per_epoch = steps_per_epoch * images_per_step
    bar = tqdm(
        total=epochs * per_epoch,
        initial=start * per_epoch,
        unit="img",
        unit_scale=True,
        desc=label,
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    for epoch in range(start, epochs):
        started = time.perf_counter()
        one_step, step_metrics = epoch_steps(epoch), []
        for i in range(steps_per_epoch):
            state, metrics = one_step(state, i)
            step_metrics.append(metrics)
            bar.update(images_per_step)
        step_metrics = jax.device_get(step_metrics)
        train = run_dir.epoch_means(step_metrics, epoch=epoch + 1, last_checkpoint=mngr.latest_step() or 0)
        seconds = time.perf_counter() - started
        test = evaluate(state)
        run_dir.append_epoch(epoch + 1, (epoch + 1) * steps_per_epoch, seconds, train, test)
        bar.set_postfix(epoch=epoch + 1, loss=f"{train['loss']:.4f}")
        checkpoint.save(mngr, epoch + 1, state)
    bar.close()
    return state


def _summarise(run_dir: RunDir, **extra) -> dict:
    lines = run_dir.metrics()
    summary = {
        "epochs": lines[-1]["epoch"],
        "train_seconds": round(sum(m["seconds"] for m in lines), 2),
        **extra,
        **{k: v for k, v in lines[-1].items() if k.startswith(("train/", "test/"))},
    }
    run_dir.write_summary(summary)
    return summary

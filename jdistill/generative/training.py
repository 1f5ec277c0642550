"""Training a VAE teacher on images, and a student that maps into its latent space, as two games.

- ``VAEConfig``: a :class:`~jdistill.models.vae.VAE` on the training images (pixel intensities in
  [0, 1] as Bernoulli targets), Adam on a cosine schedule, the negative ELBO.
- ``MappingConfig``: a :class:`~jdistill.models.vae.LatentMapper` from a finished VAE run. Every
  round draws fresh latent points ``z ~ N(0, I)`` and the teacher decoder's mean images
  ``x_t = sigmoid(decoder(z))``; the student's encoder regresses ``z`` from ``x_t``
  (:func:`~jdistill.losses.generative.latent_regression`) and its decoder reproduces the
  teacher's pixel distributions from ``z`` (:func:`~jdistill.losses.generative.decoder_distillation`).
  Neither sees a real image. The two terms touch disjoint parameters, so one Adam optimizer on
  their sum trains each part on its own term.

:func:`train_vae` and :func:`train_mapping` play them into run directories with
:func:`jdistill.train.fit`; the teacher is frozen and never updated.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jdistill.data import Dataset, load_dataset
from jdistill.generative.evaluation import heldout_latents, mapping_metrics
from jdistill.losses.generative import bernoulli_nll, decoder_distillation, gaussian_kl, latent_regression
from jdistill.models import count_params
from jdistill.models.vae import VAE, LatentMapper
from jdistill.train import checkpoint, optim
from jdistill.train.fit import fit
from jdistill.train.game import MODEL, Game, Move, Phase
from jdistill.train.player import Frozen, Player, split_module
from jdistill.train.rundir import RunDir
from jdistill.train.sources import DataSource, NoiseSource

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

    def build(self, dataset: Dataset | None = None) -> Game:
        return build_vae(self, dataset)


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

    def build(self, dataset: Dataset | None = None) -> Game:
        return build_mapping(self)


def _adam(learning_rate: float, total_steps: int) -> optim.Optimizer:
    return optim.Optimizer("adam", learning_rate, optim.schedule("cosine", total_steps))


# ---------------------------------------------------------------- the VAE teacher


def vae_loss(beta: float, view):
    """The batch's mean negative ELBO, one reparameterised sample per image."""
    images = view.batch["image"]
    logits, mean, log_variance = view.module("vae")(images, view.key(MODEL))
    nll, kl = jnp.mean(bernoulli_nll(logits, images)), jnp.mean(gaussian_kl(mean, log_variance))
    return nll + beta * kl, {"loss": nll + beta * kl, "nll": nll, "kl": kl}


@functools.cache
def _vae_test_sums(graphdef):
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


def build_vae(config: VAEConfig, dataset: Dataset | None = None) -> Game:
    dataset = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    # Raw pixel intensities: they are the Bernoulli targets.
    source = DataSource(dataclasses.replace(dataset, mean=None, std=None), config.batch_size)
    model = create_vae(config, dataset.input_shape)
    x_test = dataset.x_test.astype(np.float32)
    evaluate = lambda players, teachers, mesh: vae_test_metrics(
        players["vae"].graphdef, players["vae"].params, players["vae"].rest, x_test
    )
    return Game(
        config=config,
        players={
            "vae": Player.create(model, _adam(config.learning_rate, config.epochs * source.steps_per_epoch))
        },
        phases=(Phase("train", config.epochs, (Move("vae", functools.partial(vae_loss, config.beta)),)),),
        source=source,
        seed=config.seed,
        evaluate=evaluate,
        label="VAE teacher",
        summary={
            "epochs": config.epochs,
            "image_shape": list(dataset.input_shape),
            "encoder_params": count_params(model.encoder),
            "decoder_params": count_params(model.decoder),
        },
        summary_prefixes=("train/", "test/"),
        best=None,
    )


def _restore(run_dir, player: str, module) -> Frozen:
    run = RunDir(run_dir)
    run.summary()  # refuses unfinished runs
    graphdef, params, rest = split_module(module)
    return Frozen(graphdef, *checkpoint.restore_variables(run.path, player, params, rest, format=run.format))


def load_vae(run_dir) -> tuple[Frozen, VAEConfig, tuple[int, ...]]:
    """The final VAE of the finished run in ``run_dir``: ``(frozen model, config, image_shape)``."""
    run = RunDir(run_dir)
    config = VAEConfig(**run.config_record()["config"])
    image_shape = tuple(run.summary()["image_shape"])
    return _restore(run_dir, "vae", create_vae(config, image_shape)), config, image_shape


def train_vae(
    config: VAEConfig, out_dir, *, dataset: Dataset | None = None, progress: bool = True, **options
) -> dict:
    """Train the VAE teacher of ``config`` into the run directory ``out_dir`` (resumes; a finished
    run is only read). Metrics per epoch: mean training ``loss``, ``nll``, ``kl`` and the test
    set's ``neg_elbo``, ``nll``, ``kl``. Returns the summary (also ``summary.json``)."""
    return fit(config, out_dir, dataset=dataset, progress=progress, **options)


# ---------------------------------------------------------------- the student


def mapping_objective(student: nnx.Module, z, teacher_logits):
    """``(loss, terms)``: the student's encoder regresses ``z`` from the teacher's mean images
    ``sigmoid(teacher_logits)``, its decoder matches ``teacher_logits`` from ``z``; batch means."""
    encoder = jnp.mean(latent_regression(student.encoder(jax.nn.sigmoid(teacher_logits)), z))
    decoder = jnp.mean(decoder_distillation(student.decoder(z), teacher_logits))
    return encoder + decoder, {"encoder_loss": encoder, "decoder_loss": decoder}


def mapping_loss(view):
    """The round's latent points, decoded by the frozen teacher (outside the gradient)."""
    z = view.batch["z"]
    teacher_logits = jax.lax.stop_gradient(view.teacher().decoder(z))
    loss, terms = mapping_objective(view.module("student"), z, teacher_logits)
    return loss, {"loss": loss, **terms}


def create_student(config: MappingConfig, latent_dim: int, image_shape) -> LatentMapper:
    return LatentMapper(
        image_shape,
        latent_dim=latent_dim,
        encoder_widths=config.encoder_widths,
        decoder_widths=config.decoder_widths,
        rngs=nnx.Rngs(config.seed),
    )


def build_mapping(config: MappingConfig) -> Game:
    teacher, teacher_config, image_shape = load_vae(config.teacher)
    model = create_student(config, teacher_config.latent_dim, image_shape)
    z_eval = heldout_latents(config.eval_points, teacher_config.latent_dim)

    def evaluate(players, teachers, mesh):
        student = players["student"]
        return mapping_metrics(
            teachers["teacher"], Frozen(student.graphdef, student.params, student.rest), z_eval
        )

    return Game(
        config=config,
        players={
            "student": Player.create(
                model, _adam(config.learning_rate, config.epochs * config.steps_per_epoch)
            )
        },
        phases=(Phase("train", config.epochs, (Move("student", mapping_loss),)),),
        source=NoiseSource(config.batch_size, teacher_config.latent_dim, config.steps_per_epoch),
        seed=config.seed,
        evaluate=evaluate,
        teachers={"teacher": teacher},
        label="student",
        summary={
            "epochs": config.epochs,
            "encoder_params": count_params(model.encoder),
            "decoder_params": count_params(model.decoder),
        },
        summary_prefixes=("train/", "test/"),
        best=None,
    )


def train_mapping(config: MappingConfig, out_dir, *, progress: bool = True, **options) -> dict:
    """Train the student of ``config`` into the run directory ``out_dir`` (resumes; a finished run
    is only read). Metrics per epoch: the training terms, and :func:`mapping_metrics` on
    ``eval_points`` held-out latent points. Returns the summary (also ``summary.json``)."""
    return fit(config, out_dir, progress=progress, **options)


def load_mapping(run_dir) -> tuple[Frozen, MappingConfig]:
    """The final student of the finished run in ``run_dir``: ``(frozen model, config)``."""
    config = MappingConfig(**RunDir(run_dir).config_record()["config"])
    _, teacher_config, image_shape = load_vae(config.teacher)
    return _restore(
        run_dir, "student", create_student(config, teacher_config.latent_dim, image_shape)
    ), config

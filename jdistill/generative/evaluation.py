"""How well a latent-mapping student reproduces its VAE teacher: errors on held-out latent points
and real images, classifier scores of generated images, throughput, and sample grids."""

import functools
import statistics
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jdistill.losses.generative import bernoulli_nll, decoder_distillation, latent_regression
from jdistill.train.player import Frozen

HELDOUT_SEED = 1_000_003  # the held-out latent points: no training step draws from this key
BATCH = 1000
ACTIVE = 0.01  # variance of the posterior mean above which a latent dimension is active


def heldout_latents(n: int, latent_dim: int) -> jax.Array:
    """``n`` fixed latent points from ``N(0, I)``, the same for every run."""
    return jax.random.normal(jax.random.key(HELDOUT_SEED), (n, latent_dim))


def _batched_sums(fn: Callable, *arrays) -> dict:
    """``fn(*batch) -> {name: sums}`` over batches of ``BATCH`` rows, added up (float64)."""
    totals = {}
    for i in range(0, len(arrays[0]), BATCH):
        for k, v in jax.device_get(fn(*(a[i : i + BATCH] for a in arrays))).items():
            totals[k] = totals.get(k, 0.0) + np.asarray(v, np.float64)
    return totals


@functools.cache
def _mapping_sums(teacher_graphdef, student_graphdef) -> Callable:
    """The jitted sums of :func:`mapping_metrics` on a batch, compiled once per pair of models."""

    @jax.jit
    def sums(teacher_variables, student_variables, z):
        t = nnx.merge(teacher_graphdef, *teacher_variables)
        s = nnx.merge(student_graphdef, *student_variables)
        teacher_logits = t.decoder(z)
        x_t = jax.nn.sigmoid(teacher_logits)
        z_student, z_teacher = s.encoder(x_t), t.encode(x_t)[0]
        student_logits = s.decoder(z)
        pixel_se = lambda logits: jnp.sum((jax.nn.sigmoid(logits) - x_t) ** 2)
        return {
            "z_sq": jnp.sum(z**2),
            "z_sum": jnp.sum(z),
            "encoder": jnp.sum(latent_regression(z_student, z)),
            "teacher_encoder": jnp.sum(latent_regression(z_teacher, z)),
            "pixel_se": pixel_se(student_logits),
            "kl": jnp.sum(decoder_distillation(student_logits, teacher_logits)),
            "bce": jnp.sum(bernoulli_nll(student_logits, x_t)),
            "roundtrip_student": pixel_se(t.decoder(z_student)),
            "roundtrip_teacher": pixel_se(t.decoder(z_teacher)),
        }

    return sums


def mapping_metrics(teacher: Frozen, student: Frozen, z: jax.Array) -> dict:
    """On the latent points ``z`` and the teacher's mean images ``x_t = sigmoid(decoder(z))``:

    - ``encoder/latent_mse``: the student encoder's squared error per latent dimension against
      ``z``; ``encoder/unexplained``: the same over the variance of ``z`` (1 - R^2);
      ``teacher_encoder/...``: the same for the teacher encoder's mean, a reference;
    - ``decoder/pixel_mse``: squared error per pixel of the student decoder's probabilities
      against ``x_t``; ``decoder/kl``: per-pixel Bernoulli KL (nats per image);
      ``decoder/bce_per_pixel``: binary cross-entropy against ``x_t`` (includes its entropy);
    - ``roundtrip/student_encoder``, ``roundtrip/teacher_encoder``: pixel MSE of
      ``teacher_decoder(encoder(x_t))`` against ``x_t``.
    """
    sums = _mapping_sums(teacher.graphdef, student.graphdef)
    totals = _batched_sums(lambda z: sums(teacher.variables, student.variables, z), z)
    n, latent_dim = z.shape
    pixels = n * int(np.prod(teacher.module().decoder.image_shape))
    variance = totals["z_sq"] / (n * latent_dim) - (totals["z_sum"] / (n * latent_dim)) ** 2
    out = {}
    for name in ("encoder", "teacher_encoder"):
        mse = totals[name] / (n * latent_dim)
        out[f"{name}/latent_mse"], out[f"{name}/unexplained"] = mse, mse / variance
    out["decoder/pixel_mse"] = totals["pixel_se"] / pixels
    out["decoder/kl"] = totals["kl"] / n
    out["decoder/bce_per_pixel"] = totals["bce"] / pixels
    out["roundtrip/student_encoder"] = totals["roundtrip_student"] / pixels
    out["roundtrip/teacher_encoder"] = totals["roundtrip_teacher"] / pixels
    return {k: float(v) for k, v in out.items()}


@functools.cache
def _real_image_sums(teacher_graphdef, student_graphdef) -> Callable:
    """The jitted sums of :func:`real_image_metrics` on a batch, compiled once per pair of models."""

    @jax.jit
    def sums(teacher_variables, student_variables, x):
        t = nnx.merge(teacher_graphdef, *teacher_variables)
        s = nnx.merge(student_graphdef, *student_variables)
        z_teacher, z_student = t.encode(x)[0], s.encoder(x)
        pixel_se = lambda logits: jnp.sum((jax.nn.sigmoid(logits) - x) ** 2)
        return {
            "latent_se": jnp.sum(latent_regression(z_student, z_teacher)),
            "mean_sq": jnp.sum(z_teacher**2, axis=0),
            "mean_sum": jnp.sum(z_teacher, axis=0),
            "recon_teacher": pixel_se(t.decoder(z_teacher)),
            "recon_student_encoder": pixel_se(t.decoder(z_student)),
            "recon_student": pixel_se(s.decoder(z_student)),
        }

    return sums


def real_image_metrics(teacher: Frozen, student: Frozen, images: np.ndarray) -> dict:
    """On real images ``x`` (pixel intensities in [0, 1]):

    - ``real/encoder_latent_mse``: the student encoder's squared error per latent dimension
      against the teacher encoder's mean; ``real/encoder_unexplained``: over the variance of
      those means (over images, averaged over dimensions); ``real/active_dims``: the number of
      latent dimensions whose teacher mean varies over the images by more than ``ACTIVE``
      (Burda et al. 2016's active units; the others the decoder ignores);
    - ``real/recon_teacher``, ``real/recon_student_encoder``, ``real/recon_student``: pixel MSE
      against ``x`` of ``teacher_decoder(teacher_mean(x))``, ``teacher_decoder(student_encoder(x))``
      and ``student_decoder(student_encoder(x))`` (the student alone).
    """

    sums = _real_image_sums(teacher.graphdef, student.graphdef)
    totals = _batched_sums(lambda x: sums(teacher.variables, student.variables, x), images)
    n, pixels = len(images), images[0].size
    per_dim_variance = totals["mean_sq"] / n - (totals["mean_sum"] / n) ** 2
    mse = float(totals["latent_se"]) / totals["mean_sq"].size / n
    return {
        "real/encoder_latent_mse": mse,
        "real/encoder_unexplained": mse / float(per_dim_variance.mean()),
        "real/active_dims": int(np.sum(per_dim_variance > ACTIVE)),
        **{
            f"real/{k}": float(totals[k]) / (n * pixels)
            for k in ("recon_teacher", "recon_student_encoder", "recon_student")
        },
    }


def classifier_scores(probs: np.ndarray) -> dict:
    """Scores of generated images from a classifier's probabilities ``probs`` [N, C]:
    ``confidence`` (mean max-probability), ``class_entropy`` (entropy in nats of the histogram of
    predicted classes; ln C when every class is predicted equally often) and ``inception_score``
    ``exp(mean_x KL(p(y|x) || p(y)))`` with ``p(y)`` the mean of ``probs`` (Salimans et al. 2016,
    "Improved Techniques for Training GANs"; here with an MNIST classifier)."""
    probs = np.asarray(probs, np.float64)
    counts = np.bincount(probs.argmax(-1), minlength=probs.shape[1]) / len(probs)
    nonzero = counts[counts > 0]
    marginal = probs.mean(0)
    log = lambda p: np.log(np.clip(p, 1e-30, None))
    kl = np.sum(probs * (log(probs) - log(marginal)), axis=-1)
    return {
        "confidence": float(probs.max(-1).mean()),
        "class_entropy": float(-np.sum(nonzero * np.log(nonzero))) + 0.0,  # never -0.0
        "inception_score": float(np.exp(kl.mean())),
    }


def throughput(fn: Callable, inputs: jax.Array, *, repeats: int = 5, min_seconds: float = 0.2) -> float:
    """Median images per second of the jitted ``fn`` on the batch ``inputs`` after a warm-up:
    ``repeats`` timings, each of as many calls as last about ``min_seconds``, blocked on."""
    fn = jax.jit(fn)
    jax.block_until_ready(fn(inputs))
    started, calls = time.perf_counter(), 0
    while time.perf_counter() - started < min_seconds / 4:
        jax.block_until_ready(fn(inputs))
        calls += 1
    per_call = (time.perf_counter() - started) / calls
    calls = max(1, int(min_seconds / per_call))
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            out = fn(inputs)
        jax.block_until_ready(out)
        rates.append(calls * len(inputs) / (time.perf_counter() - started))
    return statistics.median(rates)


def save_grid(path, rows: Mapping[str, np.ndarray], *, title: str = "") -> None:
    """A PNG of image rows: each entry of ``rows`` (label -> images [N, H, W, 1] in [0, 1], the
    same N for all) is one labelled row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rows)
    n = len(rows[labels[0]])
    fig, axes = plt.subplots(
        len(labels), 1, figsize=(n * 0.75 + 2.5, len(labels) * 0.85 + 0.6), squeeze=False
    )
    for ax, label in zip(axes[:, 0], labels):
        images = np.asarray(rows[label])[..., 0]
        ax.imshow(np.concatenate(list(images), axis=1), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

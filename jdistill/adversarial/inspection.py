"""What a data-free generator makes: samples, the teacher's class histogram on them and its
normalised entropy (where mode collapse shows), the teacher's mean absolute logit and the largest
absolute pixel on them (where a generator that exploits the teacher shows), the saturation and
spread of the generator's tanh outputs (where images that become one show), their plots, and the
hooks that write them during a run."""

import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jdistill.data import Dataset
from jdistill.train import distributed
from jdistill.train.game import Hooks
from jdistill.train.player import Frozen, Player

SATURATED = 0.99  # |tanh| above this passes at most 2 % of the gradient (1 - tanh^2)


def make_sampler(batch_size: int, noise_dim: int) -> Callable:
    """``sample(generator, key, num) -> (images, tanh)``: ``num`` generated images (numpy), in
    batches of ``batch_size`` with the batch statistics the generator trains with, and two figures
    of their tanh outputs ``u`` (:meth:`~jdistill.models.generator.Generator.tanh_output`, before
    the last BatchNorm): ``tanh_saturation``, the fraction of the images' pixels with ``|u| >``
    :data:`SATURATED`, and ``tanh_std``, the standard deviation of ``u`` over each batch's samples
    and pixels (what the last BatchNorm divides by; 0 when every image is the same), averaged over
    batches and channels. Compiled once."""

    @jax.jit
    def generate(generator, z):
        module = generator.module()
        before = module.tanh_output(z)
        saturated = jnp.mean(jnp.abs(before) > SATURATED, axis=(1, 2, 3))  # per sample
        return module.bn_out(before), saturated, jnp.mean(jnp.std(before, axis=(0, 1, 2)))

    def sample(generator: Player, key, num: int) -> tuple[np.ndarray, dict]:
        zs = jax.random.normal(key, (-(-num // batch_size), batch_size, noise_dim))
        images, saturated, spread = zip(*(map(np.asarray, generate(generator, z)) for z in zs))
        tanh = {"tanh_saturation": float(np.mean(np.concatenate(saturated)[:num])),
                "tanh_std": float(np.mean(spread))}  # fmt: skip
        return np.concatenate(images)[:num], tanh

    return sample


def make_generated_statistics(teacher: Frozen, num_classes: int) -> Callable:
    """``statistics(images) -> dict`` on generated (standardised) images ``x``: ``class_counts``
    (how many the teacher assigns to each class, by its argmax), their ``class_entropy``
    (:func:`histogram_entropy`), ``teacher_abs_logit`` = mean over samples and classes of
    ``|t(x)|`` and ``max_abs_pixel`` = ``max |x|`` (real MNIST images, standardised: at most 2.82)."""

    @jax.jit
    def judge(t, x):
        logits = t.module().model(x, train=False)[0]
        return jnp.argmax(logits, -1), jnp.mean(jnp.abs(logits.astype(jnp.float32)))

    def statistics(images) -> dict:
        predicted, abs_logit = judge(teacher, images)
        counts = np.bincount(np.asarray(predicted), minlength=num_classes)
        return {
            "class_counts": counts.tolist(),
            "class_entropy": histogram_entropy(counts),
            "teacher_abs_logit": float(abs_logit),
            "max_abs_pixel": float(np.max(np.abs(images))),
        }

    return statistics


def histogram_entropy(counts) -> float:
    """Entropy of the class histogram over ``log C``: 1 when every class is generated equally
    often, 0 when all samples fall into one class (mode collapse)."""
    p = np.asarray(counts, np.float64) / max(np.sum(counts), 1)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(len(counts))) + 0.0  # + 0.0: no "-0.0" for one class


COLLAPSED = 0.05  # a class entropy at or below this: (nearly) every generated sample in one class


def collapse_iteration(metrics: list[dict]) -> int | None:
    """The first iteration (``step``) of a data-free run's ``metrics.jsonl`` records at which the
    teacher's class histogram on generated samples has a normalised entropy of at most
    :data:`COLLAPSED` (mode collapse), or None."""
    entropy = "generated/class_entropy"
    return next((m["step"] for m in metrics if m.get(entropy, 1.0) <= COLLAPSED), None)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_grid(images, path, dataset: Dataset, *, columns: int = 8, title: str = "") -> None:
    """A PNG grid of standardised images, mapped back to pixel values with the data set's
    statistics and clipped to [0, 1]."""
    plt = _pyplot()
    pixels = np.clip(np.asarray(images) * np.asarray(dataset.std) + np.asarray(dataset.mean), 0.0, 1.0)
    n, h, w, c = pixels.shape
    rows = -(-n // columns)
    canvas = np.ones((rows * (h + 2), columns * (w + 2), c), np.float32)
    for i, image in enumerate(pixels):
        r, col = divmod(i, columns)
        canvas[r * (h + 2) + 1 : r * (h + 2) + 1 + h, col * (w + 2) + 1 : col * (w + 2) + 1 + w] = image
    fig, ax = plt.subplots(figsize=(columns * 0.8, rows * 0.8 + 0.4))
    ax.imshow(canvas.squeeze(-1) if c == 1 else canvas, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_histogram(counts, path, *, title: str = "") -> None:
    """A bar plot (PNG) of the teacher's predicted classes on generated samples."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(np.arange(len(counts)), counts, color="tab:blue")
    ax.axhline(np.sum(counts) / len(counts), color="k", lw=0.8, ls="--", label="uniform")
    ax.set_xticks(np.arange(len(counts)))
    ax.set_xlabel("class predicted by the teacher")
    ax.set_ylabel("generated samples")
    ax.set_title(f"{title} (entropy {histogram_entropy(counts):.3f} of log C)", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def hooks(config, dataset: Dataset, teacher: Frozen) -> Hooks:
    """A data-free run's hooks (``config``: a :class:`~jdistill.adversarial.data_free.DataFreeConfig`):
    sample grids every ``samples_every`` iterations and at the end; every epoch, the
    :func:`make_generated_statistics` of ``histogram_samples`` generated samples and the tanh
    figures of :func:`make_sampler` (as ``generated/*``), and the class histogram at the end. Their noise is drawn from keys of their
    own, so they never change the training's random numbers. The first epoch whose samples have
    collapsed into one class (:data:`COLLAPSED`) is named in one line on standard error; with
    ``collapse_restarts``, a collapse sends the run back to its last checkpoint, to play on with new
    noise (:class:`~jdistill.train.game.Hooks`), at most that many times."""
    sample, grid_sample = (
        make_sampler(config.batch_size, config.noise_dim),
        make_sampler(64, config.noise_dim),
    )
    statistics = make_generated_statistics(teacher, dataset.num_classes)
    _, grid_key, histogram_key = jax.random.split(jax.random.key(config.seed), 3)

    def grid(players, iteration, run, path=None, title=None):
        if path is None:
            (run.path / "samples").mkdir(exist_ok=True)
            path = run.path / "samples" / f"iter_{iteration:06d}.png"
        images, _ = grid_sample(players["generator"], grid_key, 64)  # on every process: the mesh spans them
        if distributed.is_primary():
            save_grid(images, path, dataset, title=title or f"{config.method}, iteration {iteration}")

    collapsed = []  # the epoch of the first collapse this process saw

    def epoch(players, epoch, run):
        key = jax.random.fold_in(histogram_key, epoch - 1)
        images, tanh = sample(players["generator"], key, config.histogram_samples)
        found = {**statistics(images), **tanh}
        if found["class_entropy"] <= COLLAPSED and not collapsed and distributed.is_primary():
            collapsed.append(epoch)
            counts, iteration = found["class_counts"], epoch * config.iterations_per_epoch
            print(
                f"{run.path.name}: the generator collapsed by iteration {iteration}: "
                f"the teacher puts {max(counts)} of {sum(counts)} generated samples in class "
                f"{int(np.argmax(counts))} (class entropy {found['class_entropy']:.2f}; largest |pixel| "
                f"{found['max_abs_pixel']:.2f}, tanh saturated on {100 * tanh['tanh_saturation']:.1f} % of pixels, "
                f"its spread {tanh['tanh_std']:.2g})",
                file=sys.stderr,
            )
        return {f"generated/{k}": v for k, v in found.items()}

    def end(players, run):
        grid(
            players,
            config.iterations,
            run,
            run.path / "samples.png",
            f"{config.method}: generated samples, end of training",
        )
        if distributed.is_primary():
            counts = run.metrics()[-1]["generated/class_counts"]
            save_histogram(counts, run.path / "class_histogram.png", title=config.method)

    def restart(record):
        entropy = record.get("generated/class_entropy")
        if entropy is None or entropy > COLLAPSED:
            return None
        one_class = int(np.argmax(record["generated/class_counts"]))
        return f"the generator collapsed into class {one_class} (class entropy {entropy:.2f})"

    return Hooks(every=config.samples_every, round=grid, epoch=epoch, end=end, restart=restart,
                 restarts=config.collapse_restarts)  # fmt: skip

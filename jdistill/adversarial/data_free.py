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

The student and the generator are two :class:`~jdistill.train.TrainState` s, each with its own
optax transformation and schedule. :func:`make_student_step` and :func:`make_generator_step`
are the pure steps of each player; :func:`make_iteration` composes one iteration of the game
(jitted, the teacher never donated). :func:`run` trains into a run directory with checkpoints,
``metrics.jsonl``, a sample grid PNG every ``samples_every`` iterations and the class histogram
of the teacher's predictions on generated samples (where mode collapse shows).
"""

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from jdistill import losses
from jdistill.data import Dataset, load_dataset
from jdistill.losses.adversarial import DAFL_INFORMATION_ENTROPY_WEIGHT
from jdistill.models import create_model
from jdistill.models.generator import Generator
from jdistill.train import checkpoint
from jdistill.train.loop import Teacher, TestEvaluator, load_teacher
from jdistill.train.parallel import make_mesh
from jdistill.train.rundir import RunDir
from jdistill.train.state import Trainable, TrainState, create_state

METHODS = ("dfad", "dafl", "zskt")


@dataclasses.dataclass(frozen=True)
class Game:
    """How a method's players alternate within one iteration."""

    student_steps: int  # student steps per generator step
    generator_first: bool  # ZSKT: generator step, then the student's
    same_noise: bool  # the student's steps reuse the generator step's noise (DAFL, ZSKT)


GAMES = {
    "dfad": Game(student_steps=5, generator_first=False, same_noise=False),
    "dafl": Game(student_steps=1, generator_first=False, same_noise=True),
    "zskt": Game(student_steps=10, generator_first=True, same_noise=True),
}

# The papers' optimizers (see ../shared/reference/paper-tables.md): (optimizer, lr, weight decay).
PAPER_OPTIMIZERS = {
    "dfad": {"student": ("sgd", 0.01, 1e-4), "generator": ("adam", 1e-3, 0.0)},
    "dafl": {"student": ("adam", 2e-3, 0.0), "generator": ("adam", 0.2, 0.0)},
    "zskt": {"student": ("adam", 2e-3, 0.0), "generator": ("adam", 1e-3, 0.0)},
}


@dataclasses.dataclass(frozen=True)
class DataFreeConfig:
    """One data-free run. ``data_dir`` is read for the teacher's test set only (to evaluate the
    student); the training images are read only for the normalisation statistics that the
    teacher was trained with (:func:`teacher_dataset`)."""

    teacher_dir: str
    method: str = "dfad"
    student: str = "lenet5_half"
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
    student_optimizer: str | None = None  # None: the paper's (sgd or adam)
    student_lr: float | None = None
    student_weight_decay: float | None = None
    student_schedule: str = "constant"  # or "cosine" over the whole run
    generator_lr: float | None = None
    generator_schedule: str = "constant"
    grad_clip: float | None = None  # global-norm clipping of both players' gradients (ZSKT: 5)
    at_weight: float = 250.0  # ZSKT's attention transfer
    at_features: tuple[str, ...] = ("conv1", "conv2")
    activation_feature: str = "fc1"  # DAFL's teacher features (LeNet-5's 120-d layer)
    samples_every: int = 500  # iterations between sample grids
    checkpoint_every: int = 1  # epochs
    histogram_samples: int = 2048

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown data-free method {self.method!r}; choose one of {', '.join(METHODS)}")
        paper = PAPER_OPTIMIZERS[self.method]
        for player in ("student", "generator"):
            optimizer, lr, weight_decay = paper[player]
            if player == "student":
                self._default("student_optimizer", optimizer)
                self._default("student_weight_decay", weight_decay)
            self._default(f"{player}_lr", lr)
        self._default("student_steps", GAMES[self.method].student_steps)
        self._default("generator_bn_epsilon", 0.8 if self.method == "dafl" else 1e-5)
        object.__setattr__(self, "at_features", tuple(self.at_features))
        for name in ("iterations", "iterations_per_epoch", "batch_size", "noise_dim", "generator_width",
                     "student_steps", "samples_every", "histogram_samples", "checkpoint_every"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.iterations % self.iterations_per_epoch:
            raise ValueError(
                f"iterations ({self.iterations}) must be a multiple of iterations_per_epoch "
                f"({self.iterations_per_epoch})"
            )
        if self.student_optimizer not in ("sgd", "adam"):
            raise ValueError(f"student_optimizer must be 'sgd' or 'adam', got {self.student_optimizer!r}")
        for name in ("student_schedule", "generator_schedule"):
            if getattr(self, name) not in ("constant", "cosine"):
                raise ValueError(f"{name} must be 'constant' or 'cosine', got {getattr(self, name)!r}")

    def _default(self, name, value):
        if getattr(self, name) is None:
            object.__setattr__(self, name, value)

    @property
    def game(self) -> Game:
        return dataclasses.replace(GAMES[self.method], student_steps=self.student_steps)

    @property
    def epochs(self) -> int:
        return self.iterations // self.iterations_per_epoch


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
        mean = dataset.x_train.mean(axis=(0, 1, 2))
        std = dataset.x_train.std(axis=(0, 1, 2))
        dataset = dataclasses.replace(dataset, mean=tuple(map(float, mean)), std=tuple(map(float, std)))
    return dataset


# ------------------------------------------------------------------------------------ players


def _optimizer(
    name: str, weight_decay: float, clip: float | None, lr_schedule
) -> optax.GradientTransformation:
    parts = [optax.clip_by_global_norm(clip)] if clip else []
    parts.append(optax.add_decayed_weights(weight_decay))  # coupled (L2), as torch's optimizers
    parts.append(optax.sgd(lr_schedule, momentum=0.9) if name == "sgd" else optax.adam(lr_schedule))
    return optax.chain(*parts)


def _schedule(kind: str, lr: float, steps: int):
    return optax.cosine_decay_schedule(lr, steps) if kind == "cosine" else optax.constant_schedule(lr)


def student_optimizer(config: DataFreeConfig) -> optax.GradientTransformation:
    steps = config.iterations * config.student_steps
    schedule = _schedule(config.student_schedule, config.student_lr, steps)
    return _optimizer(config.student_optimizer, config.student_weight_decay, config.grad_clip, schedule)


def generator_optimizer(config: DataFreeConfig) -> optax.GradientTransformation:
    schedule = _schedule(config.generator_schedule, config.generator_lr, config.iterations)
    return _optimizer("adam", 0.0, config.grad_clip, schedule)


def _apply(tx, state: TrainState, grads, rest) -> TrainState:
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates), rest=rest, opt_state=opt_state
    )


def _teacher_apply(teacher_graphdef, teacher_vars, images):
    """The teacher in inference mode. Not stopped: the generator's gradient flows through it to
    the images (the teacher's own parameters are constants of every step)."""
    return nnx.merge(teacher_graphdef, *teacher_vars).model(images, train=False)


def _generate(generator_graphdef, generator: TrainState, params, z):
    """Samples (always with batch statistics) and the generator's non-trainable variables after them."""
    module = nnx.merge(generator_graphdef, params, generator.rest)
    images = module(z)
    return images, nnx.to_pure_dict(nnx.split(module, nnx.Param, ...)[2])


def _student_loss(config: DataFreeConfig, s_out, t_out) -> tuple[jax.Array, dict]:
    (s_logits, s_feats), (t_logits, t_feats) = s_out, t_out
    if config.method == "dfad":
        terms = {"l1": jnp.mean(losses.dfad(s_logits, t_logits))}
    elif config.method == "dafl":
        terms = {"kl": jnp.mean(losses.kd(s_logits, t_logits, temperature=1.0))}
    else:
        terms = {"kl": jnp.mean(losses.zskt_belief(s_logits, t_logits))}
        at = sum(jnp.mean(losses.attention_transfer(s_feats[n], t_feats[n])) for n in config.at_features)
        terms["at"] = config.at_weight * at
    return sum(terms.values()), terms


def _generator_loss(config: DataFreeConfig, s_logits, t_out) -> tuple[jax.Array, dict]:
    t_logits, t_feats = t_out
    if config.method == "dfad":
        terms = {"l1": jnp.mean(losses.dfad_generator(s_logits, t_logits))}
    elif config.method == "zskt":
        terms = {"kl": jnp.mean(losses.zskt_generator(s_logits, t_logits))}
    else:
        terms = {
            "one_hot": jnp.mean(losses.dafl_one_hot(t_logits)),
            "information_entropy": DAFL_INFORMATION_ENTROPY_WEIGHT
            * losses.dafl_information_entropy(t_logits),
            "activation": 0.1 * losses.dafl_activation(t_feats[config.activation_feature]),
        }
    return sum(terms.values()), terms


def make_student_step(config, student_graphdef, generator_graphdef, teacher_graphdef) -> Callable:
    """``step(student, generator, teacher_vars, z) -> (student, metrics)``, with the student's
    state over a :class:`~jdistill.train.Trainable` wrapping the model: one update of the
    student on the generator's images for noise ``z``. The generator and the teacher are
    constants: neither is returned, so neither can change."""
    tx = student_optimizer(config)

    def step(student: TrainState, generator: TrainState, teacher_vars, z):
        images, _ = _generate(generator_graphdef, generator, generator.params, z)
        images = jax.lax.stop_gradient(images)
        t_out = jax.lax.stop_gradient(_teacher_apply(teacher_graphdef, teacher_vars, images))

        def objective(params):
            module = nnx.merge(student_graphdef, params, student.rest)
            s_out = module.model(images, train=True)
            loss, terms = _student_loss(config, s_out, t_out)
            return loss, (terms, s_out[0], nnx.to_pure_dict(nnx.split(module, nnx.Param, ...)[2]))

        (loss, (terms, s_logits, rest)), grads = jax.value_and_grad(objective, has_aux=True)(student.params)
        agree = jnp.mean(jnp.argmax(s_logits, -1) == jnp.argmax(t_out[0], -1))
        metrics = {
            "student/loss": loss,
            "student/agreement": agree,
            **{f"student/{k}": v for k, v in terms.items()},
        }
        return _apply(tx, student, grads, rest), metrics

    return step


def make_generator_step(config, student_graphdef, generator_graphdef, teacher_graphdef) -> Callable:
    """``step(generator, student, teacher_vars, z) -> (generator, metrics)``: one update of the
    generator against the frozen teacher and the current student (in inference mode)."""
    tx = generator_optimizer(config)

    def step(generator: TrainState, student: TrainState, teacher_vars, z):
        student_module = nnx.merge(student_graphdef, student.params, student.rest)

        def objective(params):
            images, rest = _generate(generator_graphdef, generator, params, z)
            t_out = _teacher_apply(teacher_graphdef, teacher_vars, images)
            s_logits, _ = student_module.model(images, train=False)
            loss, terms = _generator_loss(config, s_logits, t_out)
            return loss, (terms, rest)

        (loss, (terms, rest)), grads = jax.value_and_grad(objective, has_aux=True)(generator.params)
        metrics = {"generator/loss": loss, **{f"generator/{k}": v for k, v in terms.items()}}
        return _apply(tx, generator, grads, rest), metrics

    return step


def make_iteration(config, student_graphdef, generator_graphdef, teacher_graphdef) -> Callable:
    """``iteration(student, generator, teacher_vars, key) -> (student, generator, metrics)``:
    one round of the method's game (:data:`GAMES`) from the two jitted steps, each donating the
    state it updates (never the teacher's variables).

    On CPU each step is waited for before the next is dispatched. On a 2-core CPU both alternatives
    measured several times slower (LeNet-5 pair, batch 128: 0.45 s per DFAD iteration this way,
    1.3-2.3 s as one jit of the whole round or with dependent calls queued): XLA's waiting threads
    spin and take the cores from the computation."""
    game = config.game
    student_step = jax.jit(
        make_student_step(config, student_graphdef, generator_graphdef, teacher_graphdef), donate_argnums=0
    )
    generator_step = jax.jit(
        make_generator_step(config, student_graphdef, generator_graphdef, teacher_graphdef), donate_argnums=0
    )
    wait = jax.block_until_ready if jax.default_backend() == "cpu" else (lambda x: x)
    noise = jax.jit(
        lambda key: jax.random.normal(key, (1 + game.student_steps, config.batch_size, config.noise_dim))
    )

    def iteration(student, generator, teacher_vars, key):
        zs = noise(key)
        student_zs = [zs[0]] * game.student_steps if game.same_noise else list(zs[1:])
        if game.generator_first:
            generator, g_metrics = wait(generator_step(generator, student, teacher_vars, zs[0]))
        s_metrics = []
        for z in student_zs:
            student, m = wait(student_step(student, generator, teacher_vars, z))
            s_metrics.append(m)
        if not game.generator_first:
            generator, g_metrics = wait(generator_step(generator, student, teacher_vars, zs[0]))
        s_mean = jax.tree.map(lambda *v: sum(v) / len(v), *s_metrics)
        return student, generator, {**s_mean, **g_metrics}

    return iteration


# ------------------------------------------------------------------------------- inspection


def make_sampler(generator_graphdef, batch_size: int, noise_dim: int) -> Callable:
    """``sample(generator, key, num) -> images``: ``num`` generated images (numpy), in batches of
    ``batch_size`` with the batch statistics the generator trains with; compiled once."""
    generate = jax.jit(lambda generator, z: _generate(generator_graphdef, generator, generator.params, z)[0])

    def sample(generator: TrainState, key, num: int) -> np.ndarray:
        zs = jax.random.normal(key, (-(-num // batch_size), batch_size, noise_dim))
        return np.concatenate([np.asarray(generate(generator, z)) for z in zs])[:num]

    return sample


def make_class_histogram(teacher: Teacher, num_classes: int) -> Callable:
    """``histogram(images) -> counts``: how many images the teacher assigns to each class."""
    predict = jax.jit(lambda x: jnp.argmax(_teacher_apply(teacher.graphdef, teacher.variables, x)[0], -1))

    def histogram(images) -> np.ndarray:
        return np.bincount(np.asarray(predict(images)), minlength=num_classes)

    return histogram


def histogram_entropy(counts) -> float:
    """Entropy of the class histogram over ``log C``: 1 when every class is generated equally
    often, 0 when all samples fall into one class (mode collapse)."""
    p = np.asarray(counts, np.float64) / max(np.sum(counts), 1)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(len(counts))) + 0.0  # + 0.0: no "-0.0" for one class


def save_grid(images, path, dataset: Dataset, *, columns: int = 8, title: str = "") -> None:
    """A PNG grid of standardised images, mapped back to pixel values with the data set's
    statistics and clipped to [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


# -------------------------------------------------------------------------------------- run


def run(config: DataFreeConfig, out_dir, *, dataset: Dataset | None = None, progress: bool = True) -> dict:
    """Train ``config``'s student data-free into the run directory ``out_dir`` (resumes from its
    last checkpoint). Writes ``metrics.jsonl`` (one line per epoch of ``iterations_per_epoch``
    iterations: both players' losses, the student's test accuracy, the class histogram of the
    teacher on generated samples), ``samples/iter_NNNNNN.png``, ``class_histogram.png`` and
    ``summary.json``; returns the summary."""
    run_dir = RunDir(out_dir)
    run_dir.claim(config)
    if dataset is None:
        dataset = load_dataset(config.dataset, config.data_dir)
    dataset = teacher_dataset(dataset, config.image_size)
    teacher = load_teacher(config.teacher_dir, dataset)
    image_shape = dataset.input_shape
    needed = {"dfad": (), "dafl": (config.activation_feature,), "zskt": config.at_features}[config.method]
    missing = [n for n in needed if n not in teacher.shapes]
    if missing:
        raise ValueError(
            f"the teacher has no feature {missing[0]!r} (method {config.method}); "
            f"its features: {', '.join(sorted(teacher.shapes))}"
        )

    rngs = nnx.Rngs(config.seed)
    student_graphdef, student = create_state(
        Trainable(create_model(config.student, image_shape, dataset.num_classes, rngs=rngs), {}),
        student_optimizer(config),
        config.seed,
    )
    generator_graphdef, generator = create_state(
        Generator(
            image_shape,
            noise_dim=config.noise_dim,
            width=config.generator_width,
            bn_epsilon=config.generator_bn_epsilon,
            rngs=rngs,
        ),
        generator_optimizer(config),
        config.seed,
    )
    iteration = make_iteration(config, student_graphdef, generator_graphdef, teacher.graphdef)

    mngr = checkpoint.manager(run_dir.path)
    players = {"student": student, "generator": generator}
    start_epoch = mngr.latest_step() or 0
    if start_epoch:
        players = checkpoint.restore(mngr, players)
    run_dir.keep_metrics_until(start_epoch)
    evaluate = TestEvaluator(dataset, student_graphdef, teacher, make_mesh(jax.devices()[:1]))  # one device
    sample = make_sampler(generator_graphdef, config.batch_size, config.noise_dim)
    grid_sample = make_sampler(generator_graphdef, 64, config.noise_dim)
    histogram = make_class_histogram(teacher, dataset.num_classes)
    samples_dir = run_dir.path / "samples"
    samples_dir.mkdir(exist_ok=True)

    per_epoch = config.iterations_per_epoch
    bar = tqdm(
        total=config.iterations,
        initial=start_epoch * per_epoch,
        unit="it",
        desc=f"{config.method} {config.student}",
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    # Separate streams: the game's noise, the fixed noise of the sample grids, the histograms' noise.
    game_key, grid_key, histogram_key = jax.random.split(jax.random.key(config.seed), 3)
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        epoch_metrics = []
        for i in range(epoch * per_epoch, (epoch + 1) * per_epoch):
            s, g, m = iteration(
                players["student"], players["generator"], teacher.variables, jax.random.fold_in(game_key, i)
            )
            players = {"student": s, "generator": g}
            epoch_metrics.append(m)
            bar.update(1)
            if (i + 1) % config.samples_every == 0:
                images = grid_sample(g, grid_key, 64)
                save_grid(
                    images,
                    samples_dir / f"iter_{i + 1:06d}.png",
                    dataset,
                    title=f"{config.method}, iteration {i + 1}",
                )
        epoch_metrics = jax.device_get(epoch_metrics)
        train = run_dir.epoch_means(epoch_metrics, epoch=epoch + 1, last_checkpoint=mngr.latest_step() or 0)
        seconds = time.perf_counter() - started
        counts = histogram(
            sample(players["generator"], jax.random.fold_in(histogram_key, epoch), config.histogram_samples)
        )
        test = evaluate(players["student"])
        run_dir.append_epoch(
            epoch + 1,
            (epoch + 1) * per_epoch,
            seconds,
            train,
            test,
            **{
                "generated/class_counts": counts.tolist(),
                "generated/class_entropy": histogram_entropy(counts),
            },
        )
        bar.set_postfix(test_acc=f"{test['accuracy']:.4f}", classes=f"{histogram_entropy(counts):.2f}")
        if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
            checkpoint.save(mngr, epoch + 1, players)
    bar.close()

    lines = run_dir.metrics()
    final = lines[-1]
    images = grid_sample(players["generator"], grid_key, 64)
    save_grid(
        images,
        run_dir.path / "samples.png",
        dataset,
        title=f"{config.method}: generated samples, end of training",
    )
    save_histogram(final["generated/class_counts"], run_dir.path / "class_histogram.png", title=config.method)
    best = max(lines, key=lambda m: m["test/accuracy"])
    summary = {
        "method": config.method,
        "student": config.student,
        "teacher": teacher.config.model,
        "seed": config.seed,
        "iterations": config.iterations,
        "train_seconds": round(sum(m["seconds"] for m in lines), 2),
        **{k: v for k, v in final.items() if k.startswith(("test/", "generated/"))},
        "test/best_accuracy": best["test/accuracy"],
        "best_epoch": best["epoch"],
    }
    run_dir.write_summary(summary)
    return summary


# -------------------------------------------------------------------------------------- CLI

_OPTION_HELP = {
    "student": "built-in model name of the student (see 'jdistill models')",
    "image_size": "resize the data set's images to this side first (32: the papers' MNIST); the teacher must "
    "have been trained on images of that size",
    "seed": "seed of the student, the generator and the noise",
    "iterations": "rounds of the game (DFAD's paper: 2000 on MNIST)",
    "iterations_per_epoch": "rounds between evaluations, metrics lines and checkpoints",
    "batch_size": "generated images per step",
    "noise_dim": "dimension of the generator's Gaussian noise",
    "generator_width": "channels of the generator's last hidden layer (the papers: 64)",
    "generator_bn_epsilon": "epsilon of the generator's inner BatchNorms (default: DAFL 0.8, else 1e-5)",
    "student_steps": "student steps per generator step (default: DFAD 5, DAFL 1, ZSKT 10)",
    "student_optimizer": "sgd (momentum 0.9) or adam (default: the paper's)",
    "student_lr": "student learning rate (default: the paper's)",
    "student_weight_decay": "student's coupled weight decay (default: the paper's)",
    "student_schedule": "constant or cosine over the run",
    "generator_lr": "generator's Adam learning rate (default: the paper's)",
    "generator_schedule": "constant or cosine over the run",
    "grad_clip": "clip both players' gradients to this global norm (ZSKT: 5)",
    "at_weight": "ZSKT: weight of attention transfer",
    "activation_feature": "DAFL: the teacher's feature whose activation the generator raises",
    "samples_every": "iterations between sample grids (samples/iter_*.png)",
    "histogram_samples": "generated samples in each class histogram",
    "checkpoint_every": "epochs between checkpoints",
}
_TYPES = {"student": str, "student_optimizer": str, "student_schedule": str, "generator_schedule": str,
          "activation_feature": str, "generator_bn_epsilon": float, "student_lr": float,
          "student_weight_decay": float, "generator_lr": float, "grad_clip": float, "at_weight": float}  # fmt: skip
_CHOICES = {
    "student_optimizer": ("sgd", "adam"),
    "student_schedule": ("constant", "cosine"),
    "generator_schedule": ("constant", "cosine"),
}


def add_parser(subparsers):
    """Register the ``data-free`` subcommand on ``subparsers`` (of ``jdistill``'s parser)."""
    from jdistill.cli import DATA_DIR_HELP, DATASET_HELP

    fields = {f.name: f for f in dataclasses.fields(DataFreeConfig)}
    p = subparsers.add_parser(
        "data-free",
        help="distil a teacher without its training data: DFAD, DAFL or ZSKT",
        description="Data-free distillation: a generator synthesises the transfer set and the frozen teacher "
        "judges it; the student never sees a real training image. The data set is read for its test "
        "set (to score the student) and the teacher's input statistics only.",
    )
    p.add_argument("--teacher", required=True, dest="teacher_dir", help="run directory of a finished teacher")
    p.add_argument("--method", required=True, choices=METHODS, help="dfad, dafl or zskt")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument("--out", required=True, help="run directory; re-running the command there resumes")
    for name, text in _OPTION_HELP.items():
        default = fields[name].default
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=_TYPES.get(name, int),
            default=default,
            choices=_CHOICES.get(name),
            help=f"{text}; default: {default}",
        )
    p.add_argument(
        "--at-features",
        type=lambda text: tuple(text.split(",")),
        default=fields["at_features"].default,
        help="ZSKT: comma-separated features of teacher and student whose attention maps are matched; "
        f"default: {','.join(fields['at_features'].default)}",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_command)
    return p


def _command(args) -> None:
    import json

    names = {f.name for f in dataclasses.fields(DataFreeConfig)}
    config = DataFreeConfig(**{k: v for k, v in vars(args).items() if k in names})
    print(json.dumps(run(config, args.out, progress=not args.quiet), indent=2))

"""The loop shared by teacher training and distillation: data on the device, a jitted step per
batch, evaluation and checkpoints per epoch, metrics to JSONL, resumption from the last
checkpoint."""

import dataclasses
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from jdistill.data import Dataset, epoch_indices, load_dataset, random_flip, random_shift
from jdistill.methods import build_method, check_features, feature_shapes, resolve_weights
from jdistill.models import count_params, create_model
from jdistill.train import checkpoint, optim, parallel
from jdistill.train.config import RunConfig
from jdistill.train.rundir import RunDir
from jdistill.train.state import Trainable, TrainState, create_state
from jdistill.train.steps import (
    AUGMENT,
    INIT,
    TRAIN,
    make_eval_step,
    make_train_step,
    step_key,
    teacher_forward,
)

EVAL_BATCH = 500


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A finished run's model, ready to be used frozen: graph definition, ``(params, rest)``."""

    config: RunConfig
    graphdef: nnx.GraphDef
    variables: tuple
    shapes: dict


def load_teacher(run_dir: str, dataset: Dataset) -> Teacher:
    """Load the final state of the finished run in ``run_dir`` as a teacher for ``dataset``."""
    run = RunDir(run_dir)
    config = run.config()
    run.summary()  # refuses unfinished runs
    if config.dataset != dataset.name:
        raise ValueError(f"teacher {run_dir} was trained on {config.dataset!r}, not {dataset.name!r}")
    module = Trainable(
        create_model(config.model, dataset.input_shape, dataset.num_classes, rngs=nnx.Rngs(0)), {}
    )
    shapes = feature_shapes(module.model, dataset.input_shape)
    graphdef, like = create_state(module, optim.direction(config), config.seed)
    state = checkpoint.restore(checkpoint.manager(run.path), like)
    return Teacher(config, graphdef, (state.params, state.rest), shapes)


def hparams_for(config: RunConfig, weights: dict) -> dict:
    """The traced hyperparameters of a step (see :mod:`jdistill.train.steps`) for ``config``
    with the resolved term ``weights``."""
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    hparams = {
        "learning_rate": f32(config.learning_rate),
        "temperature": f32(config.temperature),
        "weights": {k: f32(v) for k, v in weights.items()},
    }
    if config.max_norm is not None:
        hparams["max_norm"] = f32(config.max_norm)
    return hparams


def _make_batch_fn(dataset: Dataset, config: RunConfig, sharding):
    """Gather a batch by index, augment it (translation, mirroring) and normalise it, on the device."""

    def make_batch(x, y, order, i, seed, step):
        idx = order[i]
        shift_key, flip_key = jax.random.split(step_key(seed, step, AUGMENT))
        images = random_shift(shift_key, x[idx], config.max_shift)
        if config.hflip:
            images = random_flip(flip_key, images)
        return {"image": dataset.normalise(images), "label": y[idx], "index": idx}

    return jax.jit(make_batch, out_shardings=sharding)


def _first_nonfinite(per_step: dict[str, np.ndarray]) -> tuple[int, str] | None:
    """The first step (index in the epoch) and loss term whose value is not finite."""
    # The terms ("loss/kd", ...) before their sum ("loss"), so that the culprit is named.
    names = sorted((n for n in per_step if n.startswith("loss")), key=lambda n: n == "loss")
    for i in range(len(per_step["loss"])):
        for name in names:
            if not np.isfinite(per_step[name][i]):
                return i, name
    return None


class TestEvaluator:
    """Exact test metrics: the test set is padded to whole batches and padding is masked. The
    frozen teacher's test predictions are computed once, here, not at every evaluation."""

    __test__ = False  # not a pytest class

    def __init__(self, dataset: Dataset, graphdef, teacher: Teacher | None, mesh):
        n = len(dataset.y_test)
        batch = math.ceil(EVAL_BATCH / mesh.size) * mesh.size
        nb = math.ceil(n / batch)
        pad = nb * batch - n
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, parallel.DATA_AXIS))
        x = np.concatenate(
            [dataset.normalise(dataset.x_test), np.zeros((pad, *dataset.input_shape), np.float32)]
        )
        self.batches = jax.device_put(
            {
                "image": x.reshape(nb, batch, *dataset.input_shape),
                "label": np.concatenate([dataset.y_test, np.zeros(pad, np.int32)]).reshape(nb, batch),
                "mask": np.concatenate([np.ones(n), np.zeros(pad)]).astype(np.float32).reshape(nb, batch),
            },
            sharding,
        )
        if teacher is not None:
            predict = jax.jit(
                lambda images: jnp.argmax(teacher_forward(teacher.graphdef, teacher.variables, images)[0], -1)
            )
            self.batches["teacher_prediction"] = jnp.stack(
                [predict(images) for images in self.batches["image"]]
            )
        self.eval_step = make_eval_step(graphdef)

    def __call__(self, state) -> dict:
        num_batches = len(self.batches["mask"])
        sums = [
            self.eval_step(state.params, state.rest, jax.tree.map(lambda a: a[i], self.batches))
            for i in range(num_batches)
        ]
        total = jax.device_get(jax.tree.map(lambda *v: sum(v), *sums))
        out = {"accuracy": total["correct"] / total["count"], "loss": total["ce"] / total["count"]}
        if "agree" in total:
            out["agreement"] = total["agree"] / total["count"]
        return {k: float(v) for k, v in out.items()}


@dataclasses.dataclass
class Setup:
    """Everything a run needs, built from its configuration: the jitted step, the initial state
    (replicated over the mesh), the frozen teacher and the traced hyperparameters."""

    config: RunConfig
    dataset: Dataset
    mesh: jax.sharding.Mesh
    teacher: Teacher | None
    methods: tuple
    graphdef: nnx.GraphDef
    state: TrainState
    tx: optax.GradientTransformation
    schedule: Callable
    step_fn: Callable
    init_step_fn: Callable | None
    init_epochs: int
    hparams: dict
    steps_per_epoch: int
    params: int
    extra_params: int


def prepare(config: RunConfig, dataset: Dataset | None = None, devices=None) -> Setup:
    """Build the run ``config`` describes, at step 0, on ``devices`` (default: all)."""
    dataset = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    # Few labels: without a teacher, train on the labelled examples; with one, on every image.
    if config.holdout_fraction:
        dataset = dataset.holdout(config.holdout_fraction)
    if config.exclude_classes:
        dataset = dataset.without_classes(config.exclude_classes)
    if config.label_noise:
        dataset = dataset.with_label_noise(config.label_noise, seed=config.label_noise_seed)
    dataset = dataset.hide_labels(config.labelled_fraction)
    if config.teacher is None:
        dataset = dataset.labelled()
    mesh = parallel.make_mesh(devices)
    parallel.check_batch_size(config.batch_size, mesh)
    teacher = None if config.teacher is None else load_teacher(config.teacher, dataset)

    methods = tuple(build_method(name, config.method_options.get(name)) for name in config.methods)
    weights = resolve_weights(methods, config.weights)
    model = create_model(config.model, dataset.input_shape, dataset.num_classes, rngs=nnx.Rngs(config.seed))
    student_shapes = feature_shapes(model, dataset.input_shape)
    teacher_shapes = teacher.shapes if teacher else {}
    check_features(methods, student_shapes, teacher_shapes)
    extra_rngs = nnx.Rngs(config.seed + 1)
    extras = {m.name: m.modules(student_shapes, teacher_shapes, dataset, extra_rngs) for m in methods}
    trainable = Trainable(model, {k: v for k, v in extras.items() if v})
    tx = optim.direction(config)
    steps_per_epoch = len(dataset.y_train) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the training set "
            f"({len(dataset.y_train)} examples)"
        )
    schedule = optim.schedule(config, steps_per_epoch)
    init_epochs = max(m.init_epochs for m in methods)
    graphdef, state = create_state(trainable, tx, config.seed)
    teacher_graphdef = teacher and teacher.graphdef
    step_options = {"steps_per_epoch": steps_per_epoch, "first_step": init_epochs * steps_per_epoch}
    replicated = parallel.replicated(mesh)
    if teacher is not None:
        teacher = dataclasses.replace(teacher, variables=jax.device_put(teacher.variables, replicated))
    return Setup(
        config=config,
        dataset=dataset,
        mesh=mesh,
        teacher=teacher,
        methods=methods,
        graphdef=graphdef,
        state=jax.device_put(state, replicated),
        tx=tx,
        schedule=schedule,
        step_fn=make_train_step(
            graphdef, methods, tx, schedule, teacher_graphdef, stage=TRAIN, **step_options
        ),
        init_step_fn=make_train_step(
            graphdef, methods, tx, schedule, teacher_graphdef, stage=INIT, **step_options
        )
        if init_epochs
        else None,
        init_epochs=init_epochs,
        hparams=jax.device_put(hparams_for(config, weights), replicated),
        steps_per_epoch=steps_per_epoch,
        params=count_params(model),
        extra_params=count_params(trainable) - count_params(model),
    )


def fit(
    config: RunConfig,
    out_dir: str,
    *,
    dataset: Dataset | None = None,
    devices=None,
    progress: bool = True,
    label: str | None = None,
) -> dict:
    """Train (or distil) as ``config`` says, into the run directory ``out_dir``; resume from its
    last checkpoint if it holds the same configuration. Returns the summary."""
    run = RunDir(out_dir)
    run.claim(config)
    setup = prepare(config, dataset, devices)
    dataset, mesh, teacher, steps_per_epoch = setup.dataset, setup.mesh, setup.teacher, setup.steps_per_epoch
    state, step_fn, hparams = setup.state, setup.step_fn, setup.hparams
    mngr = checkpoint.manager(run.path)
    start_epoch = mngr.latest_step() or 0
    if start_epoch:
        state = checkpoint.restore(mngr, state)
    run.keep_metrics_until(start_epoch)

    teacher_vars = None if teacher is None else teacher.variables
    make_batch = _make_batch_fn(dataset, config, parallel.batch_sharded(mesh))
    evaluate = TestEvaluator(dataset, setup.graphdef, teacher, mesh)
    x_train, y_train = jax.device_put((dataset.x_train, dataset.y_train), parallel.replicated(mesh))

    total_epochs = setup.init_epochs + config.epochs
    bar = tqdm(
        total=total_epochs * steps_per_epoch * config.batch_size,
        initial=start_epoch * steps_per_epoch * config.batch_size,
        unit="img",
        unit_scale=True,
        desc=label or config.model,
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    for epoch in range(start_epoch, total_epochs):
        started = time.perf_counter()
        stage = INIT if epoch < setup.init_epochs else TRAIN
        if epoch == setup.init_epochs and epoch > 0:
            # Training starts with a fresh optimizer after the initialisation stage, as the benchmark does.
            state = state.replace(opt_state=setup.tx.init(state.params))
        step = setup.init_step_fn if stage == INIT else step_fn
        order = epoch_indices(
            jax.random.fold_in(jax.random.key(config.seed), epoch), len(dataset.y_train), config.batch_size
        )
        step_metrics = []
        for i in range(steps_per_epoch):
            batch = make_batch(x_train, y_train, order, i, state.seed, state.step)
            state, metrics = step(state, teacher_vars, batch, hparams)
            step_metrics.append(metrics)
            bar.update(config.batch_size)
        step_metrics = jax.device_get(step_metrics)  # one transfer per epoch; the checks and means read it
        per_step = {k: np.array([m[k] for m in step_metrics]) for k in step_metrics[0]}
        bad = _first_nonfinite(per_step)
        if bad is not None:
            raise FloatingPointError(
                f"non-finite {bad[1]} at step {epoch * steps_per_epoch + bad[0] + 1} (epoch {epoch + 1}); "
                f"stopped; the last good checkpoint (epoch {mngr.latest_step() or 0}) is kept in {run.path}"
            )
        train = {k: float(v.mean()) for k, v in per_step.items()}
        seconds = time.perf_counter() - started
        last = epoch + 1 == total_epochs
        test = evaluate(state) if (epoch + 1) % config.eval_every == 0 or last else {}
        run.append_epoch(epoch + 1, (epoch + 1) * steps_per_epoch, seconds, train, test, stage=stage)
        if test:
            bar.set_postfix(epoch=epoch + 1, loss=f"{train['loss']:.4f}", test_acc=f"{test['accuracy']:.4f}")
        if (epoch + 1) % config.checkpoint_every == 0 or last:
            checkpoint.save(mngr, epoch + 1, state)
    bar.close()

    lines = run.metrics()
    final = lines[-1]
    summary = {
        "model": config.model,
        "methods": list(config.methods),
        "epochs": config.epochs,
        "seed": config.seed,
        "params": setup.params,
        "extra_params": setup.extra_params,
        "devices": mesh.size,
        "train_seconds": round(sum(m["seconds"] for m in lines), 2),
        **{k: v for k, v in final.items() if k.startswith("test/")},
    }
    evaluated = [m for m in lines if m.get("stage", TRAIN) == TRAIN and "test/accuracy" in m]
    best = max(evaluated, key=lambda m: m["test/accuracy"])
    summary["test/best_accuracy"] = best["test/accuracy"]
    summary["best_epoch"] = best["epoch"]
    if setup.init_epochs:
        summary["init_epochs"] = setup.init_epochs
    run.write_summary(summary)
    return summary

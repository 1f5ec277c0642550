"""Teacher training and distillation as a game: one player (``student``: the model and the methods'
extra modules) that moves on the weighted sum of the methods' terms, optionally after the methods'
initialisation stage, with a frozen teacher whose outputs on unaugmented data are computed once.

``build(RunConfig) -> Game``; :func:`jdistill.train.fit` plays it.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jdistill.data import Dataset, load_dataset
from jdistill.methods import build_method, check_features, feature_shapes, resolve_weights
from jdistill.models import count_params, create_model
from jdistill.models.layers import torch_init
from jdistill.train import checkpoint, optim, teacher_cache
from jdistill.train.config import RunConfig
from jdistill.train.evaluate import ClassifierEvaluator
from jdistill.train.game import LOSS, MODEL, Game, Move, Phase
from jdistill.train.player import Frozen, Player, Trainable, split_module
from jdistill.train.rundir import RunDir
from jdistill.train.sources import DataSource, StreamSource


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A finished run's model, ready to be used frozen: graph definition, ``(params, rest)``."""

    config: RunConfig
    graphdef: nnx.GraphDef
    variables: tuple
    shapes: dict

    @property
    def frozen(self) -> Frozen:
        return Frozen(self.graphdef, *self.variables)


def load_teacher(run_dir: str, dataset: Dataset) -> Teacher:
    """The final model of the finished run in ``run_dir`` as a teacher for ``dataset`` (runs of
    jdistill 0.1 included); unfinished runs are refused, and so is data of another input shape,
    class count or normalisation than the teacher's summary records."""
    run = RunDir(run_dir)
    config = run.config()
    summary = run.summary()  # refuses unfinished runs
    if config.data.dataset != dataset.name:
        raise ValueError(f"teacher {run_dir} was trained on {config.data.dataset!r}, not {dataset.name!r}")
    _check_teacher_fits(run_dir, summary, dataset)
    abstract = nnx.eval_shape(  # shapes only: the weights go from the checkpoint to host memory
        lambda: Trainable(
            create_model(config.model.name, dataset.input_shape, dataset.num_classes, rngs=nnx.Rngs(0))
        )
    )
    graphdef, params, rest = split_module(abstract)
    try:
        variables = checkpoint.restore_variables(
            run.path, "student", params, rest, format=run.format, host=True
        )
    except ValueError as error:  # a run that predates the records, on other data
        raise ValueError(
            f"teacher {run_dir} ({config.model.name}) does not fit this data ({dataset.num_classes} classes, "
            f"{'x'.join(map(str, dataset.input_shape))} inputs): {str(error).splitlines()[0][:300]}"
        ) from None
    module = nnx.merge(graphdef, *variables)
    return Teacher(config, graphdef, variables, feature_shapes(module.model, dataset.input_shape))


def _check_teacher_fits(run_dir, summary: dict, dataset: Dataset) -> None:
    """Refuse data of another input shape, class count or normalisation than the teacher's
    summary records (runs that predate a record are not checked for it)."""
    trained = summary.get("input_shape")
    if trained is not None and tuple(trained) != tuple(dataset.input_shape):
        trained, wanted = ("x".join(map(str, shape)) for shape in (trained, dataset.input_shape))
        raise ValueError(
            f"teacher {run_dir} was trained on {trained} images, this run's are {wanted}: "
            f"resize them to the teacher's size or train a teacher at theirs"
        )
    classes = summary.get("num_classes")
    if classes is not None and classes != dataset.num_classes:
        raise ValueError(
            f"teacher {run_dir} was trained on {classes} classes, this data has {dataset.num_classes}"
        )
    recorded = summary.get("normalisation")
    if recorded is not None:
        ours = _normalisation(dataset)
        same = (recorded["mean"] is None) == (ours["mean"] is None) and (
            ours["mean"] is None
            or all(np.allclose(recorded[k], ours[k], rtol=1e-4, atol=1e-6) for k in ("mean", "std"))
        )
        if not same:
            raise ValueError(
                f"teacher {run_dir} was trained on data normalised with {recorded}, this data's is {ours}: "
                f"the teacher would see other inputs than it learned from"
            )


def _normalisation(dataset: Dataset) -> dict:
    """The per-channel ``mean`` and ``std`` the pipeline normalises ``dataset`` with (None: none)."""

    def as_list(stats):
        return None if stats is None else [float(v) for v in stats]

    return {"mean": as_list(dataset.mean), "std": as_list(dataset.std)}


def teacher_forward(teacher_graphdef, teacher_vars, images):
    """The teacher's ``(logits, features)`` in inference mode, outside the gradient."""
    teacher = nnx.merge(teacher_graphdef, *teacher_vars).model
    return jax.lax.stop_gradient(teacher(images, train=False))


def prepare_dataset(config: RunConfig, dataset: Dataset | None = None) -> Dataset:
    """The data set as the run sees it: held-out split, excluded classes, label noise, hidden
    labels; without a teacher, only the labelled examples."""
    data = config.data
    if dataset is None:
        dataset = load_dataset(data.dataset, data.data_dir, crop_size=data.crop_size)
    if getattr(dataset, "streamed", False):
        changed = [name for name, value, default in (
            ("holdout_fraction", data.holdout_fraction, 0.0), ("exclude_classes", data.exclude_classes, ()),
            ("label_noise", data.label_noise, 0.0), ("labelled_fraction", data.labelled_fraction, 1.0),
        ) if value != default]  # fmt: skip
        if changed:
            raise ValueError(
                f"{', '.join(changed)} change an in-memory data set; {dataset.name} is streamed from disk: "
                f"write the subset you want as its own record directory"
            )
        return dataset
    if config.data.holdout_fraction:
        dataset = dataset.holdout(config.data.holdout_fraction)
    if config.data.exclude_classes:
        dataset = dataset.without_classes(config.data.exclude_classes)
    if config.data.label_noise:
        dataset = dataset.with_label_noise(config.data.label_noise, seed=config.data.label_noise_seed)
    dataset = dataset.hide_labels(config.data.labelled_fraction)
    return dataset if config.distill.teacher is not None else dataset.labelled()


def objective(methods, init: bool, student_trains: bool, view):
    """``sum_term weight[term] * mean_batch(term)`` over the methods' terms (or their
    initialisation terms), with the step's accuracy and agreement with the teacher."""
    batch, hparams = view.batch, view.hparams
    trainable = view.module("student")
    teacher_out = batch.get("frozen")
    context = {**batch, "epoch": view.epoch, "key": view.key(LOSS), "dropout_key": view.key(MODEL)}
    student_out = trainable.model(batch["image"], train=student_trains, dropout_key=context["dropout_key"])
    terms = {}
    for method in methods:
        modules = trainable.extras.get(method.name, {})
        if init:
            returned, declared = (
                method.init_loss(student_out, teacher_out, context, modules, hparams),
                method.init_weights,
            )
        else:
            returned, declared = (
                method.loss(student_out, teacher_out, context, modules, hparams),
                method.default_weights,
            )
        if set(returned) != set(declared):  # checked once, while tracing
            raise ValueError(
                f"method {method.name!r} {'init_loss' if init else 'loss'} returned terms {sorted(returned)} "
                f"but declares {sorted(declared)}"
            )
        terms.update(returned)
    terms = {name: jnp.mean(value) for name, value in terms.items()}
    total = sum((hparams["weights"][name] * value for name, value in terms.items()), jnp.float32(0))
    labels, logits = batch["label"], student_out[0]
    labelled = labels >= 0
    metrics = {
        "loss": total,
        "accuracy": jnp.sum(labelled & (jnp.argmax(logits, -1) == labels)) / jnp.maximum(labelled.sum(), 1),
        **{f"loss/{k}": v for k, v in terms.items()},
    }
    if teacher_out is not None:
        metrics["agreement"] = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(teacher_out[0], -1))
    return total, metrics


def teacher_outputs(features: tuple[str, ...], teachers, images):
    """The teacher's logits and the ``features`` the methods read, in inference mode; the other
    features keep their names, with ``None`` for a value (methods find layers by name)."""
    logits, all_features = teacher_forward(
        teachers["teacher"].graphdef, teachers["teacher"].variables, images
    )
    return logits, {name: value if name in features else None for name, value in all_features.items()}


def init_learning_rate(methods, run_rate: float) -> float:
    """The one rate the methods' initialisation stages ask for (``None``: ``run_rate``)."""
    rates = {
        m.name: run_rate if m.init_learning_rate is None else float(m.init_learning_rate)
        for m in methods
        if m.init_epochs
    }
    if len(set(rates.values())) > 1:
        raise ValueError(
            f"the initialisation stages of {', '.join(rates)} share one optimizer but ask for the learning "
            f"rates {', '.join(f'{n} {r:g}' for n, r in rates.items())}: give them one with --method-option "
            f"(NAME.init_learning_rate=null is the run's rate)"
        )
    return next(iter(rates.values()))


def build(config: RunConfig, dataset: Dataset | None = None) -> Game:
    """The game ``config`` describes, at step 0."""
    dataset = prepare_dataset(config, dataset)
    teacher = None if config.distill.teacher is None else load_teacher(config.distill.teacher, dataset)
    methods = tuple(
        build_method(name, config.distill.method_options.get(name)) for name in config.distill.methods
    )
    weights = resolve_weights(methods, config.distill.weights)
    rngs = nnx.Rngs(config.loop.seed)
    model = create_model(config.model.name, dataset.input_shape, dataset.num_classes, rngs=rngs)
    if config.model.init == "torch":
        torch_init(model, rngs)
    student_shapes, teacher_shapes = (
        feature_shapes(model, dataset.input_shape),
        teacher.shapes if teacher else {},
    )
    check_features(methods, student_shapes, teacher_shapes)
    extra_rngs = nnx.Rngs(config.loop.seed + 1)
    extras = {m.name: m.modules(student_shapes, teacher_shapes, dataset, extra_rngs) for m in methods}
    trainable = Trainable(model, {k: v for k, v in extras.items() if v})
    source = (StreamSource if getattr(dataset, "streamed", False) else DataSource)(
        dataset, config.loop.batch_size, config.data.max_shift, config.data.hflip
    )
    per_epoch = source.steps_per_epoch
    optimizer = config.optimizer.build(
        config.loop.epochs, per_epoch, trains=lambda path: not any(m.frozen(path) for m in methods)
    )
    train = Phase(
        "train",
        config.loop.epochs,
        (Move("student", functools.partial(objective, methods, False, True)),),
        {"student": optimizer},
    )
    phases = (train,)
    init_epochs = max(m.init_epochs for m in methods)
    if init_epochs:
        # Only what the initialisation stage trains moves, at a constant rate; a student none of whose
        # parameters train (FT's) runs in inference mode.
        trains = lambda path: any(m.init_trains(path) for m in methods)
        paths = [
            optim.path_names(p) for p, _ in jax.tree_util.tree_leaves_with_path(split_module(trainable)[1])
        ]
        student_trains = any(trains(p) for p in paths if p[0] == "model")
        init_optimizer = dataclasses.replace(
            optimizer,
            learning_rate=init_learning_rate(methods, config.optimizer.learning_rate),
            schedule=optim.schedule("constant", 1),
            trains=trains,
        )
        init = Move("student", functools.partial(objective, methods, True, student_trains))
        phases = (Phase("init", init_epochs, (init,), {"student": init_optimizer}), train)
    features = tuple(dict.fromkeys(n for m in methods for n in m.features(student_shapes, teacher_shapes)[1]))
    frozen_cache = None
    if config.distill.teacher_cache is not None:
        if isinstance(source, StreamSource):
            raise ValueError("a teacher cache is read with an in-memory data set; this one is streamed")
        if source.augmented:
            raise ValueError(
                "a teacher cache holds the outputs of un-augmented images; this run augments its batches "
                "(max_shift or hflip): run without the cache, or without augmentation"
            )
        frozen_cache = teacher_cache.read(
            config.distill.teacher_cache, config.distill.teacher, source.images(), teacher_shapes, features
        )
    prefix = (
        "val/" if config.data.holdout_fraction else "test/"
    )  # held-out training images are not the test set
    return Game(
        config=config,
        players={"student": Player.create(trainable, phases[0].optimizers["student"])},
        phases=phases,
        source=source,
        seed=config.loop.seed,
        data_seed=config.loop.data_seed,
        traced_fields=("temperature", "weights"),
        evaluate=ClassifierEvaluator(
            dataset, teacher="teacher" if teacher else None, logits=lambda m, x: m.model(x, train=False)[0]
        ),
        teachers={"teacher": teacher.frozen} if teacher else {},
        frozen_outputs=functools.partial(teacher_outputs, features) if teacher else None,
        frozen_cache=frozen_cache,
        compute_dtype=None if config.model.dtype == "float32" else jnp.dtype(config.model.dtype),
        hparams={
            "temperature": jnp.float32(config.distill.temperature),
            "weights": {k: jnp.float32(v) for k, v in weights.items()},
        },
        eval_every=config.loop.eval_every,
        eval_prefix=prefix,
        summary_prefixes=(prefix,),
        best=f"{prefix}accuracy",
        checkpoint_every=config.loop.checkpoint_every,
        label=config.model.name,
        summary={
            "model": config.model.name,
            "methods": list(config.distill.methods),
            "epochs": config.loop.epochs,
            "seed": config.loop.seed,
            "input_shape": list(dataset.input_shape),
            "num_classes": dataset.num_classes,
            "normalisation": _normalisation(dataset),
            "params": count_params(model),
            "extra_params": count_params(trainable) - count_params(model),
            **({"init_epochs": init_epochs} if init_epochs else {}),
        },
    )


def load_student(run_dir: str, dataset: Dataset) -> Trainable:
    """The final model and extra modules of the finished run in ``run_dir``."""
    run = RunDir(run_dir)
    run.summary()  # refuses unfinished runs
    game = build(run.config(), dataset)
    module = game.players["student"].module()
    graphdef, params, rest = split_module(module)
    params, rest = checkpoint.restore_variables(run.path, "student", params, rest, format=run.format)
    return nnx.merge(graphdef, params, rest)

"""Jitted train and eval steps: pure functions of state pytrees.

``hparams`` is a pytree of float32 scalars ``{"learning_rate", "temperature", "weights":
{term: w}}`` (and ``"max_norm"`` when the run constrains weight norms) passed as an argument,
so new values never trigger a recompilation.
The teacher runs in inference mode under ``stop_gradient`` and is never donated or updated.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jdistill.losses import cross_entropy
from jdistill.train import optim
from jdistill.train.state import TrainState

DROPOUT, AUGMENT, METHOD = 0, 1, 2  # random streams of a step
TRAIN, INIT = "train", "init"  # stages: training proper, and the methods' initialisation stage


def step_key(seed: jax.Array, step: jax.Array, stream: int) -> jax.Array:
    """The PRNG key of ``stream`` at ``step`` of the run seeded ``seed``: a resumed run draws
    the same numbers as an uninterrupted one."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), stream)


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", k)) for k in path)


def update_mask(methods: Sequence, params, stage: str):
    """A pytree of booleans like ``params``: which parameters the ``stage`` updates. In the
    initialisation stage, those some method's ``init_trains`` names; in training, all but those
    some method holds ``frozen``."""

    def trains(path, _):
        names = _path_names(path)
        if stage == INIT:
            return any(m.init_trains(names) for m in methods)
        return not any(m.frozen(names) for m in methods)

    return jax.tree_util.tree_map_with_path(trains, params)


def _apply_gradients(state, grads, new_rest, hparams, tx, lr, mask):
    direction, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, d, m: p - lr * d if m else p, state.params, direction, mask)
    if "max_norm" in hparams:
        params = optim.max_norm(params, hparams["max_norm"])
    return state.replace(step=state.step + 1, params=params, rest=new_rest, opt_state=opt_state)


def _objective(graphdef, methods, stage, state, params, batch, teacher_out, hparams, student_trains):
    """Weighted sum of the methods' terms; returns (total, (terms, student logits, new rest))."""
    trainable = nnx.merge(graphdef, params, state.rest)
    student_out = trainable.model(batch["image"], train=student_trains, dropout_key=batch["dropout_key"])
    terms = {}
    for method in methods:
        modules = trainable.extras.get(method.name, {})
        if stage == INIT:
            returned, declared = (
                method.init_loss(student_out, teacher_out, batch, modules, hparams),
                method.init_weights,
            )
        else:
            returned, declared = (
                method.loss(student_out, teacher_out, batch, modules, hparams),
                method.default_weights,
            )
        if set(returned) != set(declared):  # checked once, while tracing
            kind = "init_loss" if stage == INIT else "loss"
            raise ValueError(
                f"method {method.name!r} {kind} returned terms {sorted(returned)} but declares "
                f"{sorted(declared)}"
            )
        terms.update(returned)
    terms = {name: jnp.mean(value) for name, value in terms.items()}
    total = sum((hparams["weights"][name] * value for name, value in terms.items()), jnp.float32(0))
    new_rest = nnx.to_pure_dict(nnx.split(trainable, nnx.Param, ...)[2])
    return total, (terms, student_out[0], new_rest)


def teacher_forward(teacher_graphdef, teacher_vars, images):
    """The teacher's ``(logits, features)`` in inference mode, outside the gradient."""
    teacher = nnx.merge(teacher_graphdef, *teacher_vars).model
    return jax.lax.stop_gradient(teacher(images, train=False))


def make_train_step(
    graphdef,
    methods: Sequence,
    tx: optax.GradientTransformation,
    schedule: Callable,
    teacher_graphdef=None,
    *,
    steps_per_epoch: int = 1,
    stage: str = TRAIN,
    first_step: int = 0,
    jit: bool = True,
) -> Callable:
    """``step(state, teacher_vars, batch, hparams) -> (state, metrics)``, jitted.

    ``batch`` holds ``image`` and ``label`` (and ``index``, the examples' positions in the
    training set, for methods that keep per-example state). The state is donated (its buffers
    are reused), the teacher never is. ``jit=False`` returns the plain function (to wrap it
    yourself, e.g. with ``chex.assert_max_traces``). With ``teacher_graphdef=None`` it trains on
    hard labels (``methods`` is just ``ce``) and ``teacher_vars`` must be ``None``.
    ``teacher_vars`` is ``(params, rest)`` of the teacher.

    ``stage=TRAIN`` trains on the methods' ``loss`` terms at ``learning_rate *
    schedule(step - first_step)``, ``first_step`` being where training begins after an
    initialisation stage; ``stage=INIT`` trains what the methods' ``init_trains`` selects on
    their ``init_loss`` terms at the constant ``learning_rate`` (the benchmark's initialisation
    stage for AB, FT and FSP).
    """

    def step(state: TrainState, teacher_vars, batch, hparams):
        images, labels = batch["image"], batch["label"]
        teacher_out = (
            None if teacher_graphdef is None else teacher_forward(teacher_graphdef, teacher_vars, images)
        )
        context = {
            **batch,
            "index": batch.get("index", jnp.zeros_like(labels)),
            "epoch": state.step.astype(jnp.float32) / steps_per_epoch - first_step / steps_per_epoch,
            "key": step_key(state.seed, state.step, METHOD),
            "dropout_key": step_key(state.seed, state.step, DROPOUT),
        }
        mask = update_mask(methods, state.params, stage)
        # A student none of whose parameters train (FT's initialisation) runs in inference mode.
        student_trains = stage == TRAIN or any(jax.tree.leaves(mask["model"]))
        grad_fn = jax.value_and_grad(
            lambda p: _objective(
                graphdef, methods, stage, state, p, context, teacher_out, hparams, student_trains
            ),
            has_aux=True,
        )
        (total, (terms, logits, new_rest)), grads = grad_fn(state.params)
        if stage == INIT:
            lr = hparams["learning_rate"]
        else:
            lr = hparams["learning_rate"] * schedule(state.step - first_step)
        new_state = _apply_gradients(state, grads, new_rest, hparams, tx, lr, mask)
        labelled = labels >= 0
        correct = jnp.sum(labelled & (jnp.argmax(logits, -1) == labels))
        metrics = {
            "loss": total,
            "accuracy": correct / jnp.maximum(labelled.sum(), 1),
            "learning_rate": lr,
            **{f"loss/{k}": v for k, v in terms.items()},
        }
        if teacher_out is not None:
            metrics["agreement"] = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(teacher_out[0], -1))
        return new_state, metrics

    return jax.jit(step, donate_argnums=0) if jit else step


def make_eval_step(graphdef) -> Callable:
    """``eval(params, rest, batch) -> sums`` of correct predictions, cross-entropy, agreement
    with ``batch["teacher_prediction"]`` (when the batch has it) and counted examples, over the
    rows where ``batch["mask"]`` is 1, so that a padded last batch and many devices still give
    exact averages."""

    def evaluate(params, rest, batch):
        model = nnx.merge(graphdef, params, rest).model
        logits, _ = model(batch["image"], train=False)
        predictions = jnp.argmax(logits, -1)
        mask = batch["mask"]
        sums = {
            "correct": jnp.sum(mask * (predictions == batch["label"])),
            "ce": jnp.sum(mask * cross_entropy(logits, batch["label"])),
            "count": jnp.sum(mask),
        }
        if "teacher_prediction" in batch:
            sums["agree"] = jnp.sum(mask * (predictions == batch["teacher_prediction"]))
        return sums

    return jax.jit(evaluate)

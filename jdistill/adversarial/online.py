"""Online adversarial distillation: K peers of one architecture trained together from scratch.

On the same mini-batch, peer k (logits ``z_k``) minimises

    L_k = CE(z_k, y) + mutual_weight * mean_{j != k} T^2 KL(p_j^T || p_k^T)
          + adv_weight * fooling(D_k(h_k)),

deep mutual learning (Zhang et al. 2018, "Deep Mutual Learning") plus, optionally, the
adversarial term of Chung et al. 2020 ("Feature-map-level Online Adversarial Knowledge
Distillation"): peer k has its own discriminator ``D_k``, trained to tell the other peers'
outputs ``h_j`` (real) from peer k's own ``h_k`` (fake), and peer k learns to fool it, which
pulls its output distribution towards its peers'. ``h`` is chosen by ``disc_input``: the logits,
the softened probabilities ``softmax(z / T)`` or a named feature map, flattened. Chung et al. pair
the peers in a cycle when K > 2; here ``D_k`` takes every other peer as real.

The K peers are one pytree whose leaves are stacked on a leading axis, forwarded by ``jax.vmap``;
so are the K discriminators. One optax state serves the stacked peers: optax transformations are
elementwise, so it equals K separate states. The peers minimise ``sum_k L_k``, whose gradient with
respect to peer k's parameters is that of ``L_k`` alone (the mutual-learning targets are fixed and
``D_k`` sees peer k only). The discriminators have their own :class:`TrainState`, optimizer and
learning-rate schedule; each iteration takes ``disc_steps`` discriminator steps, then one peer
step, on the same batch.

``mutual_weight=0, disc_input="none"`` trains the K peers independently (each alone) from the
same initialisations and in the same data order as an online run with the same seed: the
baseline.
"""

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from jdistill.adversarial.discriminator import VectorDiscriminator
from jdistill.data import Dataset, epoch_indices, load_dataset, random_shift
from jdistill.losses import cross_entropy
from jdistill.losses.adversarial import (
    OBJECTIVES,
    discriminator_loss,
    fooling_loss,
    gradient_penalty,
    mutual_learning,
)
from jdistill.models import count_params, create_model
from jdistill.train import checkpoint, optim
from jdistill.train.config import RunConfig
from jdistill.train.rundir import RunDir
from jdistill.train.state import TrainState, split_module
from jdistill.train.steps import AUGMENT, DROPOUT, METHOD, step_key

DISC_INPUTS = ("none", "logits", "probs", "feature:<name>")
EVAL_BATCH = 500
PEER_INIT, DISC_INIT = 0, 1  # streams of the initialisation keys


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """Everything that determines an online run; saved as ``config.json`` in its run directory.

    Peers: ``num_peers`` copies of ``model`` initialised from different keys, trained with
    ``optimizer`` at ``learning_rate * schedule(step)`` (the fields and meanings of a
    :class:`RunConfig`). Discriminators (when ``disc_input`` is not ``"none"``): an MLP with two
    hidden layers of ``disc_hidden`` units per peer, trained with ``disc_optimizer`` at
    ``disc_lr * disc_schedule(step)`` on ``objective`` plus ``gp_weight`` times the gradient
    penalty, ``disc_steps`` times per peer step.
    """

    model: str
    dataset: str
    epochs: int
    num_peers: int = 2
    seed: int = 0
    data_dir: str | None = None
    batch_size: int = 128
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    schedule: str = "cosine"
    lr_milestones: tuple[int, ...] = ()
    lr_decay: float = 0.1
    warmup_epochs: int = 0
    max_shift: int = 0
    mutual_weight: float = 1.0
    temperature: float = 1.0
    disc_input: str = "none"
    adv_weight: float = 1.0
    objective: str = "bce"
    gp_weight: float = 0.0
    disc_steps: int = 1
    disc_optimizer: str = "adam"
    disc_lr: float = 1e-3
    disc_schedule: str = "cosine"
    disc_hidden: int = 64
    eval_every: int = 1

    def __post_init__(self):
        if self.num_peers < 2:
            raise ValueError(
                f"num_peers must be >= 2, got {self.num_peers}; for peers trained alone set "
                f"mutual_weight=0 and disc_input='none'"
            )
        for name in ("disc_steps", "disc_hidden", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("mutual_weight", "adv_weight", "gp_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("learning_rate", "disc_lr", "temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: choose one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        feature = self.disc_input.removeprefix("feature:")
        if self.disc_input not in ("none", "logits", "probs") and feature in (self.disc_input, ""):
            raise ValueError(f"disc_input: choose one of {', '.join(DISC_INPUTS)}, got {self.disc_input!r}")
        if self.disc_optimizer not in ("sgd", "adam"):
            raise ValueError(f"disc_optimizer: choose 'sgd' or 'adam', got {self.disc_optimizer!r}")
        if self.disc_schedule not in ("constant", "cosine"):
            raise ValueError(f"disc_schedule: choose 'constant' or 'cosine', got {self.disc_schedule!r}")
        object.__setattr__(self, "lr_milestones", tuple(int(e) for e in self.lr_milestones))
        self.peer_run_config()  # validates the peers' optimizer fields, naming them

    @property
    def adversarial(self) -> bool:
        return self.disc_input != "none"

    def peer_run_config(self) -> RunConfig:
        """The peers' optimizer and schedule, as the :class:`RunConfig` of one peer trained alone."""
        fields = {f.name for f in dataclasses.fields(RunConfig)}
        return RunConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in fields})

    def disc_run_config(self) -> RunConfig:
        """The discriminators' optimizer and schedule (Adam, or SGD with momentum 0.9)."""
        return RunConfig(
            model=self.model,
            dataset=self.dataset,
            epochs=self.epochs,
            optimizer=self.disc_optimizer,
            learning_rate=self.disc_lr,
            schedule=self.disc_schedule,
        )


# ---------------------------------------------------------------- stacked players


def stack_modules(modules) -> tuple[nnx.GraphDef, dict, dict]:
    """``(graphdef, params, rest)`` of modules of one architecture, each leaf stacked on a new
    leading axis (one entry per module)."""
    graphdefs, params, rests = zip(*(split_module(m) for m in modules))
    stack = lambda *xs: jnp.stack(xs)
    return graphdefs[0], jax.tree.map(stack, *params), jax.tree.map(stack, *rests)


def init_key(seed: int, stream: int, index: int) -> jax.Array:
    """The initialisation key of peer or discriminator ``index`` of the run seeded ``seed``."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), stream), index)


def create_peers(config: OnlineConfig, dataset: Dataset) -> list[nnx.Module]:
    """``num_peers`` models, peer k initialised from ``init_key(seed, PEER_INIT, k)``."""
    return [
        create_model(
            config.model,
            dataset.input_shape,
            dataset.num_classes,
            rngs=nnx.Rngs(init_key(config.seed, PEER_INIT, k)),
        )
        for k in range(config.num_peers)
    ]


def stacked_state(modules, tx: optax.GradientTransformation, seed: int) -> tuple[nnx.GraphDef, TrainState]:
    """``(graphdef, TrainState)`` of ``modules`` stacked (:func:`stack_modules`) at step 0, with
    one optax state for all of them."""
    graphdef, params, rest = stack_modules(modules)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt_state=tx.init(params),
        seed=jnp.asarray(seed, jnp.int32),
    )
    return graphdef, state


def peer_dropout_keys(seed: jax.Array, step: jax.Array, num_peers: int) -> jax.Array:
    """``[K]`` dropout keys of a step: the peer step and the discriminator steps before it draw
    the same ones, so the discriminators judge exactly the outputs the peers train on."""
    return jax.random.split(step_key(seed, step, DROPOUT), num_peers)


def forward_peer(graphdef, params, rest, images, dropout_key, train: bool):
    """One peer (unstacked ``params``, ``rest``): ``(logits, features, new rest)``."""
    model = nnx.merge(graphdef, params, rest)
    logits, features = model(images, train=train, dropout_key=dropout_key)
    return logits, features, nnx.to_pure_dict(nnx.split(model, nnx.Param, ...)[2])


def forward_peers(graphdef, params, rest, images, dropout_keys=None, *, train: bool):
    """Every peer on the same ``images``, vmapped over the stacked ``params``, ``rest`` and
    ``dropout_keys``: ``(logits [K, B, C], features {name: [K, B, ...]}, new rest)``."""
    if dropout_keys is None:
        return jax.vmap(lambda p, r: forward_peer(graphdef, p, r, images, None, train))(params, rest)
    return jax.vmap(lambda p, r, k: forward_peer(graphdef, p, r, images, k, train))(
        params, rest, dropout_keys
    )


def discriminated(disc_input: str, temperature: float, logits, features) -> jax.Array:
    """What the discriminators see of each peer, flattened: ``[K, B, D]`` float32."""
    if disc_input == "logits":
        h = logits
    elif disc_input == "probs":
        h = jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)
    else:
        h = features[disc_input.removeprefix("feature:")]
    return h.reshape(h.shape[0], h.shape[1], -1).astype(jnp.float32)


def other_peers(h: jax.Array) -> jax.Array:
    """``[K, B, D] -> [K, (K - 1) B, D]``: row k holds every peer but k (the real inputs of D_k)."""
    k = h.shape[0]
    others = (np.arange(k)[:, None] + 1 + np.arange(k - 1)[None, :]) % k
    return h[others].reshape(k, (k - 1) * h.shape[1], *h.shape[2:])


def disc_scores(graphdef, params, rest, h: jax.Array) -> jax.Array:
    """``D_k(h_k)`` for every k: stacked discriminators on ``[K, N, D]`` -> scores ``[K, N]``."""
    return jax.vmap(lambda p, r, x: nnx.merge(graphdef, p, r)(x))(params, rest, h)


# ---------------------------------------------------------------- steps


def peer_objective(config: OnlineConfig, peer_graphdef, disc_graphdef, params, rest, discs, batch, keys):
    """``(sum_k L_k, aux)`` with ``aux = (L [K], terms {name: [K]}, logits [K, B, C], new rest)``;
    ``discs`` (a TrainState or ``None``) enters as a constant."""
    logits, features, new_rest = forward_peers(peer_graphdef, params, rest, batch["image"], keys, train=True)
    terms = {
        "ce": jax.vmap(lambda z: jnp.mean(cross_entropy(z, batch["label"])))(logits),
        "mutual": jnp.mean(mutual_learning(logits, temperature=config.temperature), axis=-1),
    }
    total = terms["ce"] + config.mutual_weight * terms["mutual"]
    if config.adversarial:
        h = discriminated(config.disc_input, config.temperature, logits, features)
        scores = disc_scores(disc_graphdef, discs.params, discs.rest, h)
        terms["fooling"] = jax.vmap(partial(fooling_loss, objective=config.objective))(scores)
        total = total + config.adv_weight * terms["fooling"]
    return jnp.sum(total), (total, terms, logits, new_rest)


def _descend(state: TrainState, grads, tx, lr, new_rest) -> TrainState:
    direction, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, d: p - lr * d, state.params, direction)
    return state.replace(step=state.step + 1, params=params, rest=new_rest, opt_state=opt_state)


def make_peer_step(
    config: OnlineConfig,
    peer_graphdef,
    disc_graphdef,
    tx: optax.GradientTransformation,
    schedule: Callable,
    *,
    jit: bool = True,
) -> Callable:
    """``step(peers, discs, batch) -> (peers, metrics)``: one update of every peer on
    ``sum_k L_k`` at ``learning_rate * schedule(peers.step)``. The discriminators (``discs``, a
    TrainState, or ``None`` without them) are read, never updated. ``peers`` is donated."""

    def step(peers: TrainState, discs: TrainState | None, batch):
        keys = peer_dropout_keys(peers.seed, peers.step, config.num_peers)
        objective = partial(peer_objective, config, peer_graphdef, disc_graphdef)
        (_, (losses, terms, logits, new_rest)), grads = jax.value_and_grad(
            lambda p: objective(p, peers.rest, discs, batch, keys), has_aux=True
        )(peers.params)
        lr = config.learning_rate * schedule(peers.step)
        metrics = {
            "loss": jnp.mean(losses),
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
            "learning_rate": lr,
            **{name: jnp.mean(value) for name, value in terms.items()},
        }
        return _descend(peers, grads, tx, lr, new_rest), metrics

    return jax.jit(step, donate_argnums=0) if jit else step


def discriminator_objective(config: OnlineConfig, disc_graphdef, params, rest, h, key):
    """``(sum_k loss of D_k, (losses [K], penalties [K]))`` on the peers' outputs ``h`` [K, B, D]:
    D_k's objective with the other peers' rows real and peer k's fake, plus ``gp_weight`` times
    the gradient penalty at points between the two (peer k's rows repeated K - 1 times)."""
    keys = jax.random.split(key, h.shape[0])

    def one(p, r, real_k, fake_k, key_k):
        critic = lambda x: nnx.merge(disc_graphdef, p, r)(x)
        loss = discriminator_loss(critic(real_k), critic(fake_k), objective=config.objective)
        penalty = jnp.float32(0)
        if config.gp_weight:
            repeated = jnp.tile(fake_k, (real_k.shape[0] // fake_k.shape[0], 1))
            penalty = gradient_penalty(critic, real_k, repeated, key_k)
        return loss + config.gp_weight * penalty, (loss, penalty)

    total, aux = jax.vmap(one)(params, rest, other_peers(h), h, keys)
    return jnp.sum(total), aux


def make_discriminator_step(
    config: OnlineConfig,
    peer_graphdef,
    disc_graphdef,
    tx: optax.GradientTransformation,
    schedule: Callable,
    *,
    jit: bool = True,
) -> Callable:
    """``step(peers, discs, batch) -> (discs, metrics)``: one update of every discriminator at
    ``disc_lr * schedule(discs.step)`` on the peers' training-mode outputs (with the dropout keys
    of the coming peer step), held fixed. The peers are read, never updated; ``discs`` is donated."""

    def step(peers: TrainState, discs: TrainState, batch):
        keys = peer_dropout_keys(peers.seed, peers.step, config.num_peers)
        logits, features, _ = forward_peers(
            peer_graphdef, peers.params, peers.rest, batch["image"], keys, train=True
        )
        h = jax.lax.stop_gradient(discriminated(config.disc_input, config.temperature, logits, features))
        penalty_key = step_key(discs.seed, discs.step, METHOD)
        (_, (losses, penalties)), grads = jax.value_and_grad(
            lambda p: discriminator_objective(config, disc_graphdef, p, discs.rest, h, penalty_key),
            has_aux=True,
        )(discs.params)
        lr = config.disc_lr * schedule(discs.step)
        metrics = {"disc_loss": jnp.mean(losses), "disc_gp": jnp.mean(penalties), "disc_learning_rate": lr}
        return _descend(discs, grads, tx, lr, discs.rest), metrics

    return jax.jit(step, donate_argnums=1) if jit else step


def make_eval_step(peer_graphdef) -> Callable:
    """``eval(params, rest, batch) -> sums`` over rows where ``batch["mask"]`` is 1: correct
    predictions ``[K]`` and cross-entropy ``[K]`` of each peer, correct predictions of the
    ensemble (mean of the peers' probabilities), and the count."""

    def evaluate(params, rest, batch):
        logits, _, _ = forward_peers(peer_graphdef, params, rest, batch["image"], train=False)
        mask, labels = batch["mask"], batch["label"]
        ensemble = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)
        return {
            "correct": jnp.sum(mask * (jnp.argmax(logits, -1) == labels), axis=-1),
            "ce": jnp.sum(mask * jax.vmap(lambda z: cross_entropy(z, labels))(logits), axis=-1),
            "ensemble_correct": jnp.sum(mask * (jnp.argmax(ensemble, -1) == labels)),
            "count": jnp.sum(mask),
        }

    return jax.jit(evaluate)


# ---------------------------------------------------------------- the run


@dataclasses.dataclass
class Game:
    """An online run built from its configuration, at step 0: the players' states (``players``:
    ``{"peers": ...}`` and ``"discriminators"`` when there are any) and their jitted steps."""

    config: OnlineConfig
    peer_graphdef: nnx.GraphDef
    disc_graphdef: nnx.GraphDef | None
    players: dict
    peer_step: Callable
    disc_step: Callable | None
    steps_per_epoch: int
    peer_params: int
    disc_params: int


def disc_in_features(config: OnlineConfig, model: nnx.Module, dataset: Dataset) -> int:
    """The flattened size of what the discriminators see; an unknown feature name is an error
    that lists the model's features."""
    images = jax.ShapeDtypeStruct((1, *dataset.input_shape), jnp.float32)
    logits, features = jax.eval_shape(lambda x: model(x), images)
    name = config.disc_input.removeprefix("feature:")
    if config.disc_input in ("logits", "probs"):
        return logits.shape[-1]
    if name not in features:
        raise ValueError(
            f"disc_input: model {config.model!r} has no feature {name!r}; its features: {', '.join(features)}"
        )
    return math.prod(features[name].shape[1:])


def build(config: OnlineConfig, dataset: Dataset) -> Game:
    """The players of ``config`` on ``dataset`` at step 0, and their steps."""
    steps_per_epoch = len(dataset.y_train) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the training set ({len(dataset.y_train)} examples)"
        )
    peers = create_peers(config, dataset)
    peer_config = config.peer_run_config()
    peer_tx = optim.direction(peer_config)
    peer_graphdef, peer_state = stacked_state(peers, peer_tx, config.seed)
    players, disc_graphdef, disc_step, disc_params = {"peers": peer_state}, None, None, 0
    if config.adversarial:
        width = disc_in_features(config, peers[0], dataset)
        discs = [
            VectorDiscriminator(
                width,
                widths=(config.disc_hidden, config.disc_hidden),
                rngs=nnx.Rngs(init_key(config.seed, DISC_INIT, k)),
            )
            for k in range(config.num_peers)
        ]
        disc_config = config.disc_run_config()
        disc_tx = optim.direction(disc_config)
        disc_graphdef, players["discriminators"] = stacked_state(discs, disc_tx, config.seed)
        disc_schedule = optim.schedule(disc_config, steps_per_epoch * config.disc_steps)
        disc_step = make_discriminator_step(config, peer_graphdef, disc_graphdef, disc_tx, disc_schedule)
        disc_params = count_params(discs[0])
    peer_schedule = optim.schedule(peer_config, steps_per_epoch)
    return Game(
        config=config,
        peer_graphdef=peer_graphdef,
        disc_graphdef=disc_graphdef,
        players=players,
        peer_step=make_peer_step(config, peer_graphdef, disc_graphdef, peer_tx, peer_schedule),
        disc_step=disc_step,
        steps_per_epoch=steps_per_epoch,
        peer_params=count_params(peers[0]),
        disc_params=disc_params,
    )


def _make_batch_fn(dataset: Dataset, max_shift: int) -> Callable:
    """Gather a batch by index, translate it by up to ``max_shift`` pixels and normalise it, on the device."""

    def make_batch(x, y, order, i, seed, step):
        idx = order[i]
        images = random_shift(step_key(seed, step, AUGMENT), x[idx], max_shift)
        return {"image": dataset.normalise(images), "label": y[idx]}

    return jax.jit(make_batch)


class _Evaluator:
    """Exact test metrics of every peer and of their ensemble: the test set is padded to whole
    batches and the padding masked."""

    def __init__(self, dataset: Dataset, peer_graphdef):
        n = len(dataset.y_test)
        batches = math.ceil(n / EVAL_BATCH)
        pad = batches * EVAL_BATCH - n
        padded = lambda a: np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
        shape = (batches, EVAL_BATCH)
        self.batches = {
            "image": padded(dataset.normalise(dataset.x_test).astype(np.float32)).reshape(
                *shape, *dataset.input_shape
            ),
            "label": padded(dataset.y_test.astype(np.int32)).reshape(shape),
            "mask": padded(np.ones(n, np.float32)).reshape(shape),
        }
        self.eval_step = make_eval_step(peer_graphdef)

    def __call__(self, peers: TrainState) -> dict:
        sums = [
            self.eval_step(peers.params, peers.rest, {k: v[i] for k, v in self.batches.items()})
            for i in range(len(self.batches["mask"]))
        ]
        total = jax.device_get(jax.tree.map(lambda *v: sum(v), *sums))
        accuracy = total["correct"] / total["count"]
        out = {f"peer{k}/accuracy": float(a) for k, a in enumerate(accuracy)}
        out["accuracy"] = float(np.mean(accuracy))  # the mean peer's
        out["loss"] = float(np.mean(total["ce"] / total["count"]))
        out["ensemble_accuracy"] = float(total["ensemble_correct"] / total["count"])
        return out


def run(
    config: OnlineConfig,
    out_dir,
    *,
    dataset: Dataset | None = None,
    progress: bool = True,
    label: str | None = None,
) -> dict:
    """Train the peers (and discriminators) as ``config`` says into the run directory
    ``out_dir``: ``config.json``, ``metrics.jsonl`` (one line per epoch: mean training terms,
    and every ``eval_every`` epochs ``test/peer{k}/accuracy``, ``test/accuracy`` (the peers'
    mean), ``test/ensemble_accuracy``, ``test/loss``), a checkpoint of every player per epoch,
    ``summary.json``. Resumes from the last checkpoint if ``out_dir`` holds the same
    configuration. Returns the summary."""
    run_dir = RunDir(out_dir)
    run_dir.claim(config)
    dataset = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    game = build(config, dataset)
    mngr = checkpoint.manager(run_dir.path)
    start_epoch = mngr.latest_step() or 0
    players = checkpoint.restore(mngr, game.players) if start_epoch else game.players
    run_dir.keep_metrics_until(start_epoch)

    peers, discs = players["peers"], players.get("discriminators")
    make_batch = _make_batch_fn(dataset, config.max_shift)
    evaluate = _Evaluator(dataset, game.peer_graphdef)
    x_train, y_train = jax.device_put((dataset.x_train, dataset.y_train.astype(np.int32)))
    images_per_epoch = game.steps_per_epoch * config.batch_size
    bar = tqdm(
        total=config.epochs * images_per_epoch,
        initial=start_epoch * images_per_epoch,
        unit="img",
        unit_scale=True,
        desc=label or f"{config.num_peers}x {config.model}",
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        order = epoch_indices(
            jax.random.fold_in(jax.random.key(config.seed), epoch), len(dataset.y_train), config.batch_size
        )
        step_metrics = []
        for i in range(game.steps_per_epoch):
            batch = make_batch(x_train, y_train, order, i, peers.seed, peers.step)
            metrics = {}
            for _ in range(config.disc_steps if discs is not None else 0):
                discs, metrics = game.disc_step(peers, discs, batch)
            peers, peer_metrics = game.peer_step(peers, discs, batch)
            step_metrics.append({**peer_metrics, **metrics})
            bar.update(config.batch_size)
        step_metrics = jax.device_get(step_metrics)
        train = run_dir.epoch_means(step_metrics, epoch=epoch + 1, last_checkpoint=mngr.latest_step() or 0)
        seconds = time.perf_counter() - started
        last = epoch + 1 == config.epochs
        test = evaluate(peers) if (epoch + 1) % config.eval_every == 0 or last else {}
        run_dir.append_epoch(epoch + 1, (epoch + 1) * game.steps_per_epoch, seconds, train, test)
        if test:
            bar.set_postfix(epoch=epoch + 1, test_acc=f"{test['accuracy']:.4f}")
        saved = {"peers": peers} if discs is None else {"peers": peers, "discriminators": discs}
        checkpoint.save(mngr, epoch + 1, saved)
    bar.close()

    lines = run_dir.metrics()
    summary = {
        "model": config.model,
        "num_peers": config.num_peers,
        "epochs": config.epochs,
        "seed": config.seed,
        "params_per_peer": game.peer_params,
        "params_per_discriminator": game.disc_params,
        "train_seconds": round(sum(m["seconds"] for m in lines), 2),
        **{k: v for k, v in lines[-1].items() if k.startswith("test/")},
    }
    run_dir.write_summary(summary)
    return summary


# ---------------------------------------------------------------- command line

_OPTION_HELP = {
    "num_peers": "number of peers K trained together (>= 2)",
    "seed": "seed of the peers' and discriminators' initialisation, data order, dropout, jitter",
    "batch_size": "batch of every step, shared by all peers",
    "optimizer": "the peers' optimizer: sgd (momentum, Nesterov, coupled weight decay) or adam",
    "learning_rate": "the peers' base learning rate",
    "momentum": "the peers' SGD momentum",
    "weight_decay": "the peers' weight decay",
    "schedule": "the peers' learning-rate schedule over the run: cosine, constant, or step",
    "lr_milestones": "comma-separated epochs at which the step schedule multiplies the rate by 0.1",
    "warmup_epochs": "linear warm-up of the peers' learning rate from 0 over N epochs",
    "max_shift": "random translation of each training image by up to this many pixels",
    "mutual_weight": "weight of the mutual-learning term T^2 KL(peer j || peer k), averaged over j != k "
    "(0 with --disc-input none: every peer trains alone)",
    "temperature": "softmax temperature T of the mutual-learning term and of --disc-input probs",
    "disc_input": "what the discriminators compare: none (pure mutual learning), logits, probs "
    "(softmax(z/T)), or feature:NAME (a named feature map; 'jdistill models --features' lists them)",
    "adv_weight": "weight of each peer's term for fooling its discriminator",
    "objective": "discriminator objective: bce, least_squares or hinge",
    "gp_weight": "weight of the discriminators' gradient penalty (WGAN-GP; 0: none)",
    "disc_steps": "discriminator steps per peer step (on the same batch)",
    "disc_optimizer": "the discriminators' optimizer",
    "disc_lr": "the discriminators' learning rate",
    "disc_schedule": "the discriminators' learning-rate schedule: constant or cosine",
    "disc_hidden": "hidden units of each of the discriminators' two hidden layers",
    "eval_every": "evaluate on the test set every N epochs (and at the end)",
}
_CHOICES = {
    "optimizer": ("sgd", "adam"),
    "schedule": ("cosine", "constant", "step"),
    "objective": OBJECTIVES,
    "disc_optimizer": ("sgd", "adam"),
    "disc_schedule": ("constant", "cosine"),
}


def _parse_epochs(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(e) for e in text.split(",") if e.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``online`` subcommand on ``subparsers`` (of ``jdistill``'s parser)."""
    from jdistill.cli import DATA_DIR_HELP, DATASET_HELP

    defaults = {f.name: f.default for f in dataclasses.fields(OnlineConfig)}
    p = subparsers.add_parser(
        "online",
        help="train K peers together from scratch (mutual learning, discriminators between peers)",
        description="Online distillation: K peers of one architecture learn from the labels and from each "
        "other (deep mutual learning, Zhang et al. 2018), optionally with a discriminator per peer that "
        "it learns to fool (Chung et al. 2020). --mutual-weight 0 --disc-input none trains the peers alone.",
    )
    p.add_argument("--model", required=True, help="built-in model name of every peer (see 'jdistill models')")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument("--epochs", type=int, required=True, help="passes over the training set")
    p.add_argument(
        "--out",
        required=True,
        help="run directory (config.json, metrics.jsonl, checkpoints/, summary.json); "
        "re-running the same command there resumes from the last checkpoint",
    )
    for name, text in _OPTION_HELP.items():
        option = "--lr" if name == "learning_rate" else "--" + name.replace("_", "-")
        default = defaults[name]
        kind = _parse_epochs if name == "lr_milestones" else type(default)
        p.add_argument(
            option,
            dest=name,
            type=kind,
            default=default,
            choices=_CHOICES.get(name),
            help=f"{text}; default: {','.join(map(str, default)) or 'none' if name == 'lr_milestones' else default}",
        )
    p.add_argument(
        "--nesterov",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Nesterov momentum; default: on",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_online)
    return p


def cmd_online(args) -> None:
    """Run the configuration the ``online`` options describe and print its summary as JSON."""
    fields = {f.name for f in dataclasses.fields(OnlineConfig)}
    config = OnlineConfig(**{k: v for k, v in vars(args).items() if k in fields})
    summary = run(config, args.out, progress=not args.quiet)
    print(json.dumps(summary, indent=2))

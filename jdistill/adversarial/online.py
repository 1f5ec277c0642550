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

The K peers are one stacked player forwarded by ``vmap``; so are the K discriminators, each
stack with K independent optimizer states. The peers minimise ``sum_k L_k``, whose gradient
with respect to peer k's parameters is that of ``L_k`` alone (the mutual-learning targets are
fixed and ``D_k`` sees peer k only). Each round takes ``disc_steps`` discriminator moves, then
one peer move, on the same batch.

``mutual_weight=0, disc_input="none"`` trains the K peers independently (each alone) from the
same initialisations and in the same data order as an online run with the same seed: the
baseline.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jdistill.data import Dataset, load_dataset
from jdistill.losses import cross_entropy
from jdistill.losses.adversarial import (
    OBJECTIVES,
    discriminator_loss,
    fooling_loss,
    gradient_penalty,
    mutual_learning,
)
from jdistill.models import count_params, create_model
from jdistill.models.discriminator import VectorDiscriminator
from jdistill.train import groups
from jdistill.train.config import OptimizerConfig, refuse_average
from jdistill.train.evaluate import ClassifierEvaluator
from jdistill.train.fit import deprecated_run
from jdistill.train.game import LOSS, MODEL, Game, Move, Phase
from jdistill.train.groups import option
from jdistill.train.player import Player
from jdistill.train.sources import DataSource

DISC_INPUTS = ("none", "logits", "probs", "feature:<name>")
PEER_INIT, DISC_INIT = 0, 1  # streams of the initialisation keys


@dataclasses.dataclass(frozen=True, init=False)
class OnlineConfig(groups.Grouped):
    """Everything that determines an online run; saved as ``config.json`` in its run directory.

    Peers: ``num_peers`` copies of ``model`` initialised from different keys, trained with
    ``optimizer`` (an :class:`OptimizerConfig`). Discriminators (when ``disc_input`` is not
    ``"none"``): an MLP with two hidden layers of ``disc_hidden`` units per peer, trained with
    ``disc_optimizer`` (default Adam 1e-3, cosine) on ``objective`` plus ``gp_weight`` times the
    gradient penalty, ``disc_steps`` times per peer step.
    """

    FORMER_NAMES = {"disc_lr": "disc_learning_rate"}

    model: str
    dataset: str
    epochs: int
    num_peers: int = 2
    seed: int = 0
    data_dir: str | None = None
    batch_size: int = 128
    optimizer: OptimizerConfig = OptimizerConfig()
    max_shift: int = 0
    mutual_weight: float = 1.0
    temperature: float = 1.0
    disc_input: str = "none"
    adv_weight: float = 1.0
    objective: str = "bce"
    gp_weight: float = 0.0
    disc_steps: int = 1
    disc_optimizer: OptimizerConfig = option(
        OptimizerConfig("adam", 1e-3), prefix="disc", help="the discriminators' optimizer"
    )
    disc_hidden: int = 64
    eval_every: int = 1

    def __post_init__(self):
        refuse_average(self.disc_optimizer, "disc_ema_decay", "discriminator")
        if self.num_peers < 2:
            raise ValueError(
                f"num_peers must be >= 2, got {self.num_peers}; for peers trained alone set "
                f"mutual_weight=0 and disc_input='none'"
            )
        for name in ("epochs", "batch_size", "disc_steps", "disc_hidden", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("mutual_weight", "adv_weight", "gp_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: choose one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        feature = self.disc_input.removeprefix("feature:")
        if self.disc_input not in ("none", "logits", "probs") and feature in (self.disc_input, ""):
            raise ValueError(f"disc_input: choose one of {', '.join(DISC_INPUTS)}, got {self.disc_input!r}")
        for optimizer in (self.optimizer, self.disc_optimizer):
            optimizer.check_epochs(self.epochs)

    @property
    def adversarial(self) -> bool:
        return self.disc_input != "none"

    def build(self, dataset: Dataset | None = None) -> Game:
        return build(self, dataset)


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


def forward_peers(view, num_peers: int):
    """Every peer on the batch in training mode, each with its own dropout key of the round:
    ``(logits [K, B, C], features {name: [K, B, ...]})``. The discriminators' moves and the peers'
    draw the same keys, so the discriminators judge exactly the outputs the peers train on."""
    keys = jax.random.split(view.key(MODEL), num_peers)
    forward = lambda model, key: model(view.batch["image"], train=True, dropout_key=key)
    return view.module("peers")(forward, keys, in_axes=(0,))


def peer_loss(config: OnlineConfig, view):
    """``sum_k L_k`` (see the module docstring); the discriminators enter as constants."""
    labels = view.batch["label"]
    logits, features = forward_peers(view, config.num_peers)
    terms = {
        "ce": jax.vmap(lambda z: jnp.mean(cross_entropy(z, labels)))(logits),
        "mutual": jnp.mean(mutual_learning(logits, temperature=config.temperature), axis=-1),
    }
    total = terms["ce"] + config.mutual_weight * terms["mutual"]
    if config.adversarial:
        h = discriminated(config.disc_input, config.temperature, logits, features)
        scores = view.module("discriminators")(lambda d, x: d(x), h, in_axes=(0,))
        terms["fooling"] = jax.vmap(functools.partial(fooling_loss, objective=config.objective))(scores)
        total = total + config.adv_weight * terms["fooling"]
    return jnp.sum(total), {
        "loss": jnp.mean(total),
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
        **{name: jnp.mean(value) for name, value in terms.items()},
    }


def discriminators_loss(config: OnlineConfig, view):
    """Every D_k on the peers' training-mode outputs (held fixed): the other peers' rows real,
    peer k's fake, plus ``gp_weight`` times the gradient penalty at points between the two (peer
    k's rows repeated K - 1 times)."""
    logits, features = forward_peers(view, config.num_peers)
    h = jax.lax.stop_gradient(discriminated(config.disc_input, config.temperature, logits, features))
    keys = jax.random.split(jax.random.fold_in(view.key(LOSS), view.repeat), config.num_peers)

    def one(disc, real_k, fake_k, key_k):
        loss = discriminator_loss(disc(real_k), disc(fake_k), objective=config.objective)
        penalty = jnp.float32(0)
        if config.gp_weight:
            penalty = gradient_penalty(
                disc, real_k, jnp.tile(fake_k, (real_k.shape[0] // fake_k.shape[0], 1)), key_k
            )
        return loss + config.gp_weight * penalty, loss, penalty

    totals, adversarial, penalties = view.module("discriminators")(
        one, other_peers(h), h, keys, in_axes=(0, 0, 0)
    )
    return jnp.sum(totals), {"loss": jnp.mean(adversarial), "gp": jnp.mean(penalties)}


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


def build(config: OnlineConfig, dataset: Dataset | None = None) -> Game:
    """The players of ``config`` on ``dataset`` at step 0, and their moves."""
    dataset = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    source = DataSource(dataset, config.batch_size, config.max_shift)
    per_epoch = source.steps_per_epoch
    peers = create_peers(config, dataset)
    players = {"peers": Player.stack(peers, config.optimizer.build(config.epochs, per_epoch))}
    moves, disc_params = (Move("peers", functools.partial(peer_loss, config)),), 0
    if config.adversarial:
        width = disc_in_features(config, peers[0], dataset)
        discs = [
            VectorDiscriminator(
                width, widths=(config.disc_hidden,) * 2, rngs=nnx.Rngs(init_key(config.seed, DISC_INIT, k))
            )
            for k in range(config.num_peers)
        ]
        disc_optimizer = config.disc_optimizer.build(config.epochs, per_epoch * config.disc_steps)
        players["discriminators"] = Player.stack(discs, disc_optimizer)
        moves = (
            Move(
                "discriminators",
                functools.partial(discriminators_loss, config),
                config.disc_steps,
                prefix="disc_",
            ),
            *moves,
        )
        disc_params = count_params(discs[0])
    return Game(
        config=config,
        players=players,
        phases=(Phase("train", config.epochs, moves),),
        source=source,
        seed=config.seed,
        evaluate=ClassifierEvaluator(dataset, player="peers"),
        eval_every=config.eval_every,
        label=f"{config.num_peers}x {config.model}",
        summary={
            "model": config.model,
            "num_peers": config.num_peers,
            "epochs": config.epochs,
            "seed": config.seed,
            "params_per_peer": count_params(peers[0]),
            "params_per_discriminator": disc_params,
        },
        best=None,
    )


run = deprecated_run("jdistill.adversarial.online.run")

"""Optimizers whose learning rate is an argument of the step, not a compiled-in constant.

``direction(config)`` is an optax transformation without the learning rate; the step scales its
output by ``-hparams["learning_rate"] * schedule(step)``, so changing the rate never recompiles.
"""

from collections.abc import Callable

import jax
import optax

from jdistill.train.config import RunConfig


def direction(config: RunConfig) -> optax.GradientTransformation:
    """SGD (coupled weight decay, momentum, optional Nesterov) or Adam (decoupled, AdamW)."""
    if config.optimizer == "sgd":
        return optax.chain(
            optax.add_decayed_weights(config.weight_decay),
            optax.trace(decay=config.momentum, nesterov=config.nesterov),
        )
    return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(config.weight_decay))


def schedule(config: RunConfig, total_steps: int) -> Callable[[jax.Array], jax.Array]:
    """Multiplier of the base learning rate at each step."""
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(1.0, decay_steps=total_steps)
    return optax.constant_schedule(1.0)

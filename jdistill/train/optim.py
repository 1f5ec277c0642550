"""Optimizers whose learning rate is an argument of the step, not a compiled-in constant.

``direction(config)`` is an optax transformation without the learning rate; the step scales its
output by ``-hparams["learning_rate"] * schedule(step)``, so changing the rate never recompiles.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
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


def max_norm(params, limit: float | jax.Array):
    """Project every weight kernel (a ``kernel`` leaf of two or more dimensions, output units on
    the last axis) so that each unit's incoming weight vector has L2 norm at most ``limit``:
    ``w_j <- w_j * min(1, limit / ||w_j||)`` (the max-norm constraint of Srivastava et al. 2014,
    applied after each update). Biases and other leaves are unchanged."""

    def project(path, w):
        if jax.tree_util.keystr(path[-1:]) != "['kernel']" or w.ndim < 2:
            return w
        norms = jnp.sqrt(jnp.sum(jnp.square(w), axis=tuple(range(w.ndim - 1)), keepdims=True))
        return w * jnp.minimum(1.0, limit / jnp.maximum(norms, 1e-12))

    return jax.tree_util.tree_map_with_path(project, params)

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


def schedule(config: RunConfig, steps_per_epoch: int) -> Callable[[jax.Array], jax.Array]:
    """Multiplier of the base learning rate at each step: a linear warm-up from 0 over
    ``warmup_epochs``, then cosine decay to 0 over the remaining steps, constant, or steps of
    ``lr_decay`` at the ``lr_milestones`` epochs."""
    warmup = config.warmup_epochs * steps_per_epoch
    rest = config.epochs * steps_per_epoch - warmup
    if config.schedule == "cosine":
        after = optax.cosine_decay_schedule(1.0, decay_steps=max(rest, 1))
    elif config.schedule == "step":
        # Scaled from the first step of epoch e (0-based), e * steps_per_epoch, as PyTorch's MultiStepLR.
        after = optax.piecewise_constant_schedule(
            1.0, {e * steps_per_epoch - warmup: config.lr_decay for e in config.lr_milestones}
        )
    else:
        after = optax.constant_schedule(1.0)
    if not warmup:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, 1.0, warmup), after], [warmup])


def max_norm(params, limit: float | jax.Array):
    """Project every weight kernel (a ``kernel`` leaf of two or more dimensions, output units on
    the last axis) so that each unit's incoming weight vector has L2 norm at most ``limit``:
    ``w_j <- w_j * min(1, limit / ||w_j||)`` (the max-norm constraint of Srivastava et al. 2014,
    applied after each update). Biases and other leaves are unchanged."""

    def project(path, w):
        if getattr(path[-1], "key", None) != "kernel" or w.ndim < 2:
            return w
        norms = jnp.sqrt(jnp.sum(jnp.square(w), axis=tuple(range(w.ndim - 1)), keepdims=True))
        return w * jnp.minimum(1.0, limit / jnp.maximum(norms, 1e-12))

    return jax.tree_util.tree_map_with_path(project, params)

"""One optimizer configuration for every player, built on optax.

:class:`Optimizer` makes ``inject_hyperparams(...)``-wrapped optax chains, so the base learning
rate lives in the optimizer state as an array (changing it never recompiles), times a schedule
multiplier of the player's own step:

- ``sgd``: ``w <- w - lr(t) * trace(g + wd * w)``: weight decay **coupled** (an L2 term added to
  the gradient before momentum), as ``torch.optim.SGD`` does; momentum with optional Nesterov.
  The momentum ``mu`` may follow a schedule of the step (Hinton et al. 2012 raise it from 0.5 to
  0.99), and ``dampening`` scales each gradient by ``1 - mu`` before it enters the trace, as
  Hinton et al. 2012 write the update (``dw <- mu dw - (1 - mu) lr g``).
- ``adam``: ``w <- w - lr(t) * (adam(g) + wd * w)``: weight decay **decoupled** (AdamW,
  Loshchilov & Hutter 2019), as ``torch.optim.AdamW`` and ``optax.adamw`` do.

Optional global-norm gradient clipping comes first; ``trains`` (a predicate of a parameter's
path) freezes the other parameters through ``optax.multi_transform`` (their update is zero);
``max_norm`` projects each unit's incoming weights after the update (Srivastava et al. 2014);
``ema_decay`` keeps an average of the parameters beside them (:func:`averaged`).
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[jax.Array], jax.Array]


def path_names(path) -> tuple[str, ...]:
    """``("model", "hidden", "0", "kernel")`` for a key path of a parameter pytree."""
    return tuple(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """A player's optimizer: ``name`` (``sgd`` or ``adam``, see the module docstring), base
    ``learning_rate`` times ``schedule(step)``, ``momentum``/``nesterov`` (SGD), ``b1`` (Adam),
    ``weight_decay``, ``clip_norm`` (global gradient norm), ``max_norm`` (per-unit weight norm after
    each update), ``trains`` (which parameter paths update; default all). ``momentum_schedule``
    (SGD), a function of the step, replaces the constant ``momentum``; ``dampening`` (SGD) scales
    the gradient by ``1 - momentum`` before the trace. ``ema_decay`` (in (0, 1)) keeps the
    exponential moving average of the parameters after every update (:func:`averaged`), which the
    player carries beside its parameters and evaluations read as well."""

    name: str = "sgd"
    learning_rate: float = 0.05
    schedule: Schedule = optax.constant_schedule(1.0)
    momentum: float = 0.9
    nesterov: bool = True
    b1: float = 0.9
    weight_decay: float = 0.0
    clip_norm: float | None = None
    max_norm: float | None = None
    trains: Callable[[tuple[str, ...]], bool] | None = None
    momentum_schedule: Schedule | None = None
    dampening: bool = False
    ema_decay: float | None = None

    def __post_init__(self):
        if self.name not in ("sgd", "adam"):
            raise ValueError(f"optimizer: choose 'sgd' or 'adam', got {self.name!r}")
        for field in ("learning_rate", "weight_decay", "momentum"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")
        for field in ("clip_norm", "max_norm"):
            if getattr(self, field) is not None and getattr(self, field) <= 0:
                raise ValueError(f"{field} must be > 0 (or None), got {getattr(self, field)}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) (or None), got {self.ema_decay}")

    def transformation(self) -> optax.GradientTransformation:
        def chain(learning_rate, momentum=self.momentum):
            parts = [optax.clip_by_global_norm(self.clip_norm)] if self.clip_norm else []
            if self.name == "sgd":
                if self.weight_decay:
                    parts.append(optax.add_decayed_weights(self.weight_decay))
                if self.dampening:
                    parts.append(optax.scale(1.0 - momentum))
                parts.append(optax.trace(decay=momentum, nesterov=self.nesterov))
            else:
                parts.append(optax.scale_by_adam(b1=self.b1))
                if self.weight_decay:
                    parts.append(optax.add_decayed_weights(self.weight_decay))
            parts.append(optax.scale_by_schedule(lambda step: -learning_rate * self.schedule(step)))
            return optax.chain(*parts)

        hyperparams = {"learning_rate": self.learning_rate}
        if self.momentum_schedule is not None:
            hyperparams["momentum"] = self.momentum_schedule
        tx = optax.inject_hyperparams(chain)(**hyperparams)
        if self.trains is None:
            return tx
        labels = lambda params: jax.tree_util.tree_map_with_path(
            lambda path, _: "train" if self.trains(path_names(path)) else "frozen", params
        )
        return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)

    def learning_rate_at(self, opt_state, step: jax.Array) -> jax.Array:
        """The rate of the update at ``step``: the state's base rate times the schedule."""
        return optax.tree_utils.tree_get(opt_state, "learning_rate") * self.schedule(step)


def schedule(
    kind: str,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    milestones=(),
    decay: float = 0.1,
    steps_per_epoch: int = 1,
) -> Schedule:
    """Multiplier of the base learning rate at each step: a linear warm-up from 0 over
    ``warmup_steps``, then ``cosine`` decay to 0 over the remaining steps, ``constant``,
    ``step`` (times ``decay`` at each step of ``milestones``, counted from the run's start as
    PyTorch's MultiStepLR counts epochs) or ``exponential`` (times ``decay`` after every epoch of
    ``steps_per_epoch`` steps: ``decay ** floor(t / steps_per_epoch)``, Hinton et al. 2012)."""
    rest = total_steps - warmup_steps
    if kind == "exponential":
        after = optax.exponential_decay(1.0, steps_per_epoch, decay, staircase=True)
    elif kind == "cosine":
        after = optax.cosine_decay_schedule(1.0, decay_steps=max(rest, 1))
    elif kind == "step":
        after = optax.piecewise_constant_schedule(1.0, {m - warmup_steps: decay for m in milestones})
    elif kind == "constant":
        after = optax.constant_schedule(1.0)
    else:
        raise ValueError(f"schedule: choose 'cosine', 'constant', 'step' or 'exponential', got {kind!r}")
    if not warmup_steps:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, 1.0, warmup_steps), after], [warmup_steps])


def momentum_ramp(start: float, end: float, ramp_steps: int) -> Schedule:
    """Momentum rising linearly from ``start`` to ``end`` over ``ramp_steps``, then ``end``
    (Hinton et al. 2012: 0.5 to 0.99 over the first 500 epochs)."""
    return optax.linear_schedule(start, end, max(ramp_steps, 1))


def averaged(average, params, decay: float, count: jax.Array):
    """The exponential moving average of the parameters after update ``count`` (1-based), debiased:
    ``a_t = a_{t-1} + w_t (theta_t - a_{t-1})`` with ``w_t = (1 - d) / (1 - d^t)``, which equals
    ``(1 - d) sum_{i<=t} d^(t-i) theta_i / (1 - d^t)``: the zero-started average divided by its bias,
    as Adam debiases its moments (Kingma & Ba 2015), so that ``a_1 = theta_1`` and no weight is left
    on the initialisation. Polyak & Juditsky 1992; for adversarial games, Yazici et al. 2019."""
    decay = jnp.float32(decay)
    weight = (1 - decay) / (1 - decay ** jnp.asarray(count, jnp.float32))
    return optax.incremental_update(params, average, weight)  # w theta_t + (1 - w) a_{t-1}


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

"""What temperature does to a softmax: softened probabilities and their entropy.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network": dividing the
logits by T > 1 raises the small probabilities (the "dark knowledge") that distillation transfers.
"""

import math

import jax
import jax.numpy as jnp

from jdistill.losses import _checks


def softened_probabilities(logits, *, temperature) -> jax.Array:
    """``softmax(logits / T)`` over the last axis, in float32.

    .. math::
      p_c = \\frac{\\exp(z_c / T)}{\\sum_k \\exp(z_k / T)}

    T = 1 is the plain softmax; as T grows the probabilities tend to uniform, as T -> 0 to the
    arg-max's one-hot vector.

    Args:
      logits: [..., C] logits (at least one axis), any float dtype.
      temperature: positive scalar T.

    Returns:
      [..., C] float32 probabilities.

    Raises:
      ValueError: if ``logits`` is a scalar or ``temperature`` is not a positive scalar.
    """
    _checks.check_min_rank("logits", logits, 1, "[..., classes]")
    _checks.check_temperature(temperature)
    return jax.nn.softmax(jnp.asarray(logits).astype(jnp.float32) / temperature, axis=-1)


def entropy(probs, *, normalise: bool = False) -> jax.Array:
    """Shannon entropy of probability vectors in nats, optionally divided by ``log C``.

    .. math::
      H(p) = -\\sum_c p_c \\log p_c \\quad (0 \\log 0 = 0)

    0 for a one-hot vector, ``log C`` (1 when normalised) for the uniform one. The gradient at
    a zero probability is taken as 0.

    Args:
      probs: [..., C] probabilities (each row sums to 1), any float dtype.
      normalise: divide by ``log C`` so that the result lies in [0, 1].

    Returns:
      [...] float32 entropies.

    Raises:
      ValueError: if ``probs`` is a scalar, or ``normalise`` with a single class.
    """
    _checks.check_min_rank("probs", probs, 1, "[..., classes]")
    p = jnp.asarray(probs).astype(jnp.float32)
    # 0 log 0 = 0, with a zero (not infinite) gradient there: a probability that underflowed
    # to 0 (a large logit gap at a low T) leaves the gradient finite.
    positive = p > 0
    h = -jnp.sum(jnp.where(positive, p * jnp.log(jnp.where(positive, p, 1.0)), 0.0), axis=-1)
    if not normalise:
        return h
    num_classes = jnp.shape(probs)[-1]
    if num_classes < 2:
        raise ValueError(
            f"probs: normalising by log C needs C >= 2 classes, got shape {list(jnp.shape(probs))}"
        )
    return h / math.log(num_classes)

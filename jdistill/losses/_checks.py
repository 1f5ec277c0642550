"""Input validation shared by the loss modules.

All checks run at trace time: array shapes and dtypes are static under ``jit``
and ``vmap``, so a bad call fails once, with a readable message, before any
computation. Every message names the offending argument, the shape it had and
the shape that was expected.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def fmt_shape(shape: Sequence[int | str]) -> str:
    """Formats a shape as ``[8, 10]``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_rank(name: str, x, rank: int, layout: str) -> None:
    """Raises ValueError unless ``x`` has exactly ``rank`` dimensions.

    ``layout`` names the expected axes, e.g. ``"[batch, classes]"``.
    """
    if jnp.ndim(x) != rank:
        raise ValueError(f"{name}: expected rank {rank} {layout}, got shape {fmt_shape(jnp.shape(x))}")


def check_min_rank(name: str, x, min_rank: int, layout: str) -> None:
    """Raises ValueError unless ``x`` has at least ``min_rank`` dimensions."""
    if jnp.ndim(x) < min_rank:
        raise ValueError(f"{name}: expected rank >= {min_rank} {layout}, got shape {fmt_shape(jnp.shape(x))}")


def check_match(
    name: str,
    x,
    ref_name: str,
    ref,
    axes: Sequence[int] | None = None,
    hint: str = "",
) -> None:
    """Raises ValueError unless ``x`` matches ``ref`` in shape.

    Args:
      name: name of the argument being checked.
      x: the argument being checked.
      ref_name: name of the argument it must match.
      ref: that argument (already validated).
      axes: the axes that must agree; ``None`` means the whole shape, including
        the rank. Other axes are shown as ``*`` in the message.
      hint: optional sentence appended to the message.
    """
    got, want = jnp.shape(x), jnp.shape(ref)
    if axes is None:
        ok = got == want
        expected, reference = want, ref_name
    else:
        ok = len(got) == len(want) and all(got[a] == want[a] for a in axes)
        expected = [d if a in axes else "*" for a, d in enumerate(want)]
        reference = f"{ref_name} (shape {fmt_shape(want)})"
    if not ok:
        message = f"{name}: expected shape {fmt_shape(expected)} to match {reference}, got {fmt_shape(got)}"
        raise ValueError(f"{message}. {hint}" if hint else message)


def check_labels(labels, logits) -> None:
    """Raises ValueError unless ``labels`` is an integer array of shape [B].

    ``B`` is the batch size of ``logits`` (rank 2, already validated). Whether
    each label lies in ``[0, classes)`` depends on values, which are not known
    under ``jit``, so it is not checked.
    """
    expected = fmt_shape(jnp.shape(logits)[:1])
    if jnp.shape(labels) != jnp.shape(logits)[:1]:
        raise ValueError(
            f"labels: expected shape {expected} (one class index per example), "
            f"got {fmt_shape(jnp.shape(labels))}"
        )
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(
            f"labels: expected integer class indices of shape {expected}, got "
            f"{jnp.result_type(labels)} of shape {fmt_shape(jnp.shape(labels))}"
        )


def check_temperature(temperature) -> None:
    """Raises ValueError unless ``temperature`` is a scalar, positive if known.

    The rank is always checked. The sign is checked only when the value is
    concrete (a Python number or a concrete array): under ``jit`` a temperature
    passed as a traced argument (the trainer does this, so that changing it does
    not recompile) is a ``jax.core.Tracer`` whose value is unknown, and a
    non-positive traced temperature is not detected.
    """
    check_positive_scalar("temperature", temperature)


def check_positive_scalar(name: str, value) -> None:
    """Raises ValueError naming ``name`` unless ``value`` is a scalar, positive if concrete
    (see :func:`check_temperature` for why a traced value's sign is not checked)."""
    if jnp.ndim(value) != 0:
        raise ValueError(f"{name}: expected a scalar (shape []), got shape {fmt_shape(jnp.shape(value))}")
    if isinstance(value, jax.core.Tracer):
        return
    if not float(value) > 0:  # Also rejects NaN.
        raise ValueError(f"{name}: expected a positive scalar (shape []), got {value}")

"""Born-again networks (Furlanello et al. 2018): the two ablations of the paper and the ensemble.

A born-again network (BAN) is a student with its teacher's architecture, trained on the teacher's
outputs; generation ``k + 1`` learns from generation ``k``. The plain BAN objective is
:func:`jdistill.losses.kd` at ``T = 1`` without a label term. The paper separates what the
teacher's outputs carry with two variants:

- CWTM (confidence-weighted by teacher max): the hard labels only, each example weighted by the
  teacher's confidence, i.e. the teacher's outputs say only how much to trust each example;
- DKPP (dark knowledge with permuted predictions): the teacher's distribution with its top
  entry kept and the other entries shuffled, i.e. the confidence stays and the "dark knowledge"
  about which wrong classes are alike is destroyed.

Furlanello, Lipton, Tschannen, Itti & Anandkumar (ICML 2018), "Born-Again Neural Networks".
"""

import jax
import jax.numpy as jnp

from jdistill.losses import _checks
from jdistill.losses.logits import cross_entropy, kd


def ban_cwtm(student_logits, teacher_logits, labels) -> jax.Array:
    """Per-example CWTM loss: cross-entropy with the labels, weighted by the teacher's confidence.

    .. math::

      w_b = \\frac{\\max_c \\mathrm{softmax}(t_b)_c}{\\sum_u \\max_c \\mathrm{softmax}(t_u)_c}, \\qquad
      \\mathrm{cwtm}_b = B \\, w_b \\, \\mathrm{CE}(s_b, y_b)

    The paper's weights ``w`` sum to 1 over the batch (its loss is ``sum_b w_b CE_b``); the factor
    ``B`` makes the batch *mean* of the returned values equal that sum, as the trainer averages
    terms. The weights depend on the teacher only (their gradient flows to ``teacher_logits``
    unless the caller stops it).

    Furlanello et al. (2018), "Born-Again Neural Networks", section 3.2.

    Args:
      student_logits: [B, C] student logits, any float dtype.
      teacher_logits: [B, C] teacher logits, any float dtype.
      labels: [B] integer class indices.

    Returns:
      [B] float32 losses; their mean is the paper's batch loss.

    Raises:
      ValueError: on wrong ranks or mismatched shapes.
    """
    _checks.check_rank("student_logits", student_logits, 2, "[batch, classes]")
    _checks.check_match("teacher_logits", teacher_logits, "student_logits", student_logits)
    ce = cross_entropy(student_logits, labels)
    confidence = jnp.max(jax.nn.softmax(jnp.asarray(teacher_logits).astype(jnp.float32)), axis=-1)
    return ce.shape[0] * confidence / jnp.sum(confidence) * ce


def permute_dark_knowledge(teacher_logits, *, key) -> jax.Array:
    """The teacher's logits with each example's top entry kept in place and the other entries
    shuffled among the other classes (an independent random permutation per example).

    Softmax commutes with permutations, so the resulting probabilities are the teacher's with
    the non-argmax probabilities permuted, as DKPP prescribes. Ties for the maximum keep the
    first maximal class (``jnp.argmax``).

    Args:
      teacher_logits: [B, C] logits, any float dtype.
      key: a PRNG key; the same key gives the same permutations.

    Returns:
      [B, C] float32 logits.

    Raises:
      ValueError: if ``teacher_logits`` is not rank 2.
    """
    _checks.check_rank("teacher_logits", teacher_logits, 2, "[batch, classes]")
    t = jnp.asarray(teacher_logits).astype(jnp.float32)
    batch, classes = t.shape
    top = jnp.argmax(t, axis=-1)[:, None]
    is_top = jnp.arange(classes)[None, :] == top
    # Sorting puts the top class first in both orders; the other classes follow in index order
    # (source) and in a random order (destination), so entry source[k] moves to destination[k].
    source = jnp.argsort(jnp.where(is_top, -1, jnp.arange(classes)[None, :]), axis=-1)
    scores = jax.random.uniform(key, (batch, classes))
    destination = jnp.argsort(jnp.where(is_top, -1.0, scores), axis=-1)
    rows = jnp.arange(batch)[:, None]
    return jnp.zeros_like(t).at[rows, destination].set(t[rows, source])


def ban_dkpp(student_logits, teacher_logits, *, key, temperature=1.0) -> jax.Array:
    """Per-example DKPP loss: distillation from the teacher's distribution with its non-argmax
    entries permuted.

    ``dkpp_b = kd(s, pi_b(t), temperature=T)_b`` where ``pi_b`` keeps the teacher's top class
    and shuffles the other logits (:func:`permute_dark_knowledge`). The paper uses ``T = 1``.

    Furlanello et al. (2018), "Born-Again Neural Networks", section 3.2.

    Args:
      student_logits: [B, C] student logits, any float dtype.
      teacher_logits: [B, C] teacher logits, any float dtype.
      key: a PRNG key for the permutations (the loss is a pure function of its arguments).
      temperature: scalar ``T > 0``, as in :func:`jdistill.losses.kd`.

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: on wrong ranks, mismatched shapes or a bad temperature.
    """
    _checks.check_rank("student_logits", student_logits, 2, "[batch, classes]")
    _checks.check_match("teacher_logits", teacher_logits, "student_logits", student_logits)
    return kd(student_logits, permute_dark_knowledge(teacher_logits, key=key), temperature=temperature)


def ensemble_probabilities(logits) -> jax.Array:
    """Born-again ensemble (BANE): the mean of the members' softmax outputs.

    Args:
      logits: [M, B, C] logits of ``M`` members (or a sequence of ``M`` arrays [B, C]).

    Returns:
      [B, C] float32 probabilities.

    Raises:
      ValueError: if the members' logits are not [M, B, C].
    """
    if isinstance(logits, (list, tuple)):
        if not logits:
            raise ValueError("logits: expected at least one member, got an empty sequence")
        for i, member in enumerate(logits):
            _checks.check_match(f"logits[{i}]", member, "logits[0]", logits[0])
        logits = jnp.stack([jnp.asarray(m) for m in logits])
    _checks.check_rank("logits", logits, 3, "[members, batch, classes]")
    return jnp.mean(jax.nn.softmax(jnp.asarray(logits).astype(jnp.float32), axis=-1), axis=0)

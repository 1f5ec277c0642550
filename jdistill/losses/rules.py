"""A teacher made of soft logic rules (Hu et al. 2016, "Harnessing Deep Neural Networks with
Logic Rules").

The teacher is the student's own prediction ``p`` projected onto the set of distributions that
satisfy soft rules in expectation, which has the closed form
``q(y | x) ∝ p(y | x) exp(-C sum_l lambda_l (1 - r_l(x, y)))``; the student then distils from
it: ``(1 - pi) CE(y, p) + pi CE(q, p)``, with the imitation weight ``pi`` ramped up over
training (:func:`imitation_weight`). ``r_l(x, y)`` in [0, 1] is how true rule ``l`` is for
example ``x`` labelled ``y``; it may itself use the network's predictions (the paper's "A but B"
rule reads the network's sentiment of clause B).
"""

import jax
import jax.numpy as jnp
import optax

from jdistill.losses import _checks


def rule_teacher(student_logits, rule_satisfaction, *, C, rule_weights) -> jax.Array:
    """The rule-regularised teacher: the student's prediction projected onto the rules.

    ``q_bk = softmax_k(log_softmax(s_b)_k - C sum_l lambda_l (1 - r_blk))``, i.e.
    ``q ∝ p exp(-C sum_l lambda_l (1 - r_l))``. A fully satisfied rule (``r = 1``) leaves
    ``p`` unchanged; a class that violates a rule is down-weighted by ``exp(-C lambda_l)``.
    Computed in float32.

    Hu et al. (2016), "Harnessing Deep Neural Networks with Logic Rules", eq. 4.

    Args:
      student_logits: [B, K] student logits.
      rule_satisfaction: [B, L, K] soft truth values ``r_l(x_b, y = k)`` in [0, 1].
      C: positive scalar, the strength of the rules (the paper's regularisation constant).
      rule_weights: [L] non-negative confidences ``lambda_l`` (infinity: a hard rule).

    Returns:
      [B, K] float32 probabilities.

    Raises:
      ValueError: on bad shapes or a non-positive ``C``.
    """
    _checks.check_rank("student_logits", student_logits, 2, "[batch, classes]")
    _checks.check_rank("rule_satisfaction", rule_satisfaction, 3, "[batch, rules, classes]")
    b, k = jnp.shape(student_logits)
    if jnp.shape(rule_satisfaction)[0] != b or jnp.shape(rule_satisfaction)[2] != k:
        raise ValueError(
            f"rule_satisfaction: expected shape [{b}, rules, {k}] to match student_logits, got "
            f"{_checks.fmt_shape(jnp.shape(rule_satisfaction))}"
        )
    if jnp.shape(rule_weights) != jnp.shape(rule_satisfaction)[1:2]:
        raise ValueError(
            f"rule_weights: expected shape [{jnp.shape(rule_satisfaction)[1]}] (one weight per rule), "
            f"got {_checks.fmt_shape(jnp.shape(rule_weights))}"
        )
    _checks.check_positive_scalar("C", C)
    r = jnp.asarray(rule_satisfaction).astype(jnp.float32)
    penalty = jnp.einsum("l,blk->bk", jnp.asarray(rule_weights, jnp.float32), 1.0 - r)
    log_p = jax.nn.log_softmax(jnp.asarray(student_logits).astype(jnp.float32), axis=-1)
    return jax.nn.softmax(log_p - C * penalty, axis=-1)


def rule_distillation(student_logits, labels, teacher_probs, *, imitation) -> jax.Array:
    """The student's objective: hard labels and the rule teacher's soft predictions.

    ``loss_b = (1 - pi) CE(y_b, p_b) + pi CE(q_b, p_b)`` with ``p = softmax(s)``, ``q`` the
    teacher's probabilities (:func:`rule_teacher`, held fixed: stop its gradient) and ``pi =
    imitation``. Examples without a label: pass ``imitation=1`` for them (``imitation`` may be
    [B]), their label is then ignored.

    Hu et al. (2016), "Harnessing Deep Neural Networks with Logic Rules", eq. 2.

    Args:
      student_logits: [B, K] student logits.
      labels: [B] integer class indices (any value where ``imitation`` is 1).
      teacher_probs: [B, K] teacher probabilities.
      imitation: ``pi`` in [0, 1], a scalar or [B].

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: on bad shapes.
    """
    _checks.check_rank("student_logits", student_logits, 2, "[batch, classes]")
    _checks.check_labels(labels, student_logits)
    _checks.check_match("teacher_probs", teacher_probs, "student_logits", student_logits)
    if jnp.ndim(imitation) not in (0, 1) or (
        jnp.ndim(imitation) == 1 and jnp.shape(imitation) != jnp.shape(labels)
    ):
        raise ValueError(
            f"imitation: expected a scalar or shape {_checks.fmt_shape(jnp.shape(labels))}, got "
            f"{_checks.fmt_shape(jnp.shape(imitation))}"
        )
    s = jnp.asarray(student_logits).astype(jnp.float32)
    pi = jnp.asarray(imitation, jnp.float32)
    hard = optax.softmax_cross_entropy_with_integer_labels(s, jnp.maximum(labels, 0))
    soft = optax.softmax_cross_entropy(s, jnp.asarray(teacher_probs).astype(jnp.float32))
    return (1 - pi) * hard + pi * soft


def imitation_weight(step, *, pi0, alpha) -> jax.Array:
    """The paper's ramp of the imitation weight: ``pi(t) = min(pi0, 1 - alpha^t)``.

    Hu et al. (2016): ``t`` counts training progress (epochs or iterations), so the student
    trusts the labels first and the rule teacher more as it improves; ``alpha`` < 1 sets the
    speed, ``pi0`` < 1 the final weight.
    """
    return jnp.minimum(pi0, 1.0 - jnp.power(alpha, jnp.asarray(step, jnp.float32)))

"""Adversarial distillation objectives: data-free generator games, discriminators, mutual learning.

Each function is the objective of one player, to be minimised by that player. Where a paper
makes two players play the same quantity in opposite directions (DFAD, ZSKT), the generator's
function is exactly the negative of the student's. Like the other losses these functions do not
stop gradients (except :func:`mutual_learning`, whose targets are fixed by definition): each
player's step differentiates with respect to its own parameters only.
"""

import math

import jax
import jax.numpy as jnp
import optax

from jdistill.losses._checks import check_match, check_rank

OBJECTIVES = ("bce", "least_squares", "hinge")


def _pair(student_logits, teacher_logits):
    check_rank("student_logits", student_logits, 2, "[batch, classes]")
    check_match("teacher_logits", teacher_logits, "student_logits", student_logits)
    return jnp.asarray(student_logits, jnp.float32), jnp.asarray(teacher_logits, jnp.float32)


# ---------------------------------------------------------------- generator-based (data-free)


def dfad(student_logits, teacher_logits) -> jax.Array:
    """DFAD's discrepancy (Fang et al. 2019, "Data-Free Adversarial Distillation"), per example:
    ``d_b = mean_c |s_bc - t_bc|``, the mean absolute error between logits. The student
    minimises it; the generator maximises it (:func:`dfad_generator`)."""
    s, t = _pair(student_logits, teacher_logits)
    return jnp.mean(jnp.abs(s - t), axis=-1)


def dfad_generator(student_logits, teacher_logits) -> jax.Array:
    """The DFAD generator's objective, per example: ``-dfad(s, t)``."""
    return -dfad(student_logits, teacher_logits)


def dafl_one_hot(teacher_logits) -> jax.Array:
    """DAFL's one-hot loss (Chen et al. 2019, "Data-Free Learning of Student Networks"), per
    example: cross-entropy of the teacher's logits against their own argmax,
    ``-log softmax(t_b)[argmax t_b]``. Small when the teacher is confident."""
    check_rank("teacher_logits", teacher_logits, 2, "[batch, classes]")
    t = jnp.asarray(teacher_logits, jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(t, jax.lax.stop_gradient(jnp.argmax(t, -1)))


def dafl_information_entropy(teacher_logits) -> jax.Array:
    """DAFL's class-balance loss, a scalar: ``sum_c pbar_c log pbar_c`` with
    ``pbar = mean_b softmax(t_b)``, the negative entropy of the batch's mean prediction
    (natural log; minimum ``-log C`` when every class is predicted equally often)."""
    check_rank("teacher_logits", teacher_logits, 2, "[batch, classes]")
    mean_prob = jnp.mean(jax.nn.softmax(jnp.asarray(teacher_logits, jnp.float32), axis=-1), axis=0)
    return jnp.sum(mean_prob * jnp.log(jnp.maximum(mean_prob, 1e-30)))


def dafl_activation(teacher_features) -> jax.Array:
    """DAFL's activation loss, a scalar: ``-mean |f|`` over the teacher's features (its
    embedding before the classifier). Small when the generated images excite the teacher."""
    return -jnp.mean(jnp.abs(jnp.asarray(teacher_features, jnp.float32)))


# The reference implementation takes log10 in the information entropy with weight 5; with the
# natural log here the same objective has weight 5 / ln 10.
DAFL_INFORMATION_ENTROPY_WEIGHT = 5.0 / math.log(10.0)


def dafl_generator(
    teacher_logits,
    teacher_features,
    *,
    one_hot_weight: float = 1.0,
    information_entropy_weight: float = DAFL_INFORMATION_ENTROPY_WEIGHT,
    activation_weight: float = 0.1,
) -> jax.Array:
    """The DAFL generator's objective, a scalar: ``w_oh mean_b one_hot_b + w_ie
    information_entropy + w_a activation``, with DAFL's MNIST weights (1, 5 in log10 units,
    0.1) by default. The student's side of DAFL is KD at T = 1 (:func:`jdistill.losses.kd`)."""
    return (
        one_hot_weight * jnp.mean(dafl_one_hot(teacher_logits))
        + information_entropy_weight * dafl_information_entropy(teacher_logits)
        + activation_weight * dafl_activation(teacher_features)
    )


def zskt_belief(student_logits, teacher_logits) -> jax.Array:
    """ZSKT's adversarial belief matching (Micaelli & Storkey 2019, "Zero-shot Knowledge Transfer
    via Adversarial Belief Matching"), per example: the forward KL at T = 1 averaged over
    classes, ``(1/C) sum_c p_t log(p_t / p_s)`` (the reference's element-wise mean). The student
    minimises it; the generator maximises it (:func:`zskt_generator`)."""
    s, t = _pair(student_logits, teacher_logits)
    kl = optax.losses.kl_divergence_with_log_targets(
        jax.nn.log_softmax(s, axis=-1), jax.nn.log_softmax(t, axis=-1)
    )
    return kl / s.shape[-1]


def zskt_generator(student_logits, teacher_logits) -> jax.Array:
    """The ZSKT generator's objective, per example: ``-zskt_belief(s, t)``."""
    return -zskt_belief(student_logits, teacher_logits)


# ---------------------------------------------------------------- discriminator-based


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(
            f"unknown adversarial objective {objective!r}; choose one of {', '.join(OBJECTIVES)}"
        )


def discriminator_loss(real_scores, fake_scores, *, objective: str = "bce") -> jax.Array:
    """The discriminator's objective, a scalar, on raw scores (logits) of real (teacher) and fake
    (student) inputs of any shape:

    - ``bce``: ``mean softplus(-r) + mean softplus(f)``, i.e. BCE with D(real) -> 1, D(fake) -> 0
      (Goodfellow et al. 2014; ``optax.sigmoid_binary_cross_entropy``);
    - ``least_squares``: ``0.5 mean (r - 1)^2 + 0.5 mean f^2`` (Mao et al. 2017, LSGAN;
      ``optax.l2_loss``);
    - ``hinge``: ``mean relu(1 - r) + mean relu(1 + f)`` (Lim & Ye 2017; ``optax.hinge_loss``).
    """
    _check_objective(objective)
    r = jnp.asarray(real_scores, jnp.float32)
    f = jnp.asarray(fake_scores, jnp.float32)
    return jnp.mean(_against(r, 1.0, objective)) + jnp.mean(_against(f, 0.0, objective))


def _against(scores, target: float, objective: str) -> jax.Array:
    """Per-score loss of raw ``scores`` against the ``target`` class (1: real, 0: fake)."""
    if objective == "bce":
        return optax.losses.sigmoid_binary_cross_entropy(scores, jnp.full_like(scores, target))
    if objective == "least_squares":
        return optax.losses.l2_loss(scores, jnp.full_like(scores, target))
    return optax.losses.hinge_loss(scores, jnp.full_like(scores, 2.0 * target - 1.0))


def fooling_loss(fake_scores, *, objective: str = "bce") -> jax.Array:
    """The student's (generator's) adversarial objective, a scalar, on the discriminator's raw
    scores of its own outputs: ``bce``: the non-saturating ``mean softplus(-f)`` (pushes
    D(fake) -> 1); ``least_squares``: ``0.5 mean (f - 1)^2``; ``hinge``: ``-mean f``."""
    _check_objective(objective)
    f = jnp.asarray(fake_scores, jnp.float32)
    return -jnp.mean(f) if objective == "hinge" else jnp.mean(_against(f, 1.0, objective))


def gradient_penalty(critic, real, fake, key, *, target: float = 1.0) -> jax.Array:
    """WGAN-GP's penalty (Gulrajani et al. 2017), a scalar:
    ``mean_b (||grad_x critic(x)_b||_2 - target)^2`` at ``x = e real + (1 - e) fake`` with
    ``e ~ U(0, 1)`` per example. ``critic`` maps a batch ``[B, ...]`` to scores ``[B]`` or
    ``[B, 1]``; ``real`` and ``fake`` have the same shape."""
    check_match("fake", fake, "real", real)
    real = jnp.asarray(real, jnp.float32)
    fake = jnp.asarray(fake, jnp.float32)
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))
    mixed = eps * real + (1.0 - eps) * fake
    grads = jax.grad(lambda x: jnp.sum(critic(x)))(mixed)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=-1) + 1e-12)
    return jnp.mean(jnp.square(norms - target))


# ---------------------------------------------------------------- online / mutual


def mutual_learning(peer_logits, *, temperature: float = 1.0) -> jax.Array:
    """Deep mutual learning (Zhang et al. 2018), per peer and example, ``[K, B]``: peer k's mean
    over the other peers j of ``T^2 KL(p_j^T || p_k^T)``, where ``p^T = softmax(logits / T)``.
    The other peers' predictions are targets, held fixed (stop_gradient): each peer's term
    moves that peer only. ``peer_logits``: ``[K, B, C]`` with K >= 2."""
    check_rank("peer_logits", peer_logits, 3, "[peers, batch, classes]")
    k = peer_logits.shape[0]
    if k < 2:
        raise ValueError(f"peer_logits: mutual learning needs at least 2 peers, got {k}")
    log_p = jax.nn.log_softmax(jnp.asarray(peer_logits, jnp.float32) / temperature, axis=-1)
    targets = jax.lax.stop_gradient(log_p)
    # kl[j, k, b] = KL(p_j || p_k) for example b; the j = k terms are 0 in value and gradient.
    kl = optax.losses.kl_divergence_with_log_targets(log_p[None, :], targets[:, None])
    return temperature**2 * jnp.sum(kl, axis=0) / (k - 1)

"""Losses of a VAE and of the student that maps into its latent space (generative latent mapping).

The VAE's objective is the negative evidence lower bound (Kingma & Welling 2014, "Auto-Encoding
Variational Bayes"): ``bernoulli_nll + beta * gaussian_kl`` (``beta = 1``; Higgins et al. 2017
weight it). The student learns an encoder by ``latent_regression`` onto the latent points that
generated the teacher's images, and a decoder by ``decoder_distillation`` onto the teacher's
per-pixel Bernoulli distributions. All return per-example ``[B]`` float32 values, summed over the
non-batch axes (latent dimensions, pixels).
"""

import jax
import jax.numpy as jnp
import optax

from jdistill.losses import _checks


def _sum_per_example(x: jax.Array) -> jax.Array:
    return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def _float32(*arrays):
    return [jnp.asarray(a).astype(jnp.float32) for a in arrays]


def gaussian_kl(mean, log_variance) -> jax.Array:
    """KL divergence of a diagonal Gaussian from the standard normal prior.

    ``kl_b = 1/2 sum_j (exp(v_bj) + m_bj^2 - 1 - v_bj)`` = ``KL(N(m_b, diag(exp(v_b))) || N(0, I))``,
    zero iff ``m_b = 0`` and ``v_b = 0``.

    Args:
      mean: [B, L] means ``m``.
      log_variance: [B, L] log-variances ``v``.

    Returns:
      [B] float32 divergences (nats).

    Raises:
      ValueError: if ``mean`` is not rank 2 or ``log_variance`` does not match it.
    """
    _checks.check_rank("mean", mean, 2, "[batch, latent]")
    _checks.check_match("log_variance", log_variance, "mean", mean)
    m, v = _float32(mean, log_variance)
    return 0.5 * jnp.sum(jnp.exp(v) + m**2 - 1.0 - v, axis=-1)


def bernoulli_nll(logits, targets) -> jax.Array:
    """Negative log-likelihood of pixel intensities under independent Bernoulli pixels.

    ``nll_b = sum_i -(x_bi log sigmoid(l_bi) + (1 - x_bi) log(1 - sigmoid(l_bi)))``
    (``optax.sigmoid_binary_cross_entropy``), the usual reconstruction term of a VAE on MNIST;
    targets in ``[0, 1]`` need not be binary.

    Args:
      logits: [B, ...] per-pixel logits of the decoder.
      targets: [B, ...] pixel intensities in ``[0, 1]`` (not checked), shaped like ``logits``.

    Returns:
      [B] float32 losses (nats per image).

    Raises:
      ValueError: if ``logits`` has rank < 2 or ``targets`` does not match it.
    """
    _checks.check_min_rank("logits", logits, 2, "[batch, ...]")
    _checks.check_match("targets", targets, "logits", logits)
    l, x = _float32(logits, targets)
    return _sum_per_example(optax.sigmoid_binary_cross_entropy(l, x))


def negative_elbo(logits, targets, mean, log_variance, *, beta=1.0) -> jax.Array:
    """The VAE's loss: ``bernoulli_nll(logits, targets) + beta * gaussian_kl(mean, log_variance)``.

    With ``beta = 1`` and ``logits`` decoded from one reparameterised sample of
    ``N(mean, diag(exp(log_variance)))``, a one-sample estimate of the negative evidence lower
    bound (Kingma & Welling 2014).

    Args:
      logits: [B, ...] decoder logits; targets: [B, ...] pixels in ``[0, 1]``.
      mean, log_variance: [B, L] parameters of ``q(z | x)``.
      beta: weight of the KL term (a scalar >= 0).

    Returns:
      [B] float32 losses (nats per image).

    Raises:
      ValueError: on the shape errors of the two terms, or batch sizes that differ.
    """
    nll, kl = bernoulli_nll(logits, targets), gaussian_kl(mean, log_variance)
    if jnp.shape(mean)[0] != jnp.shape(logits)[0]:
        raise ValueError(
            f"mean: expected batch size {jnp.shape(logits)[0]} to match logits, got shape {jnp.shape(mean)}"
        )
    return nll + jnp.asarray(beta, jnp.float32) * kl


def latent_regression(predicted_latent, teacher_latent) -> jax.Array:
    """Squared error of a student encoder's latent point against the teacher's.

    ``lr_b = sum_j (zhat_bj - z_bj)^2`` (``optax.squared_error``): regression of the latent point
    ``z`` that generated a teacher image (or the teacher encoder's mean) from that image.

    Args:
      predicted_latent: [B, L] the student encoder's output.
      teacher_latent: [B, L] the target latent points.

    Returns:
      [B] float32 squared errors.

    Raises:
      ValueError: on a rank other than 2 or mismatched shapes.
    """
    _checks.check_rank("predicted_latent", predicted_latent, 2, "[batch, latent]")
    _checks.check_match("teacher_latent", teacher_latent, "predicted_latent", predicted_latent)
    zhat, z = _float32(predicted_latent, teacher_latent)
    return jnp.sum(optax.squared_error(zhat, z), axis=-1)


def decoder_distillation(student_logits, teacher_logits) -> jax.Array:
    """KL divergence between the teacher's and the student's per-pixel Bernoulli distributions.

    With ``p = sigmoid(t)`` the teacher's pixel probabilities and ``s`` the student's logits,

        ``dd_b = sum_i KL(Bern(p_bi) || Bern(sigmoid(s_bi)))
               = sum_i [BCE(s_bi; p_bi) - BCE(t_bi; p_bi)]``,

    binary cross-entropy against the teacher's soft targets minus the teacher's own entropy, so
    it is zero when the student's logits equal the teacher's and its gradient in ``s`` is that of
    the cross-entropy, ``sigmoid(s) - p``: the per-pixel form of Hinton et al.'s soft targets
    (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").
    Computed from logits (``optax.sigmoid_binary_cross_entropy``), stable for saturated pixels.

    Args:
      student_logits: [B, ...] the student decoder's per-pixel logits.
      teacher_logits: [B, ...] the teacher decoder's per-pixel logits, same shape.

    Returns:
      [B] float32 divergences (nats per image).

    Raises:
      ValueError: if ``student_logits`` has rank < 2 or ``teacher_logits`` does not match it.
    """
    _checks.check_min_rank("student_logits", student_logits, 2, "[batch, ...]")
    _checks.check_match("teacher_logits", teacher_logits, "student_logits", student_logits)
    s, t = _float32(student_logits, teacher_logits)
    p = jax.nn.sigmoid(t)
    kl = optax.sigmoid_binary_cross_entropy(s, p) - optax.sigmoid_binary_cross_entropy(t, p)
    return _sum_per_example(kl)

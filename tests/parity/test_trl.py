"""Parity tier: jdistill's token-level divergences against TRL's (``pip install -e '.[parity]'``,
then ``pytest tests/parity``; marker ``parity``).

Identical float32 logits (fixed seeds; batch 4, 16 positions, a vocabulary of 256, some positions
masked) go to a jdistill loss and to TRL 1.16.0's:

- ``trl.experimental.gkd.GKDTrainer.generalized_jsd_loss(student_logits, teacher_logits, labels,
  beta, temperature, reduction)``, a static method (``labels == -100`` marks the masked positions);
- ``trl.kernels.chunked_divergence.ChunkedDivergenceFunction``, the per-token divergence of TRL's
  ``DistillationTrainer`` from hidden states and ``lm_head`` weights ([V, H]: jdistill's head is
  its transpose), which it computes in tiles with an online logsumexp.

The value and the gradient with respect to the student's inputs (torch autograd against
``jax.grad``) must agree to float32 rounding: ``max |jdistill - TRL| / max |TRL| <= 1e-5``.

Mapping (jdistill's side first): ``jsd(beta=b)`` = TRL's ``beta=b`` for every ``b`` in [0, 1], the
endpoints included (TRL defines ``beta = 0`` as the forward KL and ``beta = 1`` as the reverse KL,
as jdistill does); so ``forward_kl`` = TRL ``beta=0`` and ``reverse_kl`` = TRL ``beta=1``. Neither
applies ``T^2``. Reductions: ``reduction="token_mean"`` = TRL's ``"batchmean"`` with labels (the
sum over unmasked tokens / their number); TRL's ``"batchmean"`` without labels is the sum over
every token / B, jdistill's ``"sum"`` / B; TRL's ``"sum"`` = ``"sum"``; TRL's ``"none"`` ([B, T, V]
terms) summed over the vocabulary = ``"none"``; TRL's ``num_items_in_batch=n`` = ``token_sums``'s
sum / n.

Importing the GKD trainer imports transformers, accelerate and datasets (TRL's requirements; about
3,500 modules, several seconds), although the loss itself needs torch alone.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from relative_error import assert_close  # tests/parity/

from jdistill import losses

torch = pytest.importorskip("torch", reason="the parity tier needs PyTorch: pip install -e '.[parity]'")
with warnings.catch_warnings():  # trl.experimental warns that its APIs may change.
    warnings.simplefilter("ignore")
    gkd_trainer = pytest.importorskip(
        "trl.experimental.gkd.gkd_trainer", reason="the parity tier needs TRL: pip install -e '.[parity]'"
    )
    chunked_divergence = pytest.importorskip("trl.kernels.chunked_divergence")

pytestmark = pytest.mark.parity

TOLERANCE = 1e-5
BATCH, TIME, VOCAB, HIDDEN = 4, 16, 256, 32
BETAS = [0.0, 0.1, 0.5, 0.9, 1.0]

generalized_jsd_loss = gkd_trainer.GKDTrainer.generalized_jsd_loss


def _normal(seed, *shape, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _labels():
    """TRL's labels: -100 where the loss ignores the position (prompt, padding); one row all -100."""
    labels = np.random.default_rng(10).integers(0, VOCAB, (BATCH, TIME))
    labels[0, :5] = labels[1, 11:] = labels[3] = -100
    return labels


def _assert_close(what, got, want, tolerance=TOLERANCE):
    assert_close(what, got, want, tolerance, "TRL")


def _parity(jax_loss, torch_loss, *student):
    """Checks the value and the gradients of two scalar losses of the student's float32 inputs."""
    value, grads = jax.value_and_grad(jax_loss, argnums=tuple(range(len(student))))(
        *map(jnp.asarray, student)
    )
    leaves = [torch.tensor(x, requires_grad=True) for x in student]
    reference = torch_loss(*leaves)
    reference.backward()
    _assert_close("value", value, reference.detach().numpy())
    for i, (grad, leaf) in enumerate(zip(grads, leaves)):
        _assert_close(f"gradient {i}", grad, leaf.grad.numpy())


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("beta", BETAS)
def test_generalized_jsd(beta, temperature):
    s, t = _normal(0, BATCH, TIME, VOCAB, scale=3.0), _normal(1, BATCH, TIME, VOCAB, scale=5.0)
    labels = _labels()
    _parity(
        lambda s: losses.jsd(s, t, beta=beta, temperature=temperature, mask=labels != -100),
        lambda s: generalized_jsd_loss(
            s, torch.tensor(t), torch.tensor(labels), beta=beta, temperature=temperature
        ),
        s,
    )


@pytest.mark.parametrize(("jdistill_loss", "beta"), [(losses.forward_kl, 0.0), (losses.reverse_kl, 1.0)])
def test_forward_and_reverse_kl(jdistill_loss, beta):
    s, t = _normal(2, BATCH, TIME, VOCAB, scale=3.0), _normal(3, BATCH, TIME, VOCAB, scale=5.0)
    labels = _labels()
    _parity(
        lambda s: jdistill_loss(s, t, temperature=2.0, mask=labels != -100),
        lambda s: generalized_jsd_loss(s, torch.tensor(t), torch.tensor(labels), beta=beta, temperature=2.0),
        s,
    )


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_reductions(beta):
    s, t = _normal(4, BATCH, TIME, VOCAB, scale=3.0), _normal(5, BATCH, TIME, VOCAB, scale=5.0)
    labels = _labels()
    mask = labels != -100

    def trl(s, **kwargs):
        return generalized_jsd_loss(s, torch.tensor(t), beta=beta, **kwargs)

    # "batchmean" without labels: the sum over every token / B.
    _parity(lambda s: losses.jsd(s, t, beta=beta, reduction="sum") / BATCH, lambda s: trl(s), s)
    _parity(lambda s: losses.jsd(s, t, beta=beta, reduction="sum"), lambda s: trl(s, reduction="sum"), s)
    # "none": [B, T, V] terms; their sum over the vocabulary is the per-token divergence.
    per_token = losses.jsd(s, t, beta=beta, reduction="none")
    _assert_close("none", per_token, trl(torch.tensor(s), reduction="none").sum(-1).numpy())
    # num_items_in_batch: the sum over unmasked tokens / a count given from outside (gradient
    # accumulation); token_sums gives both.
    total, count = losses.token_sums(per_token, mask)
    n = int(count) + 7  # As if other micro-batches held 7 more tokens.
    reference = trl(torch.tensor(s), labels=torch.tensor(labels), num_items_in_batch=n)
    _assert_close("num_items_in_batch", total / n, reference.numpy())


@pytest.mark.parametrize(("beta", "temperature"), [(0.0, 1.0), (0.5, 2.0), (0.9, 1.0), (1.0, 2.0)])
def test_chunked_against_trl_chunked_divergence(beta, temperature):
    """jdistill's chunked form against TRL's DistillationTrainer kernel (its CPU path), per token,
    gradients with respect to the student's hidden states and head (TRL's teacher gets none)."""
    h_s, h_t = _normal(6, BATCH, TIME, HIDDEN), _normal(7, BATCH, TIME, 2 * HIDDEN)
    w_s, w_t = _normal(8, VOCAB, HIDDEN, scale=0.5), _normal(9, VOCAB, 2 * HIDDEN, scale=0.4)  # TRL's [V, H]
    valid = _labels() != -100

    def jdistill_loss(h_s, w_s):
        return losses.chunked(
            losses.jsd, h_s, w_s.T, h_t, w_t.T, chunk_size=5, mask=valid, beta=beta, temperature=temperature
        )

    def trl_loss(h_s, w_s):
        per_token, _ = chunked_divergence.ChunkedDivergenceFunction.apply(
            h_s.reshape(-1, HIDDEN), w_s, None, torch.tensor(h_t).reshape(-1, 2 * HIDDEN), torch.tensor(w_t), None,
            beta, temperature,
        )  # fmt: skip
        per_token = per_token.masked_fill(~torch.tensor(valid).reshape(-1), 0.0)
        return per_token.sum() / int(valid.sum())

    _parity(jdistill_loss, trl_loss, h_s, w_s)

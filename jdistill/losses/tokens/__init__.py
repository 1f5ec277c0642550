"""Token-level distillation losses for language models: divergences between the teacher's and the
student's next-token distributions, per position of [batch, time, vocab] logits.

Conventions shared by every function here:

- ``p_t = softmax(teacher_logits / T)`` and ``p_s = softmax(student_logits / T)``: one
  temperature for both, **no** ``T^2`` factor (as TRL's GKD and distillation trainers, DistiLLM and
  MiniLLM use them). :func:`jdistill.losses.kd` (Hinton's classifier loss) multiplies by ``T^2``;
  ``forward_kl(..., reduction="none")`` is ``kd / T^2`` per token. Multiply by ``T^2`` yourself for
  Hinton's gradient scale.
- ``mask`` [B, T] (bool or numbers; nonzero = the token counts, ``None`` = every token). Masked
  positions contribute exactly zero to values and gradients whatever their logits hold (``-inf``,
  ``1e9``, NaN): their logits are replaced before the softmax.
- ``reduction``: ``"token_mean"`` (default; the sum over unmasked tokens of the whole batch divided
  by their number, 0 when there are none), ``"sequence_mean"`` (each sequence's mean over its
  unmasked tokens, averaged over the sequences that have one), ``"sum"``, or ``"none"`` (the
  per-token divergence [B, T], zero at masked positions). For averages over micro-batches or
  devices, see :func:`token_sums`.
- float32 inside whatever the input dtype; the mixtures of the skew KLs and the JSD are computed in
  log space, so no ``log(0)``; gradients stay finite when probabilities underflow.
- Gradients are not stopped: stop the teacher's yourself when it is frozen.

Dense divergences: :func:`forward_kl`, :func:`reverse_kl`, :func:`jsd`, :func:`skew_forward_kl`,
:func:`skew_reverse_kl`, :func:`tvd`. Sparse teacher (top-k): :func:`top_k_teacher` and the
``sparse_*`` forms. Memory: :func:`chunked` computes any dense divergence from hidden states and
output projections, a chunk of the sequence at a time, never holding [B, T, V] logits.
"""

from jdistill.losses.tokens.chunked import chunked
from jdistill.losses.tokens.dense import (
    REDUCTIONS,
    SPARSE_MODES,
    forward_kl,
    jsd,
    reverse_kl,
    sequence_sums,
    skew_forward_kl,
    skew_reverse_kl,
    token_sums,
    tvd,
)
from jdistill.losses.tokens.sparse import (
    sparse_forward_kl,
    sparse_jsd,
    sparse_reverse_kl,
    sparse_skew_forward_kl,
    sparse_skew_reverse_kl,
    sparse_tvd,
    top_k_teacher,
)

__all__ = [
    "REDUCTIONS",
    "SPARSE_MODES",
    "chunked",
    "forward_kl",
    "jsd",
    "reverse_kl",
    "sequence_sums",
    "skew_forward_kl",
    "skew_reverse_kl",
    "sparse_forward_kl",
    "sparse_jsd",
    "sparse_reverse_kl",
    "sparse_skew_forward_kl",
    "sparse_skew_reverse_kl",
    "sparse_tvd",
    "token_sums",
    "top_k_teacher",
    "tvd",
]

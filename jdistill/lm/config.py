"""The configuration of a language-model run: a model trained on a corpus with cross-entropy (a
teacher, or a student alone), or a student distilled from a finished teacher run, token by token
on the corpus, on the teacher's samples, or on its own samples (on-policy)."""

import dataclasses

from jdistill.train import groups
from jdistill.train.config import OptimizerConfig

CORPORA = ("stdlib", "markov")
LOSSES = ("ce", "forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tvd")
FORMS = ("token", "sequence", "on_policy")
SPARSE_MODES = ("tail", "renormalised")


@dataclasses.dataclass(frozen=True, init=False)
class LMConfig(groups.Grouped):
    """Everything that determines a language-model run; saved as ``config.json``.

    Data: ``corpus`` ``stdlib`` (the Python standard library's source, bytes, split by file; at most
    ``max_bytes``) or ``markov`` (a synthetic order-2 Markov language of ``markov_vocab`` tokens,
    seeded ``markov_seed``: its true next-token distributions are known), in sequences of
    ``context`` tokens. ``model``: ``lm_teacher`` or ``lm_student`` (``jdistill.models.transformer_lm``).

    Without ``teacher`` the model learns the corpus (cross-entropy). With one (a finished run of
    this kind), ``loss`` is the divergence the student minimises against it at ``temperature``
    (``beta`` for ``jsd``, ``alpha`` for the skew KLs), plus ``ce_weight`` times the corpus's
    cross-entropy, on sequences given by ``form``:

    - ``token``: the corpus's (token-level KD; Hinton et al. 2015, Kim & Rush 2016);
    - ``sequence``: the teacher's samples, continuing the first ``prompt_length`` tokens of each
      corpus sequence (sequence-level KD, Kim & Rush 2016: the student learns them by cross-entropy
      when ``loss`` is ``ce``, else by ``loss`` against the teacher's distributions on them);
    - ``on_policy``: with probability ``on_policy_fraction`` per step, the student's own samples
      (GKD, Agarwal et al. 2024), else the corpus's.

    With ``top_k``, the teacher is read through its k most probable tokens at each position
    (:func:`jdistill.losses.top_k_teacher`) and ``loss`` is its ``sparse_*`` form, with the rest
    of the vocabulary as one tail bucket or the k renormalised (``sparse_mode``). With
    ``teacher_cache`` (a directory of ``jdistill cache-lm-teacher`` for ``teacher``; form
    ``token``) those top-k tokens are read from disk and the teacher is never run.

    Samples are drawn at ``sample_temperature``, in every step, by the model's cached decoding.
    The evaluation reads the ``evaluate_on`` split: ``validation`` (metrics ``val/``) for choosing
    anything, ``test`` for the table.
    """

    teacher: str | None = None
    model: str = "lm_student"
    corpus: str = "markov"
    context: int = 64
    max_bytes: int = 1_000_000
    markov_vocab: int = 32
    markov_seed: int = 0
    epochs: int = 1
    batch_size: int = 32
    seed: int = 0
    optimizer: OptimizerConfig = OptimizerConfig("adam", 2e-3, schedule="cosine")
    loss: str = "ce"
    form: str = "token"
    temperature: float = 1.0
    beta: float = 0.5
    alpha: float = 0.1
    ce_weight: float = 0.0
    top_k: int | None = None
    sparse_mode: str = "tail"
    teacher_cache: str | None = None
    prompt_length: int = 8
    on_policy_fraction: float = 0.5
    sample_temperature: float = 1.0
    evaluate_on: str = "test"
    eval_every: int = 1
    checkpoint_every: int = 1

    def __post_init__(self):
        for name in ("context", "max_bytes", "markov_vocab", "epochs", "batch_size", "eval_every",
                     "checkpoint_every", "prompt_length"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name, allowed in (("corpus", CORPORA), ("loss", LOSSES), ("form", FORMS),
                              ("sparse_mode", SPARSE_MODES), ("evaluate_on", ("test", "validation"))):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: choose one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("beta", "alpha", "on_policy_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("temperature", "sample_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.ce_weight < 0:
            raise ValueError(f"ce_weight must be >= 0, got {self.ce_weight}")
        if self.teacher is None and (self.loss != "ce" or self.form != "token"):
            raise ValueError("--loss and --form other than ce and token need a --teacher")
        if self.teacher is not None and self.loss == "ce" and self.form != "sequence" and not self.ce_weight:
            raise ValueError("with a teacher, --loss ce learns from it only with --form sequence")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {self.top_k}")
        if (self.top_k is not None or self.teacher_cache is not None) and (
            self.teacher is None or self.loss == "ce"
        ):
            raise ValueError(
                "--top-k and --teacher-cache read a --teacher's distributions: give one and a divergence --loss"
            )
        if self.teacher_cache is not None and self.form != "token":
            raise ValueError(
                "a teacher cache holds the teacher's outputs on the corpus's sequences: use --form token"
            )
        if self.prompt_length >= self.context:
            raise ValueError(f"prompt_length {self.prompt_length} must be below the context {self.context}")
        self.optimizer.check_epochs(self.epochs)

    def build(self, dataset=None):
        """The game of this run (:func:`jdistill.lm.game.build`)."""
        from jdistill.lm.game import build

        return build(self, dataset)

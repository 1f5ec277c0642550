"""Language-model training and distillation as a game: one player (``student``, a
:class:`~jdistill.models.transformer_lm.TransformerLM`) moving on cross-entropy or on a token-level
divergence from a frozen teacher LM, on the corpus's sequences, the teacher's samples or its own
(:class:`~jdistill.lm.config.LMConfig`). ``build(LMConfig) -> Game``; :func:`jdistill.train.fit`
plays it."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jdistill import losses
from jdistill.data.text import MarkovLanguage, TextCorpus, load_stdlib
from jdistill.lm import teacher_cache
from jdistill.lm.config import LMConfig
from jdistill.models import count_params
from jdistill.models.transformer_lm import create_lm, sample
from jdistill.train import checkpoint, groups
from jdistill.train.game import LOSS, MODEL, Game, Move, Phase
from jdistill.train.player import Frozen, Player, split_module
from jdistill.train.rundir import RunDir
from jdistill.train.sources import TokenSource

CORPUS_FIELDS = ("corpus", "context", "max_bytes", "markov_vocab", "markov_seed")


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A corpus's splits and, for the synthetic language, the language itself."""

    text: TextCorpus
    language: MarkovLanguage | None = None


def load_corpus(config: LMConfig) -> Corpus:
    """The corpus ``config`` names, in sequences of ``context`` tokens (+ 1 for the targets)."""
    if config.corpus == "stdlib":
        return Corpus(load_stdlib(config.context, max_bytes=config.max_bytes))
    language = MarkovLanguage.create(config.markov_vocab, seed=config.markov_seed)
    return Corpus(language.corpus(config.context, seed=config.markov_seed), language)


def load_lm_teacher(run_dir: str, config: LMConfig, vocab_size: int) -> Frozen:
    """The final model of the finished language-model run in ``run_dir``, refused in one line if it
    learned another corpus."""
    run = RunDir(run_dir)
    run.summary()  # refuses unfinished runs
    trained = groups.from_record(LMConfig, run.config_record()["config"])
    differ = [
        f"{k} {getattr(trained, k)!r}" for k in CORPUS_FIELDS if getattr(trained, k) != getattr(config, k)
    ]
    if differ:
        raise ValueError(f"teacher {run_dir} learned another corpus ({', '.join(differ)})")
    abstract = nnx.eval_shape(lambda: create_lm(trained.model, vocab_size, trained.context, rngs=nnx.Rngs(0)))
    graphdef, params, rest = split_module(abstract)
    params, rest = checkpoint.restore_variables(
        run.path, "student", params, rest, format=run.format, host=True
    )
    return Frozen(graphdef, params, rest)


def divergence(config: LMConfig, sparse: bool = False):
    """The token divergence ``config.loss`` names, with its own parameter: ``(student_logits,
    teacher_logits, mask=)``, or with ``sparse`` its top-k form ``(student_logits, indices,
    log_probs, mask=)`` in ``config.sparse_mode``."""
    extra = {"jsd": {"beta": config.beta}, "skew_forward_kl": {"alpha": config.alpha},
             "skew_reverse_kl": {"alpha": config.alpha}}.get(config.loss, {})  # fmt: skip
    if sparse:
        extra["mode"] = config.sparse_mode
    name = f"sparse_{config.loss}" if sparse else config.loss
    return functools.partial(getattr(losses, name), temperature=config.temperature, **extra)


def teacher_divergence(config: LMConfig, view, student_logits, inputs, target_mask):
    """``config.loss`` of the student's distributions from the teacher's on ``inputs``: the
    teacher's whole vocabulary, its top ``config.top_k`` tokens, or those read from the cache
    (the batch's ``teacher_indices`` and ``teacher_log_probs``)."""
    if "teacher_indices" in view.batch:
        top_k = view.batch["teacher_indices"], view.batch["teacher_log_probs"]
        return divergence(config, sparse=True)(student_logits, *top_k, mask=target_mask)
    teacher_logits = jax.lax.stop_gradient(view.teacher()(inputs))
    if config.top_k is None:
        return divergence(config)(student_logits, teacher_logits, mask=target_mask)
    top_k = losses.top_k_teacher(teacher_logits, config.top_k, temperature=config.temperature)
    return divergence(config, sparse=True)(student_logits, *top_k, mask=target_mask)


def cross_entropy(logits, targets, mask):
    """Mean next-token cross-entropy (nats) over the unmasked targets."""
    per_token = losses.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    mask = mask.reshape(-1).astype(jnp.float32)
    return jnp.sum(per_token * mask) / jnp.maximum(jnp.sum(mask), 1)


def sampled(model, tokens, config: LMConfig, key):
    """``model``'s continuations of the first ``prompt_length`` tokens to ``context`` tokens, and the
    mask of the targets that are its own tokens: ``(tokens [B, context], target_mask [B, context - 1])``."""
    prompt = tokens[:, : config.prompt_length]
    steps = config.context - config.prompt_length
    out = sample(model, prompt, steps=steps, key=key, temperature=config.sample_temperature)
    own = jnp.arange(config.context - 1) >= config.prompt_length - 1
    return out, jnp.broadcast_to(own, (tokens.shape[0], config.context - 1))


def lm_loss(config: LMConfig, view):
    """Cross-entropy on the corpus (no teacher); else ``config.loss`` against the teacher on the
    sequences of ``config.form``, plus ``ce_weight`` times the corpus's cross-entropy."""
    tokens, mask = view.batch["tokens"], view.batch["mask"]
    student = view.module("student")
    dropout = view.key(MODEL)
    data_logits = None
    metrics = {}
    if config.teacher is None or config.ce_weight or config.form == "token":
        data_logits = student(tokens[:, :-1], train=True, dropout_key=dropout)
        metrics["loss/ce"] = cross_entropy(data_logits, tokens[:, 1:], mask[:, 1:])
    if config.teacher is None:
        total = metrics["loss/ce"]
        return total, {"loss": total, **metrics}
    if config.form == "token":
        inputs, targets, target_mask, student_logits = tokens[:, :-1], tokens[:, 1:], mask[:, 1:], data_logits
    else:
        key, teacher = view.key(LOSS), view.teacher()
        if config.form == "sequence":
            sequence, own = sampled(teacher, tokens, config, key)
        else:  # on-policy: the student's samples with probability on_policy_fraction, else the corpus's
            on_policy = jax.random.uniform(jax.random.fold_in(key, 1)) < config.on_policy_fraction
            graphdef, state = nnx.split(student)
            sampler = nnx.merge(graphdef, jax.lax.stop_gradient(state))  # samples carry no gradient
            sequence, own = jax.lax.cond(
                on_policy,
                lambda: sampled(sampler, tokens, config, key),
                lambda: (tokens[:, : config.context], mask[:, 1 : config.context]),
            )
            metrics["on_policy"] = on_policy.astype(jnp.float32)
        sequence = jax.lax.stop_gradient(sequence)
        inputs, targets, target_mask = sequence[:, :-1], sequence[:, 1:], own
        student_logits = student(inputs, train=True, dropout_key=dropout)
    if config.loss == "ce":  # sequence-level KD: the teacher's samples learned as data
        metrics["loss/kd"] = cross_entropy(student_logits, targets, target_mask)
    else:
        metrics["loss/kd"] = teacher_divergence(config, view, student_logits, inputs, target_mask)
    total = metrics["loss/kd"] + config.ce_weight * metrics.get("loss/ce", 0.0)
    return total, {"loss": total, **metrics}


class LMEvaluator:
    """``evaluate(players, teachers, mesh)``: the student's cross-entropy (nats per token) and
    perplexity on the ``split`` (``test`` or ``validation``); on the synthetic language also ``kl_to_truth``, the mean
    KL(true next-token distribution || student's), and ``excess_ce`` = ce - the language's best."""

    __test__ = False

    def __init__(self, corpus: Corpus, split: str = "test", batch: int = 64):
        test = getattr(corpus.text, split)
        self.tokens, self.mask = test.tokens, test.mask
        self.truth = None if corpus.language is None else corpus.language.next_token_probs(test.inputs)
        self.best_ce = (
            None if corpus.language is None else corpus.language.best_cross_entropy(test.inputs.shape[1])
        )
        self.batch = batch
        self._sums = None

    def _step(self, graphdef):
        def sums(params, rest, tokens, mask, truth):
            logits = nnx.merge(graphdef, params, rest)(tokens[:, :-1])
            weights = mask[:, 1:].astype(jnp.float32)
            per_token = -jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1)[..., 0]
            out = {"ce": jnp.sum(per_token * weights), "count": jnp.sum(weights)}
            if truth is not None:
                log_q = jax.nn.log_softmax(logits)
                kl = jnp.sum(truth * (jnp.log(jnp.maximum(truth, 1e-30)) - log_q), -1)
                out["kl"] = jnp.sum(kl * weights)
            return out

        return jax.jit(sums)

    def __call__(self, players, teachers, mesh) -> dict:
        player = players["student"]
        if self._sums is None:
            self._sums = self._step(player.graphdef)
        parts = []
        for i in range(0, len(self.tokens), self.batch):
            truth = None if self.truth is None else self.truth[i : i + self.batch]
            parts.append(self._sums(player.params, player.rest, self.tokens[i : i + self.batch],
                                    self.mask[i : i + self.batch], truth))  # fmt: skip
        total = jax.device_get(jax.tree.map(lambda *v: sum(v), *parts))
        ce = float(total["ce"] / total["count"])
        out = {"ce": ce, "perplexity": float(np.exp(ce))}
        if self.truth is not None:
            out["kl_to_truth"] = float(total["kl"] / total["count"])
            out["excess_ce"] = ce - self.best_ce
        return out


def build(config: LMConfig, corpus: Corpus | None = None) -> Game:
    """The game ``config`` describes, at step 0."""
    corpus = corpus if corpus is not None else load_corpus(config)
    text = corpus.text
    teacher, cached = None, None
    if config.teacher_cache is not None:
        *cached, manifest = teacher_cache.read(config.teacher_cache, config.teacher, text.train.tokens,
                                               config.temperature)  # fmt: skip
        if config.top_k not in (None, manifest["top_k"]):
            raise ValueError(
                f"teacher cache {config.teacher_cache} holds the top {manifest['top_k']} tokens; this run asks "
                f"for --top-k {config.top_k}"
            )
    elif config.teacher is not None:
        teacher = load_lm_teacher(config.teacher, config, text.vocab_size)
    if config.top_k is not None and config.top_k > text.vocab_size:
        raise ValueError(f"top_k {config.top_k} is larger than the vocabulary ({text.vocab_size} tokens)")
    model = create_lm(config.model, text.vocab_size, config.context, rngs=nnx.Rngs(config.seed))
    source = TokenSource(text.train, config.batch_size, None if cached is None else tuple(cached))
    optimizer = config.optimizer.build(config.epochs, source.steps_per_epoch)
    summary = {
        "model": config.model,
        "params": count_params(model),
        "corpus": text.name,
        "corpus_fingerprint": text.fingerprint,
        "loss": config.loss,
        "form": config.form,
        "epochs": config.epochs,
        "seed": config.seed,
    }
    if teacher is not None:
        summary["teacher_params"] = count_params(nnx.merge(teacher.graphdef, teacher.params, teacher.rest))
    if cached is not None:
        summary["teacher_top_k"] = manifest["top_k"]
    elif config.top_k is not None:
        summary["teacher_top_k"] = config.top_k
    if corpus.language is not None:
        summary["best_ce"] = corpus.language.best_cross_entropy(config.context)
    return Game(
        config=config,
        players={"student": Player.create(model, optimizer)},
        phases=(Phase("train", config.epochs, (Move("student", functools.partial(lm_loss, config)),)),),
        source=source,
        seed=config.seed,
        evaluate=LMEvaluator(corpus, config.evaluate_on),
        eval_prefix="test/" if config.evaluate_on == "test" else "val/",
        summary_prefixes=("test/" if config.evaluate_on == "test" else "val/",),
        teachers={} if teacher is None else {"teacher": teacher},
        eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every,
        label=config.model,
        unit="seq",
        summary=summary,
        best=None,
    )

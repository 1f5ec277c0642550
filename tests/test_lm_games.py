"""Language-model runs on the engine (jdistill.lm): a teacher learns the synthetic language, a
student learns from it token by token, on the teacher's samples and on its own, from its top-k
tokens live or cached on disk; refusals."""

import functools
import json

import numpy as np
import pytest

from jdistill.lm import LMConfig, load_corpus, load_lm_teacher, teacher_cache
from jdistill.models import transformer_lm
from jdistill.train import RunDir, fit

BASE = dict(corpus="markov", markov_vocab=16, context=16, batch_size=64, epochs=1, learning_rate=1e-2)


TINY = {
    "lm_tiny_teacher": functools.partial(transformer_lm.TransformerLM, depth=2, width=32, heads=2),
    "lm_tiny_student": functools.partial(transformer_lm.TransformerLM, depth=1, width=16, heads=2),
}


@pytest.fixture(scope="module", autouse=True)
def tiny_models():
    """Two tiny named models for this module's runs, removed after it (the named ones are counted
    elsewhere)."""
    transformer_lm.LM_CONFIGS.update(TINY)
    yield
    for name in TINY:
        transformer_lm.LM_CONFIGS.pop(name)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_models):
    out = tmp_path_factory.mktemp("lm_teacher")
    fit(LMConfig(model="lm_tiny_teacher", **BASE), out, progress=False)
    return str(out)


@pytest.mark.slow
def test_the_teacher_learns_the_language(teacher):
    summary = RunDir(teacher).summary()
    uniform = np.log(16)  # nats per token of a model that knows nothing of 16 tokens
    assert summary["test/ce"] < uniform - 0.2 and summary["best_ce"] < summary["test/ce"]
    # the KL to the truth is what the cross-entropy exceeds the language's best by (up to sampling)
    assert abs(summary["test/kl_to_truth"] - summary["test/excess_ce"]) < 0.05


@pytest.mark.parametrize(
    "form, loss",
    [
        pytest.param("token", "forward_kl", marks=pytest.mark.slow),
        pytest.param("token", "reverse_kl", marks=pytest.mark.slow),
        pytest.param("token", "jsd", marks=pytest.mark.slow),
        pytest.param("sequence", "ce", marks=pytest.mark.slow),
        pytest.param("sequence", "skew_forward_kl", marks=pytest.mark.slow),
        pytest.param("on_policy", "jsd", marks=pytest.mark.slow),
    ],
)
def test_a_student_learns_from_the_teacher_in_every_form(teacher, tmp_path, form, loss):
    config = LMConfig(model="lm_tiny_student", teacher=teacher, loss=loss, form=form, **BASE)
    summary = fit(config, tmp_path / "student", progress=False)
    lines = RunDir(tmp_path / "student").metrics()
    assert np.isfinite(lines[0]["train/loss/kd"]) and summary["test/ce"] < np.log(16)
    if form == "on_policy":
        assert 0 < lines[0]["train/on_policy"] < 1  # about half the steps on the student's samples


def test_lm_options_are_checked_in_one_line():
    with pytest.raises(ValueError, match="need a --teacher"):
        LMConfig(loss="jsd", **BASE)
    with pytest.raises(ValueError, match="prompt_length 16 must be below the context 16"):
        LMConfig(prompt_length=16, **BASE)
    with pytest.raises(ValueError, match="form: choose one of token, sequence, on_policy"):
        LMConfig(form="beam", **BASE)
    with pytest.raises(ValueError, match="--top-k and --teacher-cache read a --teacher's distributions"):
        LMConfig(top_k=4, **BASE)
    with pytest.raises(ValueError, match="--top-k and --teacher-cache read a --teacher's distributions"):
        LMConfig(teacher="t", teacher_cache="c", loss="ce", ce_weight=1.0, **BASE)
    with pytest.raises(
        ValueError, match="a teacher cache holds the teacher's outputs on the corpus's sequences"
    ):
        LMConfig(teacher="t", teacher_cache="c", loss="jsd", form="on_policy", **BASE)
    with pytest.raises(ValueError, match="sparse_mode: choose one of tail, renormalised"):
        LMConfig(teacher="t", top_k=2, loss="jsd", sparse_mode="bucket", **BASE)


@pytest.mark.slow
def test_a_teacher_of_another_corpus_is_refused_in_one_line(teacher):
    with pytest.raises(ValueError, match="learned another corpus \\(markov_vocab 16\\)"):
        LMConfig(model="lm_tiny_student", teacher=teacher, loss="jsd", **{**BASE, "markov_vocab": 32}).build()


@pytest.mark.slow
def test_the_command_trains_a_teacher_and_distils_it(tmp_path, capsys):
    from jdistill.cli import main

    common = ["--corpus", "markov", "--markov-vocab", "16", "--context", "16", "--epochs", "1", "--quiet"]
    main(["lm", "--model", "lm_tiny_teacher", *common, "--out", str(tmp_path / "teacher")])
    main(["lm", "--teacher", str(tmp_path / "teacher"), "--model", "lm_tiny_student", "--loss", "reverse_kl",
          "--form", "on_policy", *common, "--out", str(tmp_path / "student")])  # fmt: skip
    summary = RunDir(tmp_path / "student").summary()
    assert summary["loss"] == "reverse_kl" and summary["form"] == "on_policy"
    assert np.isfinite(summary["test/kl_to_truth"])


@pytest.mark.slow
def test_the_experiment_writes_its_table(tmp_path):
    import importlib.util
    import pathlib

    script = pathlib.Path(__file__).parents[1] / "experiments" / "lm_distillation.py"
    spec = importlib.util.spec_from_file_location("lm_distillation", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from jdistill.experiment import main

    results = main(module.EXPERIMENT, ["--out", str(tmp_path), "--smoke", "--quiet", "--vocab", "16",
                                       "--context", "16"])  # fmt: skip
    assert len(results) == 9  # the teacher and eight student rows
    table = (tmp_path / "table.md").read_text()
    assert "on-policy JSD" in table and "KL to the truth" in table and (tmp_path / "curves.png").exists()
    assert json.loads((tmp_path / "teacher_cache" / "manifest.json").read_text())["top_k"] == 8
    assert results["forward KL, teacher's top 8 from the cache"][0]["teacher_top_k"] == 8


def student(teacher, out, **changes) -> tuple[dict, dict]:
    """A tiny student distilled from ``teacher`` with JSD at T = 2: its summary and first metrics line."""
    config = LMConfig(
        model="lm_tiny_student", teacher=teacher, loss="jsd", temperature=2.0, **BASE, **changes
    )
    summary = fit(config, out, progress=False)
    return summary, RunDir(out).metrics()[0]


@pytest.fixture(scope="module")
def cache(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm_cache")
    teacher_cache.write(teacher, out, top_k=4, temperature=2.0)
    return out


@pytest.mark.slow
def test_the_cache_holds_the_teachers_top_k_log_probabilities(teacher, cache):
    manifest = json.loads((cache / "manifest.json").read_text())
    config = LMConfig(model="lm_tiny_student", **BASE)
    text = load_corpus(config).text
    assert (
        manifest["top_k"] == 4
        and manifest["temperature"] == 2.0
        and manifest["vocab_size"] == text.vocab_size
    )
    assert manifest["corpus"]["sequences"] == len(text.train.tokens)
    with np.load(cache / "outputs.npz") as stored:
        assert stored["indices"].dtype == np.uint16  # 2 bytes a token index: the vocabulary is small
    indices, log_probs, _ = teacher_cache.read(cache, teacher, text.train.tokens, 2.0)
    assert indices.shape == log_probs.shape == (len(text.train.tokens), config.context, 4)
    frozen = load_lm_teacher(teacher, config, text.vocab_size)
    from flax import nnx

    logits = np.asarray(
        nnx.merge(frozen.graphdef, frozen.params, frozen.rest)(text.train.tokens[:8, :-1]), np.float64
    )
    log_p = logits / 2.0 - np.log(np.exp(logits / 2.0).sum(-1, keepdims=True))  # numpy reference
    top = np.argsort(-log_p, axis=-1, kind="stable")[..., :4]
    np.testing.assert_array_equal(indices[:8], top)
    np.testing.assert_allclose(log_probs[:8], np.take_along_axis(log_p, top, -1), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_student_from_the_cache_is_the_student_of_the_live_top_k_teacher(teacher, cache, tmp_path):
    cached, cached_line = student(teacher, tmp_path / "cached", teacher_cache=str(cache))
    live, live_line = student(teacher, tmp_path / "live", top_k=4)
    assert cached["teacher_top_k"] == live["teacher_top_k"] == 4
    for key in ("test/ce", "test/kl_to_truth"):
        np.testing.assert_allclose(cached[key], live[key], rtol=1e-5)
    np.testing.assert_allclose(cached_line["train/loss/kd"], live_line["train/loss/kd"], rtol=1e-5)


@pytest.mark.slow
def test_top_k_over_the_whole_vocabulary_is_the_dense_divergence(teacher, tmp_path):
    vocab = load_corpus(LMConfig(**BASE)).text.vocab_size
    dense, dense_line = student(teacher, tmp_path / "dense")
    whole, whole_line = student(teacher, tmp_path / "whole", top_k=vocab)
    np.testing.assert_allclose(whole_line["train/loss/kd"], dense_line["train/loss/kd"], rtol=1e-4)
    np.testing.assert_allclose(whole["test/kl_to_truth"], dense["test/kl_to_truth"], rtol=1e-3)
    # and the tail mode's divergence from 4 tokens is at most the dense one (merging cannot add). The
    # bound holds per input (test_losses_tokens); these are epoch means of two runs whose logits part
    # after the first step, but the top-4 loss is about half the dense one (0.0044 against 0.0089)
    _, top4_line = student(teacher, tmp_path / "top4", top_k=4)
    assert top4_line["train/loss/kd"] <= dense_line["train/loss/kd"] * (1 + 1e-6) + 1e-4


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"temperature": 1.0}, "teacher cache {cache} was written at temperature 2; this run distils at 1"),
        ({"top_k": 3}, "teacher cache {cache} holds the top 4 tokens; this run asks for --top-k 3"),
        ({"context": 12}, "teacher cache {cache} holds outputs on other training sequences (4096 of markov) "
         "than this run's (4096): the corpus or the context differ"),
    ],
    ids=["temperature", "top-k", "context"],
)  # fmt: skip
def test_a_cache_that_does_not_fit_the_run_is_refused_in_one_line(teacher, cache, changes, message):
    config = {"model": "lm_tiny_student", "teacher": teacher, "teacher_cache": str(cache), "loss": "jsd",
              **BASE, "temperature": 2.0, **changes}  # fmt: skip
    with pytest.raises(ValueError) as error:
        LMConfig(**config).build()
    assert str(error.value) == message.format(cache=cache)


@pytest.mark.slow
def test_the_cache_command_writes_a_cache_the_lm_command_reads(teacher, tmp_path, capsys):
    from jdistill.cli import main

    main(["cache-lm-teacher", "--teacher", teacher, "--top-k", "3", "--dtype", "bfloat16", "--out",
          str(tmp_path / "cache")])  # fmt: skip
    assert json.loads(capsys.readouterr().out)["dtype"] == "bfloat16"
    main(["lm", "--teacher", teacher, "--teacher-cache", str(tmp_path / "cache"), "--model", "lm_tiny_student",
          "--loss", "forward_kl", "--sparse-mode", "renormalised", "--corpus", "markov", "--markov-vocab", "16",
          "--context", "16", "--epochs", "1", "--quiet", "--out", str(tmp_path / "student")])  # fmt: skip
    summary = RunDir(tmp_path / "student").summary()
    assert summary["teacher_top_k"] == 3 and np.isfinite(summary["test/kl_to_truth"])
    from jdistill.train import teacher_cache as classifier_cache

    with pytest.raises(ValueError) as error:  # a classifier's distillation does not read it
        classifier_cache.read(tmp_path / "cache", teacher, np.zeros((4, 8), np.float32), {}, ())
    assert str(error.value) == (
        f"{tmp_path / 'cache'} is a language-model top-k teacher cache; this command reads those of jdistill "
        "cache-teacher"
    )

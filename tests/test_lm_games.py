"""Language-model runs on the engine (jdistill.lm): a teacher learns the synthetic language, a
student learns from it token by token, on the teacher's samples and on its own; refusals."""

import functools

import numpy as np
import pytest

from jdistill.lm import LMConfig
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
    assert len(results) == 7  # the teacher and six student rows
    table = (tmp_path / "table.md").read_text()
    assert "on-policy JSD" in table and "KL to the truth" in table and (tmp_path / "curves.png").exists()

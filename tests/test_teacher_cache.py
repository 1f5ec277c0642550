"""``jdistill cache-teacher`` and ``distill --teacher-cache``: a student distilled from the cached
outputs follows the live teacher's metrics; top-k and bfloat16 caches against numpy references; a
cache written for another teacher, other images, without a feature the methods read, or read by a
run that augments its batches is refused in one line before anything is written."""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from jdistill.cli import main
from jdistill.data import load_digits
from jdistill.train import RunDir, load_teacher, teacher_cache
from jdistill.train.distill import teacher_forward
from jdistill.train.sources import DataSource

TRAIN = ["--model", "mlp32", "--dataset", "digits", "--batch-size", "32", "--learning-rate", "0.1", "--quiet"]
DISTILL = ["distill", "--teacher", "{teacher}", *TRAIN, "--epochs", "2", "--method", "kd+fitnet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A teacher, its full-precision cache with the embedding feature, and another teacher."""
    out = tmp_path_factory.mktemp("cache")
    for name, seed in (("teacher", "0"), ("other", "1")):
        main(["train-teacher", *TRAIN, "--epochs", "1", "--seed", seed, "--out", str(out / name)])
    main(["cache-teacher", "--teacher", str(out / "teacher"), "--dataset", "digits", "--feature", "embedding",
          "--out", str(out / "cache")])  # fmt: skip
    return out


def distill(runs, out, *extra) -> list[dict]:
    main([a.format(teacher=runs / "teacher") for a in DISTILL] + ["--out", str(out), *extra])
    return RunDir(out).metrics()


def live_logits(runs) -> np.ndarray:
    digits = load_digits()
    teacher = load_teacher(str(runs / "teacher"), digits)
    images = DataSource(digits, 1).images()
    return np.asarray(teacher_forward(teacher.frozen.graphdef, teacher.frozen.variables, images)[0])


def test_a_student_from_the_cache_follows_the_live_teacher(runs, tmp_path, capsys):
    live, cached = (
        distill(runs, tmp_path / "live"),
        distill(runs, tmp_path / "cached", "--teacher-cache", str(runs / "cache")),
    )
    for a, b in zip(live, cached, strict=True):
        keys = [k for k in a if k != "seconds" and isinstance(a[k], float)]
        np.testing.assert_allclose([a[k] for k in keys], [b[k] for k in keys], rtol=1e-5, atol=1e-6)
    manifest = json.loads((runs / "cache" / "manifest.json").read_text())
    assert manifest["data"]["examples"] == len(load_digits().y_train) and manifest["features"] == [
        "embedding"
    ]
    assert manifest["teacher_fingerprint"] == teacher_cache.teacher_fingerprint(runs / "teacher")


def test_top_k_keeps_the_k_largest_probabilities_and_spreads_the_rest(runs, tmp_path):
    main(["cache-teacher", "--teacher", str(runs / "teacher"), "--dataset", "digits", "--top-k", "3",
          "--out", str(tmp_path / "top3")])  # fmt: skip
    digits = load_digits()
    images = DataSource(digits, 1).images()
    logits, features = teacher_cache.read(
        tmp_path / "top3", runs / "teacher", images, {"embedding": (32,)}, ()
    )
    assert features == {"embedding": None}
    p = softmax(live_logits(runs).astype(np.float64), axis=-1)  # the reference, in numpy
    top = np.argsort(-p, axis=-1)[:, :3]
    expected = np.broadcast_to(((1 - np.take_along_axis(p, top, -1).sum(-1)) / 7)[:, None], p.shape).copy()
    np.put_along_axis(expected, top, np.take_along_axis(p, top, -1), -1)
    np.testing.assert_allclose(softmax(logits, axis=-1), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        np.take_along_axis(logits, top, -1),
        np.take_along_axis(log_softmax(live_logits(runs), -1), top, -1),
        rtol=1e-5,
        atol=1e-5,
    )


def test_bfloat16_halves_the_file_and_keeps_three_significant_digits(runs, tmp_path):
    main(["cache-teacher", "--teacher", str(runs / "teacher"), "--dataset", "digits", "--dtype", "bfloat16",
          "--out", str(tmp_path / "bf16")])  # fmt: skip
    images = DataSource(load_digits(), 1).images()
    logits, _ = teacher_cache.read(tmp_path / "bf16", runs / "teacher", images, {}, ())
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, live_logits(runs), rtol=2**-8, atol=1e-6)
    full = (runs / "cache" / "outputs.npz").stat().st_size  # it also holds the 32-wide embedding
    assert (tmp_path / "bf16" / "outputs.npz").stat().st_size < 0.6 * full * 10 / (10 + 32)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-shift", "1"], "a teacher cache holds the outputs of un-augmented images; this run augments "
         "its batches (max_shift or hflip): run without the cache, or without augmentation"),
        (["--holdout-fraction", "0.1"], "teacher cache {cache} holds outputs on other training images (1257 "
         "of digits) than this run's (1131): the data, its held-out part or its excluded classes differ"),
        (["--method-option", "fitnet.teacher_layer=hidden1"], "teacher cache {cache} lacks the feature "
         "hidden1 that this run's methods read; write it with --feature hidden1"),
        (["--teacher", "{other}"], "teacher cache {cache} was written from another teacher ({teacher}) than "
         "{other}"),
    ],
    ids=["augmented", "other images", "a feature missing", "another teacher"],
)  # fmt: skip
def test_a_cache_that_does_not_fit_the_run_is_refused_in_one_line(runs, tmp_path, extra, message):
    names = {"cache": runs / "cache", "other": runs / "other", "teacher": (runs / "teacher").resolve()}
    extra = [e.format(**names) for e in extra]
    with pytest.raises(SystemExit) as exit:
        distill(runs, tmp_path / "run", "--teacher-cache", str(runs / "cache"), *extra)
    assert exit.value.code == f"jdistill distill: error: {message.format(**names)}"
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_benchmark_prints_its_figures():
    script = pathlib.Path(__file__).parents[1] / "benchmarks" / "teacher_cache.py"
    args = [sys.executable, str(script), "--examples", "512", "--steps", "1", "--repeats", "1"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=True)
    assert re.search(r"^step live=[\d.]+ ms cached=[\d.]+ ms ratio=[\d.]+$", done.stdout, re.M), done.stdout
    assert re.search(r"^table teacher-pass=[\d.]+ s file=[\d.]+ s$", done.stdout, re.M), done.stdout

"""A language-model teacher's top-k next-token distributions on the training sequences, written
once to disk and read by token-level distillation instead of running the teacher
(``jdistill cache-lm-teacher``; ``jdistill lm --teacher-cache``).

A cache directory holds ``outputs.npz`` (``indices`` [N, T, k], the k most probable tokens at
each position of each training sequence's inputs, and ``log_probs`` [N, T, k], the teacher's
``log softmax(z / T)`` there, over the whole vocabulary, from
:func:`jdistill.losses.top_k_teacher`) and ``manifest.json``: the teacher's fingerprint (SHA-256
of its final checkpoint), the training tokens' (SHA-256, order included), the corpus, the
temperature, ``k`` and the dtype. A run whose teacher, training sequences or temperature differ is
refused in one line. ``2 k`` numbers per token instead of ``V``: the ``sparse_*`` divergences
read them with the tail bucket or renormalised (``--sparse-mode``).
"""

import datetime
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jdistill
from jdistill import losses
from jdistill.lm.config import LMConfig
from jdistill.train.config import DTYPES
from jdistill.train.teacher_cache import (
    MANIFEST,
    OUTPUTS,
    array_fingerprint,
    decode,
    encode,
    read_manifest,
    teacher_fingerprint,
)

FORMAT = 1
KIND = "language-model top-k"
COMMAND = "jdistill cache-lm-teacher"


def tokens_fingerprint(tokens: np.ndarray) -> str:
    """SHA-256 of the training sequences' tokens as the batches are cut from them (order included)."""
    return array_fingerprint(np.asarray(tokens, np.int32))


def top_k_outputs(teacher, tokens: np.ndarray, k: int, temperature: float, batch: int = 64) -> tuple:
    """``(indices int32 [N, T, k], log_probs float32 [N, T, k])`` of the frozen ``teacher``
    (:class:`~jdistill.train.player.Frozen`) on the inputs of the sequences ``tokens`` [N, T + 1]."""
    from flax import nnx

    @jax.jit
    def top_k(params, rest, inputs):
        logits = nnx.merge(teacher.graphdef, params, rest)(inputs)
        return losses.top_k_teacher(logits, k, temperature=temperature)

    parts = [
        jax.device_get(
            top_k(teacher.params, teacher.rest, jnp.asarray(tokens[i : i + batch, :-1], jnp.int32))
        )
        for i in range(0, len(tokens), batch)
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def write(teacher_dir, out, *, top_k: int, temperature: float = 1.0, dtype: str = "float32") -> dict:
    """Write the top ``top_k`` tokens of the finished ``jdistill lm`` run in ``teacher_dir`` on its
    own corpus's training sequences, at ``temperature``, to the directory ``out``; returns the
    manifest."""
    from jdistill.lm.game import load_corpus, load_lm_teacher
    from jdistill.train import groups
    from jdistill.train.rundir import RunDir

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    run = RunDir(teacher_dir)
    run.summary()  # refuses unfinished runs
    config = groups.from_record(LMConfig, run.config_record()["config"])
    text = load_corpus(config).text
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= text.vocab_size:
        raise ValueError(f"top_k must be in 1..{text.vocab_size} (the vocabulary), got {top_k!r}")
    teacher = load_lm_teacher(teacher_dir, config, text.vocab_size)
    indices, log_probs = top_k_outputs(teacher, text.train.tokens, top_k, temperature)
    index_dtype = np.uint16 if text.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / OUTPUTS, indices=indices.astype(index_dtype), log_probs=encode(log_probs, dtype))
    manifest = {
        "format": FORMAT,
        "kind": KIND,
        "teacher": str(pathlib.Path(teacher_dir).resolve()),
        "teacher_fingerprint": teacher_fingerprint(teacher_dir),
        "corpus": {
            "name": text.name,
            "fingerprint": text.fingerprint,
            "sequences": int(len(text.train.tokens)),
            "tokens_fingerprint": tokens_fingerprint(text.train.tokens),
        },
        "vocab_size": int(text.vocab_size),
        "top_k": top_k,
        "temperature": float(temperature),
        "dtype": dtype,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "jdistill_version": jdistill.__version__,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read(
    cache_dir, teacher_dir, tokens: np.ndarray, temperature: float
) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(indices int32, log_probs float32, manifest)`` from the cache in ``cache_dir``, refused in
    one line unless it was written for the teacher in ``teacher_dir``, on exactly the training
    sequences ``tokens`` and at ``temperature``."""
    cache = pathlib.Path(cache_dir)
    manifest = read_manifest(cache, teacher_dir, COMMAND, FORMAT, KIND)
    corpus = manifest["corpus"]
    if corpus["tokens_fingerprint"] != tokens_fingerprint(tokens):
        raise ValueError(
            f"teacher cache {cache} holds outputs on other training sequences ({corpus['sequences']} of "
            f"{corpus['name']}) than this run's ({len(tokens)}): the corpus or the context differ"
        )
    if manifest["temperature"] != float(temperature):
        raise ValueError(
            f"teacher cache {cache} was written at temperature {manifest['temperature']:g}; this run distils "
            f"at {temperature:g}"
        )
    with np.load(cache / OUTPUTS) as stored:
        indices = stored["indices"].astype(np.int32)
        log_probs = decode(stored["log_probs"], manifest["dtype"]).astype(np.float32)
    return indices, log_probs, manifest

"""A frozen teacher's outputs on a training set, written once to disk and read by distillation
instead of running the teacher (``jdistill cache-teacher``; ``jdistill distill --teacher-cache``).

A cache directory holds ``outputs.npz`` and ``manifest.json``: the teacher's fingerprint (SHA-256
of its final checkpoint's files), the data's (SHA-256 of the training images, in order, and their
normalisation), the augmentation policy, the dtype, ``top_k`` and the features kept. A run whose
teacher or training images differ, or that augments its batches, is refused: the outputs are of
the un-augmented images, one fixed view each, so a run that translates or mirrors them would read
outputs of other images than it trains on.

``top_k`` keeps each example's k largest log-probabilities and gives the remaining mass to the
other C - k classes evenly: ``log p_i`` for the top k, ``log((1 - sum_topk p) / (C - k))`` for the
rest, which the losses read as logits. At T = 1 the top k classes' probabilities are exact; at
other temperatures, and for the tail, it is an approximation (as in top-k caches of language-model
distillation). ``bfloat16`` halves the file; the values are read back as float32.
"""

import datetime
import hashlib
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

import jdistill
from jdistill.train.config import DTYPES
from jdistill.train.rundir import RunDir

MANIFEST, OUTPUTS, FORMAT = "manifest.json", "outputs.npz", 1
AUGMENTATION = "none: each training image once, un-augmented, in the data set's order"


def teacher_fingerprint(teacher_dir) -> str:
    """SHA-256 of the files of the final checkpoint of the finished run ``teacher_dir``."""
    run = RunDir(teacher_dir)
    run.summary()  # refuses unfinished runs
    steps = [p for p in (run.path / "checkpoints").iterdir() if p.name.isdigit()]
    final = max(steps, key=lambda p: int(p.name))
    digest = hashlib.sha256()
    for file in sorted(p for p in final.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(final)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def array_fingerprint(array: np.ndarray) -> str:
    """SHA-256 of an array's shape and bytes (its dtype as given, C order)."""
    array = np.ascontiguousarray(array)
    return hashlib.sha256(str(array.shape).encode() + array.tobytes()).hexdigest()


def data_fingerprint(images: np.ndarray) -> str:
    """SHA-256 of the normalised training images as the batches are cut from them (order included)."""
    return array_fingerprint(np.asarray(images, np.float32))


def write(teacher, teacher_dir, images: np.ndarray, out, *, features=(), top_k=None, dtype="float32",
          batch: int = 500) -> dict:  # fmt: skip
    """Write the outputs of ``teacher`` (a :class:`~jdistill.train.distill.Teacher` loaded from
    ``teacher_dir``) on ``images`` (normalised, as the run's source gives them) to the directory
    ``out``; returns the manifest. ``features``: names of the teacher's features to keep too."""
    from jdistill.train.distill import teacher_forward

    unknown = sorted(set(features) - set(teacher.shapes))
    if unknown:
        raise ValueError(
            f"the teacher has no feature {', '.join(unknown)}; it has {', '.join(teacher.shapes)}"
        )
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    forward = jax.jit(lambda x: teacher_forward(teacher.frozen.graphdef, teacher.frozen.variables, x))
    parts = [forward(jnp.asarray(images[i : i + batch])) for i in range(0, len(images), batch)]
    logits = np.concatenate([np.asarray(p[0], np.float32) for p in parts])
    classes = logits.shape[1]
    if top_k is not None and not 0 < top_k < classes:
        raise ValueError(f"top_k must be in 1..{classes - 1} for {classes} classes, got {top_k}")
    arrays = {}
    if top_k is None:
        arrays["logits"] = logits
    else:
        log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
        indices = np.argsort(-log_probs, axis=-1, kind="stable")[:, :top_k]
        kept = np.take_along_axis(log_probs, indices, axis=-1)
        arrays["top_log_probs"], arrays["top_indices"] = kept, indices.astype(np.int32)
    for name in features:
        arrays[f"feature/{name}"] = np.concatenate([np.asarray(p[1][name], np.float32) for p in parts])
    stored = {k: encode(v, dtype) if v.dtype == np.float32 else v for k, v in arrays.items()}
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / OUTPUTS, **stored)
    manifest = {
        "format": FORMAT,
        "teacher": str(pathlib.Path(teacher_dir).resolve()),
        "teacher_fingerprint": teacher_fingerprint(teacher_dir),
        "data": {
            "dataset": teacher.config.data.dataset,
            "examples": len(images),
            "fingerprint": data_fingerprint(images),
        },  # fmt: skip
        "augmentation": AUGMENTATION,
        "dtype": dtype,
        "classes": classes,
        "top_k": top_k,
        "features": list(features),
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "jdistill_version": jdistill.__version__,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read(cache_dir, teacher_dir, images: np.ndarray, feature_names, features_read) -> tuple:
    """``(logits, {feature: array or None})`` per training example from the cache in
    ``cache_dir``, in the structure the rounds use (every name in ``feature_names``; ``None``
    unless in ``features_read``); refused in one line unless it was written for the teacher in
    ``teacher_dir`` on exactly ``images`` and holds the features read."""
    cache = pathlib.Path(cache_dir)
    manifest = read_manifest(cache, teacher_dir, "jdistill cache-teacher")
    if manifest["data"]["fingerprint"] != data_fingerprint(images):
        raise ValueError(
            f"teacher cache {cache} holds outputs on other training images ({manifest['data']['examples']} "
            f"of {manifest['data']['dataset']}) than this run's ({len(images)}): the data, its held-out part "
            f"or its excluded classes differ"
        )
    missing = sorted(set(features_read) - set(manifest["features"]))
    if missing:
        raise ValueError(
            f"teacher cache {cache} lacks the feature {', '.join(missing)} that this run's methods read; "
            f"write it with --feature {' --feature '.join(missing)}"
        )
    with np.load(cache / OUTPUTS) as stored:
        arrays = {k: decode(stored[k], manifest["dtype"]) for k in stored.files}
    if manifest["top_k"] is None:
        logits = arrays["logits"]
    else:
        kept, indices = arrays["top_log_probs"], arrays["top_indices"]
        rest = np.clip(1.0 - np.exp(kept).sum(-1, keepdims=True), 1e-12, None) / (
            manifest["classes"] - kept.shape[1]
        )
        logits = np.broadcast_to(np.log(rest), (len(kept), manifest["classes"])).copy()
        np.put_along_axis(logits, indices, kept, axis=-1)
    features = {name: arrays[f"feature/{name}"] if name in features_read else None for name in feature_names}
    return logits.astype(np.float32), features


def read_manifest(cache: pathlib.Path, teacher_dir, command: str, format: int = FORMAT, kind=None) -> dict:
    """The manifest of the cache ``cache``, refused in one line unless it exists, is of ``format``
    and ``kind`` (None: a classifier's) and was written from the teacher in ``teacher_dir``
    (``command`` writes such caches)."""
    if not (cache / MANIFEST).exists():
        raise FileNotFoundError(f"{cache} is not a teacher cache (no {MANIFEST}); write one with {command}")
    manifest = json.loads((cache / MANIFEST).read_text())
    if manifest.get("format") != format:
        raise ValueError(
            f"{cache} is a teacher cache of format {manifest.get('format')}; this command reads {format} "
            f"(written by {command})"
        )
    if manifest.get("kind") != kind:
        raise ValueError(
            f"{cache} is a {manifest.get('kind') or 'classifier'} teacher cache; this command reads those of {command}"
        )
    if manifest["teacher_fingerprint"] != teacher_fingerprint(teacher_dir):
        raise ValueError(
            f"teacher cache {cache} was written from another teacher ({manifest['teacher']}) than {teacher_dir}"
        )
    return manifest


def encode(array: np.ndarray, dtype: str) -> np.ndarray:
    """bfloat16 is stored as its 16-bit pattern (npz has no bfloat16)."""
    return array.astype(ml_dtypes.bfloat16).view(np.uint16) if dtype == "bfloat16" else array


def decode(array: np.ndarray, dtype: str) -> np.ndarray:
    if array.dtype == np.uint16 and dtype == "bfloat16":
        return array.view(ml_dtypes.bfloat16).astype(np.float32)
    return array

"""The fixed small configuration of every training form, run into a directory, and its metrics
as a golden record: every ``metrics.jsonl`` line and the summary, without wall-clock fields.

``record.py`` writes the records (``tests/golden/*.json``); ``tests/test_golden.py`` runs the same
configurations on the current engine and compares.
"""

import collections.abc
import functools
import json
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jdistill.adversarial import data_free, discriminator, online
from jdistill.data import Dataset, load_digits
from jdistill.generative import MappingConfig, VAEConfig
from jdistill.models import MODELS
from jdistill.train import RunConfig, fit

TIMING = ("seconds", "train_seconds")


class TinyStaged(nnx.Module):
    """A stem and three conv-BN stages with the CIFAR models' feature names (stem, stageK_pre,
    stageK, embedding), small enough to compile in seconds."""

    def __init__(self, input_shape, num_classes, *, widths=(4, 8, 8), rngs):
        self.stem = nnx.Conv(input_shape[-1], widths[0], (3, 3), rngs=rngs)
        self.convs = nnx.List(
            [
                nnx.Conv(a, b, (3, 3), strides=s, rngs=rngs)
                for a, b, s in zip((widths[0], *widths[:-1]), widths, (1, 2, 2), strict=True)
            ]
        )
        self.bns = nnx.List([nnx.BatchNorm(w, momentum=0.9, rngs=rngs) for w in widths])
        self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)

    def __call__(self, x, *, train=False, dropout_key=None):
        h = jax.nn.relu(self.stem(x))
        features = {"stem": h}
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns), start=1):
            pre = bn(conv(h), use_running_average=not train)
            h = jax.nn.relu(pre)
            features[f"stage{i}_pre"], features[f"stage{i}"] = pre, h
        features["embedding"] = h.mean(axis=(1, 2))
        return self.head(features["embedding"]), features


def register_tiny_models() -> None:
    MODELS.setdefault("golden_tiny_teacher", functools.partial(TinyStaged, widths=(4, 8, 16)))
    MODELS.setdefault("golden_tiny_student", functools.partial(TinyStaged, widths=(4, 6, 8)))


def tiny_data(n: int = 96) -> Dataset:
    """``n`` random 8x8x3 images of 4 classes; the first quarter is also the test set."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n, 8, 8, 3)).astype(np.float32)
    y = (np.arange(n) % 4).astype(np.int32)
    return Dataset("tiny", x, y, x[: n // 4], y[: n // 4], num_classes=4, mean=(0.5,) * 3, std=(0.3,) * 3)


def record_of(run_dir) -> dict:
    """The run's metric lines and summary, without wall-clock fields."""
    run_dir = pathlib.Path(run_dir)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    drop = lambda d: {k: v for k, v in d.items() if k not in TIMING}
    return {"metrics": [drop(m) for m in lines], "summary": drop(summary)}


LAYOUTS = "checkpoint_layouts.json"  # each form's checkpoint_layout, as recorded


def checkpoint_layout(run_dir) -> list[str]:
    """The structure of the run's latest checkpoint as orbax saved it: one line per node, its path
    and what it holds (an array's shape and dtype, or an empty node: None, {} or [])."""
    checkpoints = pathlib.Path(run_dir).absolute() / "checkpoints"  # a relative path's metadata is None
    latest = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    tree = ocp.StandardCheckpointer().metadata(checkpoints / str(latest) / "default").item_metadata
    empty = lambda v: v is None or (isinstance(v, (dict, list, tuple)) and not v)
    return [
        f"{jax.tree_util.keystr(where)}: "
        + (repr(node) if empty(node) else f"{tuple(node.shape)} {np.dtype(node.dtype).name}")
        for where, node in jax.tree_util.tree_flatten_with_path(tree, is_leaf=empty)[0]
    ]


# ------------------------------------------------------------------ the configurations


def teacher_config() -> RunConfig:
    """Dropout, input jitter, max-norm, a warm-up: every source of randomness of the loop."""
    return RunConfig(
        model="mlp1200",
        dataset="digits",
        epochs=3,
        batch_size=64,
        learning_rate=0.05,
        max_shift=1,
        max_norm=3.0,
        warmup_epochs=1,
        seed=1,
    )


def distill_config(teacher: str) -> RunConfig:
    """Soft targets and a FitNets hint through a connector; no augmentation."""
    return RunConfig(
        model="mlp32",
        dataset="digits",
        epochs=3,
        batch_size=64,
        teacher=teacher,
        methods=("ce", "kd", "fitnet"),
        weights={"fitnet": 1.0},
        seed=2,
    )


def tiny_teacher_config() -> RunConfig:
    return RunConfig(model="golden_tiny_teacher", dataset="tiny", epochs=2, batch_size=16, learning_rate=0.05)


def staged_config(teacher: str) -> RunConfig:
    """CRD's memory banks (state), FT's initialisation stage and frozen paraphraser, crops and flips,
    the CIFAR recipe's SGD (no Nesterov, weight decay, step schedule)."""
    return RunConfig(
        model="golden_tiny_student",
        dataset="tiny",
        epochs=3,
        batch_size=16,
        teacher=teacher,
        methods=("ce", "crd", "ft"),
        seed=3,
        max_shift=1,
        hflip=True,
        nesterov=False,
        weight_decay=5e-4,
        schedule="step",
        lr_milestones=(2,),
        # FT's initialisation stage at the run's rate, the rate the record was made with.
        method_options={"crd": {"num_negatives": 32}, "ft": {"init_epochs": 1, "init_learning_rate": None}},
    )


def df_teacher_config() -> RunConfig:
    return RunConfig(model="small_cnn", dataset="digits", epochs=2, batch_size=32, learning_rate=0.1)


def data_free_config(teacher: str, method: str) -> data_free.DataFreeConfig:
    return data_free.DataFreeConfig(
        teacher=teacher,
        method=method,
        dataset="digits",
        model="small_cnn",
        batch_size=32,
        generator_width=4,
        iterations=4,
        iterations_per_epoch=2,
        samples_every=2,
        histogram_samples=40,
        at_features=("conv1", "conv2"),
        activation_feature="embedding",
        seed=4,
    )


def adversarial_config(teacher: str) -> discriminator.AdversarialKDConfig:
    return discriminator.AdversarialKDConfig(
        teacher=teacher,
        model="mlp32",
        epochs=2,
        dataset="digits",
        batch_size=64,
        seed=5,
        disc_input="probs",
        conditional=True,
        disc_steps=2,
        disc_widths=(32,),
    )


def online_config() -> online.OnlineConfig:
    return online.OnlineConfig(
        model="mlp32", dataset="digits", epochs=2, batch_size=64, seed=6, disc_input="probs", disc_hidden=16
    )


def vae_config() -> VAEConfig:
    return VAEConfig(dataset="digits", latent_dim=4, widths=(32,), epochs=2, batch_size=64, seed=7)


def mapping_config(teacher: str) -> MappingConfig:
    return MappingConfig(
        teacher=teacher,
        encoder_widths=(8,),
        decoder_widths=(8,),
        epochs=2,
        steps_per_epoch=5,
        batch_size=32,
        eval_points=200,
        seed=8,
    )


# ------------------------------------------------------------------ running them

FORMS = (
    "teacher",
    "distill",
    "tiny_teacher",
    "staged",
    "adversarial_kd",
    "df_teacher",
    "data_free_dfad",
    "data_free_dafl",
    "data_free_zskt",
    "online",
    "vae",
    "mapping",
)


def plan(out: pathlib.Path) -> list[tuple[str, object, Dataset | None]]:
    """``(form, configuration, data set)`` of every form, in the order they depend on each other
    (a student after its teacher), their run directories under ``out``."""
    register_tiny_models()
    digits, tiny = load_digits(), tiny_data()
    df_digits = data_free.teacher_dataset(digits)
    d = lambda name: str(out / name)
    return [
        ("teacher", teacher_config(), digits),
        ("distill", distill_config(d("teacher")), digits),
        ("tiny_teacher", tiny_teacher_config(), tiny),
        ("staged", staged_config(d("tiny_teacher")), tiny),
        ("adversarial_kd", adversarial_config(d("teacher")), digits),
        ("df_teacher", df_teacher_config(), df_digits),
        *(
            (f"data_free_{m}", data_free_config(d("df_teacher"), m), df_digits)
            for m in data_free.DATA_FREE_METHODS
        ),
        ("online", online_config(), digits),
        ("vae", vae_config(), digits),
        ("mapping", mapping_config(d("vae")), None),
    ]


class Runs(collections.abc.Mapping):
    """The forms played into ``out/<form>`` on ``devices`` when first asked for: ``runs[form]`` plays
    the form and the forms before it in the plan (its teachers among them) and is its record."""

    def __init__(self, out: pathlib.Path, devices, **options):
        self.out, self.devices, self.options, self.played = out, devices, options, set()

    def __getitem__(self, form: str) -> dict:
        self.play_before(form, including=True)
        return record_of(self.out / form)

    def play_before(self, form: str, *, including: bool = False) -> pathlib.Path:
        """Play the forms before ``form`` in the plan (and ``form`` if ``including``); the directory."""
        steps = plan(self.out)
        end = [name for name, _, _ in steps].index(form) + including
        for name, config, dataset in steps[:end]:
            if name not in self.played:
                fit(
                    config,
                    self.out / name,
                    dataset=dataset,
                    devices=self.devices,
                    progress=False,
                    **self.options,
                )
                self.played.add(name)
        return self.out

    def __iter__(self):
        return iter(FORMS)

    def __len__(self) -> int:
        return len(FORMS)


def run_all(out: pathlib.Path, devices, **options) -> dict[str, dict]:
    """Every form into ``out/<form>``, on ``devices``; returns ``{form: record}``."""
    return dict(Runs(out, devices, **options))

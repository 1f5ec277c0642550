"""``dtype="bfloat16"`` (``--dtype bfloat16``): the moves' forward and backward passes run in
bfloat16 while parameters, optimizer state and batch statistics stay float32; on digits it learns
as float32 does; data-free games refuse it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.adversarial.data_free import DataFreeConfig
from jdistill.adversarial.data_free import build as build_data_free
from jdistill.data import Dataset, load_digits
from jdistill.train import RunConfig, RunDir, View, fit, load_teacher
from jdistill.train.distill import build
from jdistill.train.game import round_key
from jdistill.train.rounds import play_move, round_batch


def tiny_images() -> Dataset:
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 64)
    return Dataset("tiny", x, y, x[:16], y[:16], 10, mean=(0.5,) * 3, std=(0.25,) * 3)


def test_the_view_computes_in_bfloat16_and_keeps_the_batch_statistics_float32():
    data = tiny_images()
    game = build(RunConfig(model="resnet8", dataset="tiny", epochs=1, batch_size=4, dtype="bfloat16"), data)
    player = game.players["student"]
    batch = round_batch(game)
    batch["image"] = batch["image"].astype(jnp.bfloat16)  # as the rounds cast it
    args = (dict(game.teachers), batch, dict(game.hparams), round_key(0, 0), 0, 0, 0.0)

    def forward():  # abstractly: only the dtypes are checked
        view = View(dict(game.players), "student", player.params, *args, compute_dtype=jnp.bfloat16)
        logits, _ = view.module("student").model(batch["image"], train=True, dropout_key=view.key(0))
        return logits, view.new_rest()

    logits, rest = jax.eval_shape(forward)
    assert logits.dtype == jnp.bfloat16
    floating = [a for a in jax.tree.leaves(rest) if jnp.issubdtype(a.dtype, jnp.floating)]
    assert floating and {a.dtype for a in floating} == {jnp.dtype(jnp.float32)}  # the BatchNorm statistics
    fresh = round_batch(game)
    step = jax.eval_shape(lambda: play_move(game, game.players, game.phases[0].moves[0], fresh))
    dtypes = {a.dtype for a in jax.tree.leaves((step[0]["student"].params, step[0]["student"].opt_state))}
    assert jnp.dtype(jnp.bfloat16) not in dtypes and step[1]["loss"].dtype == jnp.float32


@pytest.mark.slow
def test_bfloat16_learns_digits_as_float32_does_with_float32_state(tmp_path):
    digits = load_digits()
    config = RunConfig(model="mlp32", dataset="digits", epochs=5, batch_size=32, learning_rate=0.1)
    runs = {dtype: tmp_path / dtype for dtype in ("float32", "bfloat16")}
    summaries = {
        d: fit(config.replace(dtype=d), out, dataset=digits, progress=False) for d, out in runs.items()
    }
    assert summaries["bfloat16"]["test/accuracy"] > 0.9
    assert abs(summaries["bfloat16"]["test/accuracy"] - summaries["float32"]["test/accuracy"]) < 0.02
    losses = [RunDir(out).metrics()[0]["train/loss"] for out in runs.values()]
    assert losses[0] != losses[1]  # the steps did run in another precision
    saved = load_teacher(str(runs["bfloat16"]), digits).variables
    assert {a.dtype for a in jax.tree.leaves(saved)} == {np.dtype(np.float32)}


def test_data_free_games_refuse_bfloat16(tmp_path):
    config = DataFreeConfig(teacher=str(tmp_path), dataset="digits", method="dfad", model="small_cnn",
                            dtype="bfloat16")  # fmt: skip
    with pytest.raises(ValueError, match="^data-free games compute in float32 only, not bfloat16$"):
        build_data_free(config, load_digits())

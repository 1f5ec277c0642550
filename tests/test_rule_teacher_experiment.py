"""experiments/rule_teacher_mirror.py: the task obeys its rule, the game's objective is Hu et al.'s
formula, and --smoke runs the whole table into run directories that a second run reads back."""

import contextlib
import io
import json
import pathlib
import runpy
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.data.dataset import UNLABELLED
from jdistill.train.game import View, round_key
from jdistill.train.rounds import play_move, round_batch

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "rule_teacher_mirror.py"


@pytest.fixture(scope="module")
def module():
    return runpy.run_path(str(SCRIPT))


def test_the_data_obey_the_mirror_rule_and_labels_cover_the_left_half_only(module):
    data = module["make_data"](0, 30)
    assert data["x"].shape == (30, 2) and np.all(data["x"][:, 0] < 0)
    # The rule is true of the task: a point and its mirror image have the same class.
    test = data["test"]
    np.testing.assert_array_equal(module["true_class"](test), module["true_class"](test * [-1, 1]))
    # As a Dataset: the 30 labelled points, then the 2,000 unlabelled ones with their labels hidden.
    dataset = module["as_dataset"](data)
    assert dataset.x_train.shape == (2030, 1, 1, 2) and dataset.x_test.shape == (10_000, 1, 1, 2)
    np.testing.assert_array_equal(dataset.y_train[:30], data["y"])
    assert np.all(dataset.y_train[30:] == UNLABELLED)
    np.testing.assert_array_equal(dataset.x_train[30:, 0, 0], data["u"])


def test_the_model_starts_where_the_old_loop_started(module):
    """MirrorMLP holds init_mlp's parameters and computes the old loop's MLP on them."""

    def old_mlp(params, x):  # the loop's forward pass before the port
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b)
        w, b = params[-1]
        return x @ w + b

    key = jax.random.key(3)
    model, params = module["MirrorMLP"](key), module["init_mlp"](key)
    for layer, (w, b) in zip(model.layers, params):
        np.testing.assert_array_equal(layer.kernel[...], w)
        np.testing.assert_array_equal(layer.bias[...], b)
    x = jnp.asarray(module["make_data"](1, 10)["test"][:50])
    np.testing.assert_allclose(model(x), old_mlp(params, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model(x.reshape(50, 1, 1, 2)), model(x), rtol=1e-6, atol=1e-6)


def test_teacher_reads_the_mirror_images_prediction(module):
    # A network blind to x_0 predicts the same for a point and its mirror image (r = p), so the
    # teacher only sharpens: q ∝ p exp(-C (1 - p)).
    model = module["MirrorMLP"](jax.random.key(0))
    symmetric = module["MirrorMLP"](jax.random.key(0))
    symmetric.layers[0].kernel[...] = symmetric.layers[0].kernel[...].at[0].set(0.0)
    x = jnp.asarray(module["make_data"](1, 10)["test"][:50])
    p = jax.nn.softmax(symmetric(x))
    want = p * jnp.exp(-module["C"] * (1 - p))
    np.testing.assert_allclose(
        module["teacher_probs"](symmetric, x), want / want.sum(-1, keepdims=True), atol=1e-5
    )
    # A network that reads x_0 gets a teacher that differs from it.
    assert not np.allclose(module["teacher_probs"](model, x), jax.nn.softmax(model(x)), atol=1e-3)


def numpy_forward(params, x):
    """The MLP of ``params`` (the player's pure dict) in NumPy, on points [B, 2]."""
    layers = [params["layers"][i] for i in sorted(params["layers"])]
    for layer in layers[:-1]:
        x = np.maximum(x @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"]), 0)
    return x @ np.asarray(layers[-1]["kernel"]) + np.asarray(layers[-1]["bias"])


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("rule", ["mirror", pytest.param("none", marks=pytest.mark.slow)])
def test_the_games_loss_is_the_papers_formula(module, rule):
    """On a tiny batch (4 labelled points, 5 unlabelled drawn, 7 padding rows), at step t = 37: the
    move's loss is mean_L[(1 - pi) CE(y, p) + pi CE(q, p)] + pi mean_U[CE(q, p)], with q ∝ p
    exp(-C (1 - p(y | mirror x))) and pi = min(0.9, 1 - 0.995^t), computed in NumPy (without the
    rule: mean_L CE(y, p)), and its gradient is the formula's with q held fixed."""
    config = module["MirrorRuleConfig"](
        rule=rule, seed=2, labels=4, unlabelled=6, unlabelled_per_step=5, test_points=20, hidden=8,
        steps=50, steps_per_epoch=50,
    )  # fmt: skip
    game = config.build()
    t, C = 37, module["C"]
    batch = round_batch(game, t)
    images, labels = np.asarray(batch["image"]).reshape(-1, 2), np.asarray(batch["label"])
    real = np.asarray(batch["index"]) >= 0
    labelled, unlabelled = real & (labels >= 0), real & (labels < 0)
    assert labelled.sum() == 4 and unlabelled.sum() == (5 if rule == "mirror" else 0)
    assert len(labels) % 8 == 0 and np.all(labels[~real] == UNLABELLED)
    params = jax.device_get(game.players["student"].params)
    p = softmax(numpy_forward(params, images))
    ce_y = -np.log(p[np.arange(len(p)), np.maximum(labels, 0)])
    if rule == "none":
        want = ce_y[labelled].mean()
    else:
        r = softmax(numpy_forward(params, images * [-1.0, 1.0]))
        q = p * np.exp(-C * (1 - r))
        q /= q.sum(-1, keepdims=True)
        pi = min(0.9, 1 - 0.995**t)
        ce_q = -(q * np.log(p)).sum(-1)
        want = ((1 - pi) * ce_y + pi * ce_q)[labelled].mean() + pi * ce_q[unlabelled].mean()
    move = game.phases[0].moves[0]
    _, metrics = play_move(game, game.players, move, batch, round_index=t)
    np.testing.assert_allclose(float(metrics["loss"]), want, rtol=1e-5)
    if rule == "mirror":
        np.testing.assert_allclose(float(metrics["pi"]), pi, rtol=1e-5)

    # The move's gradient is the formula's with q a constant (the rule's truth outside the gradient).
    def hand(params):
        p = jax.nn.softmax(numpy_forward_jnp(params, images))
        ce_y = -jnp.log(p[jnp.arange(len(p)), np.maximum(labels, 0)])
        if rule == "none":
            return ce_y[labelled].mean()
        ce_q = -(q * jnp.log(p)).sum(-1)
        return ((1 - pi) * ce_y + pi * ce_q)[labelled].mean() + pi * ce_q[unlabelled].mean()

    def game_loss(params):
        key, r = round_key(game.seed, t), jnp.int32(t)
        view = View(dict(game.players), "student", params, {}, batch, {}, key, r, 0, jnp.float32(0))
        return move.loss(view)[0]

    for got, wanted in zip(
        jax.tree.leaves(jax.grad(game_loss)(params)), jax.tree.leaves(jax.grad(hand)(params))
    ):
        np.testing.assert_allclose(got, wanted, rtol=1e-4, atol=1e-7)


def numpy_forward_jnp(params, x):
    layers = [params["layers"][i] for i in sorted(params["layers"])]
    for layer in layers[:-1]:
        x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
    return x @ layers[-1]["kernel"] + layers[-1]["bias"]


def test_a_step_count_without_100_steps_per_epoch_still_runs_whole(module):
    per_epoch = module["steps_per_epoch"]
    assert per_epoch(1500) == 100 and per_epoch(50) == 50 and per_epoch(1250) == 50 and per_epoch(7) == 7
    with pytest.raises(ValueError, match="multiple of steps_per_epoch"):
        module["MirrorRuleConfig"](steps=150, steps_per_epoch=100)
    with pytest.raises(ValueError, match="rule"):
        module["MirrorRuleConfig"](rule="symmetry")


@pytest.mark.slow
def test_smoke_writes_the_table_and_reads_its_runs_back(tmp_path, monkeypatch):
    out = tmp_path / "rules"

    def run():
        monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--out", str(out), "--smoke", "--quiet"])
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            runpy.run_path(str(SCRIPT), run_name="__main__")
        return printed.getvalue()

    printed = run()
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["student, no rule", "student + rule teacher"]
    for runs in results.values():
        assert len(runs) == 1 and 0 <= runs[0]["test/right_half_accuracy"] <= 1
        assert runs[0]["steps"] == 50 and (out / runs[0]["run"] / "summary.json").exists()
    assert results["student, no rule"][0]["run"] == "none/seed0"
    assert results["student + rule teacher"][0]["rules"] and not results["student, no rule"][0]["rules"]
    # The rule run also measures its projected teacher q; the table shows it as a third model.
    assert 0 <= results["student + rule teacher"][0]["test/teacher_right_half_accuracy"] <= 1
    table = (out / "table.md").read_text()
    models = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines() if line.startswith("| ")]
    assert models == ["model", "student, no rule", "student + rule teacher", "teacher q (rule-projected)"]
    assert table in printed
    assert (out / "regions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The same command again reads the finished runs back: no training, the same table.
    metrics = (out / "rule" / "seed0" / "metrics.jsonl").read_text()
    assert run().count(table) == 1
    assert (out / "rule" / "seed0" / "metrics.jsonl").read_text() == metrics
    assert json.loads((out / "results.json").read_text()) == results

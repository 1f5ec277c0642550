"""The moving average of a player's parameters (``ema_decay``): the debiased average against a numpy
reference (after the max-norm projection, per peer of a stacked player), a new optimizer starting
it again, training left unchanged, the evaluation of the average, its resumption, and the refusals."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jdistill.cli import main
from jdistill.data import load_digits
from jdistill.train import Optimizer, Player, RunConfig, RunDir, fit, load_teacher, parallel
from jdistill.train.config import OptimizerConfig
from jdistill.train.fit import evaluation


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def numpy_average(history, decay):
    """``(1 - d) sum_i d^(t - i) theta_i / (1 - d^t)`` over ``history`` = theta_1 .. theta_t."""
    t = len(history)
    weights = [(1 - decay) * decay ** (t - i) for i in range(1, t + 1)]
    return sum(w * np.asarray(p) for w, p in zip(weights, history)) / (1 - decay**t)


def test_the_average_is_the_debiased_moving_average_of_the_projected_parameters():
    """Five SGD updates with random gradients and max-norm 0.5: the average after each equals the
    numpy reference over the parameters as projected; after the first it is those parameters."""
    player = Player.create(
        nnx.Linear(4, 3, rngs=nnx.Rngs(0)), Optimizer("sgd", 0.5, max_norm=0.5, ema_decay=0.8)
    )
    np.testing.assert_array_equal(player.average["kernel"], player.params["kernel"])  # before any update
    update = jax.jit(Player.update)
    rng, history = np.random.default_rng(0), []
    for t in range(1, 6):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), player.params)
        player, _ = update(player, grads, player.rest)
        history.append(jax.tree.map(np.asarray, player.params))
        assert np.linalg.norm(history[-1]["kernel"], axis=0).max() <= 0.5 + 1e-6  # projected
        if t == 1:  # debiased: the first average is the parameters themselves
            np.testing.assert_array_equal(player.average["kernel"], player.params["kernel"])
        for leaf in ("kernel", "bias"):
            expected = numpy_average([h[leaf] for h in history], 0.8)
            np.testing.assert_allclose(player.average[leaf], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(player.average["kernel"], player.params["kernel"])


def test_each_peer_of_a_stacked_player_averages_its_own_parameters():
    peers = [nnx.Linear(2, 2, rngs=nnx.Rngs(k)) for k in range(2)]
    player = Player.stack(peers, Optimizer("adam", 0.1, ema_decay=0.5))
    history = []
    for scale in (1.0, -2.0, 3.0):
        grads = jax.tree.map(lambda p: jnp.stack([jnp.full(p.shape[1:], scale), jnp.full(p.shape[1:], -scale)]),
                             player.params)  # fmt: skip
        player, _ = player.update(grads, player.rest)
        history.append(np.asarray(player.params["kernel"]))
    np.testing.assert_allclose(player.average["kernel"], numpy_average(history, 0.5), rtol=1e-5, atol=1e-6)
    assert not np.allclose(player.average["kernel"][0], player.average["kernel"][1])


def test_a_new_optimizer_starts_the_average_again_and_none_keeps_no_average():
    player = Player.create(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), Optimizer("sgd", 1.0, ema_decay=0.9))
    grads = jax.tree.map(jnp.ones_like, player.params)
    player, _ = player.update(grads, player.rest)
    player, _ = player.update(grads, player.rest)
    restarted = player.with_optimizer(Optimizer("sgd", 1.0, ema_decay=0.9))
    np.testing.assert_array_equal(restarted.average["kernel"], player.params["kernel"])
    assert int(restarted.step) == 0
    assert player.with_optimizer(Optimizer("sgd", 1.0)).average is None


def test_the_evaluation_scores_the_average_under_ema(digits):
    """``ema/accuracy``, ``ema/loss`` and ``ema/agreement`` are the game's evaluation with the
    player at its averaged parameters (here set by hand to the parameters plus noise), beside the
    player's own metrics."""
    game = RunConfig(model="mlp32", dataset="digits", epochs=1, ema_decay=0.9).build(digits)
    player = game.players["student"]
    rng = np.random.default_rng(1)
    other = jax.tree.map(lambda p: p + jnp.asarray(rng.normal(size=p.shape), jnp.float32), player.params)
    players = {"student": player.replace(average=other)}
    mesh = parallel.make_mesh(jax.devices()[:1])
    result = evaluation(game, jax.device_put(players, parallel.replicated(mesh)), {}, mesh)
    images = jnp.asarray(digits.normalise(digits.x_test), jnp.float32)
    logits = np.asarray(nnx.merge(player.graphdef, other, player.rest).model(images, train=False)[0])
    assert result["ema/accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == digits.y_test), abs=1e-6)
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    ce = -np.mean(log_p[np.arange(len(digits.y_test)), digits.y_test])
    assert result["ema/loss"] == pytest.approx(ce, rel=1e-5)
    assert result["loss"] != pytest.approx(result["ema/loss"], rel=1e-3)
    assert set(result) == {"accuracy", "loss", "ema/accuracy", "ema/loss"}


def test_the_average_leaves_training_unchanged_and_resumes_exactly(digits, tmp_path):
    """The same run with and without ``ema_decay``: equal training and test metrics at every epoch,
    and ``test/ema/...`` only with it; the run with it, having lost its last checkpoint, resumes to
    the same metrics (the average is in the checkpoint)."""
    base = RunConfig(model="mlp32", dataset="digits", epochs=3, batch_size=64, learning_rate=0.1)
    plain, averaged = tmp_path / "plain", tmp_path / "averaged"
    fit(base, plain, dataset=digits, devices=jax.devices()[:1], progress=False)
    fit(base.replace(ema_decay=0.9), averaged, dataset=digits, devices=jax.devices()[:1], progress=False)
    a, b = RunDir(plain).metrics(), RunDir(averaged).metrics()
    for x, y in zip(a, b, strict=True):
        assert {k: v for k, v in x.items() if k != "seconds"} == {
            k: v for k, v in y.items() if k != "seconds" and not k.startswith("test/ema/")
        }
        assert 0 < y["test/ema/accuracy"] <= 1 and y["test/ema/accuracy"] != y["test/accuracy"]
    assert "test/ema/accuracy" in json.loads((averaged / "summary.json").read_text())

    again = tmp_path / "again"
    shutil.copytree(averaged, again)
    shutil.rmtree(again / "checkpoints" / "3")
    (again / "summary.json").unlink()
    fit(base.replace(ema_decay=0.9), again, dataset=digits, devices=jax.devices()[:1], progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(RunDir(again).metrics()) == strip(b)


def test_a_decay_outside_0_1_is_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"ema_decay must be in \(0, 1\)"):
        OptimizerConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match=r"ema_decay must be in \(0, 1\)"):
        Optimizer("sgd", 0.1, ema_decay=0.0)
    with pytest.raises(SystemExit) as error:
        main(["train-teacher", "--model", "mlp32", "--dataset", "digits", "--epochs", "1",
              "--out", str(tmp_path / "run"), "--ema-decay", "1.5"])  # fmt: skip
    assert str(error.value) == (
        "jdistill train-teacher: error: ema_decay must be in (0, 1) (or None for no average), got 1.5"
    )
    assert not (tmp_path / "run").exists()


def test_an_average_of_a_player_no_evaluation_reads_is_refused_in_one_line(tmp_path):
    """A data-free generator and the discriminators of adversarial KD and of online distillation are
    never evaluated: an average of theirs is refused, naming the option."""
    from jdistill.adversarial.data_free import DataFreeConfig
    from jdistill.adversarial.discriminator import AdversarialKDConfig
    from jdistill.adversarial.online import OnlineConfig

    never = "the {} is never evaluated, so an average of its parameters would not be used"
    with pytest.raises(ValueError, match="^generator_ema_decay: " + never.format("generator") + "$"):
        DataFreeConfig(str(tmp_path / "teacher"), "dafl", generator_ema_decay=0.99)
    with pytest.raises(ValueError, match="^disc_ema_decay: " + never.format("discriminator") + "$"):
        AdversarialKDConfig(str(tmp_path / "teacher"), disc_ema_decay=0.99)
    with pytest.raises(ValueError, match="^disc_ema_decay: " + never.format("discriminator") + "$"):
        OnlineConfig(disc_ema_decay=0.99)
    assert (
        DataFreeConfig(str(tmp_path / "teacher"), "dafl", student_ema_decay=0.99).student_optimizer.ema_decay
        == 0.99
    )


def test_a_teacher_trained_with_an_average_loads_its_own_parameters(digits, tmp_path):
    """The checkpoint keeps the average beside the parameters; a teacher is read as trained."""
    config = RunConfig(model="mlp32", dataset="digits", epochs=1, batch_size=64, ema_decay=0.5)
    fit(config, tmp_path / "t", dataset=digits, devices=jax.devices()[:1], progress=False)
    teacher = load_teacher(str(tmp_path / "t"), digits)
    images = jnp.asarray(digits.normalise(digits.x_test), jnp.float32)
    logits = teacher.frozen.module().model(images, train=False)[0]
    accuracy = float(np.mean(np.asarray(logits).argmax(-1) == digits.y_test))
    assert accuracy == pytest.approx(
        json.loads((tmp_path / "t" / "summary.json").read_text())["test/accuracy"], abs=1e-6
    )


def test_the_average_is_the_same_with_several_rounds_per_call(digits, tmp_path):
    """Rounds scanned three to a jitted call carry the average as one at a time do."""
    config = RunConfig(
        model="mlp32", dataset="digits", epochs=2, batch_size=64, learning_rate=0.1, ema_decay=0.9
    )
    records = []
    for k in (1, 3):
        fit(
            config,
            tmp_path / str(k),
            dataset=digits,
            devices=jax.devices()[:1],
            progress=False,
            steps_per_call=k,
        )
        records.append(RunDir(tmp_path / str(k)).metrics())
    for one, three in zip(*records, strict=True):
        np.testing.assert_allclose(one["test/ema/loss"], three["test/ema/loss"], rtol=1e-5)
        assert one["test/ema/loss"] != one["test/loss"]

"""Online distillation: vmapped peers are the peers, gradients reach only the player whose step
it is, mutual learning couples the peers and its absence trains each alone, runs resume, and
experiments/online_mnist.py runs end to end."""

import argparse
import json
import pathlib
import runpy
import shutil
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from idx_files import write_mnist_like

from jdistill.adversarial import online
from jdistill.adversarial.online import OnlineConfig
from jdistill.data import load_digits
from jdistill.losses import cross_entropy
from jdistill.train import checkpoint, optim

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "online_mnist.py"
BATCH = 32


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def batch(digits):
    return {"image": jnp.asarray(digits.x_train[:BATCH]), "label": jnp.asarray(digits.y_train[:BATCH])}


def small_config(**changes) -> OnlineConfig:
    return OnlineConfig(model="mlp32", dataset="digits", epochs=2, batch_size=BATCH, **changes)


def copy(tree):
    """Fresh buffers: the steps donate the state they update."""
    return jax.tree.map(jnp.array, tree)


def with_peer_replaced(peers, k, other):
    """``peers`` with peer ``k``'s parameters taken from the stacked ``other``."""
    return peers.replace(params=jax.tree.map(lambda p, o: p.at[k].set(o[k]), peers.params, other.params))


@pytest.fixture(scope="module")
def games(digits):
    """Built once per module (their steps compile once): pure mutual learning, peers alone, and
    mutual learning with discriminators on a hidden layer (with a gradient penalty)."""
    configs = {
        "mutual": small_config(),
        "alone": small_config(mutual_weight=0.0),
        "adversarial": small_config(disc_input="feature:hidden1", gp_weight=1.0, objective="least_squares"),
    }
    return {name: online.build(config, digits) for name, config in configs.items()}


def test_vmapped_peers_compute_what_each_peer_computes_alone(digits, batch):
    config = small_config(num_peers=3)
    peers = online.create_peers(config, digits)
    graphdef, params, rest = online.stack_modules(peers)
    logits, features, _ = online.forward_peers(graphdef, params, rest, batch["image"], train=False)
    assert logits.shape == (3, BATCH, 10)
    for k, peer in enumerate(peers):
        alone_logits, alone_features = peer(batch["image"], train=False)
        np.testing.assert_allclose(logits[k], alone_logits, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            features["embedding"][k], alone_features["embedding"], rtol=1e-5, atol=1e-6
        )
    assert not np.allclose(logits[0], logits[1])  # different initialisations


def test_mutual_learning_couples_the_peers(games, batch, digits):
    game = games["mutual"]
    peers = game.players["peers"]
    other = online.build(small_config(seed=7), digits).players["peers"]
    changed = with_peer_replaced(peers, 1, other)
    after, _ = game.peer_step(copy(peers), None, batch)
    after_changed, _ = game.peer_step(copy(changed), None, batch)
    peer0 = lambda state: jax.tree.map(lambda p: p[0], state.params)
    # Peer 0's update depends on peer 1's predictions.
    assert not np.allclose(peer0(after)["head"]["kernel"], peer0(after_changed)["head"]["kernel"])


def test_without_mutual_learning_each_peer_trains_alone(games, batch, digits):
    game = games["alone"]
    peers = game.players["peers"]
    other = online.build(small_config(mutual_weight=0.0, seed=7), digits).players["peers"]
    after, _ = game.peer_step(copy(peers), None, batch)
    after_changed, _ = game.peer_step(copy(with_peer_replaced(peers, 1, other)), None, batch)
    peer0 = lambda state: jax.tree.map(lambda p: p[0], state.params)
    chex.assert_trees_all_equal(peer0(after), peer0(after_changed))

    # ... and its update is the plain SGD step of one model on cross-entropy.
    config = small_config(mutual_weight=0.0)
    params0 = peer0(peers)
    tx = optim.direction(config.peer_run_config())

    def ce(params):
        logits, _, _ = online.forward_peer(game.peer_graphdef, params, {}, batch["image"], None, True)
        return jnp.mean(cross_entropy(logits, batch["label"]))

    direction, _ = tx.update(jax.grad(ce)(params0), tx.init(params0), params0)
    expected = optax.apply_updates(params0, jax.tree.map(lambda d: -config.learning_rate * d, direction))
    chex.assert_trees_all_close(peer0(after), expected, rtol=1e-5, atol=1e-7)


def test_a_peers_loss_reaches_only_that_peer(games, batch):
    game = games["adversarial"]
    peers, discs = game.players["peers"], game.players["discriminators"]
    keys = online.peer_dropout_keys(peers.seed, peers.step, 2)

    def losses(params):
        _, (per_peer, *_) = online.peer_objective(
            game.config, game.peer_graphdef, game.disc_graphdef, params, peers.rest, discs, batch, keys
        )
        return per_peer

    # jacobian[k, j]: the gradient of peer k's loss with respect to peer j's parameters.
    for jacobian in jax.tree.leaves(jax.jit(jax.jacrev(losses))(peers.params)):
        for k in range(2):
            assert np.any(jacobian[k, k] != 0) and np.all(jacobian[k, 1 - k] == 0)


def test_each_step_updates_its_own_player_only(games, batch):
    game = games["adversarial"]
    peers, discs = game.players["peers"], game.players["discriminators"]
    kept_peers, kept_discs = copy(peers), copy(discs)

    new_discs, disc_metrics = game.disc_step(peers, copy(discs), batch)
    chex.assert_trees_all_equal(peers, kept_peers)  # the discriminator step leaves the peers
    assert int(new_discs.step) == 1 and not np.allclose(
        new_discs.params["score"]["kernel"], discs.params["score"]["kernel"]
    )
    assert float(disc_metrics["disc_gp"]) > 0

    new_peers, metrics = game.peer_step(copy(peers), new_discs, batch)
    chex.assert_trees_all_equal(discs, kept_discs)  # the peer step leaves the discriminators
    assert set(metrics) >= {"loss", "ce", "mutual", "fooling", "accuracy", "learning_rate"}
    assert int(new_peers.step) == 1
    # The fooling term's gradient passes through the discriminators into the layer they judge.
    with_old_discs, _ = game.peer_step(copy(peers), copy(discs), batch)
    first_layer = lambda state: state.params["hidden"][0]["kernel"]
    assert not np.allclose(first_layer(new_peers), first_layer(with_old_discs))


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"num_peers": 1}, "num_peers"),
        ({"disc_input": "feature:"}, "disc_input"),
        ({"disc_input": "conv1"}, "disc_input"),
        ({"objective": "wasserstein"}, "objective"),
        ({"disc_steps": 0}, "disc_steps"),
        ({"adv_weight": -1.0}, "adv_weight"),
        ({"temperature": 0.0}, "temperature"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"disc_schedule": "step"}, "disc_schedule"),
    ],
)
def test_config_errors_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        small_config(**changes)


def test_an_unknown_feature_is_refused_with_the_models_features(digits):
    with pytest.raises(ValueError, match="no feature 'conv9'.*hidden1"):
        online.build(small_config(disc_input="feature:conv9"), digits)


def run_cli(out, capsys):
    parser = argparse.ArgumentParser()
    online.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["online", "--model", "mlp32", "--dataset", "digits", "--epochs", "2", "--batch-size", "64",
         "--disc-input", "logits", "--disc-steps", "2", "--lr", "0.1", "--out", str(out), "--quiet"]
    )  # fmt: skip
    args.func(args)
    return json.loads(capsys.readouterr().out)


def test_the_command_trains_into_a_run_directory_and_resumes(tmp_path, capsys, digits):
    summary = run_cli(tmp_path / "run", capsys)
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["learning_rate"] == 0.1 and config["disc_steps"] == 2
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for key in ("test/peer0/accuracy", "test/peer1/accuracy", "test/accuracy", "test/ensemble_accuracy"):
        assert 0 <= lines[-1][key] <= 1 and summary[key] == lines[-1][key]
    assert summary["test/accuracy"] == pytest.approx(
        (summary["test/peer0/accuracy"] + summary["test/peer1/accuracy"]) / 2
    )
    assert summary["params_per_discriminator"] > 0 and summary["num_peers"] == 2

    # Both players are checkpointed; the discriminators took disc_steps steps per peer step.
    game = online.build(OnlineConfig(**config), digits)
    players = checkpoint.restore(checkpoint.manager(tmp_path / "run"), game.players)
    assert (
        int(players["discriminators"].step) == 2 * int(players["peers"].step) == 2 * 2 * game.steps_per_epoch
    )

    # Killed after epoch 1: the same command ends where the uninterrupted run ended.
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "run", resumed)
    shutil.rmtree(resumed / "checkpoints" / "2")
    (resumed / "summary.json").unlink()
    resumed_summary = run_cli(resumed, capsys)
    assert {k: v for k, v in resumed_summary.items() if k.startswith("test/")} == {
        k: v for k, v in summary.items() if k.startswith("test/")
    }
    assert len((resumed / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.fixture
def mnist_like_dir(tmp_path):
    return write_mnist_like(tmp_path)


def test_the_experiment_runs_end_to_end(mnist_like_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "online"
    monkeypatch.setattr(
        sys, "argv", [str(SCRIPT), "--data-dir", str(mnist_like_dir), "--out", str(out), "--smoke", "--quiet"]
    )
    runpy.run_path(str(SCRIPT), run_name="__main__")
    table = (out / "table.md").read_text()
    assert table in capsys.readouterr().out
    for row in ("each peer alone", "mutual learning, T = 1", "discriminators on the embedding"):
        assert row in table
    results = json.loads((out / "results.json").read_text())
    assert set(results["variants"]) == {"alone", "mutual", "adversarial"}
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "adversarial" / "seed0" / "summary.json").exists()

"""Online distillation as a game: vmapped (stacked) peers are the peers, mutual learning couples
them and its absence trains each alone (a plain SGD step), a peer's loss reaches only that peer,
each move updates its own player only, the stacked discriminators keep K optimizer states, the
configuration names its errors, the ``online`` command writes a run directory, and
experiments/online_mnist.py runs end to end.

What the engine does for every form (resume after a lost epoch, checkpoints, the non-finite rule,
1 vs 4 devices, steps_per_call) is tested in tests/test_engine.py and tests/test_golden.py."""

import functools
import json
import pathlib
import runpy
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from idx_files import write_mnist_like

from jdistill import cli
from jdistill.adversarial import online
from jdistill.adversarial.online import OnlineConfig
from jdistill.data import load_digits
from jdistill.losses import cross_entropy
from jdistill.losses.adversarial import fooling_loss, mutual_learning
from jdistill.train import checkpoint, groups
from jdistill.train.game import View, round_key
from jdistill.train.player import Stacked
from jdistill.train.rounds import play_move, round_batch

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "online_mnist.py"
BATCH = 32


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def small_config(**changes) -> OnlineConfig:
    return OnlineConfig(model="mlp32", dataset="digits", epochs=2, batch_size=BATCH, **changes)


@pytest.fixture(scope="module")
def games(digits):
    """Pure mutual learning, peers alone, and mutual learning with discriminators on a hidden
    layer (with a gradient penalty)."""
    configs = {
        "mutual": small_config(),
        "alone": small_config(mutual_weight=0.0),
        "adversarial": small_config(disc_input="feature:hidden1", gp_weight=1.0, objective="least_squares"),
    }
    return {name: online.build(config, digits) for name, config in configs.items()}


@pytest.fixture(scope="module")
def batch(games):
    return round_batch(games["mutual"])


def move_of(game, player):
    (move,) = [m for m in game.phases[0].moves if m.player == player]
    return move


@pytest.fixture(scope="module")
def step(games):
    """``step(name, player, players, batch) -> (players, metrics)``: one move of ``player`` in
    game ``name`` on ``batch`` in round 0 (play_move, jitted once per move)."""

    @functools.cache
    def jitted(name, player):
        game = games[name]
        move = move_of(game, player)
        return jax.jit(lambda players, batch: play_move(game, players, move, batch))

    return lambda name, player, players, batch: jitted(name, player)(players, batch)


def view_of(game, players, mover, params, batch) -> View:
    """What a move of ``mover`` in round 0 sees, with ``params`` as the mover's parameters."""
    r = jnp.int32(0)
    teachers, hparams, rkey = dict(game.teachers), dict(game.hparams), round_key(game.seed, r)
    return View(players, mover, params, teachers, batch, hparams, rkey, r, 0, jnp.float32(0))


def with_peer_replaced(peers, k, other):
    """``peers`` with peer ``k``'s parameters taken from the stacked ``other``."""
    return peers.replace(params=jax.tree.map(lambda p, o: p.at[k].set(o[k]), peers.params, other.params))


def peer(params, k):
    return jax.tree.map(lambda p: p[k], params)


def test_vmapped_peers_compute_what_each_peer_computes_alone(digits, batch):
    """Three stacked peers under vmap (Stacked, and forward_peers in a move's view) give each
    peer's own logits and features."""
    config = small_config(num_peers=3)
    game = online.build(config, digits)
    models = online.create_peers(config, digits)
    players = game.players
    stacked = Stacked(players["peers"].graphdef, players["peers"].params, players["peers"].rest)
    logits, features = stacked(lambda m, x: m(x), batch["image"])
    view = view_of(game, players, "peers", players["peers"].params, batch)
    train_logits, train_features = online.forward_peers(view, 3)  # mlp32 has no dropout
    chex.assert_shape(logits, (3, BATCH, 10))
    for k, model in enumerate(models):
        alone_logits, alone_features = model(batch["image"])
        for got, got_features in ((logits, features), (train_logits, train_features)):
            chex.assert_trees_all_close(got[k], alone_logits, rtol=1e-5, atol=1e-6)
            chex.assert_trees_all_close(
                got_features["embedding"][k], alone_features["embedding"], rtol=1e-5, atol=1e-6
            )
    assert not np.allclose(logits[0], logits[1])  # different initialisations


def test_mutual_learning_couples_the_peers(games, step, batch, digits):
    """With mutual learning, peer 0's update depends on peer 1's predictions."""
    players = games["mutual"].players
    other = online.build(small_config(seed=7), digits).players["peers"]
    changed = {**players, "peers": with_peer_replaced(players["peers"], 1, other)}
    after, _ = step("mutual", "peers", players, batch)
    after_changed, _ = step("mutual", "peers", changed, batch)
    head = lambda ps: peer(ps["peers"].params, 0)["head"]["kernel"]
    assert not np.allclose(head(after), head(after_changed))


def test_without_mutual_learning_each_peer_trains_alone(games, step, batch, digits):
    """mutual_weight=0, no discriminators: peer 0's update ignores peer 1 and is a plain SGD step
    (Nesterov, momentum 0.9, the base rate at step 0) of one model on cross-entropy."""
    game = games["alone"]
    config, players = game.config, game.players
    assert set(players) == {"peers"}
    other = online.build(small_config(mutual_weight=0.0, seed=7), digits).players["peers"]
    changed = {**players, "peers": with_peer_replaced(players["peers"], 1, other)}
    after, _ = step("alone", "peers", players, batch)
    after_changed, _ = step("alone", "peers", changed, batch)
    chex.assert_trees_all_equal(peer(after["peers"].params, 0), peer(after_changed["peers"].params, 0))

    graphdef, params, rest = nnx.split(online.create_peers(config, digits)[0], nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)

    def ce(p):
        logits, _ = nnx.merge(graphdef, p, rest)(batch["image"])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))

    tx = optax.sgd(config.optimizer.learning_rate, momentum=0.9, nesterov=True)
    updates, _ = tx.update(jax.jit(jax.grad(ce))(params), tx.init(params), params)
    expected = optax.apply_updates(params, updates)
    chex.assert_trees_all_close(peer(after["peers"].params, 0), expected, rtol=1e-5, atol=1e-7)


def test_a_peers_loss_reaches_only_that_peer(games, batch):
    """The jacobian of the per-peer losses L_k (mutual learning and fooling discriminators
    included) w.r.t. the stacked peers is block-diagonal: dL_k/dpeer_j = 0 for j != k."""
    game = games["adversarial"]
    config, players = game.config, game.players

    def losses(params):
        view = view_of(game, players, "peers", params, batch)
        logits, features = online.forward_peers(view, config.num_peers)
        ce = jax.vmap(lambda z: jnp.mean(cross_entropy(z, batch["label"])))(logits)
        mutual = jnp.mean(mutual_learning(logits, temperature=config.temperature), axis=-1)
        h = online.discriminated(config.disc_input, config.temperature, logits, features)
        scores = view.module("discriminators")(lambda d, x: d(x), h, in_axes=(0,))
        fooling = jax.vmap(functools.partial(fooling_loss, objective=config.objective))(scores)
        return ce + config.mutual_weight * mutual + config.adv_weight * fooling

    params = players["peers"].params
    # The per-peer losses are the ones the move minimises (their sum).
    total, metrics = online.peer_loss(config, view_of(game, players, "peers", params, batch))
    chex.assert_trees_all_close(jnp.sum(losses(params)), total, rtol=1e-6)
    chex.assert_trees_all_close(jnp.mean(losses(params)), metrics["loss"], rtol=1e-6)
    assert float(metrics["fooling"]) > 0
    # jacobian[k, j]: the gradient of peer k's loss with respect to peer j's parameters.
    for jacobian in jax.tree.leaves(jax.jit(jax.jacrev(losses))(params)):
        for k in range(2):
            assert np.any(jacobian[k, k] != 0) and np.all(jacobian[k, 1 - k] == 0)


def test_each_move_updates_its_own_player_only(games, step, batch):
    """The discriminators' move leaves the peers bit-identical, the peers' move the
    discriminators; the fooling term's gradient passes through the discriminators."""
    game = games["adversarial"]
    players = game.players
    disc_move, peer_move = game.phases[0].moves
    assert (disc_move.player, peer_move.player) == ("discriminators", "peers")
    peers, discs = players["peers"], players["discriminators"]

    after_disc, disc_metrics = step("adversarial", "discriminators", players, batch)
    chex.assert_trees_all_equal(after_disc["peers"], peers)
    new_discs = after_disc["discriminators"]
    assert int(new_discs.step) == 1
    assert not np.allclose(new_discs.params["score"]["kernel"], discs.params["score"]["kernel"])
    assert float(disc_metrics["gp"]) > 0

    after_peers, metrics = step("adversarial", "peers", after_disc, batch)
    chex.assert_trees_all_equal(after_peers["discriminators"], new_discs)
    assert set(metrics) >= {"loss", "ce", "mutual", "fooling", "accuracy", "learning_rate"}
    assert int(after_peers["peers"].step) == 1
    # The same peer step against the untrained discriminators moves the judged layer differently.
    with_old_discs, _ = step("adversarial", "peers", players, batch)
    first_layer = lambda ps: ps["peers"].params["hidden"][0]["kernel"]
    assert not np.allclose(first_layer(after_peers), first_layer(with_old_discs))


def test_the_stacked_discriminators_keep_independent_optimizer_states(games, step, batch):
    """After one discriminators' move each of the K Adam states has count 1 and its own moments."""
    players, _ = step("adversarial", "discriminators", games["adversarial"].players, batch)
    state = players["discriminators"].opt_state
    for _, count in optax.tree_utils.tree_get_all_with_path(state, "count"):
        chex.assert_trees_all_equal(count, jnp.ones(2, count.dtype))
    for mu in jax.tree.leaves(optax.tree_utils.tree_get(state, "mu")):
        assert mu.shape[0] == 2 and np.any(mu[0] != 0) and not np.allclose(mu[0], mu[1])


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
        ({"disc_schedule": "linear"}, "schedule: choose"),
    ],
)
def test_config_errors_name_the_field(changes, field):
    """An invalid field is refused with its name."""
    with pytest.raises(ValueError, match=field):
        small_config(**changes)


def test_an_unknown_feature_is_refused_with_the_models_features(digits):
    """disc_input naming a feature the model lacks lists the model's features."""
    with pytest.raises(ValueError, match="no feature 'conv9'.*hidden1"):
        online.build(small_config(disc_input="feature:conv9"), digits)


@pytest.mark.slow
def test_the_command_trains_into_a_run_directory(tmp_path, capsys, digits):
    """``jdistill online`` maps its options onto the configuration and writes config, metrics
    (each peer's, their mean, the ensemble's accuracy), summary and both players' checkpoints,
    the discriminators having taken disc_steps steps per peer step."""
    out = tmp_path / "run"
    cli.main(["online", "--model", "mlp32", "--dataset", "digits", "--epochs", "2", "--batch-size", "64",
              "--disc-input", "logits", "--disc-steps", "2", "--learning-rate", "0.1",
              "--out", str(out), "--quiet"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    config = groups.flat_record(OnlineConfig, json.loads((out / "config.json").read_text())["config"])
    assert config["learning_rate"] == 0.1 and config["disc_steps"] == 2 and config["disc_input"] == "logits"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert {"train/loss", "train/fooling", "train/disc_loss", "train/disc_learning_rate"} <= set(lines[-1])
    for key in ("test/peer0/accuracy", "test/peer1/accuracy", "test/accuracy", "test/ensemble_accuracy"):
        assert 0 <= lines[-1][key] <= 1 and summary[key] == lines[-1][key]
    peer_mean = (summary["test/peer0/accuracy"] + summary["test/peer1/accuracy"]) / 2
    assert summary["test/accuracy"] == pytest.approx(peer_mean)
    assert summary["params_per_discriminator"] > 0 and summary["num_peers"] == 2
    assert json.loads((out / "summary.json").read_text()) == summary

    game = online.build(OnlineConfig(**config), digits)
    players = checkpoint.restore(checkpoint.manager(out), game.players)
    chex.assert_trees_all_equal_structs(players, game.players)
    peer_steps = 2 * game.source.steps_per_epoch
    assert int(players["peers"].step) == peer_steps and int(players["discriminators"].step) == 2 * peer_steps
    head = lambda ps: ps["peers"].params["head"]["kernel"]
    assert not np.allclose(head(players), head(game.players))


@pytest.mark.slow
def test_the_experiment_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """experiments/online_mnist.py --smoke writes its table, results and curves."""
    data = write_mnist_like(tmp_path)
    out = tmp_path / "online"
    argv = [str(SCRIPT), "--data-dir", str(data), "--out", str(out), "--smoke", "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    table = (out / "table.md").read_text()
    assert table in capsys.readouterr().out
    for row in ("each peer alone", "mutual learning, T = 1", "discriminators on the embedding"):
        assert row in table
    results = json.loads((out / "results.json").read_text())  # row -> the summaries of its seeds
    assert [[s["run"] for s in runs] for runs in results.values()] == [
        ["alone/seed0"],
        ["mutual/seed0"],
        ["adversarial/seed0"],
    ]
    assert all(0 <= runs[0]["test/ensemble_accuracy"] <= 1 for runs in results.values())
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "adversarial" / "seed0" / "summary.json").exists()

"""The engine itself: the non-finite rule for every form, the optimizer configuration, stacked
players, the frozen-output cache, exact evaluation, call chunking, hyperparameters that never
recompile, and run directories of jdistill 0.1. (Golden metrics, 1 vs 4 devices, steps per call
and resumption of every form: tests/test_golden.py.)"""

import dataclasses
import json
import pathlib
import re
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from golden import forms

from jdistill.cli import main
from jdistill.data import load_digits
from jdistill.train import Optimizer, Player, RunConfig, RunDir, fit, load_teacher, optim, parallel
from jdistill.train.evaluate import ClassifierEvaluator
from jdistill.train.fit import _calls
from jdistill.train.rounds import cache_frozen_outputs, make_rounds

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "runs_v0_1"


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def poisoned(move, after_round: int):
    """``move`` whose first term (and so its objective) turns NaN from round ``after_round`` on;
    returns the move and the term's metric name."""
    holder = {}

    def loss(view):
        total, metrics = move.loss(view)
        term = holder.setdefault("term", next(k for k in metrics if k != "loss"))
        nan = jnp.where(view.round >= after_round, jnp.nan, 0.0)
        return total + nan, {**metrics, term: metrics[term] + nan}

    return dataclasses.replace(move, loss=loss), holder


FAST_FORMS = ("teacher", "distill")  # the other forms' runs (and their teachers') are the slow tier's


@pytest.mark.parametrize(
    "form", [f if f in FAST_FORMS else pytest.param(f, marks=pytest.mark.slow) for f in forms.FORMS]
)
def test_a_non_finite_term_stops_the_run_naming_step_player_and_term(form, golden_runs, tmp_path):
    """From the second epoch on, the first move of the last phase produces NaN: the run stops at its
    first round with one line that names the step, the epoch, the player and the term (not the total),
    and the first epoch's checkpoint and metrics stay as they were."""
    out = golden_runs[1].play_before(form)
    config, dataset = next((c, d) for f, c, d in forms.plan(out) if f == form)
    game = config.build(dataset)
    last = game.phases[-1]
    first_epoch = game.first_epoch(len(game.phases) - 1)
    bad_epoch = max(first_epoch, 1)  # 0-based: the first epoch of the last phase, the second at least
    bad_round = bad_epoch * game.source.steps_per_epoch
    move, holder = poisoned(last.moves[0], bad_round)
    game = dataclasses.replace(
        game, phases=(*game.phases[:-1], dataclasses.replace(last, moves=(move, *last.moves[1:])))
    )
    with pytest.raises(FloatingPointError) as error:
        fit(game, tmp_path / "run", devices=jax.devices()[:1], progress=False)
    term = last.moves[0].prefix + holder["term"]
    expected = (
        f"non-finite {term} at step {bad_round + 1} (epoch {bad_epoch + 1}) of player "
        f"{last.moves[0].player}; stopped; the last good checkpoint (epoch {bad_epoch}) is kept in "
        f"{tmp_path / 'run'}"
    )
    assert str(error.value) == expected
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [str(bad_epoch)]
    assert len(RunDir(tmp_path / "run").metrics()) == bad_epoch


# ---------------------------------------------------------------- the optimizer


def one_update(optimizer: Optimizer, params, grads, steps: int = 1):
    tx = optimizer.transformation()
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def test_sgd_weight_decay_is_coupled_and_adams_is_decoupled():
    """SGD adds wd * w to the gradient before momentum (torch.optim.SGD); Adam adds it to Adam's
    direction (AdamW). Two steps of each against a numpy reference."""
    w0, g = np.array([1.0, -2.0, 0.5], np.float32), np.array([0.1, 0.3, -0.2], np.float32)
    lr, wd, mu = 0.1, 0.01, 0.9
    w, _ = one_update(
        Optimizer("sgd", lr, momentum=mu, nesterov=True, weight_decay=wd), jnp.array(w0), jnp.array(g), 2
    )
    w1_buf = g + wd * w0
    w1 = w0 - lr * (g + wd * w0 + mu * w1_buf)
    buf2 = (g + wd * w1) + mu * w1_buf
    np.testing.assert_allclose(w, w1 - lr * (g + wd * w1 + mu * buf2), rtol=1e-6)

    w, _ = one_update(Optimizer("adam", lr, weight_decay=wd), jnp.array(w0), jnp.array(g), 1)
    direction = g / (np.abs(g) + 1e-8)  # m_hat / (sqrt(v_hat) + eps) after one step
    np.testing.assert_allclose(w, w0 - lr * (direction + wd * w0), rtol=1e-5)


def test_momentum_ramp_with_dampening_follows_hinton_2012s_update():
    """dw <- mu(t) dw - (1 - mu(t)) lr g with mu rising linearly 0.5 -> 0.9 over 4 steps (plain
    momentum): three steps against a numpy reference."""
    w0, g = np.array([1.0, -2.0], np.float32), np.array([0.3, -0.1], np.float32)
    lr = 2.0
    optimizer = Optimizer(
        "sgd",
        lr,
        nesterov=False,
        momentum=0.9,
        momentum_schedule=optim.momentum_ramp(0.5, 0.9, 4),
        dampening=True,
    )
    w, _ = one_update(optimizer, jnp.array(w0), jnp.array(g), 3)
    buf, expected = np.zeros(2), w0.astype(np.float64)
    for t in range(3):
        mu = 0.5 + 0.4 * t / 4
        buf = mu * buf + (1 - mu) * g
        expected = expected - lr * buf
    np.testing.assert_allclose(w, expected, rtol=1e-6)


def test_exponential_schedule_decays_once_per_epoch():
    multiplier = optim.schedule("exponential", 100, decay=0.5, steps_per_epoch=10)
    np.testing.assert_allclose([float(multiplier(t)) for t in (0, 9, 10, 25)], [1.0, 1.0, 0.5, 0.25])


def test_the_learning_rate_is_state_and_changing_it_does_not_recompile():
    optimizer = Optimizer("sgd", 0.1, momentum=0.0)
    tx = optimizer.transformation()
    params = {"w": jnp.ones(3)}

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, grads):
        return tx.update(grads, state, params)

    state = tx.init(params)
    updates, _ = step(state, {"w": jnp.ones(3)})
    np.testing.assert_allclose(updates["w"], -0.1)
    state = optax.tree_utils.tree_set(state, learning_rate=jnp.float32(0.5))
    updates, _ = step(state, {"w": jnp.ones(3)})
    np.testing.assert_allclose(updates["w"], -0.5)
    assert float(optimizer.learning_rate_at(state, jnp.int32(0))) == 0.5


def test_trains_freezes_the_other_parameters_even_under_weight_decay():
    optimizer = Optimizer("sgd", 0.1, weight_decay=0.5, trains=lambda path: path[0] == "moving")
    params = {"moving": jnp.ones(2), "frozen": jnp.ones(2)}
    after, _ = one_update(optimizer, params, {"moving": jnp.ones(2), "frozen": jnp.ones(2)})
    np.testing.assert_array_equal(after["frozen"], params["frozen"])
    assert np.all(np.asarray(after["moving"]) < 1.0)


def test_gradient_clipping_bounds_the_global_norm():
    grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([12.0])}  # global norm 13
    after, _ = one_update(
        Optimizer("sgd", 1.0, momentum=0.0, clip_norm=1.0), {"a": jnp.zeros(2), "b": jnp.zeros(1)}, grads
    )
    np.testing.assert_allclose(
        np.concatenate([after["a"], after["b"]]), -np.array([3, 4, 12]) / 13, rtol=1e-6
    )


def test_a_stacked_player_keeps_one_optimizer_state_per_peer():
    """Global-norm clipping of a stacked player clips each peer by its own norm: a huge gradient of
    peer 1 does not shrink peer 0's update."""
    peers = [nnx.Linear(2, 1, rngs=nnx.Rngs(k)) for k in range(2)]
    player = Player.stack(peers, Optimizer("sgd", 1.0, momentum=0.0, clip_norm=1.0))
    grads = jax.tree.map(
        lambda p: jnp.stack([jnp.full(p.shape[1:], 0.1), jnp.full(p.shape[1:], 100.0)]), player.params
    )
    after, learning_rate = player.update(grads, player.rest)
    step0 = jax.tree.map(lambda a, b: a[0] - b[0], after.params, player.params)
    chex.assert_trees_all_close(
        step0, jax.tree.map(lambda g: -g[0], grads), rtol=1e-6
    )  # norm 0.17 < 1: unclipped
    assert int(after.step) == 1 and float(learning_rate) == 1.0


def test_max_norm_projects_each_units_incoming_weights_and_nothing_else():
    from jdistill.train.optim import max_norm

    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(6, 4)).astype(np.float32) * np.array([0.1, 1.0, 3.0, 10.0], np.float32)
    conv = rng.normal(size=(3, 3, 2, 5)).astype(np.float32) * 4
    params = {"dense": {"kernel": kernel, "bias": np.full(4, 50.0, np.float32)}, "conv": {"kernel": conv}}
    out = jax.device_get(max_norm(params, 2.0))
    norms = np.linalg.norm(kernel, axis=0)  # numpy reference: column j times min(1, 2 / ||w_j||)
    np.testing.assert_allclose(out["dense"]["kernel"], kernel * np.minimum(1.0, 2.0 / norms), rtol=1e-6)
    conv_norms = np.sqrt((conv**2).sum(axis=(0, 1, 2)))
    np.testing.assert_allclose(out["conv"]["kernel"], conv * np.minimum(1.0, 2.0 / conv_norms), rtol=1e-6)
    np.testing.assert_array_equal(out["dense"]["bias"], params["dense"]["bias"])


def test_schedules_give_the_multiplier_of_each_step():
    from jdistill.train.optim import schedule

    at = lambda s, steps: [float(s(t)) for t in steps]
    np.testing.assert_allclose(at(schedule("cosine", 2), (0, 1, 2)), [1.0, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(at(schedule("constant", 2), (0, 5)), [1.0, 1.0])
    np.testing.assert_allclose(
        at(schedule("step", 3, milestones=[1, 2]), (0, 1, 2)), [1.0, 0.1, 0.01], rtol=1e-6
    )
    np.testing.assert_allclose(
        at(schedule("cosine", 3, warmup_steps=2), (0, 1, 2, 3)), [0.0, 0.5, 1.0, 0.0], atol=1e-6
    )
    with pytest.raises(ValueError, match="schedule: choose"):
        schedule("linear", 3)


# ---------------------------------------------------------------- rounds and calls


def test_calls_run_steps_per_call_rounds_cut_where_a_hook_is_due():
    assert _calls(0, 10, 1, 0) == [(i, 1) for i in range(10)]
    assert _calls(20, 10, 4, 0) == [(20, 4), (24, 4), (28, 2)]
    assert _calls(20, 10, 16, 0) == [(20, 10)]
    assert _calls(20, 10, 16, 3) == [(20, 1), (21, 3), (24, 3), (27, 3)]


def test_hyperparameters_and_the_learning_rate_change_without_recompiling(golden_runs, digits):
    out = golden_runs[1].play_before("tiny_teacher")  # the teacher and the distilled student
    game = forms.distill_config(str(out / "teacher")).build(digits)
    mesh = parallel.make_mesh(jax.devices()[:1])
    rounds = make_rounds(game, 0, 1, mesh, cached=False, owners={})
    on_mesh = lambda tree: jax.device_put(tree, parallel.replicated(mesh))  # as fit places them
    data, order = on_mesh(game.source.arrays()), game.source.order(game.seed, 0)
    players, teachers = on_mesh(jax.tree.map(jnp.array, dict(game.players))), on_mesh(dict(game.teachers))
    kd = []
    for temperature, lr in ((1.0, 0.1), (8.0, 0.01), (20.0, 0.0)):
        hparams = on_mesh({**game.hparams, "temperature": jnp.float32(temperature)})
        student = players["student"]
        opt_state = on_mesh(optax.tree_utils.tree_set(student.opt_state, learning_rate=jnp.float32(lr)))
        players["student"] = student.replace(opt_state=opt_state)
        multiplier = float(student.optimizer.schedule(student.step))
        players, metrics = rounds(players, teachers, data, order, 0, 0, hparams)
        kd.append(float(metrics["loss/kd"][0]))
        assert float(metrics["learning_rate"][0]) == pytest.approx(lr * multiplier)
    assert len(set(kd)) == 3 and rounds._cache_size() == 1


def test_frozen_outputs_are_computed_once_unless_the_batches_are_augmented(golden_runs, digits):
    """The teacher's outputs on every training image, as the rounds would compute them; the features
    no method reads keep their names without values; none with augmentation."""
    out = golden_runs[1].play_before("tiny_teacher")  # the teacher and the distilled student
    game = forms.distill_config(str(out / "teacher")).build(digits)
    teachers = dict(game.teachers)
    logits, features = cache_frozen_outputs(game, teachers, parallel.make_mesh(jax.devices()[:1]))
    expected_logits, expected_features = game.frozen_outputs(teachers, jnp.asarray(game.source.images()))
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-6)
    assert logits.shape == (len(digits.y_train), 10)
    read = {k for k, v in features.items() if v is not None}
    assert read == {"embedding"} and set(features) == set(expected_features)  # FitNet reads the embedding
    augmented = dataclasses.replace(game, source=dataclasses.replace(game.source, max_shift=1))
    assert cache_frozen_outputs(augmented, teachers, parallel.make_mesh(jax.devices()[:1])) is None


@pytest.mark.parametrize("devices", [1, pytest.param(4, marks=pytest.mark.slow)])  # multi-device: slow
def test_evaluation_is_exact_with_a_padded_last_batch(devices, golden_runs, digits):
    out = golden_runs[1].play_before("tiny_teacher")  # the teacher and the distilled student
    teacher, student = load_teacher(str(out / "teacher"), digits), load_teacher(str(out / "distill"), digits)
    assert len(digits.y_test) % 500 != 0  # the last evaluation batch is padded
    evaluate = ClassifierEvaluator(digits, teacher="teacher", logits=lambda m, x: m.model(x, train=False)[0])
    mesh = parallel.make_mesh(jax.devices()[:devices])
    players, teachers = jax.device_put(  # as fit places them
        ({"student": Player.create(student.frozen.module(), Optimizer())}, {"teacher": teacher.frozen}),
        parallel.replicated(mesh),
    )
    result = evaluate(players, teachers, mesh)
    predict = lambda t: np.asarray(
        jnp.argmax(t.frozen.module().model(jnp.asarray(digits.x_test), train=False)[0], -1)
    )
    assert result["accuracy"] == pytest.approx(np.mean(predict(student) == digits.y_test), abs=1e-6)
    assert result["agreement"] == pytest.approx(np.mean(predict(student) == predict(teacher)), abs=1e-6)


def test_fully_sharded_splits_the_largest_divisible_axis_and_replicates_the_rest():
    mesh = parallel.make_mesh(jax.devices()[:4])
    tree = {
        "kernel": np.zeros((64, 32)),
        "odd": np.zeros((63, 33)),
        "bias": np.zeros(32),
        "wide": np.zeros((2, 4096)),
    }
    specs = {k: tuple(s.spec) for k, s in parallel.fully_sharded(tree, mesh).items()}
    assert specs == {"kernel": ("data", None), "odd": (), "bias": (), "wide": (None, "data")}
    one = parallel.make_mesh(jax.devices()[:1])
    assert all(tuple(s.spec) == () for s in jax.tree.leaves(parallel.fully_sharded(tree, one)))
    placed = parallel.place(tree["kernel"], parallel.fully_sharded(tree, mesh)["kernel"])
    assert {shard.data.shape for shard in placed.addressable_shards} == {(16, 32)}  # 1/4 on each device


@pytest.mark.slow  # also checked across 2 processes in tests/test_distributed.py
def test_a_sharded_teacher_gives_the_results_of_a_replicated_one(golden_runs, digits, tmp_path):
    out = golden_runs[1].play_before("tiny_teacher")  # the teacher and the distilled student
    config = forms.distill_config(str(out / "teacher")).replace(epochs=2)
    teacher = dict(config.build(digits).teachers)
    mesh = parallel.make_mesh(jax.devices()[:4])
    assert any(tuple(s.spec) for s in jax.tree.leaves(parallel.fully_sharded(teacher, mesh)))
    runs = {shard: tmp_path / str(shard) for shard in (False, True)}
    for shard, run in runs.items():
        fit(config, run, dataset=digits, devices=jax.devices()[:4], progress=False, shard_teachers=shard)
    replicated, sharded = (RunDir(run).metrics() for run in runs.values())
    for a, b in zip(replicated, sharded, strict=True):
        keys = [k for k in a if k != "seconds" and isinstance(a[k], float)]
        np.testing.assert_allclose([a[k] for k in keys], [b[k] for k in keys], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- run directories


def test_a_configuration_that_cannot_start_leaves_no_run_directory(tmp_path, digits):
    with pytest.raises(ValueError, match="unknown model"):
        fit(
            RunConfig(model="mlp_nope", dataset="digits", epochs=1),
            tmp_path / "run",
            dataset=digits,
            progress=False,
        )
    assert not (tmp_path / "run").exists()


def test_a_finished_teacher_of_jdistill_0_1_still_teaches(tmp_path, digits):
    teacher = load_teacher(str(FIXTURES / "teacher_v0_1"), digits)
    assert teacher.config.model.name == "mlp32" and RunDir(FIXTURES / "teacher_v0_1").format == 1
    config = RunConfig(
        model="mlp32",
        dataset="digits",
        epochs=1,
        batch_size=64,
        teacher=str(FIXTURES / "teacher_v0_1"),
        methods=("ce", "kd"),
    )
    summary = fit(config, tmp_path / "student", dataset=digits, devices=jax.devices()[:1], progress=False)
    # The teacher's own test accuracy, recorded by 0.1, is what the restored weights give.
    evaluate = ClassifierEvaluator(digits, logits=lambda m, x: m.model(x, train=False)[0])
    restored = evaluate(
        {"student": Player.create(teacher.frozen.module(), Optimizer())},
        {},
        parallel.make_mesh(jax.devices()[:1]),
    )
    assert (
        restored["accuracy"]
        == json.loads((FIXTURES / "teacher_v0_1" / "summary.json").read_text())["test/accuracy"]
    )
    assert 0 <= summary["test/agreement"] <= 1


def test_an_unfinished_run_of_jdistill_0_1_is_refused_in_one_line_naming_the_version(tmp_path, capsys):
    run = tmp_path / "old"
    shutil.copytree(FIXTURES / "unfinished_v0_1", run)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train-teacher",
                "--model",
                "mlp32",
                "--dataset",
                "digits",
                "--epochs",
                "2",
                "--batch-size",
                "64",
                "--seed",
                "1",
                "--out",
                str(run),
                "--quiet",
            ]
        )
    message = str(exit_info.value)
    assert re.fullmatch(
        r"jdistill train-teacher: error: \S+ holds an unfinished run of jdistill 0\.1\.0 "
        r"\(checkpoint format 1\), which jdistill 0\.2\.0 cannot resume; start it again in another "
        r"--out directory \(its finished runs "
        r"still load as teachers\)",
        message,
    ), message
    assert (run / "checkpoints" / "1").exists()  # nothing of the user's is touched


def test_an_unfinished_run_from_before_the_parameter_average_resumes_exactly(digits, tmp_path):
    """Checkpoints written before players had an ``average`` field (jdistill at commit bac7d42,
    2026-11-30: ``train-teacher --model mlp32 --dataset digits --epochs 3 --batch-size 64 --seed 1``,
    stopped after epoch 2's checkpoint) resume under today's player, and epoch 3 trains to what
    that version recorded for it, float for float."""
    fixtures = pathlib.Path(__file__).parent / "fixtures" / "runs_before_average"
    run = tmp_path / "old"
    shutil.copytree(fixtures / "unfinished", run)
    config = RunConfig(model="mlp32", dataset="digits", epochs=3, batch_size=64, seed=1)
    fit(config, run, dataset=digits, devices=jax.devices()[:1], progress=False)
    recorded = json.loads((fixtures / "epoch_3_as_recorded.json").read_text())
    resumed = RunDir(run).metrics()
    assert [m["epoch"] for m in resumed] == [1, 2, 3]
    strip = lambda record: {k: v for k, v in record.items() if k != "seconds"}
    assert strip(resumed[2]) == strip(recorded)
    assert (run / "checkpoints" / "3").is_dir()


def test_a_checkpoint_of_another_structure_is_still_refused_with_orbax_s_error(tmp_path):
    """The retry for checkpoints from before a player's later fields does not hide a real mismatch:
    the fixture's mlp32 (one hidden layer) restored into a player of mlp1200 (two) raises orbax's
    own error."""
    from jdistill.models import create_model
    from jdistill.train import checkpoint

    run = tmp_path / "old"
    shutil.copytree(pathlib.Path(__file__).parent / "fixtures" / "runs_before_average" / "unfinished", run)
    other = create_model("mlp1200", (8, 8, 1), 10, rngs=nnx.Rngs(0))
    like = {"student": Player.create(other, Optimizer(learning_rate=0.05))}
    with pytest.raises(ValueError, match="tree structures do not match"):
        checkpoint.restore(checkpoint.manager(run), like)

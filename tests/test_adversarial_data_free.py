"""Data-free distillation (DFAD, DAFL, ZSKT) as a game of the training engine: the generator, the
configuration's paper defaults and errors, which player each move changes, where the generator's
gradient flows, one round of each method's alternation, the run's sample grids and class
histograms, the ``data-free`` command and experiments/data_free_mnist.py, on scikit-learn's 8x8
digits with a small CNN teacher.

What the engine does for every form (resuming after a lost epoch, checkpoint contents, the
non-finite rule, 1 vs 4 devices, steps_per_call, golden metrics) is tested in tests/test_engine.py
and tests/test_golden.py, not here."""

import contextlib
import dataclasses
import functools
import io
import json
import pathlib
import runpy
import shutil
import sys
import warnings
from types import SimpleNamespace

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from idx_files import write_mnist_like

from jdistill import cli
from jdistill.adversarial import data_free as df
from jdistill.adversarial import inspection
from jdistill.adversarial.data_free import DataFreeConfig
from jdistill.data import load_digits
from jdistill.models.generator import Generator
from jdistill.train import RunConfig, RunDir, View, fit, fit_cohort, groups, load_teacher, make_mesh
from jdistill.train.game import round_key
from jdistill.train.parallel import replicated
from jdistill.train.rounds import make_rounds, play_move, round_batch

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "data_free_mnist.py"
BATCH = 32
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits():
    return df.teacher_dataset(load_digits())


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("teacher")
    fit(RunConfig(model="small_cnn", dataset="digits", epochs=1, batch_size=32, learning_rate=0.1), out,
        dataset=digits, progress=False)  # fmt: skip
    return str(out)


def config(teacher_dir, **changes) -> DataFreeConfig:
    base = {"teacher": teacher_dir, "dataset": "digits", "model": "small_cnn", "batch_size": BATCH,
            "generator_width": 4, "iterations": 4, "iterations_per_epoch": 2, "samples_every": 2,
            "histogram_samples": 40, "at_features": ("conv1", "conv2"), "activation_feature": "embedding"}  # fmt: skip
    return DataFreeConfig(**{**base, **changes})


# Student steps per round in the games below: fewer than DFAD's 5 and ZSKT's 10, to keep the
# compilation of a round short; the papers' numbers are checked on the configuration.
STUDENT_STEPS = {"dfad": 2, "dafl": 1, "zskt": 2}


@pytest.fixture(scope="module")
def games(teacher_dir, digits):
    """Each method's game at step 0 (the small CNN student has neither dropout nor BatchNorm)."""
    return {
        method: df.build(config(teacher_dir, method=method, student_steps=STUDENT_STEPS[method]), digits)
        for method in df.DATA_FREE_METHODS
    }


def move_of(game, player):
    (move,) = [m for m in game.phases[0].moves if m.player == player]
    return move


@pytest.fixture(scope="module")
def moved(games):
    """``moved(method) -> {player: (players, metrics)}``: each player's move alone, from the game's
    players at step 0 on round 0's batch (one compilation per method)."""

    @functools.cache
    def play(method):
        game = games[method]
        both = jax.jit(lambda players, batch: {p: play_move(game, players, move_of(game, p), batch)
                                               for p in ("student", "generator")})  # fmt: skip
        return both(dict(game.players), round_batch(game))

    return play


def host(tree):
    return jax.tree.map(np.array, tree)


def state(player):
    """A player's arrays, copied to the host."""
    return host((player.params, player.rest, player.opt_state, player.step))


def all_changed(before, after) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after)))


# ---------------------------------------------------------------- generator and configuration


def test_generator_makes_standardised_images_of_the_papers_sizes():
    """The generator makes [B, H, W, C] images of the papers' sizes, standardised per channel over
    the batch by its last BatchNorm (no affine)."""
    z = jax.random.normal(jax.random.key(1), (16, 10))
    make = lambda shape: lambda z: Generator(shape, noise_dim=10, width=4, rngs=nnx.Rngs(0))(z)
    assert jax.eval_shape(make((28, 28, 1)), z).shape == (16, 28, 28, 1)
    images = jax.jit(make((32, 32, 3)))(z)  # built inside jit: one compilation
    chex.assert_shape(images, (16, 32, 32, 3))
    chex.assert_trees_all_close(images.mean(axis=(0, 1, 2)), jnp.zeros(3), atol=1e-4)
    chex.assert_trees_all_close(images.std(axis=(0, 1, 2)), jnp.ones(3), atol=1e-2)


def test_generator_refuses_bad_shapes():
    """A non-square image side or one not divisible by 4, and noise of the wrong width, are refused."""
    with pytest.raises(ValueError, match="divisible by 4"):
        jax.eval_shape(lambda: Generator((30, 30, 1), width=4, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="divisible by 4"):
        jax.eval_shape(lambda: Generator((28, 32, 1), width=4, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"noise must be \[batch, 10\], got \(4, 7\)"):
        generate = lambda z: Generator((8, 8, 1), noise_dim=10, width=4, rngs=nnx.Rngs(0))(z)
        jax.eval_shape(generate, jnp.zeros((4, 7)))


def test_config_takes_each_papers_settings_unless_given():
    """Optimizers, learning rates, BN epsilon and alternation default to each paper's."""
    assert df.DATA_FREE_METHODS == ("dfad", "dafl", "zskt")
    assert df.ALTERNATIONS == {
        "dfad": df.Alternation(student_steps=5, generator_first=False, same_noise=False),
        "dafl": df.Alternation(student_steps=1, generator_first=False, same_noise=True),
        "zskt": df.Alternation(student_steps=10, generator_first=True, same_noise=True),
    }
    dfad = DataFreeConfig(teacher="t")
    student, generator = dfad.student_optimizer, dfad.generator_optimizer
    assert (student.name, student.learning_rate, student.weight_decay, dfad.student_steps) == (
        "sgd",
        0.01,
        1e-4,
        5,
    )
    assert (student.momentum, student.nesterov, student.schedule) == (0.9, False, "constant")
    assert (generator.name, generator.learning_rate, dfad.generator_bn_epsilon) == ("adam", 1e-3, 1e-5)
    assert dfad.alternation == df.ALTERNATIONS["dfad"]
    dafl = DataFreeConfig(teacher="t", method="dafl")
    assert (dafl.student_optimizer.name, dafl.student_optimizer.learning_rate) == ("adam", 2e-3)
    assert (dafl.generator_optimizer.learning_rate, dafl.student_steps) == (0.2, 1)
    assert dafl.generator_bn_epsilon == 0.8
    assert dafl.alternation == df.ALTERNATIONS["dafl"]
    zskt = DataFreeConfig(teacher="t", method="zskt", student_steps=3, student_learning_rate=0.5)
    assert zskt.alternation == df.Alternation(student_steps=3, generator_first=True, same_noise=True)
    assert (zskt.student_optimizer.name, zskt.student_optimizer.learning_rate) == ("adam", 0.5)
    assert zskt.generator_optimizer.learning_rate == 1e-3


def test_former_field_names_still_build_the_same_configuration_with_a_warning():
    """jdistill 0.2's teacher_dir, student, student_lr, generator_lr and grad_clip."""
    with pytest.warns(DeprecationWarning) as warned:
        old = DataFreeConfig(
            teacher_dir="t", student="lenet5", student_lr=0.5, generator_lr=0.1, grad_clip=5.0
        )
    assert [str(w.message) for w in warned] == [
        "DataFreeConfig: teacher_dir is deprecated; use teacher",
        "DataFreeConfig: student is deprecated; use model",
        "DataFreeConfig: student_lr is deprecated; use student_learning_rate",
        "DataFreeConfig: generator_lr is deprecated; use generator_learning_rate",
        "DataFreeConfig: grad_clip is deprecated; use student_clip_norm and generator_clip_norm",
    ]
    new = DataFreeConfig(
        teacher="t",
        model="lenet5",
        student_learning_rate=0.5,
        generator_learning_rate=0.1,
        student_clip_norm=5.0,
        generator_clip_norm=5.0,
    )
    assert old == new


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"method": "gan"}, "unknown data-free method 'gan'; choose one of dfad, dafl, zskt"),
        ({"iterations": 10, "iterations_per_epoch": 3}, "must be a multiple of iterations_per_epoch"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"student_steps": 0}, "student_steps must be at least 1"),
        ({"student_optimizer": "rmsprop"}, "optimizer: choose 'sgd' or 'adam', got 'rmsprop'"),
        ({"generator_schedule": "linear"}, "schedule: choose 'cosine', 'constant', 'step' or 'exponential'"),
        ({"init": "xavier"}, "init: choose 'flax' or 'torch', got 'xavier'"),
    ],
)
def test_config_errors_name_the_field(changes, message):
    """An invalid configuration is refused with a message naming the field."""
    with pytest.raises(ValueError, match=message):
        DataFreeConfig(teacher="t", **changes)


# ---------------------------------------------------------------- moves


MOVE_TERMS = {
    "dfad": ({"l1"}, {"l1"}),
    "dafl": ({"kl"}, {"one_hot", "information_entropy", "activation"}),
    "zskt": ({"kl", "at"}, {"kl"}),
}


@pytest.mark.parametrize("method", df.DATA_FREE_METHODS)
def test_each_move_changes_only_its_own_player(method, games, moved):
    """The student's move updates every student parameter and leaves the generator and the teacher
    bit-identical; the generator's move updates every generator parameter and leaves the student
    and the teacher bit-identical; each reports its method's terms."""
    game = games[method]
    teacher = host(game.teachers["teacher"].variables)
    student, generator = state(game.players["student"]), state(game.players["generator"])
    results = moved(method)
    student_terms, generator_terms = MOVE_TERMS[method]

    after, metrics = results["student"]
    assert all_changed(student[0], host(after["student"].params))
    assert int(after["student"].step) == 1
    chex.assert_trees_all_equal(state(after["generator"]), generator)
    assert set(metrics) == {"loss", "agreement", "learning_rate", *student_terms}
    chex.assert_tree_all_finite(metrics)

    after, metrics = results["generator"]
    assert all_changed(generator[0], host(after["generator"].params))  # every parameter gets a gradient
    assert int(after["generator"].step) == 1
    chex.assert_trees_all_equal(state(after["student"]), student)
    assert set(metrics) == {"loss", "learning_rate", *generator_terms}
    chex.assert_tree_all_finite(metrics)
    chex.assert_trees_all_equal(host(game.teachers["teacher"].variables), teacher)


def test_dafl_generator_gradient_flows_through_the_teacher(games):
    """DAFL's generator objective reads the teacher's outputs on the generated images and nothing
    of the student, so its gradient reaches the generator only through the teacher: it is
    non-zero for every generator parameter (a stopped teacher would leave none)."""
    game = games["dafl"]
    players, batch = dict(game.players), round_batch(game)
    move = move_of(game, "generator")

    def objective(params, student_params):
        with_student = {**players, "student": players["student"].replace(params=student_params)}
        view = View(with_student, "generator", params, dict(game.teachers), batch, dict(game.hparams),
                    round_key(game.seed, 0), jnp.int32(0), 0, jnp.float32(0))  # fmt: skip
        return move.loss(view)[0]

    gradients = jax.jit(jax.grad(objective, argnums=(0, 1)))
    to_generator, to_student = gradients(players["generator"].params, players["student"].params)
    assert all(float(jnp.abs(leaf).max()) > 0 for leaf in jax.tree.leaves(to_generator))
    assert not any(np.any(leaf) for leaf in jax.tree.leaves(to_student))


def test_dafl_weights_scale_each_term_of_the_generator_objective(teacher_dir, digits, games):
    """``one_hot_weight``, ``information_entropy_weight`` and ``activation_weight`` multiply their
    terms (the defaults: the reference's 1, 5 in log10 units, 0.1), and the objective is their sum."""
    game = games["dafl"]
    view = View(dict(game.players), "generator", game.players["generator"].params, dict(game.teachers),
                round_batch(game), dict(game.hparams), round_key(game.seed, 0), jnp.int32(0), 0,
                jnp.float32(0))  # fmt: skip
    weights = {"one_hot_weight": 2.0, "information_entropy_weight": 10.0, "activation_weight": 0.5}
    default_config, weighted_config = (
        config(teacher_dir, method="dafl"),
        config(teacher_dir, method="dafl", **weights),
    )
    _, default = df.generator_loss(default_config, view)
    loss, weighted = df.generator_loss(weighted_config, view)
    scale = {"one_hot": 2.0, "information_entropy": 10.0 / (5.0 / np.log(10.0)), "activation": 5.0}
    for term, factor in scale.items():
        np.testing.assert_allclose(weighted[term], factor * default[term], rtol=1e-5)
    np.testing.assert_allclose(loss, sum(weighted[t] for t in scale), rtol=1e-6)
    assert default_config.information_entropy_weight == pytest.approx(5.0 / np.log(10.0))


def test_dfad_generator_plays_the_negative_of_the_students_objective(moved):
    """On the same players and noise (a student without dropout or BatchNorm), DFAD's generator
    loss is the negative of the student's."""
    (_, s_metrics), (_, g_metrics) = moved("dfad")["student"], moved("dfad")["generator"]
    assert float(s_metrics["loss"]) > 0
    chex.assert_trees_all_close(g_metrics["loss"], -s_metrics["loss"], rtol=1e-5)
    chex.assert_trees_all_close(g_metrics["l1"], -s_metrics["l1"], rtol=1e-5)


@pytest.mark.parametrize("method", df.DATA_FREE_METHODS)
def test_one_round_plays_the_methods_alternation(method, games):
    """A round plays the method's moves in its order (ZSKT's generator first), the student's
    ``student_steps`` times on fresh noise (DFAD) or on the generator's noise (DAFL, ZSKT); the
    compiled round leaves the student ``student_steps`` steps on and the generator one, and logs
    each move's terms under its player's prefix."""
    game = games[method]
    alternation = game.config.alternation
    assert alternation == dataclasses.replace(df.ALTERNATIONS[method], student_steps=STUDENT_STEPS[method])
    (phase,) = game.phases
    order = ("generator", "student") if alternation.generator_first else ("student", "generator")
    assert tuple(m.player for m in phase.moves) == order
    student, generator = move_of(game, "student"), move_of(game, "generator")
    assert (student.repeats, student.fresh_batch, student.prefix) == (
        alternation.student_steps, not alternation.same_noise, "student/")  # fmt: skip
    assert (generator.repeats, generator.fresh_batch, generator.prefix) == (1, False, "generator/")

    mesh = make_mesh()
    rounds = make_rounds(game, 0, 1, mesh, cached=False, owners={})
    # As fit does: players (copied: they are donated) and teachers replicated over the mesh.
    copies = jax.tree.map(jnp.copy, (dict(game.players), dict(game.teachers)))
    players, teachers = jax.device_put(copies, replicated(mesh))
    players, metrics = rounds(players, teachers, {}, None, 0, 0, {})
    assert (int(players["student"].step), int(players["generator"].step)) == (alternation.student_steps, 1)
    student_terms, generator_terms = MOVE_TERMS[method]
    expected = {"student/loss", "student/agreement", "student/learning_rate", "generator/loss",
                "generator/learning_rate", *("student/" + t for t in student_terms),
                *("generator/" + t for t in generator_terms)}  # fmt: skip
    assert set(metrics) == expected
    chex.assert_tree_all_finite(metrics)


# ---------------------------------------------------------------- runs


def test_a_missing_teacher_feature_is_named(teacher_dir, digits):
    """A feature the method reads but the teacher lacks is named, with the teacher's features."""
    message = "the teacher has no feature '{}' \\(method {}\\); its features: conv1, conv2, embedding"
    with pytest.raises(ValueError, match=message.format("fc1", "dafl")):
        df.build(config(teacher_dir, method="dafl", activation_feature="fc1"), digits)
    with pytest.raises(ValueError, match=message.format("conv3", "zskt")):
        df.build(config(teacher_dir, method="zskt", at_features=("conv2", "conv3")), digits)


def kernels(module) -> dict:
    """``{layer path: (kernel, bias)}`` of every dense and convolution layer of ``module``."""
    return {path: (np.asarray(m.kernel[...]), np.asarray(m.bias[...]))
            for path, m in nnx.iter_modules(module) if hasattr(m, "kernel")}  # fmt: skip


def test_torch_init_draws_the_student_and_the_generator_as_pytorch(teacher_dir, digits, games):
    """``init="torch"``: every kernel and bias of the student and the generator within PyTorch's
    bound ``1 / sqrt(fan_in)``, the generator's last convolution (3x3 from width 4) filling it; the
    default (``flax``) draws LeCun-normal kernels and zero biases."""
    game = df.build(config(teacher_dir, init="torch"), digits)
    assert game.config.model.init == "torch" and games["dfad"].config.model.init == "flax"
    for player in ("student", "generator"):
        layers = kernels(game.players[player].module())
        assert len(layers) == {"student": 4, "generator": 4}[player]
        for path, (kernel, bias) in layers.items():
            bound = 1 / np.sqrt(np.prod(kernel.shape[:-1]))
            assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound, path
            assert np.all(bias != 0), path
    torch_out = kernels(game.players["generator"].module())[("conv_out",)][0]
    flax_out, flax_bias = kernels(games["dfad"].players["generator"].module())[("conv_out",)]
    assert np.abs(torch_out).max() > 0.85 / np.sqrt(3 * 3 * 4)
    assert not np.any(flax_bias)
    assert np.abs(flax_out).max() > 1 / np.sqrt(3 * 3 * 4)  # LeCun normal: sqrt(3) x the spread


def test_paper_teachers_are_the_reference_codes_recipes():
    """DFAD's teacher (also ZSKT's): SGD 0.01, plain momentum 0.9, coupled weight decay 1e-4,
    batch 256, constant rate, 10 epochs; DAFL's: Adam 1e-3, batch 256, constant, 9 epochs; both
    LeNet-5 on MNIST at 32x32 with PyTorch's initialisation."""
    dfad = df.paper_teacher("dfad", data_dir="d", seed=3)
    assert (dfad.model.name, dfad.data.dataset, dfad.data.data_dir, dfad.loop.seed, dfad.distill.methods) == (
        "lenet5",
        "mnist",
        "d",
        3,
        ("ce",),
    )
    assert (dfad.optimizer.name, dfad.optimizer.learning_rate, dfad.optimizer.momentum, dfad.optimizer.nesterov, dfad.optimizer.weight_decay) == (
        "sgd", 0.01, 0.9, False, 1e-4)  # fmt: skip
    assert (dfad.loop.batch_size, dfad.optimizer.schedule, dfad.loop.epochs, dfad.model.init) == (
        256,
        "constant",
        10,
        "torch",
    )
    dafl = df.paper_teacher("dafl")
    assert (dafl.optimizer.name, dafl.optimizer.learning_rate, dafl.optimizer.weight_decay, dafl.loop.batch_size, dafl.optimizer.schedule) == (
        "adam", 1e-3, 0.0, 256, "constant")  # fmt: skip
    assert (dafl.loop.epochs, dafl.model.init) == (9, "torch")
    assert df.paper_teacher("zskt") == df.paper_teacher("dfad") and df.PAPER_TEACHER_IMAGE_SIZE == 32
    with pytest.raises(ValueError, match="unknown data-free method 'gan'"):
        df.paper_teacher("gan")


def test_a_teacher_refuses_images_of_another_size(teacher_dir, digits, tmp_path):
    """A teacher's summary records the input it was trained on; a run at another size (the small
    CNN's parameters fit any size) is refused naming both, before a directory is made; a teacher
    that predates the record loads at any size, silently."""
    assert json.loads((pathlib.Path(teacher_dir) / "summary.json").read_text())["input_shape"] == [8, 8, 1]
    larger = df.teacher_dataset(digits, 16)
    message = f"teacher {teacher_dir} was trained on 8x8x1 images, this run's are 16x16x1: "
    with pytest.raises(ValueError, match=message):
        load_teacher(teacher_dir, larger)
    with pytest.raises(ValueError, match=message):
        df.build(config(teacher_dir, image_size=16), digits)

    old = tmp_path / "old_teacher"
    shutil.copytree(teacher_dir, old)
    summary = json.loads((old / "summary.json").read_text())
    del summary["input_shape"]
    (old / "summary.json").write_text(json.dumps(summary))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_teacher(str(old), larger).shapes["conv1"] == (16, 16, 32)


def test_command_line_refuses_a_teacher_of_another_size_in_one_line(teacher_dir, tmp_path):
    """``jdistill data-free --image-size 16`` with a teacher trained on 8x8 digits: one error line
    naming both sizes; nothing written."""
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data-free", "--teacher", teacher_dir, "--method", "dfad", "--dataset", "digits",
                  "--image-size", "16", "--model", "small_cnn", "--out", str(out), "--quiet"])  # fmt: skip
    message = str(exit_info.value.code)
    assert message == (
        f"jdistill data-free: error: teacher {teacher_dir} was trained on 8x8x1 images, this run's are "
        "16x16x1: resize them to the teacher's size or train a teacher at theirs"
    )
    assert not out.exists()


@pytest.fixture(scope="module")
def cli_run(teacher_dir, tmp_path_factory):
    """``jdistill data-free`` for ZSKT, 2 iterations of one epoch each: (run directory, printed summary)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        cli.main(["data-free", "--teacher", teacher_dir, "--method", "zskt", "--dataset", "digits",
                  "--out", str(out), "--model", "small_cnn", "--batch-size", "16", "--generator-width", "4",
                  "--iterations", "2", "--iterations-per-epoch", "1", "--samples-every", "1",
                  "--histogram-samples", "24", "--student-steps", "1", "--at-features", "conv2",
                  "--generator-learning-rate", "0.01", "--init", "torch", "--quiet"])  # fmt: skip
    return out, json.loads(capture.getvalue())


@pytest.mark.slow
def test_command_line_maps_its_options_onto_the_configuration(cli_run):
    """``jdistill data-free`` builds its configuration from the options (the paper's defaults
    for the rest), plays it and prints the summary."""
    out, summary = cli_run
    assert summary == json.loads((out / "summary.json").read_text())
    assert (summary["method"], summary["student"], summary["teacher"], summary["iterations"]) == (
        "zskt", "small_cnn", "small_cnn", 2)  # fmt: skip
    recorded = groups.flat_record(DataFreeConfig, json.loads((out / "config.json").read_text())["config"])
    assert (recorded["method"], recorded["dataset"], recorded["batch_size"]) == ("zskt", "digits", 16)
    assert (recorded["student_steps"], recorded["generator_width"], recorded["iterations_per_epoch"]) == (
        1, 4, 1)  # fmt: skip
    assert (recorded["student_learning_rate"], recorded["generator_learning_rate"], recorded["student_optimizer"]) == (
        2e-3, 0.01, "adam")  # fmt: skip
    assert recorded["at_features"] == ["conv2"] and recorded["histogram_samples"] == 24
    assert recorded["samples_every"] == 1 and recorded["init"] == "torch"


@pytest.mark.slow
def test_run_writes_grids_histograms_and_metrics(cli_run):
    """A run writes a sample grid every ``samples_every`` iterations, the final grid and class
    histogram, and per epoch on generated samples the teacher's class counts, their entropy, the
    teacher's mean absolute logit and the largest absolute pixel (at least 1: the generator's last
    BatchNorm standardises its batch)."""
    out, summary = cli_run
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for m in lines:
        assert len(m["generated/class_counts"]) == 10
        assert sum(m["generated/class_counts"]) == 24
        assert m["generated/class_entropy"] == inspection.histogram_entropy(m["generated/class_counts"])
        assert 0.0 <= m["generated/class_entropy"] <= 1.0
        assert 0.0 < m["generated/teacher_abs_logit"] < np.inf
        assert 1.0 <= m["generated/max_abs_pixel"] < np.inf
        assert 0.0 <= m["generated/tanh_saturation"] <= 1.0 and 0.0 < m["generated/tanh_std"] <= 1.0
        assert {"train/student/kl", "train/student/at", "train/generator/kl", "test/accuracy"} <= set(m)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["iter_000001.png", "iter_000002.png"]
    for png in ("samples/iter_000001.png", "samples/iter_000002.png", "samples.png", "class_histogram.png"):
        assert (out / png).read_bytes()[:8] == PNG
    assert summary["test/accuracy"] == lines[-1]["test/accuracy"]
    for key in ("class_counts", "teacher_abs_logit", "max_abs_pixel", "tanh_saturation", "tanh_std"):
        assert summary[f"generated/{key}"] == lines[-1][f"generated/{key}"]


def test_generated_statistics_match_a_hand_computation(teacher_dir, digits):
    """The statistics of generated images against numpy on the teacher's logits: the class counts
    of its argmax, their entropy over log C, the mean of |logit| over samples and classes, the
    largest |pixel|."""
    teacher = load_teacher(teacher_dir, digits).frozen
    images = np.random.default_rng(0).normal(size=(40, 8, 8, 1)).astype(np.float32)
    images[3, 2, 5, 0] = -7.5
    logits = np.asarray(teacher.module().model(jnp.asarray(images), train=False)[0], np.float64)
    counts = np.bincount(logits.argmax(-1), minlength=10)
    p = counts[counts > 0] / 40
    stats = inspection.make_generated_statistics(teacher, 10)(images)
    assert stats["class_counts"] == counts.tolist()
    np.testing.assert_allclose(stats["class_entropy"], -(p * np.log(p)).sum() / np.log(10), rtol=1e-12)
    np.testing.assert_allclose(stats["teacher_abs_logit"], np.abs(logits).mean(), rtol=1e-5)
    assert stats["max_abs_pixel"] == 7.5


def test_the_sampler_counts_saturated_tanh_outputs_against_numpy(games):
    """The sampler's images are the generator's, and its saturation is the fraction of the tanh
    outputs before the last BatchNorm beyond 0.99 in absolute value, computed here in numpy from
    the pre-activations (the last convolution made 30 times steeper, so that some saturate), and
    their spread the standard deviation over each batch; a last convolution of bias 3 and no kernel
    saturates every pixel (tanh(3) = 0.995) into one constant image, of spread 0 (to rounding)."""
    fresh = games["dafl"].players["generator"]
    steep = lambda path, leaf: 30 * leaf if "conv_out" in jax.tree_util.keystr(path) else leaf
    generator = fresh.replace(params=jax.tree_util.tree_map_with_path(steep, fresh.params))
    module = generator.module()
    sample = inspection.make_sampler(8, module.noise_dim)
    key = jax.random.key(5)
    images, tanh = sample(generator, key, 12)  # two batches of 8, the last 4 samples dropped
    z = jax.random.normal(key, (2, 8, module.noise_dim))
    chex.assert_trees_all_close(images, np.concatenate([module(zi) for zi in z])[:12], atol=1e-5)
    convolved = []
    for zi in z:  # the generator's layers by hand up to the last convolution
        h = module.linear(zi).reshape(8, module.start, module.start, -1)
        h = jnp.repeat(jnp.repeat(module.bn0(h), 2, 1), 2, 2)
        h = jax.nn.leaky_relu(module.bn1(module.conv1(h)), 0.2)
        h = jax.nn.leaky_relu(module.bn2(module.conv2(jnp.repeat(jnp.repeat(h, 2, 1), 2, 2))), 0.2)
        convolved.append(np.asarray(module.conv_out(h), np.float64))
    u = np.tanh(np.stack(convolved))  # [batch, 8, H, W, C]
    expected = np.mean(np.abs(u.reshape(16, *u.shape[2:])[:12]) > 0.99)
    assert 0.0 < expected < 1.0 and tanh["tanh_saturation"] == pytest.approx(expected, abs=1e-3)
    spread = np.mean([np.sqrt(np.mean((b - b.mean(axis=(0, 1, 2))) ** 2, axis=(0, 1, 2))) for b in u])
    assert tanh["tanh_std"] == pytest.approx(spread, rel=1e-4)

    def constant(path, leaf):
        name = jax.tree_util.keystr(path)
        if "conv_out" not in name:
            return leaf
        return jnp.full_like(leaf, 3.0) if "bias" in name else jnp.zeros_like(leaf)

    saturated = generator.replace(params=jax.tree_util.tree_map_with_path(constant, generator.params))
    images, tanh = sample(saturated, key, 12)
    assert (
        tanh["tanh_saturation"] == 1.0
        and tanh["tanh_std"] < 1e-5
        and np.ptp(images) == 0.0
        and np.max(np.abs(images)) < 1e-3
    )  # rounding of 0


def test_a_collapsed_generator_is_named_once_and_found_in_the_metrics(teacher_dir, digits, capsys):
    """A generator whose last convolution is zero makes one image (tanh(0), then standardised: 0
    everywhere), so the teacher puts every sample in one class: the epoch hook names the collapse
    in one line, once, and :func:`collapse_iteration` finds the first record that shows it."""
    game = df.build(config(teacher_dir, method="dafl"), digits)
    generator = game.players["generator"]
    zero = lambda path, leaf: jnp.zeros_like(leaf) if "conv_out" in jax.tree_util.keystr(path) else leaf
    players = {**game.players, "generator": generator.replace(
        params=jax.tree_util.tree_map_with_path(zero, generator.params))}  # fmt: skip
    run = SimpleNamespace(path=pathlib.Path("dafl_seed3"))
    healthy = game.hooks.epoch(game.players, 1, run)
    records = [{"step": 2, **healthy}]
    for epoch in (3, 4):
        records.append({"step": 2 * epoch, **game.hooks.epoch(players, epoch, run)})
    (line,) = capsys.readouterr().err.splitlines()
    assert records[1]["generated/class_entropy"] == 0.0 and records[1]["generated/max_abs_pixel"] == 0.0
    (one_class,) = np.flatnonzero(records[1]["generated/class_counts"])
    assert records[1]["generated/tanh_saturation"] == records[1]["generated/tanh_std"] == 0.0  # tanh(0)
    assert line == (f"dafl_seed3: the generator collapsed by iteration 6: the teacher puts 40 of 40 "
                    f"generated samples in class {one_class} (class entropy 0.00; largest |pixel| 0.00, "
                    f"tanh saturated on 0.0 % of pixels, its spread 0)")  # fmt: skip
    assert healthy["generated/class_entropy"] > inspection.COLLAPSED
    assert inspection.collapse_iteration(records) == 6
    assert inspection.collapse_iteration(records[:1]) is None
    assert (
        inspection.collapse_iteration([{"step": 2, "train/loss": 1.0}]) is None
    )  # no statistics: no verdict
    # with collapse_restarts, the collapsed record asks for a restart (fit goes back), a healthy one not
    restarting = df.build(config(teacher_dir, method="dafl", collapse_restarts=2), digits).hooks
    assert (restarting.restarts, game.hooks.restarts) == (2, 0)
    assert restarting.restart(records[1]) == (
        f"the generator collapsed into class {one_class} (class entropy 0.00)"
    )
    assert restarting.restart(records[0]) is None and restarting.restart({"step": 2}) is None


def metrics_without_timing(run_dir):
    return [{k: v for k, v in m.items() if k != "seconds"} for m in RunDir(run_dir).metrics()]


def test_a_restart_goes_back_to_the_last_checkpoint_with_new_noise_and_resumes_exactly(
    teacher_dir, digits, tmp_path, capsys
):
    """A run whose restart hook asks at epoch 3 goes back to its checkpoint of epoch 2 and plays on
    with other noise: epochs 1-2 are those of a run that never restarts, epoch 3 is not, the
    metrics hold each epoch once and restarts.jsonl says what happened. A run stopped after the
    restart and resumed ends with the same metrics: the restart count is in its checkpoints. One
    asked for at epoch 1, before any checkpoint, goes back to the start."""

    def played(name, restart_at=None, stop_at=None):
        game = df.build(config(teacher_dir, method="dafl", iterations=8, samples_every=100, collapse_restarts=1),
                        digits)  # fmt: skip
        asked = lambda record: "asked by the test" if record["epoch"] == restart_at else None
        statistics = game.hooks.epoch

        def epoch_hook(players, epoch, run):
            if epoch == stop_at:
                raise KeyboardInterrupt
            return statistics(players, epoch, run)

        game = dataclasses.replace(
            game, hooks=dataclasses.replace(game.hooks, restart=asked, epoch=epoch_hook)
        )
        fit(game, tmp_path / name, progress=False)
        return metrics_without_timing(tmp_path / name), RunDir(tmp_path / name).restarts()

    plain, _ = played("plain")
    restarted, restarts = played("restarted", restart_at=3)
    assert [m["epoch"] for m in restarted] == [1, 2, 3, 4]
    assert restarted[:2] == plain[:2]
    assert restarted[2]["train/student/loss"] != plain[2]["train/student/loss"]
    assert restarts == [
        {
            "restart": 1,
            "epoch": 3,
            "step": 6,
            "back_to_epoch": 2,
            "back_to_step": 4,
            "reason": "asked by the test",
        }
    ]
    assert capsys.readouterr().err.splitlines()[-1] == (
        "restarted: asked by the test at step 6; restart 1 of 1: back to its checkpoint of step 4, with new randomness"
    )

    with pytest.raises(KeyboardInterrupt):
        played("resumed", restart_at=3, stop_at=4)
    assert [m["epoch"] for m in RunDir(tmp_path / "resumed").metrics()] == [1, 2, 3]
    assert played("resumed", restart_at=3) == (restarted, restarts)

    from_start, restarts = played("from_start", restart_at=1)
    assert [m["epoch"] for m in from_start] == [1, 2, 3, 4] and restarts[0]["back_to_epoch"] == 0
    assert from_start[0]["train/student/loss"] != plain[0]["train/student/loss"]
    assert "back to its start" in capsys.readouterr().err


def test_restarts_are_refused_for_runs_trained_together(teacher_dir, digits, tmp_path):
    games = [
        df.build(config(teacher_dir, method="dafl", seed=s, collapse_restarts=1), digits) for s in (0, 1)
    ]
    with pytest.raises(
        ValueError, match="^restarting a run from its checkpoint .* not for runs trained together"
    ):
        fit_cohort(games, [tmp_path / "a", tmp_path / "b"], progress=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match="collapse_restarts must be at least 0, got -1"):
        config(teacher_dir, method="dafl", collapse_restarts=-1)


# ---------------------------------------------------------------- the experiment


@pytest.fixture(scope="module")
def mnist_like_dir(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("mnist_like"))


@pytest.mark.slow
def test_the_experiment_writes_its_table_and_plot(mnist_like_dir, tmp_path, monkeypatch, capsys):
    """experiments/data_free_mnist.py --smoke trains its teacher and students and writes the
    table, the accuracy plot and each run's class histogram; --seeds lists seeds; --restarts
    reaches the data-free runs; --student-ema adds the students' parameter average in its own row."""
    out = tmp_path / "experiment"
    argv = [str(SCRIPT), "--data-dir", str(mnist_like_dir), "--out", str(out), "--smoke",
            "--methods", "dfad", "--seeds", "3", "4", "--quiet", "--restarts", "2",
            "--student-ema", "0.9"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    table = (out / "table.md").read_text()
    assert table in capsys.readouterr().out
    for row in (
        "teacher LeNet-5 for DFAD (SGD momentum",
        "hard labels",
        "KD on the real data",
        "DFAD data-free: 4 it. x 5 student steps",
        "class entropy",
    ):
        assert row in table
    assert "## DFAD: test accuracy (%) by iteration" in table
    assert "| iteration | seed 3 | mean +- std | parameter average: mean +- std |" in table
    assert (
        "| DFAD: the same students' parameter average (EMA 0.9, debiased; not the paper's method) |" in table
    )
    assert (out / "accuracy.png").read_bytes()[:8] == PNG
    assert (out / "dfad_seed3" / "class_histogram.png").exists()
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["teacher_dfad", "student", "kd", "dfad"]
    assert [s["run"] for s in results["dfad"]] == ["dfad_seed3"]
    assert [i for i, _ in results["dfad"][0]["curve"]] == [2, 4]
    assert [i for i, _ in results["dfad"][0]["ema_curve"]] == [2, 4]
    assert results["dfad"][0]["config"]["student_ema_decay"] == 0.9
    assert 0 <= results["dfad"][0]["generated/class_entropy"] <= 1
    teacher = df.paper_teacher("dfad", data_dir=str(mnist_like_dir), epochs=1)  # the smoke run's 1 epoch
    assert RunDir(out / "teacher_dfad").config() == teacher
    assert json.loads((out / "teacher_dfad" / "summary.json").read_text())["input_shape"] == [32, 32, 1]
    assert results["dfad"][0]["config"]["init"] == "torch"
    assert results["dfad"][0]["config"]["seed"] == 3
    assert results["dfad"][0]["config"]["collapse_restarts"] == 2  # --restarts
    assert results["dfad"][0]["restarts"] == [
        [r["step"], r["back_to_step"]] for r in RunDir(out / "dfad_seed3").restarts()
    ]


def test_the_experiments_options_from_before_the_runner_still_work_with_a_warning(capsys):
    """``--no-progress`` and ``--config smoke`` were data_free_mnist.py's own options: they still
    work, as ``--quiet`` and ``--smoke``, each with a one-line warning."""
    from jdistill.experiment import parser_for

    experiment = runpy.run_path(str(SCRIPT))
    parser = parser_for(experiment["EXPERIMENT"])
    args = parser.parse_args(["--out", "o", "--config", "smoke", "--no-progress", "--seeds", "0", "1"])
    assert (args.smoke, args.quiet, args.config, args.seeds) == (True, True, "cpu", [0, 1])
    warnings = capsys.readouterr().err.splitlines()
    assert [w.split(": warning: ")[1] for w in warnings] == [
        "--config smoke is deprecated; use --smoke",
        "--no-progress is deprecated; use --quiet",
    ]
    assert parser.parse_args(["--out", "o", "--config", "paper"]).smoke is False

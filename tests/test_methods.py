"""Every registered method: a few jitted steps on tiny random data run without NaN, trace once,
and change only the parameters they should (the teacher never; frozen parts not; in an
initialisation stage only what it trains)."""

import functools
import json

import jax
import numpy as np
import pytest
from golden import forms
from golden.forms import TinyStaged

from jdistill.methods import METHODS, parse_methods
from jdistill.models import MODELS, ViT
from jdistill.train import RunConfig, fit
from jdistill.train.optim import path_names
from jdistill.train.rounds import play_move, round_batch


def tiny_data():
    return forms.tiny_data(64)


@pytest.fixture(scope="module")
def tiny_models():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(MODELS, "tiny_teacher", functools.partial(TinyStaged, widths=(4, 8, 16)))
        mp.setitem(MODELS, "tiny_student", functools.partial(TinyStaged, widths=(4, 6, 8)))
        mp.setitem(MODELS, "tiny_student_same", functools.partial(TinyStaged, widths=(4, 8, 16)))
        # Attention-transfer methods read the attention of vision transformers (4x4 patches).
        mp.setitem(MODELS, "tiny_vit_teacher", functools.partial(ViT, depth=2, width=16, heads=4, patch=4))
        mp.setitem(MODELS, "tiny_vit_student", functools.partial(ViT, depth=1, width=8, heads=2, patch=4))
        yield


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_models):
    out = tmp_path_factory.mktemp("tiny_teacher")
    config = RunConfig(model="tiny_teacher", dataset="tiny", epochs=1, batch_size=16, learning_rate=0.05)
    fit(config, out, dataset=tiny_data(), progress=False)
    return str(out)


@pytest.fixture(scope="module")
def vit_teacher_dir(tmp_path_factory, tiny_models):
    out = tmp_path_factory.mktemp("tiny_vit_teacher")
    config = RunConfig(model="tiny_vit_teacher", dataset="tiny", epochs=1, batch_size=16, learning_rate=0.05)
    fit(config, out, dataset=tiny_data(), progress=False)
    return str(out)


def leaves_with_paths(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


SPECS = [name for name in METHODS if name != "ce"] + ["crd+kd"]


@pytest.mark.parametrize("spec", SPECS)
def test_method_steps_are_finite_trace_once_and_touch_only_what_they_train(
    spec, teacher_dir, tiny_models, request
):
    student = "tiny_student_same" if spec == "fsp" else "tiny_student"
    options = {"crd": {"num_negatives": 32}} if "crd" in spec else {}
    if spec in ("vit_at", "vit_vr"):
        student, teacher_dir = "tiny_vit_student", request.getfixturevalue("vit_teacher_dir")
    if spec == "srrl":
        options = {"srrl": {"teacher_run": teacher_dir}}
    methods = parse_methods(spec)
    init_options = {m: {"init_epochs": 1} for m in methods if m in ("ab", "ft", "fsp")}
    config = RunConfig(
        model=student,
        dataset="tiny",
        epochs=2,
        batch_size=16,
        teacher=teacher_dir,
        methods=methods,
        method_options={**options, **init_options},
        hflip=True,
        max_shift=1,
    )
    game = config.build(tiny_data())
    teacher_before = leaves_with_paths(game.teachers["teacher"].variables)
    players = jax.device_put(dict(game.players), jax.devices()[0])  # committed, as the step's outputs are
    for index, phase in enumerate(game.phases):
        if index:  # the engine installs the phase's fresh optimizers
            players = jax.device_put(phase.start(players), jax.devices()[0])
        (move,) = phase.moves
        step = jax.jit(lambda players, batch, r: play_move(game, players, move, batch, round_index=r))
        student = players["student"]
        before, rest_before = leaves_with_paths(student.params), leaves_with_paths(student.rest)
        for i in range(3):  # crops and flips: the teacher's outputs are computed in the step
            players, metrics = step(players, round_batch(game, i), i)
            for name, value in metrics.items():
                assert np.isfinite(np.asarray(value)).all(), (phase.name, name, value)
        assert step._cache_size() == 1, f"{phase.name} step traced {step._cache_size()} times"
        student = players["student"]
        after = leaves_with_paths(student.params)
        trains = student.optimizer.trains
        mask = {
            jax.tree_util.keystr(p): trains(path_names(p))
            for p, _ in jax.tree_util.tree_leaves_with_path(student.params)
        }
        changed = {k for k in before if not np.array_equal(before[k], after[k])}
        frozen = {k for k, moves in mask.items() if not moves}
        assert not changed & frozen, (
            f"{phase.name}: parameters outside the phase's set changed: {changed & frozen}"
        )
        if phase.name == "init":
            assert changed, "the initialisation stage trained nothing"
        else:
            student_params = {k for k in before if k.startswith("['model']")}
            assert student_params <= changed, f"student parameters not trained: {student_params - changed}"
            extras = {k for k in before if k.startswith("['extras']") and mask[k]}
            assert extras <= changed, f"extras not trained: {extras - changed}"
        if "crd" in spec and phase.name != "init":
            rest_after = leaves_with_paths(student.rest)
            bank = [k for k in rest_before if "memory_s" in k][0]
            moved = np.any(rest_before[bank] != rest_after[bank], axis=1)
            assert 0 < moved.sum() <= 48, "the memory rows of the batches seen (and only those) move"
    teacher_after = leaves_with_paths(game.teachers["teacher"].variables)
    for k in teacher_before:
        np.testing.assert_array_equal(teacher_before[k], teacher_after[k], err_msg=k)


@pytest.mark.slow  # multi-device
def test_crd_memory_is_replicated_state_one_and_four_devices_agree(teacher_dir, tiny_models, tmp_path):
    """The memory banks live in the replicated state and are updated inside the jitted step;
    splitting the batch over four devices gives the run one device gives."""
    config = RunConfig(
        model="tiny_student",
        dataset="tiny",
        epochs=2,
        batch_size=16,
        teacher=teacher_dir,
        methods=parse_methods("crd"),
        method_options={"crd": {"num_negatives": 32}},
    )
    runs = {}
    for n in (1, 4):
        fit(config, tmp_path / str(n), dataset=tiny_data(), devices=jax.devices()[:n], progress=False)
        runs[n] = [
            json.loads(line) for line in (tmp_path / str(n) / "metrics.jsonl").read_text().splitlines()
        ]
    for one, four in zip(runs[1], runs[4], strict=True):
        np.testing.assert_allclose(one["train/loss/crd"], four["train/loss/crd"], rtol=1e-4)
        np.testing.assert_allclose(one["test/loss"], four["test/loss"], rtol=1e-4)
    from jdistill.train import checkpoint

    game = config.build(tiny_data())
    players = checkpoint.restore(
        checkpoint.manager(tmp_path / "4"),
        jax.device_put(
            dict(game.players),
            jax.sharding.NamedSharding(
                jax.sharding.Mesh(np.array(jax.devices()), ("data",)), jax.sharding.PartitionSpec()
            ),
        ),
    )
    bank = players["student"].rest["extras"]["crd"]["memory"]["memory_s"]
    assert bank.shape == (64, 128) and bank.sharding.is_fully_replicated


def test_the_old_module_path_still_works_with_a_deprecation_warning():
    import importlib
    import sys

    sys.modules.pop("jdistill.train.methods", None)
    with pytest.warns(DeprecationWarning, match="import from jdistill.methods"):
        old = importlib.import_module("jdistill.train.methods")
    assert old.METHODS is METHODS

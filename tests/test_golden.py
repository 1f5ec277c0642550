"""Every training form on the one engine, against its golden record (``tests/golden``: written by the
five loops the engine replaced, re-recorded only where a change was intended, see
``tests/golden/record.py``): on one device, on four, with 16 rounds per call, and resumed after
losing its last epoch; and what its checkpoint holds, against the recorded structure."""

import json
import shutil

import jax
import pytest
from golden import forms

from jdistill.train import fit

pytestmark = pytest.mark.slow  # every form, three ways: the slow tier

GOLDEN = forms.pathlib.Path(__file__).parent / "golden"
# XLA's CPU compiler leaves the convolutions of a loop body to its generic emitter (see
# jdistill/train/rounds.py): these forms' rounds in a lax.scan agree with unlooped ones to float
# rounding only.
CONVOLUTIONAL = {"tiny_teacher", "staged", "df_teacher", "data_free_dfad", "data_free_dafl", "data_free_zskt"}
# The statistics of generated samples read the generator after its last step. DAFL's generator (Adam,
# lr 0.2) moves the biases of its convolutions before BatchNorm, whose exact gradient is zero, by whole
# steps in directions float rounding decides (measured: 0.75 and 0.99 apart on 1 and 4 devices, every
# other parameter within 3e-3), so its samples' mean |logit| and largest |pixel| differ between
# layouts by more than rounding (1.5e-3 and 5.7e-4 relative). Its tanh figures are read the same way
# (here within 4e-7 of each other; a count of saturated pixels can move by a whole pixel).
LAYOUT_SENSITIVE = {"data_free_dafl": ("generated/teacher_abs_logit", "generated/max_abs_pixel",
                                       "generated/tanh_saturation", "generated/tanh_std")}  # fmt: skip


def differences(expected: dict, actual: dict, *, rtol: float, ignore=("devices",)) -> list[str]:
    """Where ``actual`` (a record: metric lines and summary) departs from ``expected``: a missing key,
    another value (floats beyond ``rtol`` relative), another number of lines. Keys only ``actual``
    has are allowed (metrics added since the record)."""
    lines = [*zip(expected["metrics"], actual["metrics"]), (expected["summary"], actual["summary"])]
    found = [] if len(expected["metrics"]) == len(actual["metrics"]) else ["number of epochs"]
    for i, (want, got) in enumerate(lines):
        for key, value in want.items():
            if key in ignore:
                continue
            if key not in got:
                found.append(f"line {i}: {key} missing")
            elif isinstance(value, float) and isinstance(got[key], float):
                if abs(got[key] - value) > rtol * abs(value):
                    found.append(f"line {i}: {key} {got[key]!r} != {value!r}")
            elif got[key] != value:
                found.append(f"line {i}: {key} {got[key]!r} != {value!r}")
    return found


@pytest.fixture(scope="module")
def one_device(golden_runs):
    return golden_runs


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    assert jax.device_count() == 4, "conftest.py sets four CPU devices"
    return forms.run_all(tmp_path_factory.mktemp("four_devices"), jax.devices())


@pytest.fixture(scope="module")
def sixteen_per_call(tmp_path_factory):
    out = tmp_path_factory.mktemp("sixteen_per_call")
    return out, forms.run_all(out, jax.devices()[:1], steps_per_call=16)


@pytest.mark.parametrize("form", forms.FORMS)
def test_one_device_reproduces_the_golden_record(form, one_device):
    """Bit-identical where the computation is the old loop's (measured here: every form but online
    and adversarial KD, whose moves were separate jitted steps); float tolerance elsewhere, and
    for another CPU."""
    golden = json.loads((GOLDEN / f"{form}.json").read_text())
    assert differences(golden, one_device[1][form], rtol=1e-5) == []


@pytest.mark.parametrize("form", forms.FORMS)
def test_four_devices_follow_the_one_device_trajectory(form, one_device, four_devices):
    assert four_devices[form]["summary"]["devices"] == 4
    ignore = ("devices", *LAYOUT_SENSITIVE.get(form, ()))
    assert differences(one_device[1][form], four_devices[form], rtol=2e-4, ignore=ignore) == []


@pytest.mark.parametrize("form", forms.FORMS)
def test_sixteen_rounds_per_call_give_the_metrics_of_one(form, one_device, sixteen_per_call):
    rtol = 1e-4 if form in CONVOLUTIONAL else 0.0
    ignore = ("devices", *LAYOUT_SENSITIVE.get(form, ()))
    assert differences(one_device[1][form], sixteen_per_call[1][form], rtol=rtol, ignore=ignore) == []


def test_round_hooks_run_where_they_are_due_with_sixteen_rounds_per_call(sixteen_per_call):
    """The calls are cut where a hook is due: data-free sample grids every 2 iterations."""
    samples = sixteen_per_call[0] / "data_free_dfad" / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["iter_000002.png", "iter_000004.png"]


@pytest.mark.parametrize("form", forms.FORMS)
def test_a_run_that_lost_its_last_epoch_resumes_to_the_same_metrics(form, one_device, tmp_path):
    """As if the process had died while saving the last epoch: its checkpoint and the summary are
    gone, its metrics line written; the same command finishes the run exactly as it first ended."""
    out, records = one_device
    expected = records[form]
    config, dataset = next((c, d) for f, c, d in forms.plan(out) if f == form)
    run = tmp_path / form
    shutil.copytree(out / form, run)
    last = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    shutil.rmtree(run / "checkpoints" / str(last))
    (run / "summary.json").unlink()
    fit(config, run, dataset=dataset, devices=jax.devices()[:1], progress=False)
    assert differences(expected, forms.record_of(run), rtol=0.0) == []


@pytest.mark.parametrize("form", forms.FORMS)
def test_what_a_checkpoint_holds_is_as_recorded(form, one_device):
    """A checkpoint's structure is a contract with every unfinished run on disk: a change (a player
    field, an optimizer's state) makes earlier checkpoints unreadable unless ``checkpoint.restore``
    migrates them, as it does for ``player.LATER_FIELDS``; a new optax or orbax
    version can change it too (a real loss for unfinished runs, or only orbax's way of describing
    the same files). Recorded by the engine (2026-12-01, optax 0.2.8, orbax 0.12.8), not by the old
    loops."""
    recorded = json.loads((GOLDEN / forms.LAYOUTS).read_text())[form]
    one_device[1].play_before(form, including=True)
    now = forms.checkpoint_layout(one_device[0] / form)
    assert now == recorded, (
        f"the checkpoint of {form} changed (now, not recorded: {sorted(set(now) - set(recorded))}; "
        f"recorded, not now: {sorted(set(recorded) - set(now))}): let checkpoint.restore read the "
        "recorded form, test it with a run written before the change (tests/fixtures), then "
        "re-record with `python tests/golden/record.py --layouts`"
    )

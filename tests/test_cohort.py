"""Several runs in one compiled step (jdistill.train.cohort, fit_cohort): each member's run
directory holds what a single run with its configuration writes."""

import jax
import numpy as np
import pytest
from golden import forms

from jdistill.train import RunConfig, RunDir, fit, fit_cohort

forms.register_tiny_models()
DATA = forms.tiny_data()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort_teacher")
    fit(forms.tiny_teacher_config(), out, dataset=DATA, progress=False)
    return str(out)


def assert_same_runs(a, b, rtol=2e-4, atol=2e-5, examples=0):
    """Two run directories' metric lines and summaries agree (up to float rounding); a count of
    correct predictions (accuracy, agreement) may differ by ``examples`` of the tiny data set's 96,
    where float rounding moves a prediction across a tie."""
    for x, y in zip(RunDir(a).metrics(), RunDir(b).metrics(), strict=True):
        assert x.keys() == y.keys()
        keys = [k for k in x if k != "seconds" and isinstance(x[k], float)]
        counts = [k for k in keys if k.endswith(("accuracy", "agreement"))]
        smooth = [k for k in keys if k not in counts]
        np.testing.assert_allclose([x[k] for k in smooth], [y[k] for k in smooth], rtol=rtol, atol=atol)
        np.testing.assert_allclose([x[k] for k in counts], [y[k] for k in counts], atol=examples / 96 + 1e-6)
        assert {k: x[k] for k in x if not isinstance(x[k], float)} == {
            k: y[k] for k in y if not isinstance(y[k], float)
        }
    sa, sb = RunDir(a).summary(), RunDir(b).summary()
    assert sa["seed"] == sb["seed"]


def single_and_together(configs, tmp_path, devices):
    singles = [tmp_path / f"single{i}" for i in range(len(configs))]
    for config, out in zip(configs, singles):
        fit(config, out, dataset=DATA, devices=devices, progress=False)
    together = [tmp_path / "together" / f"member{i}" for i in range(len(configs))]
    summaries = fit_cohort(configs, together, dataset=DATA, devices=devices, progress=False)
    assert [s["seed"] for s in summaries] == [c.loop.seed for c in configs]
    return singles, together


@pytest.mark.slow
def test_seeds_trained_together_equal_their_single_runs(teacher, tmp_path):
    """CRD's memory banks, FT's initialisation stage and its frozen paraphraser, crops and flips:
    three seeds (each its own data order, augmentation and initialisation) in one step."""
    base = forms.staged_config(teacher)
    configs = [base.replace(seed=s) for s in (3, 4, 5)]
    singles, together = single_and_together(configs, tmp_path, jax.devices()[:2])
    for a, b in zip(singles, together):
        # with XLA's optimisations the batched step rounds differently: after 3 epochs the test
        # cross-entropy (7.69, of confident wrong predictions) differed by 5e-4 relative, and one
        # training example's prediction flipped (train accuracy 0.198 against 0.208)
        assert_same_runs(a, b, rtol=2e-3, examples=2)
    first, second = (RunDir(d).metrics()[-1]["train/loss"] for d in together[:2])
    assert first != second  # the members are different runs


@pytest.mark.slow
def test_a_temperature_sweep_shares_the_batches_and_equals_single_runs(teacher, tmp_path):
    base = RunConfig(model="golden_tiny_student", dataset="tiny", epochs=2, batch_size=16, teacher=teacher,
                     methods=("ce", "kd"), max_shift=1, seed=7)  # fmt: skip
    configs = [base.replace(temperature=t, weights={"kd": w}) for t, w in ((1.0, 0.5), (4.0, 0.9))]
    singles, together = single_and_together(configs, tmp_path, jax.devices()[:1])
    for a, b in zip(singles, together):
        assert_same_runs(a, b)


@pytest.mark.slow
def test_members_resume_from_the_last_epoch_all_of_them_checkpointed(teacher, tmp_path):
    """Seed 1 finished 1 epoch, seed 2 finished 2 alone; extended to 3 together, both go on from
    epoch 1 (seed 2's epoch 2 is trained again) and end as uninterrupted single runs (a constant
    rate: a longer run's schedule is another)."""
    base = RunConfig(model="golden_tiny_student", dataset="tiny", epochs=3, batch_size=16, teacher=teacher,
                     methods=("ce", "kd"), max_shift=1, schedule="constant")  # fmt: skip
    members = [tmp_path / "seed1", tmp_path / "seed2"]
    fit(base.replace(seed=1, epochs=1), members[0], dataset=DATA, progress=False)
    fit(base.replace(seed=2, epochs=2), members[1], dataset=DATA, progress=False)
    configs = [base.replace(seed=s, epochs=3) for s in (1, 2)]
    fit_cohort(configs, members, dataset=DATA, progress=False)
    for config, member in zip(configs, members):
        fit(config, tmp_path / f"alone{config.loop.seed}", dataset=DATA, progress=False)
        assert_same_runs(member, tmp_path / f"alone{config.loop.seed}")
        assert [m["epoch"] for m in RunDir(member).metrics()] == [1, 2, 3]


def test_runs_that_differ_in_more_than_seeds_and_traced_values_are_refused(tmp_path):
    base = RunConfig(model="golden_tiny_student", dataset="tiny", epochs=1, batch_size=16)
    with pytest.raises(ValueError, match="may differ only in .*differ in learning_rate"):
        fit_cohort([base, base.replace(learning_rate=0.3)], [tmp_path / "a", tmp_path / "b"], dataset=DATA)
    with pytest.raises(ValueError, match="its own run directory"):
        fit_cohort([base, base.replace(seed=1)], [tmp_path / "a", tmp_path / "a"], dataset=DATA)
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_the_cli_trains_one_run_per_seed_each_as_its_single_run(tmp_path, capsys):
    from jdistill.cli import main

    common = ["train-teacher", "--model", "mlp32", "--dataset", "digits", "--epochs", "1", "--quiet"]
    main([*common, "--seeds", "0,1", "--out", str(tmp_path / "together")])
    main([*common, "--seed", "1", "--out", str(tmp_path / "alone")])
    assert sorted(p.name for p in (tmp_path / "together").iterdir()) == ["seed0", "seed1"]
    assert [RunDir(tmp_path / "together" / n).summary()["seed"] for n in ("seed0", "seed1")] == [0, 1]
    assert_same_runs(tmp_path / "together" / "seed1", tmp_path / "alone")
    with pytest.raises(SystemExit, match="--seeds expects distinct comma-separated numbers"):
        main([*common, "--seeds", "0,x", "--out", str(tmp_path / "bad")])

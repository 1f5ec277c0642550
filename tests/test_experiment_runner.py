"""The experiment runner on a two-run experiment: results.json carries each run's configuration,
--validate holds out --holdout of the training set, --steps-per-call reaches fit, bad options and
warnings are one line."""

import json
import os
import re
import socket
import subprocess
import sys
import warnings

import pytest

from jdistill.experiment import Experiment, Run, main, options_from, parser_for
from jdistill.train import RunConfig, RunDir


def runs(options):
    for seed in options.seeds:
        yield Run(f"seed{seed}", RunConfig(model="mlp32", dataset="digits", epochs=1, seed=seed), "mlp32")


def table(results, options):
    return f"{len(results['mlp32'])} runs\n"


EXPERIMENT = Experiment("A two-run experiment.", "digits", runs, table, seeds=2, holdout_fraction=0.25)


def test_results_carry_each_runs_configuration_and_validate_holds_out_the_given_fraction(tmp_path, capsys):
    out = tmp_path / "out"
    results = main(EXPERIMENT, ["--out", str(out), "--validate", "--holdout", "0.3", "--quiet"])
    assert [r["run"] for r in results["mlp32"]] == ["seed0", "seed1"]
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    for seed, result in enumerate(saved["mlp32"]):
        assert result["config"] == RunDir(out / f"seed{seed}").flat_config()
        assert result["config"]["holdout_fraction"] == 0.3 and result["config"]["seed"] == seed
        assert "val/accuracy" in result and "test/accuracy" not in result
    assert (out / "table.md").read_text() == "2 runs\n"


@pytest.mark.parametrize(
    "argv, seeds",
    [([], (0, 1)), (["--seeds", "3"], (0, 1, 2)), (["--seeds", "4", "2"], (4, 2)),
     (["--seeds", "1", "--first-seed", "2"], (2,)), (["--seeds", "2", "--first-seed", "5"], (5, 6))],
)  # fmt: skip
def test_seeds_are_a_count_from_the_first_seed_or_a_list(argv, seeds):
    args = parser_for(EXPERIMENT).parse_args(["--out", "o", *argv])
    assert options_from(EXPERIMENT, args).seeds == seeds


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--holdout", "1.5"], "--holdout must be a fraction in (0, 1), got 1.5"),
        (["--seeds", "0", "0"], "--seeds: a count of at least 1 or distinct seeds >= 0, got 0 0"),
        (["--seed", "3"], "error: unrecognized arguments: --seed 3"),
        (["--steps-per-call", "0"], "--steps-per-call must be a positive integer, got 0"),
        (["--seeds", "1", "2", "--first-seed", "3"], "--first-seed goes with a count of seeds (--seeds N)"),
        (["--first-seed", "-1"], "--first-seed must be at least 0, got -1"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be a positive integer, got 0"),
    ],
)
def test_bad_options_are_one_line(argv, line, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(EXPERIMENT, ["--out", str(tmp_path / "out"), *argv])
    message = str(exit_info.value.code) if exit_info.value.code != 2 else capsys.readouterr().err
    assert line in message and message.strip().count("\n") == 0


def test_steps_per_call_reaches_fit_and_changes_no_result(tmp_path, monkeypatch):
    """Three rounds per jitted call (a lax.scan) against one: the same test loss after the epoch."""
    import jdistill.train

    asked, fit = [], jdistill.train.fit
    monkeypatch.setattr(
        jdistill.train, "fit", lambda *a, **k: asked.append(k["steps_per_call"]) or fit(*a, **k)
    )
    one = main(EXPERIMENT, ["--out", str(tmp_path / "one"), "--seeds", "1", "--quiet"])
    three = main(
        EXPERIMENT, ["--out", str(tmp_path / "three"), "--seeds", "1", "--quiet", "--steps-per-call", "3"]
    )
    assert asked == [1, 3]
    assert three["mlp32"][0]["test/loss"] == pytest.approx(one["mlp32"][0]["test/loss"], rel=1e-5)


def test_checkpoint_every_sets_each_runs_cadence_and_a_run_saved_either_way_is_the_same_run(tmp_path):
    six_epochs = Experiment(
        "Six epochs.",
        "digits",
        lambda options: [Run("run", RunConfig(model="mlp32", dataset="digits", epochs=6), "mlp32")],
        table,
        seeds=1,
    )
    sparse = main(six_epochs, ["--out", str(tmp_path / "sparse"), "--checkpoint-every", "4", "--quiet"])
    dense = main(six_epochs, ["--out", str(tmp_path / "dense"), "--quiet"])
    saved = {
        name: sorted(p.name for p in (tmp_path / name / "run" / "checkpoints").iterdir())
        for name in ("sparse", "dense")
    }
    assert saved == {"sparse": ["4", "6"], "dense": ["5", "6"]}  # the last two kept
    assert RunDir(tmp_path / "sparse" / "run").flat_config()["checkpoint_every"] == 4
    assert sparse["mlp32"][0]["test/loss"] == dense["mlp32"][0]["test/loss"]
    # How often it saves is not what the run is: without the option the finished run is read back.
    again = main(six_epochs, ["--out", str(tmp_path / "sparse"), "--quiet"])
    assert again["mlp32"][0]["test/loss"] == sparse["mlp32"][0]["test/loss"]


def test_before_runs_ahead_of_its_run_every_time_and_its_error_is_one_line(tmp_path, capsys):
    calls = []

    def prepared_runs(options):
        yield Run("first", RunConfig(model="mlp32", dataset="digits", epochs=1), None)
        made = options.out / "first" / "summary.json"  # the before of the second sees the first finished
        yield Run("second", RunConfig(model="mlp32", dataset="digits", epochs=1, seed=1), "mlp32",
                  before=lambda: calls.append(made.exists()))  # fmt: skip

    experiment = Experiment("Two runs.", "digits", prepared_runs, lambda results, options: "")
    main(experiment, ["--out", str(tmp_path / "out"), "--quiet"])
    main(experiment, ["--out", str(tmp_path / "out"), "--quiet"])  # read back: before is called again
    assert calls == [True, True]

    def failing(options):
        yield Run("only", RunConfig(model="mlp32", dataset="digits", epochs=1), "mlp32",
                  before=lambda: (_ for _ in ()).throw(ValueError("the cache cannot be written")))  # fmt: skip

    with pytest.raises(SystemExit) as exit_info:
        main(
            Experiment("One run.", "digits", failing, lambda r, o: ""),
            ["--out", str(tmp_path / "x"), "--quiet"],
        )
    assert str(exit_info.value.code).endswith("error: the cache cannot be written")
    assert not (tmp_path / "x" / "only").exists()


def test_a_warning_is_one_line_naming_the_script(tmp_path, capsys):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "out" / "seed0").mkdir(parents=True)
    lock = {"pid": gone.pid, "host": socket.gethostname(), "started": "2026-12-01T10:00:00"}
    (tmp_path / "out" / "seed0" / "lock").write_text(json.dumps(lock))

    def show(message, category, filename, lineno, file=None, line=None):  # Python's own, bypassing pytest's
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        main(EXPERIMENT, ["--out", str(tmp_path / "out"), "--seeds", "1", "--quiet"])
        formatted = warnings.formatwarning("after", UserWarning, "file.py", 7)
    script = re.escape(os.path.basename(sys.argv[0]))
    stale = f"^{script}: warning: .*seed0: removing a stale lock \\(process {gone.pid}, which is gone\\)$"
    lines = capsys.readouterr().err.splitlines()
    warned = [line for line in lines if ": warning:" in line or "stale lock" in line]
    assert len(warned) == 1 and re.match(stale, warned[0]), lines
    assert not any(line.startswith(" ") for line in lines)  # no source line of the code that warned
    assert formatted.startswith("file.py:7: UserWarning: after")  # Python's format again after main


def test_every_experiments_options_fit_beside_the_runners():
    """An experiment's own option of the same name as a runner's is a conflict argparse raises
    only when the parser is built: build every experiment's."""
    import pathlib
    import runpy

    scripts = sorted((pathlib.Path(__file__).parents[1] / "experiments").glob("*.py"))
    namespaces = {s.name: runpy.run_path(str(s)) for s in scripts}
    experiments = {
        name: ns.get("EXPERIMENT") or ns.get("experiment", lambda: None)() for name, ns in namespaces.items()
    }
    experiments = {name: e for name, e in experiments.items() if isinstance(e, Experiment)}
    assert len(experiments) == 18  # README: "Those eighteen declare their runs ..."
    for name, experiment in experiments.items():
        options = {a.dest for a in parser_for(experiment)._actions}
        assert {"out", "seeds", "steps_per_call", "checkpoint_every"} <= options, name

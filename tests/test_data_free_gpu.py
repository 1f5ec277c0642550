"""experiments/data_free_gpu.sh (the data-free table at the papers' configuration on one GPU) and
experiments/data_free_summary.py, which summarises its output folders whether or not their commands
finished."""

import json
import os
import pathlib
import runpy
import subprocess
import sys
import tarfile

import pytest
from idx_files import write_mnist_like

EXPERIMENTS = pathlib.Path(__file__).parents[1] / "experiments"
summary = runpy.run_path(str(EXPERIMENTS / "data_free_summary.py"))


def write_metrics(run_dir: pathlib.Path, records: list[dict]) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_summary_of_a_finished_and_a_stopped_folder(tmp_path):
    (tmp_path / "dfad").mkdir()
    (tmp_path / "dfad" / "table.md").write_text("| the finished table |\n")
    write_metrics(
        tmp_path / "dafl_seed0" / "dafl_seed0",
        [
            {"epoch": 1, "step": 120, "test/accuracy": 0.5, "generated/class_entropy": 0.8},
            {"epoch": 2, "step": 240, "train/loss": 1.0},  # a record without an evaluation
            {"epoch": 3, "step": 360, "test/accuracy": 0.9, "generated/class_entropy": 0.95},
            {
                "epoch": 4,
                "step": 480,
                "test/accuracy": 0.875,
                "generated/class_entropy": 0.97,
                "test/ema/accuracy": 0.925,
            },
        ],
    )
    write_metrics(tmp_path / "dafl_seed0" / "dafl_seed2", [
        {"epoch": 1, "step": 120, "test/accuracy": 0.5, "generated/class_entropy": 0.8},
        {"epoch": 2, "step": 240, "test/accuracy": 0.4, "generated/class_entropy": 0.0},
    ])  # fmt: skip
    (tmp_path / "dafl_seed0" / "dafl_seed2" / "restarts.jsonl").write_text(
        json.dumps({"restart": 1, "epoch": 2, "step": 240, "back_to_epoch": 1, "back_to_step": 120}) + "\n"
    )  # collapsed at 240, went back to 120 (--restarts), collapsed again: the restarts are used up
    (tmp_path / "dafl_seed0" / "dafl_seed1").mkdir()  # started, not yet evaluated
    (tmp_path / "dafl_seed0" / "teacher_dafl").mkdir()  # not a data-free run

    finished, stopped = (summary["folder_summary"](tmp_path / name) for name in ("dfad", "dafl_seed0"))

    assert finished == "## dfad (finished)\n\n| the finished table |\n"
    assert "## dafl_seed0 (stopped before its end)" in stopped
    header, rule = stopped.splitlines()[2:4]
    assert header.endswith(
        "| parameter average (%) | class entropy | collapsed by iteration | restarts (collapsed at -> back to) |"
    )
    assert rule == "|---" * 8 + "|"
    assert "| dafl_seed0 | 480 | 87.50 | 90.00 at 360 | 92.50 | 0.97 | no | none |" in stopped
    assert "| dafl_seed1 | no evaluation yet | | | | | | |" in stopped
    assert "| dafl_seed2 | 240 | 40.00 | 50.00 at 120 | - | 0.00 | 240 | 240 -> 120 |" in stopped
    assert "teacher_dafl" not in stopped


def test_summary_of_the_reference_loops_folders(tmp_path):
    def reference_folder(name, seeds=None, table=True):
        folder = tmp_path / name
        folder.mkdir()
        if seeds is not None:
            results = {"settings": {}, "teacher_accuracy": 0.99, "seeds": seeds}
            (folder / "results.json").write_text(json.dumps(results))
        if table:
            (folder / "table.md").write_text(f"| {name}'s table |\n")
        return summary["folder_summary"](folder)

    done = {"0": {"iteration": [120], "accuracy": [0.9], "seconds": 12.5}}
    assert reference_folder("reference_dafl_seed0", done) == (
        "## reference_dafl_seed0 (the reference's loop in PyTorch, finished)\n\n| reference_dafl_seed0's table |\n"
    )
    # known by its results.json under any name; a seed without its seconds was stopped by the limit
    stopped = reference_folder("torch_runs", {"1": {"iteration": [120], "accuracy": [0.9]}})
    assert stopped.startswith(
        "## torch_runs (the reference's loop in PyTorch, stopped before its end)\n\n| torch"
    )
    # started, not yet evaluated: known by its name
    assert reference_folder("reference_dafl_seed2", table=False) == (
        "## reference_dafl_seed2 (the reference's loop in PyTorch, stopped before its end)\n\n(no evaluation yet)\n"
    )
    # a data_free_mnist.py folder with a results.json is not one
    (tmp_path / "teachers").mkdir()
    (tmp_path / "teachers" / "results.json").write_text(json.dumps({"rows": []}))
    (tmp_path / "teachers" / "table.md").write_text("| teachers |\n")
    assert summary["folder_summary"](tmp_path / "teachers") == "## teachers (finished)\n\n| teachers |\n"


def test_gpu_script_refuses_an_unknown_part_before_it_starts_any(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PARTS": "dfad dafl"}
    result = subprocess.run(["bash", str(EXPERIMENTS / "data_free_gpu.sh"), "mnist", str(tmp_path / "out")],
                            check=False, capture_output=True, text=True, env=env)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "data_free_gpu.sh: unknown part 'dafl' in PARTS (dfad, zskt, dafl_seedK or reference_dafl_seedK)\n"
    )
    assert not list((tmp_path / "out").iterdir())


def test_summary_command_names_its_usage(tmp_path):
    result = subprocess.run([sys.executable, str(EXPERIMENTS / "data_free_summary.py")], check=False,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == "usage: python experiments/data_free_summary.py OUT"


@pytest.mark.slow
def test_gpu_script_runs_the_five_parts_and_summarises_them(tmp_path):
    """The script in --smoke mode on the CPU: the shared teachers, then five finished folders (each
    DAFL seed alone, with restarts) that read them back, a summary of each, an archive without
    checkpoints."""
    (tmp_path / "mnist").mkdir()
    data, out = write_mnist_like(tmp_path / "mnist"), tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "JAX_DEFAULT_MATMUL_PRECISION"} | {
        "PYTHON": sys.executable
    }
    command = ["bash", str(EXPERIMENTS / "data_free_gpu.sh"), str(data), str(out), "600", "--smoke"]
    result = subprocess.run(
        [*command, "--steps-per-call", "1"], check=False, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    parts = ("dafl_seed0", "dafl_seed1", "dafl_seed2", "dfad", "zskt")
    text = (out / "summary.md").read_text()
    headings = [
        line for line in text.splitlines() if line.endswith(("(finished)", "(stopped before its end)"))
    ]
    assert headings == [f"## {p} (finished)" for p in sorted((*parts, "teachers"))]
    for part in parts:
        assert (out / f"{part}.log").read_text().splitlines()[-1].startswith(f"{part}: exit 0 after ")
    # one teacher per recipe and one student alone, trained once, read back by every process
    shared = out / "teachers"
    assert sorted(p.name for p in shared.iterdir() if p.is_dir()) == [
        "kd",
        "student",
        "teacher_dafl",
        "teacher_dfad",
    ]
    teacher_of = {"dfad": "teacher_dfad", "zskt": "teacher_zskt", "dafl_seed1": "teacher_dafl"}
    for part, link in teacher_of.items():
        assert (out / part / link).is_symlink() and (out / part / "student").is_symlink()
        config = json.loads(next((out / part).glob("*_seed*/config.json")).read_text())["config"]
        assert (
            pathlib.Path(config["teacher"]).resolve()
            == (shared / ("teacher_dafl" if "dafl" in part else "teacher_dfad")).resolve()
        )
    with tarfile.open(out / "results.tar.gz") as archive:
        names = archive.getnames()
    assert {n.split("/")[0] for n in names} == {*parts, "teachers"}
    assert "dafl_seed0/dafl_seed0/metrics.jsonl" in names and "dafl_seed2/dafl_seed2/metrics.jsonl" in names
    record = json.loads((out / "dafl_seed2" / "dafl_seed2" / "config.json").read_text())
    assert record["provenance"]["matmul_precision"] == "float32"  # the papers' arithmetic, not TF32
    dafl = record["config"]
    assert dafl["collapse_restarts"] == 3 and dafl["student_optimizer"]["ema_decay"] == 0.999
    assert "parameter average" in (out / "dafl_seed2" / "table.md").read_text()
    assert not [n for n in names if "/checkpoints" in n or "/samples/" in n]


@pytest.mark.slow
def test_gpu_script_sets_jdistills_dafl_beside_the_reference_loop(tmp_path):
    """``PARTS="dafl_seed0 reference_dafl_seed0"`` in --smoke mode on the CPU: the reference loop runs
    on the shared DAFL teacher, its table joins the summary, and the summary ends with the two
    groups compared."""
    pytest.importorskip("torch", reason="the reference loop needs PyTorch: pip install -e '.[parity]'")
    (tmp_path / "mnist").mkdir()
    # no more images than --smoke takes: the reference loop sees the data the teacher was trained on
    data, out = write_mnist_like(tmp_path / "mnist", train=512, test=256), tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "JAX_DEFAULT_MATMUL_PRECISION"} | {
        "PYTHON": sys.executable,
        "PARTS": "dafl_seed0 reference_dafl_seed0",
        "REFERENCE_OPTIONS": "--iterations 4 --eval-every 2 --batch-size 32 --generator-width 4 --device cpu",
    }
    command = ["bash", str(EXPERIMENTS / "data_free_gpu.sh"), str(data), str(out), "600", "--smoke"]
    result = subprocess.run(
        [*command, "--steps-per-call", "1"], check=False, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    log = (out / "reference_dafl_seed0.log").read_text().splitlines()
    assert log[-1].startswith("reference_dafl_seed0: exit 0 after "), log
    results = json.loads((out / "reference_dafl_seed0" / "results.json").read_text())
    assert results["settings"]["teacher"] == str(out / "teachers" / "teacher_dafl")
    assert results["settings"]["matmul_precision"] == "float32"
    assert results["seeds"]["0"]["iteration"] == [2, 4]
    text = (out / "summary.md").read_text()
    assert "## dafl_seed0 (finished)" in text
    assert "## reference_dafl_seed0 (the reference's loop in PyTorch, finished)" in text
    comparison = text.split("## DAFL: jdistill against the reference loop (experiments/dafl_compare.py)")[1]
    assert (
        "| jdistill (1 seeds) |" in comparison and "| PyTorch, the reference's loop (1 seeds) |" in comparison
    )
    assert "two-sided permutation p = 1.000 (1 and 1 seeds, unpaired; exact, all 2 splits)" in comparison
    with tarfile.open(out / "results.tar.gz") as archive:
        assert "reference_dafl_seed0/results.json" in archive.getnames()

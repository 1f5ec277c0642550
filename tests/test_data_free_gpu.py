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


def test_gpu_script_refuses_an_unknown_part_before_it_starts_any(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PARTS": "dfad dafl"}
    result = subprocess.run(["bash", str(EXPERIMENTS / "data_free_gpu.sh"), "mnist", str(tmp_path / "out")],
                            capture_output=True, text=True, env=env)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == "data_free_gpu.sh: unknown part 'dafl' in PARTS (dfad, zskt or dafl_seedK)\n"
    assert not list((tmp_path / "out").iterdir())


def test_summary_command_names_its_usage(tmp_path):
    result = subprocess.run([sys.executable, str(EXPERIMENTS / "data_free_summary.py")], capture_output=True,
                            text=True)  # fmt: skip
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
    result = subprocess.run([*command, "--steps-per-call", "1"], capture_output=True, text=True, env=env)
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

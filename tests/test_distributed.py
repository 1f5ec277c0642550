"""Several processes (``jax.distributed``) on this machine: 2 processes of 2 CPU devices each give
the metrics of 1 process of 4 devices with the same global batch, for teacher training, a stateful
method (CRD's memory banks), an adversarial game (its teacher sharded over both processes'
devices) and a data set streamed from disk (each process reading its part); a 2-process run resumes from its checkpoint; a failure on process 0 is one line on every
process. The option checks are in the fast tier."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from jdistill.cli import main
from jdistill.train import RunDir

ROOT = pathlib.Path(__file__).parents[1]
TEACHER = ["train-teacher", "--model", "mlp32", "--dataset", "digits", "--epochs", "3", "--batch-size", "32",
           "--learning-rate", "0.1", "--quiet"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(args: list[str], out, processes: int) -> list[subprocess.CompletedProcess]:
    """``python -m jdistill ARGS --out OUT`` as ``processes`` processes sharing 4 CPU devices."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={4 // processes}"
    command = [sys.executable, "-m", "jdistill", *args, "--out", str(out)]
    if processes > 1:
        command += ["--coordinator-address", f"localhost:{free_port()}", "--num-processes", str(processes)]
    started = [
        subprocess.Popen(
            command + (["--process-id", str(i)] if processes > 1 else []),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    done = []
    for process in started:
        stdout, stderr = process.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return done


def succeeded(done: list[subprocess.CompletedProcess]) -> list[dict]:
    for process in done:
        assert process.returncode == 0, process.stderr[-3000:]
    return [json.loads(p.stdout[p.stdout.index("{") :]) for p in done]


def same_trajectory(one, two) -> None:
    """The metrics of every epoch agree to float32 rounding (the processes sum in another order)."""
    a, b = RunDir(one).metrics(), RunDir(two).metrics()
    assert [m["epoch"] for m in a] == [m["epoch"] for m in b] and len(a) > 1
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        numbers = [k for k in x if k != "seconds" and isinstance(x[k], float)]
        np.testing.assert_allclose([x[k] for k in numbers], [y[k] for k in numbers], rtol=2e-5, atol=1e-6)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "one"
    succeeded(launch(TEACHER, out, 1))
    return out


@pytest.mark.slow
def test_two_processes_train_a_teacher_as_one_does_and_resume(teacher, tmp_path):
    two = tmp_path / "two"
    summaries = succeeded(launch(TEACHER, two, 2))
    same_trajectory(teacher, two)
    assert summaries[0] == summaries[1] == RunDir(two).summary()
    assert RunDir(two).summary()["devices"] == 4
    assert RunDir(two).config_record()["provenance"]["devices"]["processes"] == 2
    assert len(list((two / "tensorboard").iterdir())) == 1  # process 0's events only
    # An interrupted run: its last checkpoint and summary gone. Both processes resume from epoch 2.
    for gone in (two / "checkpoints" / "3", two / "summary.json"):
        subprocess.run(["rm", "-r", str(gone)], check=True)
    succeeded(launch(TEACHER, two, 2))
    same_trajectory(teacher, two)
    assert len(RunDir(two).config_record()["resumed"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [(["distill", "--method", "kd", "--method", "crd"], []), (["adversarial-kd"], ["--shard-teacher"])],
    ids=["crd", "adversarial-kd, the teacher sharded over the processes"],
)
def test_two_processes_distill_as_one_does(teacher, tmp_path, command):
    command, two_only = command
    args = [*command, "--teacher", str(teacher), "--model", "mlp32", "--dataset", "digits", "--epochs", "2",
            "--batch-size", "32", "--learning-rate", "0.1", "--quiet"]  # fmt: skip
    succeeded(launch(args, tmp_path / "one", 1))
    succeeded(launch(args + two_only, tmp_path / "two", 2))
    same_trajectory(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_two_processes_each_read_their_part_of_a_streamed_data_set(tmp_path):
    """Records on disk: each process reads its half of every batch (and of the test set), and
    they are assembled into the global arrays; the metrics are 1 process's."""
    pytest.importorskip("grain")
    from jdistill.data import load_digits
    from jdistill.data.records import write_dataset

    write_dataset(load_digits(), tmp_path / "records")
    args = [*TEACHER[:4], "records", "--data-dir", str(tmp_path / "records"), *TEACHER[5:], "--max-shift", "1"]
    succeeded(launch(args, tmp_path / "one", 1))
    succeeded(launch(args, tmp_path / "two", 2))
    same_trajectory(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_a_failure_on_process_0_is_one_line_on_every_process(teacher, tmp_path):
    other = [*TEACHER[:-1], "--seed", "7", "--quiet"]  # another run than the one in --out
    subprocess.run(["cp", "-r", str(teacher), str(tmp_path / "taken")], check=True)
    (tmp_path / "taken" / "summary.json").unlink()
    done = launch(other, tmp_path / "taken", 2)
    assert [p.returncode for p in done] == [1, 1]
    lines = [p.stderr.strip().splitlines()[-1] for p in done]
    assert lines[0].startswith("jdistill train-teacher: error: ") and "differs in: seed" in lines[0]
    assert lines[1].startswith(
        "jdistill train-teacher: error: process 0 stopped at claiming the run directory"
    )
    assert "differs in: seed" in lines[1]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--num-processes", "2"], "several processes need all of --coordinator-address, --num-processes, "
         "--process-id; missing --coordinator-address, --process-id"),
        (["--coordinator-address", "host0", "--num-processes", "2", "--process-id", "0"],
         "--coordinator-address must be HOST:PORT, got 'host0'"),
        (["--coordinator-address", "host0:1234", "--num-processes", "2", "--process-id", "2"],
         "--process-id must be in 0..1 for --num-processes 2, got 2"),
        (["--distributed", "--num-processes", "2"],
         "--distributed reads the processes from the environment: give it or the three options"),
    ],
)  # fmt: skip
def test_several_processes_options_are_checked_in_one_line(tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exit:
        main([*TEACHER, "--out", str(tmp_path / "run"), *options])
    assert exit.value.code == f"jdistill train-teacher: error: {message}"
    assert not (tmp_path / "run").exists()

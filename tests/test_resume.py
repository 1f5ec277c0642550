"""A run killed with SIGKILL at an arbitrary point and started again with the same command ends
with exactly the metrics of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

COMMAND = [
    "train-teacher",
    "--model",
    "mlp256",
    "--dataset",
    "digits",
    "--epochs",
    "12",
    "--batch-size",
    "32",
    "--max-shift",
    "1",
    "--seed",
    "3",
    "--quiet",
]


def run_cli(out, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as a user runs it
    return subprocess.Popen(
        [sys.executable, "-m", "jdistill", *COMMAND, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def metrics_without_timing(out):
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if k != "seconds"} for m in lines]


def test_sigkill_then_rerun_gives_the_uninterrupted_metrics(tmp_path):
    reference = run_cli(tmp_path / "reference")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    interrupted = tmp_path / "interrupted"
    process = run_cli(interrupted)
    deadline = time.monotonic() + 300
    while (
        not (interrupted / "metrics.jsonl").exists()
        or len((interrupted / "metrics.jsonl").read_text().splitlines()) < 5
    ):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the run ended or stalled before it could be killed: {process.stderr.read()}")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    epochs_done = len((interrupted / "metrics.jsonl").read_text().splitlines())
    assert epochs_done < 12 and not (interrupted / "summary.json").exists()

    resumed = run_cli(interrupted)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert metrics_without_timing(interrupted) == metrics_without_timing(tmp_path / "reference")
    assert (
        json.loads((interrupted / "summary.json").read_text())["test/accuracy"]
        == json.loads((tmp_path / "reference" / "summary.json").read_text())["test/accuracy"]
    )

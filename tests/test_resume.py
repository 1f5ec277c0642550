"""A run killed (SIGKILL) or interrupted (Ctrl-C, SIGINT) at an arbitrary point and started again
with the same command ends with exactly the metrics of an uninterrupted run: a teacher run and a
distillation run."""

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


def run_cli(out, command=COMMAND, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as a user runs it
    return subprocess.Popen(
        [sys.executable, "-m", "jdistill", *command, "--out", str(out)],
        env=env,
        # As in a terminal: a shell that starts jobs in the background makes them ignore SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def metrics_without_timing(out):
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if k != "seconds"} for m in lines]


def interrupt_and_resume(tmp_path, command, sig, epochs):
    reference = run_cli(tmp_path / "reference", command)
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    interrupted = tmp_path / "interrupted"
    process = run_cli(interrupted, command)
    deadline = time.monotonic() + 300
    while (
        not (interrupted / "metrics.jsonl").exists()
        or len((interrupted / "metrics.jsonl").read_text().splitlines()) < epochs // 4
    ):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the run ended or stalled before it could be killed: {process.stderr.read()}")
        time.sleep(0.02)
    process.send_signal(sig)
    process.wait(timeout=180)
    if sig == signal.SIGINT:
        assert "interrupted; the same command resumes" in process.stderr.read()
    epochs_done = len((interrupted / "metrics.jsonl").read_text().splitlines())
    assert epochs_done < epochs and not (interrupted / "summary.json").exists()

    resumed = run_cli(interrupted, command)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert metrics_without_timing(interrupted) == metrics_without_timing(tmp_path / "reference")
    assert (
        json.loads((interrupted / "summary.json").read_text())["test/accuracy"]
        == json.loads((tmp_path / "reference" / "summary.json").read_text())["test/accuracy"]
    )


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_metrics(tmp_path):
    interrupt_and_resume(tmp_path, COMMAND, signal.SIGKILL, epochs=12)


@pytest.mark.slow
def test_ctrl_c_during_distillation_then_rerun_gives_the_uninterrupted_metrics(tmp_path):
    teacher = tmp_path / "teacher"
    short_teacher = [*COMMAND[:6], "2", *COMMAND[7:]]
    assert run_cli(teacher, short_teacher).wait(timeout=300) == 0
    distill = [
        "distill", "--teacher", str(teacher), "--model", "mlp32", "--method", "kd+fitnet",
        "--temperature", "4", "--dataset", "digits", "--epochs", "40", "--batch-size", "32",
        "--seed", "1", "--quiet",
    ]  # fmt: skip
    interrupt_and_resume(tmp_path, distill, signal.SIGINT, epochs=40)


def test_ctrl_c_while_a_checkpoint_is_saved_takes_effect_after_it_is_complete(tmp_path):
    import jax.numpy as jnp

    from jdistill.train import checkpoint

    class SignalDuringSave:
        """A manager whose save is interrupted by Ctrl-C half-way."""

        def __init__(self):
            self.inner = checkpoint.manager(tmp_path)

        def save(self, epoch, args):
            os.kill(os.getpid(), signal.SIGINT)
            return self.inner.save(epoch, args=args)

        def wait_until_finished(self):
            self.inner.wait_until_finished()

    mngr = SignalDuringSave()
    before = signal.getsignal(signal.SIGINT)  # default, or SIG_IGN in a background job
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(mngr, 1, {"w": jnp.ones(3)})
    assert checkpoint.manager(tmp_path).latest_step() == 1  # the checkpoint was finished first
    assert signal.getsignal(signal.SIGINT) is before  # the handler is given back

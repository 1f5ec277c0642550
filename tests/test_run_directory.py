"""Run directories survive ordinary mistakes: one process at a time (a lock naming its holder, stale
locks replaced), a damaged checkpoint or metrics line does not block resuming, damaged JSON is one
line naming the file, evaluation and checkpoint cadence are not part of a run's identity, and
``config.json`` records where the run came from."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from jdistill.data import load_digits
from jdistill.train import RunConfig, RunDir, fit
from jdistill.train.lock import RunLockedError, run_lock

CONFIG = RunConfig(model="mlp32", dataset="digits", epochs=3, batch_size=64)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits):
    """A finished 3-epoch run (checkpoints 2 and 3) and its summary; tests copy it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    return out, fit(CONFIG, out, dataset=digits, progress=False)


def copy_unfinished(finished, tmp_path):
    """A copy of the finished run without its summary: the next ``fit`` resumes it."""
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    (out / "summary.json").unlink()
    return out


def write_lock(run_dir, pid, host=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": host or socket.gethostname(), "started": "2026-11-29T10:00:00"}
    (run_dir / "lock").write_text(json.dumps(record))


def test_a_second_process_is_refused_with_the_holders_pid_and_the_run_is_untouched(digits, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path / "run", holder.pid)
        with pytest.raises(
            RunLockedError, match=f"in use by process {holder.pid} \\(since 2026-11-29T10:00:00\\)"
        ):
            fit(CONFIG, tmp_path / "run", dataset=digits, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["lock"]


def test_a_stale_lock_is_replaced_with_a_warning_and_released_at_the_end(digits, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_lock(tmp_path / "run", gone.pid)
    with pytest.warns(UserWarning, match=f"removing a stale lock \\(process {gone.pid}, which is gone\\)"):
        summary = fit(CONFIG, tmp_path / "run", dataset=digits, progress=False)
    assert len(RunDir(tmp_path / "run").metrics()) == 3 and "test/accuracy" in summary
    assert not (tmp_path / "run" / "lock").exists()

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "lock").write_text('{"pid": 12')  # a process stopped while writing it
    with pytest.warns(UserWarning, match="an unreadable lock file"):
        with run_lock(tmp_path / "other"):
            assert json.loads((tmp_path / "other" / "lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / "other" / "lock").exists()


def test_a_lock_from_another_host_is_refused_naming_the_file_to_delete(digits, tmp_path):
    write_lock(tmp_path / "run", 1, host="another-host")
    lock = tmp_path / "run" / "lock"
    with pytest.raises(
        RunLockedError, match=f"process 1 on another-host .*; if that process is gone, delete {lock}"
    ):
        fit(CONFIG, tmp_path / "run", dataset=digits, progress=False)


def test_an_unreadable_latest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(
    finished, digits, tmp_path
):
    out = copy_unfinished(finished, tmp_path)
    for data in (out / "checkpoints" / "3").rglob("d/*"):
        if data.is_file():
            data.write_bytes(data.read_bytes()[:20])  # truncated
    with pytest.warns(UserWarning, match="checkpoint 3 of .* cannot be read .* resuming from the one before"):
        resumed = fit(CONFIG, out, dataset=digits, progress=False)
    assert resumed["test/accuracy"] == finished[1]["test/accuracy"]  # epoch 3 trained again, exactly
    assert (out / "unreadable_checkpoints" / "3").is_dir()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2", "3"]
    assert [m["epoch"] for m in RunDir(out).metrics()] == [1, 2, 3]


def test_emptied_checkpoint_metadata_counts_as_unreadable_and_none_readable_is_one_line(
    finished, digits, tmp_path
):
    out = copy_unfinished(finished, tmp_path)
    (out / "checkpoints" / "3" / "_CHECKPOINT_METADATA").write_text("")
    (out / "checkpoints" / "3" / "default" / "_METADATA").write_text("")
    with pytest.warns(UserWarning, match="checkpoint 3 .* cannot be read"):
        fit(CONFIG, out, dataset=digits, progress=False)

    out = copy_unfinished(finished, tmp_path / "none")
    for epoch in ("2", "3"):
        (out / "checkpoints" / epoch / "default" / "_METADATA").write_text("")
        (out / "checkpoints" / epoch / "_CHECKPOINT_METADATA").write_text("")
    with pytest.raises(
        ValueError, match="no checkpoint in .*checkpoints can be read .*another --out directory"
    ):
        fit(CONFIG, out, dataset=digits, progress=False)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2", "3"]  # nothing moved
    assert not (out / "lock").exists()


def test_a_partial_last_metrics_line_is_dropped_and_a_damaged_one_elsewhere_is_named(
    finished, digits, tmp_path
):
    out = copy_unfinished(finished, tmp_path)
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 4, "sta')  # a process stopped while writing
    with pytest.warns(UserWarning, match="metrics.jsonl: dropping a partial last line"):
        assert [m["epoch"] for m in RunDir(out).metrics()] == [1, 2, 3]
    with pytest.warns(UserWarning, match="partial last line"):
        fit(CONFIG, out, dataset=digits, progress=False)
    assert [m["epoch"] for m in RunDir(out).metrics()] == [1, 2, 3]

    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="metrics.jsonl, line 2, is not JSON"):
        RunDir(out).metrics()


def test_damaged_json_files_are_one_line_naming_the_file(finished, tmp_path):
    out = copy_unfinished(finished, tmp_path)
    (out / "config.json").write_text('{"config": ')
    with pytest.raises(ValueError, match=f"{out / 'config.json'} is not valid JSON .*; it is damaged"):
        RunDir(out).config()
    (out / "summary.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="summary.json does not hold a JSON object"):
        RunDir(out).summary()


def test_cadence_is_not_identity_and_a_resumed_start_is_recorded(finished, digits, tmp_path):
    # A finished run asked again with another cadence is the same run: its summary comes back.
    again = fit(CONFIG.replace(eval_every=2, checkpoint_every=3), finished[0], dataset=digits)
    assert again == finished[1]

    out = copy_unfinished(finished, tmp_path)
    resumed = fit(CONFIG.replace(checkpoint_every=3), out, dataset=digits, progress=False)
    assert resumed["test/accuracy"] == finished[1]["test/accuracy"]
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["loop"]["checkpoint_every"] == 3
    created = json.loads((finished[0] / "config.json").read_text())["provenance"]
    assert record["provenance"] == created and len(record["resumed"]) == 1
    assert set(record["resumed"][0]) == set(created)
    with pytest.raises(ValueError, match="differs in: seed"):
        RunDir(out).claim(CONFIG.replace(seed=5))


def test_config_json_records_the_command_versions_commit_and_devices(finished):
    import jax

    import jdistill

    record = json.loads((finished[0] / "config.json").read_text())
    provenance = record["provenance"]
    assert provenance["command"].split()[0] == sys.orig_argv[0].split()[0]
    assert provenance["versions"]["jdistill"] == jdistill.__version__
    assert provenance["versions"]["jax"] == jax.__version__
    assert set(provenance["versions"]) >= {"jaxlib", "flax", "optax", "orbax-checkpoint"}
    assert provenance["devices"]["count"] == jax.device_count()
    assert provenance["devices"]["platform"] == jax.devices()[0].platform
    assert provenance["matmul_precision"] == os.environ.get("JAX_DEFAULT_MATMUL_PRECISION", "default")
    git = provenance["git"]
    assert git is None or (len(git["commit"]) == 40 and isinstance(git["dirty"], bool))


def test_provenance_records_the_precision_of_float32_matrix_products():
    # "default" means TF32 on recent NVIDIA GPUs: a run must say which arithmetic made its numbers.
    import jax

    from jdistill.train.provenance import provenance

    assert provenance()["matmul_precision"] == os.environ.get("JAX_DEFAULT_MATMUL_PRECISION", "default")
    with jax.default_matmul_precision("float32"):
        assert provenance()["matmul_precision"] == "float32"


def test_out_as_a_file_is_one_line_and_a_configuration_that_cannot_start_writes_nothing(digits, tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ValueError, match="--out .*file is a file, not a directory"):
        fit(CONFIG, tmp_path / "file", dataset=digits, progress=False)
    assert (tmp_path / "file").read_text() == "mine"
    missing_teacher = CONFIG.replace(teacher=str(tmp_path / "nowhere"), methods=("ce", "kd"))
    with pytest.raises(FileNotFoundError):
        fit(missing_teacher, tmp_path / "bad", dataset=digits, progress=False)
    assert not (tmp_path / "bad").exists()


def test_more_epochs_extend_a_finished_run_and_fewer_are_refused(digits, tmp_path):
    constant = CONFIG.replace(schedule="constant")
    fit(constant, tmp_path / "run", dataset=digits, progress=False)
    longer = constant.replace(epochs=5)
    extended = fit(longer, tmp_path / "run", dataset=digits, progress=False)
    fresh = fit(longer, tmp_path / "fresh", dataset=digits, progress=False)
    assert extended["test/accuracy"] == fresh["test/accuracy"]  # a constant rate: the same run exactly
    assert [m["epoch"] for m in RunDir(tmp_path / "run").metrics()] == [1, 2, 3, 4, 5]
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["config"]["loop"]["epochs"] == 5 and record["extended"] == [{"from": 3, "to": 5}]
    assert fit(longer, tmp_path / "run", dataset=digits) == extended  # finished at its new length
    with pytest.raises(ValueError, match="holds a run of 5 epochs; fewer cannot be had from it"):
        fit(constant, tmp_path / "run", dataset=digits, progress=False)

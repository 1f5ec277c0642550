"""Besides metrics.jsonl, a run writes TensorBoard event files with the same numbers, and a run whose
output is not a terminal logs one line per epoch instead of a progress bar; with WANDB_PROJECT set, the
same numbers go to W&B."""

import json
import shutil
import struct
import sys

import pytest
from tensorboardX.proto import event_pb2

from jdistill.data import load_digits
from jdistill.train import RunConfig, RunDir, fit
from jdistill.train.events import EVENTS_DIR

CONFIG = RunConfig(model="mlp32", dataset="digits", epochs=3, batch_size=64, eval_every=2)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def read_scalars(run_dir) -> dict[tuple[str, int], float]:
    """``{(tag, step): value}`` of every event file of the run, read as TFRecords (length, its
    CRC, the Event proto, its CRC), later files overriding earlier ones."""
    scalars = {}
    for path in sorted((run_dir / EVENTS_DIR).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars[value.tag, event.step] = value.simple_value
    return scalars


def test_event_files_hold_every_number_of_metrics_jsonl_by_epoch(digits, tmp_path):
    fit(CONFIG, tmp_path / "run", dataset=digits, progress=False)
    scalars = read_scalars(tmp_path / "run")
    expected = {
        (k, m["epoch"]): v
        for m in RunDir(tmp_path / "run").metrics()
        for k, v in m.items()
        if k not in ("epoch", "step") and isinstance(v, float)
    }
    assert ("test/accuracy", 2) in expected and ("test/accuracy", 1) not in expected  # eval every 2
    assert set(scalars) == set(expected)
    for key, value in expected.items():
        assert scalars[key] == pytest.approx(value, rel=1e-6), key


def test_a_resumed_run_appends_events_from_the_epoch_it_resumes(digits, tmp_path):
    fit(CONFIG, tmp_path / "full", dataset=digits, progress=False)
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    (tmp_path / "cut" / "summary.json").unlink()
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "3")
    fit(CONFIG, tmp_path / "cut", dataset=digits, progress=False)
    assert len(list((tmp_path / "cut" / EVENTS_DIR).glob("events.out.tfevents.*"))) == 2
    untimed = lambda scalars: {key: v for key, v in scalars.items() if key[0] != "seconds"}  # noqa: E731
    assert untimed(read_scalars(tmp_path / "cut")) == pytest.approx(untimed(read_scalars(tmp_path / "full")))


def test_output_that_is_not_a_terminal_gets_one_line_per_epoch(digits, tmp_path, capsys):
    fit(CONFIG, tmp_path / "run", dataset=digits, progress=True, label="student")
    lines = capsys.readouterr().err.splitlines()
    metrics = RunDir(tmp_path / "run").metrics()
    epoch_lines = [line for line in lines if line.startswith("student epoch ")]
    assert len(epoch_lines) == 3 and "\r" not in capsys.readouterr().err
    assert epoch_lines[0].startswith(f"student epoch 1/3: train/loss {metrics[0]['train/loss']:.4g} (")
    assert f"test/accuracy {metrics[1]['test/accuracy']:.4g}" in epoch_lines[1]


class FakeWandb:
    """Records what jdistill asks of the ``wandb`` module (not installed in the tests)."""

    def __init__(self):
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **options):
        self.inits.append(options)
        return self

    def log(self, scalars, step):
        self.logged.append((step, scalars))

    def finish(self):
        self.finished += 1


def test_with_wandb_project_set_every_epoch_goes_to_one_wandb_run_that_a_resume_continues(
    digits, tmp_path, monkeypatch
):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_PROJECT", "kd")
    fit(CONFIG, tmp_path / "run", dataset=digits, progress=False)
    (tmp_path / "run" / "summary.json").unlink()
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "3")
    fit(CONFIG, tmp_path / "run", dataset=digits, progress=False)  # resumes at epoch 3
    first, resumed = fake.inits
    assert first == resumed and first["project"] == "kd" and first["resume"] == "allow"
    assert first["config"] == json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert [step for step, _ in fake.logged] == [1, 2, 3, 3] and fake.finished == 2
    metrics = RunDir(tmp_path / "run").metrics()
    assert fake.logged[1][1]["test/accuracy"] == metrics[1]["test/accuracy"]
    assert "epoch" not in fake.logged[0][1] and fake.logged[0][1]["train/loss"] == metrics[0]["train/loss"]


def test_wandb_project_without_wandb_installed_warns_in_one_line(digits, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails
    monkeypatch.setenv("WANDB_PROJECT", "kd")
    with pytest.warns(UserWarning, match=r"WANDB_PROJECT is set but wandb is not installed"):
        fit(CONFIG, tmp_path / "run", dataset=digits, progress=False)
    assert RunDir(tmp_path / "run").summary()["epochs"] == 3

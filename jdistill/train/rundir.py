"""A run directory: ``config.json`` (configuration and library version), ``metrics.jsonl`` (one
line per epoch), ``summary.json`` (written when the run finishes) and ``checkpoints/``."""

import dataclasses
import json
import pathlib

import numpy as np

import jdistill
from jdistill.train.config import RunConfig


class RunDir:
    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)

    @property
    def config_file(self) -> pathlib.Path:
        return self.path / "config.json"

    @property
    def metrics_file(self) -> pathlib.Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_file(self) -> pathlib.Path:
        return self.path / "summary.json"

    def claim(self, config) -> None:
        """Create the directory for ``config`` (a dataclass: a :class:`RunConfig` or an adversarial
        run's configuration), or accept it if it already holds the same configuration (a resumed
        run). A different configuration is refused. A field the saved configuration lacks (one
        added to the library after the run was made) counts as its default."""
        current = json.loads(json.dumps(dataclasses.asdict(config)))
        if self.config_file.exists():
            previous = {**_defaults(type(config)), **json.loads(self.config_file.read_text())["config"]}
            if previous != current:
                changed = sorted(
                    k for k in current.keys() | previous.keys() if previous.get(k) != current.get(k)
                )
                raise ValueError(
                    f"{self.path} already holds a run with a different configuration "
                    f"(differs in: {', '.join(changed)}); use another --out directory"
                )
            return
        self.path.mkdir(parents=True, exist_ok=True)
        record = {"config": current, "jdistill_version": jdistill.__version__}
        self.config_file.write_text(json.dumps(record, indent=2) + "\n")

    def config(self) -> RunConfig:
        if not self.config_file.exists():
            raise FileNotFoundError(f"{self.path} is not a jdistill run directory (no config.json)")
        return RunConfig(**json.loads(self.config_file.read_text())["config"])

    def metrics(self) -> list[dict]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line]

    def keep_metrics_until(self, epoch: int) -> None:
        """Drop metric lines after ``epoch`` (written after the checkpoint a resumed run starts from)."""
        kept = [m for m in self.metrics() if m["epoch"] <= epoch]
        self.metrics_file.write_text("".join(json.dumps(m) + "\n" for m in kept))

    def append_epoch(self, epoch: int, step: int, seconds: float, train: dict, test: dict, **extra) -> None:
        """The metrics line of one epoch: ``epoch``, ``step`` (optimizer steps so far), ``seconds``
        of training, ``train/*`` and ``test/*`` values and any ``extra`` keys."""
        self.append_metrics(
            {
                "epoch": epoch,
                **{k: v for k, v in extra.items() if k == "stage"},
                "step": step,
                "seconds": round(seconds, 3),
                **{f"train/{k}": v for k, v in train.items()},
                **{k: v for k, v in extra.items() if k != "stage"},
                **{f"test/{k}": v for k, v in test.items()},
            }
        )

    def epoch_means(self, step_metrics: list[dict], *, epoch: int, last_checkpoint: int) -> dict:
        """The mean over an epoch's steps of each metric (``step_metrics``: one dict per step, on
        the host). A non-finite mean stops the run: ``FloatingPointError`` names the metric, the
        epoch (1-based) and the checkpoint that is kept."""
        means = {k: float(np.mean([m[k] for m in step_metrics])) for k in step_metrics[0]}
        bad = [k for k, v in means.items() if not np.isfinite(v)]
        if bad:
            raise FloatingPointError(
                f"non-finite {bad[0]} in epoch {epoch}; stopped; the last good checkpoint "
                f"(epoch {last_checkpoint}) is kept in {self.path}"
            )
        return means

    def append_metrics(self, record: dict) -> None:
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def write_summary(self, summary: dict) -> None:
        self.summary_file.write_text(json.dumps(summary, indent=2) + "\n")

    def summary(self) -> dict:
        if not self.summary_file.exists():
            raise FileNotFoundError(f"{self.path} holds no finished run (no summary.json)")
        return json.loads(self.summary_file.read_text())


def _defaults(config_class) -> dict:
    """The JSON form of the default of every field of ``config_class`` that has one."""
    defaults = {}
    for field in dataclasses.fields(config_class):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return json.loads(json.dumps(defaults))

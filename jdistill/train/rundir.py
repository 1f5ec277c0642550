"""A run directory: ``config.json`` (configuration, library version and checkpoint format),
``metrics.jsonl`` (one line per epoch), ``summary.json`` (written when the run finishes) and
``checkpoints/``.

Checkpoint formats: 1 (jdistill 0.1: one ``TrainState``) and 2 (a dictionary of players). A
finished run of either format serves as a teacher; an unfinished run of format 1 cannot resume.
"""

import dataclasses
import json
import pathlib

import jdistill
from jdistill.train.config import RunConfig

FORMAT = 2


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
        if self.config_file.exists():
            record = json.loads(self.config_file.read_text())
            previous, current = self._saved_and_given(config)
            if previous != current:
                changed = sorted(
                    k for k in current.keys() | previous.keys() if previous.get(k) != current.get(k)
                )
                raise ValueError(
                    f"{self.path} already holds a run with a different configuration "
                    f"(differs in: {', '.join(changed)}); use another --out directory"
                )
            if self.format == FORMAT:
                return
            if any((self.path / "checkpoints").glob("[0-9]*")):
                version = record.get("jdistill_version", "?")
                raise ValueError(
                    f"{self.path} holds an unfinished run of jdistill {version} (checkpoint format "
                    f"{self.format}), which jdistill {jdistill.__version__} cannot resume; start it again in "
                    f"another --out directory (its finished runs still load as teachers)"
                )
        self.path.mkdir(parents=True, exist_ok=True)
        record = {"config": _as_json(config), "jdistill_version": jdistill.__version__, "format": FORMAT}
        self.config_file.write_text(json.dumps(record, indent=2) + "\n")

    @property
    def format(self) -> int:
        """The checkpoint format of the run (1 for runs of jdistill 0.1, which did not record it)."""
        return self.config_record().get("format", 1)

    def finished(self, config) -> bool:
        """Whether the directory holds a finished run of exactly ``config``."""
        if not (self.summary_file.exists() and self.config_file.exists()):
            return False
        saved, given = self._saved_and_given(config)
        return saved == given

    def _saved_and_given(self, config) -> tuple[dict, dict]:
        """The saved configuration (a field it lacks counts as its default) and ``config``, both in
        JSON form with their paths resolved: equal when they describe the same run."""
        saved = {**_defaults(type(config)), **json.loads(self.config_file.read_text())["config"]}
        return _comparable(saved), _comparable(_as_json(config))

    def config_record(self) -> dict:
        """``config.json``: the configuration, the library version, the checkpoint format."""
        if not self.config_file.exists():
            raise FileNotFoundError(f"{self.path} is not a jdistill run directory (no config.json)")
        return json.loads(self.config_file.read_text())

    def config(self) -> RunConfig:
        """The configuration of a teacher-training or distillation run."""
        return RunConfig(**self.config_record()["config"])

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

    def append_metrics(self, record: dict) -> None:
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def write_summary(self, summary: dict) -> None:
        self.summary_file.write_text(json.dumps(summary, indent=2) + "\n")

    def summary(self) -> dict:
        if not self.summary_file.exists():
            raise FileNotFoundError(f"{self.path} holds no finished run (no summary.json)")
        return json.loads(self.summary_file.read_text())


PATH_FIELDS = ("data_dir", "teacher", "teacher_dir")


def _as_json(config) -> dict:
    """A configuration dataclass as its ``config.json`` form (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _comparable(config: dict) -> dict:
    """``config`` with its paths resolved, so that ``../data`` and ``/work/data`` name one place."""
    return {
        k: str(pathlib.Path(v).expanduser().resolve()) if k in PATH_FIELDS and isinstance(v, str) else v
        for k, v in config.items()
    }


def _defaults(config_class) -> dict:
    """The JSON form of the default of every field of ``config_class`` that has one."""
    defaults = {}
    for field in dataclasses.fields(config_class):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return json.loads(json.dumps(defaults))

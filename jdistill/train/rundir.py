"""A run directory: ``config.json`` (configuration, library version, checkpoint format and
provenance), ``metrics.jsonl`` (one line per epoch), ``summary.json`` (written when the run
finishes), ``checkpoints/``, ``restarts.jsonl`` (one line per restart, if the form restarts a run
from its checkpoint: :class:`~jdistill.train.game.Hooks`), ``lock`` while a process trains in it (:mod:`jdistill.train.lock`) and
``unreadable_checkpoints/`` if a damaged checkpoint was set aside.

Checkpoint formats: 1 (jdistill 0.1: one ``TrainState``) and 2 (a dictionary of players). A
finished run of either format serves as a teacher; an unfinished run of format 1 cannot resume.
"""

import dataclasses
import json
import pathlib
import warnings

import jdistill
from jdistill.train import groups
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

    @property
    def restarts_file(self) -> pathlib.Path:
        return self.path / "restarts.jsonl"

    def check_place(self) -> None:
        """A one-line error if ``--out`` names something other than a directory."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out {self.path} is a file, not a directory")

    def make(self) -> None:
        """Create the directory (:meth:`check_place` first)."""
        self.check_place()
        self.path.mkdir(parents=True, exist_ok=True)

    def claim(self, config, provenance: dict | None = None) -> None:
        """Record ``config`` (a dataclass: a :class:`RunConfig` or another game's configuration;
        its paths resolved) in the directory with ``provenance``
        (:func:`jdistill.train.provenance.provenance`), or
        accept it if the directory already holds the same run (a resumed run; the start is added
        to ``resumed``). More ``epochs`` than the saved run's extend it (finished or not; recorded
        in ``extended``, and its summary is written again at the new end); any other difference
        is refused. Fields that do not change results (:data:`CADENCE_FIELDS`) are not part of a
        run's identity, and a field the saved configuration lacks (one added to the library after
        the run was made) counts as its default."""
        config_json = _as_json(_with_paths_resolved(config))
        record = {"config": config_json, "jdistill_version": jdistill.__version__, "format": FORMAT}
        if self.config_file.exists():
            previous_record = _read_json(self.config_file)
            previous, current = _identity_of(previous_record, config), identity(config)
            changed = sorted(k for k in current.keys() | previous.keys() if previous.get(k) != current.get(k))
            extended = changed == ["epochs"] and current["epochs"] > previous["epochs"]
            if changed == ["epochs"] and not extended:
                raise ValueError(
                    f"{self.path} holds a run of {previous['epochs']} epochs; fewer cannot be had from it "
                    f"(its checkpoints are of the last epochs): use another --out directory"
                )
            if changed and not extended:
                raise ValueError(
                    f"{self.path} already holds a run with a different configuration "
                    f"(differs in: {', '.join(changed)}); use another --out directory"
                )
            old_format = previous_record.get("format", 1)
            if old_format != FORMAT and any((self.path / "checkpoints").glob("[0-9]*")):
                version = previous_record.get("jdistill_version", "?")
                raise ValueError(
                    f"{self.path} holds an unfinished run of jdistill {version} (checkpoint format "
                    f"{old_format}), which jdistill {jdistill.__version__} cannot resume; start it again in "
                    f"another --out directory (its finished runs still load as teachers)"
                )
            kept = {k: v for k, v in previous_record.items() if k in ("provenance", "resumed", "extended")}
            record = {**record, **kept}
            if provenance is not None:
                record["resumed"] = [*record.get("resumed", []), provenance]
            if extended:
                record["extended"] = [
                    *record.get("extended", []),
                    {"from": previous["epochs"], "to": current["epochs"]},
                ]
                self.summary_file.unlink(missing_ok=True)  # written again when the longer run ends
        elif provenance is not None:
            record["provenance"] = provenance
        self.make()
        _write_atomically(self.config_file, json.dumps(record, indent=2) + "\n")

    @property
    def format(self) -> int:
        """The checkpoint format of the run (1 for runs of jdistill 0.1, which did not record it)."""
        return self.config_record().get("format", 1)

    def finished(self, config) -> bool:
        """Whether the directory holds a finished run of exactly ``config``."""
        if not (self.summary_file.exists() and self.config_file.exists()):
            return False
        return _identity_of(_read_json(self.config_file), config) == identity(config)

    def config_record(self) -> dict:
        """``config.json``: the configuration, the library version, the checkpoint format."""
        if not self.config_file.exists():
            raise FileNotFoundError(f"{self.path} is not a jdistill run directory (no config.json)")
        return _read_json(self.config_file)

    def config(self) -> RunConfig:
        """The configuration of a teacher-training or distillation run."""
        return groups.from_record(RunConfig, self.config_record()["config"])

    def flat_config(self, config_class=RunConfig) -> dict:
        """The saved configuration by flat names (JSON values), whichever layout wrote it."""
        return groups.flat_record(config_class, self.config_record()["config"])

    def metrics(self) -> list[dict]:
        """The lines of ``metrics.jsonl``. A last line that is not JSON (a process stopped while
        writing it) is dropped with a warning; such a line elsewhere is an error naming it."""
        if not self.metrics_file.exists():
            return []
        lines = self.metrics_file.read_text().splitlines()
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                if number < len(lines):
                    raise ValueError(
                        f"{self.metrics_file}, line {number}, is not JSON ({error.msg}); "
                        f"repair or remove that line"
                    ) from None
                warnings.warn(f"{self.metrics_file}: dropping a partial last line", stacklevel=2)
        return records

    def keep_metrics_until(self, epoch: int) -> None:
        """Drop metric lines after ``epoch`` (written after the checkpoint a resumed run starts from)."""
        kept = [m for m in self.metrics() if m["epoch"] <= epoch]
        _write_atomically(self.metrics_file, "".join(json.dumps(m) + "\n" for m in kept))

    def restarts(self) -> list[dict]:
        """The lines of ``restarts.jsonl``: each restart's number, the epoch and step that asked
        for it, the epoch and step it went back to, and why."""
        if not self.restarts_file.exists():
            return []
        return [json.loads(line) for line in self.restarts_file.read_text().splitlines() if line.strip()]

    def append_restart(self, entry: dict) -> None:
        with self.restarts_file.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def keep_restarts_until(self, count: int) -> None:
        """Drop the restarts after the first ``count`` (logged after the checkpoint a resumed run
        starts from: it will make them again)."""
        if self.restarts_file.exists():
            kept = [r for r in self.restarts() if r["restart"] <= count]
            _write_atomically(self.restarts_file, "".join(json.dumps(r) + "\n" for r in kept))

    def append_epoch(
        self,
        epoch: int,
        step: int,
        seconds: float,
        train: dict,
        test: dict,
        eval_prefix: str = "test/",
        write: bool = True,
        **extra,
    ) -> dict:
        """Append (unless not ``write``) and return the metrics line of one epoch: ``epoch``,
        ``step`` (optimizer steps so far), ``seconds`` of training, ``train/*`` values, the
        evaluation's values under ``eval_prefix`` (``test/`` or ``val/``) and any ``extra`` keys."""
        record = {
            "epoch": epoch,
            **{k: v for k, v in extra.items() if k == "stage"},
            "step": step,
            "seconds": round(seconds, 3),
            **{f"train/{k}": v for k, v in train.items()},
            **{k: v for k, v in extra.items() if k != "stage"},
            **{f"{eval_prefix}{k}": v for k, v in test.items()},
        }
        if write:
            self.append_metrics(record)
        return record

    def append_metrics(self, record: dict) -> None:
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def write_summary(self, summary: dict) -> None:
        _write_atomically(self.summary_file, json.dumps(summary, indent=2) + "\n")

    def summary(self) -> dict:
        if not self.summary_file.exists():
            raise FileNotFoundError(f"{self.path} holds no finished run (no summary.json)")
        return _read_json(self.summary_file)


PATH_FIELDS = ("data_dir", "teacher", "teacher_dir", "teacher_cache")
CADENCE_FIELDS = ("eval_every", "checkpoint_every")  # how often, not what: a resumed run may change them


def _read_json(path: pathlib.Path) -> dict:
    """The JSON object in ``path``; a damaged file is a one-line error naming it."""
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON ({error.msg}, line {error.lineno}); it is damaged"
        ) from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} does not hold a JSON object; it is damaged")
    return record


def _as_json(config) -> dict:
    """A configuration dataclass as its ``config.json`` form (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _identity(flat: dict) -> dict:
    """What makes a configuration (``flat``: its leaves by flat name, JSON values) the run it is:
    its leaves without :data:`CADENCE_FIELDS`, with paths resolved so that ``../data`` and
    ``/work/data`` name one place."""
    return {k: _resolved(k, v) for k, v in flat.items() if k not in CADENCE_FIELDS}


def identity(config) -> dict:
    """What makes ``config`` the run it is, by flat name: its leaves without
    :data:`CADENCE_FIELDS`, paths resolved."""
    return _identity(groups.flat_record(type(config), _as_json(config)))


def _with_paths_resolved(config):
    """``config`` with its path leaves (:data:`PATH_FIELDS`) absolute."""
    paths = {k: v for k, v in groups.flat(config).items() if k in PATH_FIELDS and isinstance(v, str)}
    return dataclasses.replace(config, **{k: _resolved(k, v) for k, v in paths.items()}) if paths else config


def _resolved(field: str, value):
    """A path field's value as the absolute path it names (other values unchanged)."""
    return (
        str(pathlib.Path(value).expanduser().resolve())
        if field in PATH_FIELDS and isinstance(value, str)
        else value
    )


def _identity_of(record: dict, config) -> dict:
    """The identity of the configuration saved in ``record`` (``config.json``, nested or the flat
    layout of jdistill 0.2), read as the class of ``config``: a leaf it lacks (added to the library
    after the run was made) counts as its default."""
    return _identity(groups.flat_record(type(config), record["config"]))


def _write_atomically(path: pathlib.Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a process stopped
    meanwhile leaves the old file or the new one, never half of one."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)

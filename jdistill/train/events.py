"""Where each epoch's metrics go besides ``metrics.jsonl`` (the source of truth): TensorBoard event
files in ``<run>/tensorboard/`` (through tensorboardX, which needs no TensorFlow), Weights & Biases
when ``WANDB_PROJECT`` is set (``pip install 'jdistill[wandb]'``) and, when the output is not a
terminal (a log file, a batch job), one line per epoch instead of a progress bar.

    tensorboard --logdir runs/      # every run under runs/, each with its scalars by epoch
    WANDB_PROJECT=kd jdistill distill ...   # also to W&B (WANDB_MODE=offline: to <run>/wandb only)
"""

import hashlib
import json
import os
import sys
import warnings

EVENTS_DIR = "tensorboard"


class EventWriter:
    """TensorBoard scalars of a run directory. A resumed run starts at ``first_epoch``: events
    of later epochs written before the interruption are purged, as ``metrics.jsonl``'s lines are.
    Without tensorboardX installed it warns and writes nothing; with ``write`` false (the processes
    other than 0 of a run in several) it writes nothing."""

    def __init__(self, run_dir, first_epoch: int, *, write: bool = True):
        self._writer = self._wandb = None
        if not write:
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            warnings.warn("tensorboardX is not installed: no TensorBoard events (metrics.jsonl has them)")
            return
        # tensorboardX names the file by the second and the host: a run resumed within the same second
        # would reopen (and truncate) the file of its first part without a suffix of its own.
        suffix = f".epoch{first_epoch}.pid{os.getpid()}"
        self._writer = SummaryWriter(
            str(run_dir / EVENTS_DIR), purge_step=first_epoch + 1, filename_suffix=suffix
        )

        self._wandb = wandb_run(run_dir)

    def write(self, record: dict) -> None:
        """The numbers of one ``metrics.jsonl`` line, at step = its epoch."""
        scalars = {
            name: value
            for name, value in record.items()
            if name not in ("epoch", "step")
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        }
        if self._wandb is not None:
            self._wandb.log(scalars, step=record["epoch"])
        if self._writer is None:
            return
        for name, value in scalars.items():
            self._writer.add_scalar(name, value, record["epoch"])
        self._writer.flush()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.finish()


def wandb_run(run_dir):
    """A W&B run for the run directory when ``WANDB_PROJECT`` is set (else None): its id is derived
    from the directory's resolved path, so a resumed run continues the same W&B run; its config is
    ``config.json``'s. W&B drops the steps it already has (epochs between the last checkpoint and an
    interruption), as its steps only increase."""
    project = os.environ.get("WANDB_PROJECT")
    if not project:
        return None
    try:
        import wandb
    except ImportError:
        warnings.warn("WANDB_PROJECT is set but wandb is not installed (pip install 'jdistill[wandb]')")
        return None
    path = run_dir.resolve()
    config = json.loads((path / "config.json").read_text())["config"]
    identity = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return wandb.init(
        project=project, id=identity, name=path.name, dir=str(path), config=config, resume="allow"
    )


def is_terminal(stream=None) -> bool:
    stream = stream or sys.stderr
    return hasattr(stream, "isatty") and stream.isatty()


def epoch_line(label: str, epochs: int, record: dict) -> str:
    """One line for the log of a run whose output is not a terminal, e.g.
    ``teacher epoch 3/40: train/loss 0.412, test/accuracy 0.8813 (4.1 s)``."""
    shown = [k for k in record if k == "train/loss" or k.startswith(("test/", "val/"))]
    values = ", ".join(f"{k} {record[k]:.4g}" for k in shown if isinstance(record[k], (int, float)))
    return f"{label} epoch {record['epoch']}/{epochs}: {values} ({record['seconds']:.1f} s)"

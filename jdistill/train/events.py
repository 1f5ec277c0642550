"""Where each epoch's metrics go besides ``metrics.jsonl`` (the source of truth): TensorBoard event
files in ``<run>/tensorboard/`` (through tensorboardX, which needs no TensorFlow) and, when the
output is not a terminal (a log file, a batch job), one line per epoch instead of a progress bar.

    tensorboard --logdir runs/      # every run under runs/, each with its scalars by epoch
"""

import os
import sys
import warnings

EVENTS_DIR = "tensorboard"


class EventWriter:
    """TensorBoard scalars of a run directory. A resumed run starts at ``first_epoch``: events
    of later epochs written before the interruption are purged, as ``metrics.jsonl``'s lines are.
    Without tensorboardX installed it warns and writes nothing."""

    def __init__(self, run_dir, first_epoch: int):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            warnings.warn("tensorboardX is not installed: no TensorBoard events (metrics.jsonl has them)")
            self._writer = None
            return
        # tensorboardX names the file by the second and the host: a run resumed within the same second
        # would reopen (and truncate) the file of its first part without a suffix of its own.
        suffix = f".epoch{first_epoch}.pid{os.getpid()}"
        self._writer = SummaryWriter(
            str(run_dir / EVENTS_DIR), purge_step=first_epoch + 1, filename_suffix=suffix
        )

    def write(self, record: dict) -> None:
        """The numbers of one ``metrics.jsonl`` line, at step = its epoch."""
        if self._writer is None:
            return
        for name, value in record.items():
            if (
                name not in ("epoch", "step")
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
            ):
                self._writer.add_scalar(name, value, record["epoch"])
        self._writer.flush()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self._writer is not None:
            self._writer.close()


def is_terminal(stream=None) -> bool:
    stream = stream or sys.stderr
    return hasattr(stream, "isatty") and stream.isatty()


def epoch_line(label: str, epochs: int, record: dict) -> str:
    """One line for the log of a run whose output is not a terminal, e.g.
    ``teacher epoch 3/40: train/loss 0.412, test/accuracy 0.8813 (4.1 s)``."""
    shown = [k for k in record if k == "train/loss" or k.startswith(("test/", "val/"))]
    values = ", ".join(f"{k} {record[k]:.4g}" for k in shown if isinstance(record[k], (int, float)))
    return f"{label} epoch {record['epoch']}/{epochs}: {values} ({record['seconds']:.1f} s)"

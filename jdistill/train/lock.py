"""One process at a time in a run directory: ``lock`` holds the owner's PID, host and start time.

A second process is refused with a line naming the holder. A lock left by a process that is gone
(killed, or the machine restarted) is stale: on the same host it is detected and replaced with a
warning; a lock from another host (a shared file system) cannot be checked and is reported with
the file to delete.
"""

import contextlib
import datetime
import json
import os
import pathlib
import socket
import warnings

LOCK_NAME = "lock"


class RunLockedError(ValueError):
    """Another live process holds the run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _holder(path: pathlib.Path) -> dict | None:
    """The lock's record, or None when it cannot be read (a process stopped while writing it)."""
    try:
        record = json.loads(path.read_text())
        return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def _take(path: pathlib.Path) -> bool:
    """Create the lock file atomically; False if it already exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record) + "\n")
    return True


@contextlib.contextmanager
def run_lock(run_dir: str | pathlib.Path):
    """Hold ``run_dir/lock`` for the block; raise :class:`RunLockedError` if a live process
    holds it. The directory must exist."""
    path = pathlib.Path(run_dir) / LOCK_NAME
    host = socket.gethostname()
    while not _take(path):
        holder = _holder(path)
        if holder is not None and holder.get("host") != host:
            raise RunLockedError(
                f"{run_dir} is in use by process {holder['pid']} on {holder.get('host')} (since "
                f"{holder.get('started')}); if that process is gone, delete {path}"
            )
        if holder is not None and holder["pid"] != os.getpid() and _alive(holder["pid"]):
            raise RunLockedError(
                f"{run_dir} is in use by process {holder['pid']} (since {holder.get('started')}); "
                f"wait for it to finish, stop it, or use another --out directory"
            )
        what = f"process {holder['pid']}, which is gone" if holder else "an unreadable lock file"
        warnings.warn(f"{run_dir}: removing a stale lock ({what})", stacklevel=3)
        path.unlink(missing_ok=True)
    try:
        yield
    finally:
        holder = _holder(path)
        if holder is not None and holder["pid"] == os.getpid():
            path.unlink(missing_ok=True)

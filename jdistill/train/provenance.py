"""Where a run came from, recorded in its ``config.json``: the command line, the working directory,
the time, the versions of Python and of the libraries that decide its numbers, the git commit of
jdistill's source when it is a checkout (and whether it had uncommitted changes), the devices, and
the precision of float32 matrix products and convolutions (``jax_default_matmul_precision``;
``default`` is float32 on CPUs but TF32 on NVIDIA GPUs from Ampere on and bfloat16 passes on TPUs,
so one configuration can give different numbers on different devices)."""

import datetime
import importlib.metadata
import os
import pathlib
import platform
import shlex
import subprocess
import sys

import jax

import jdistill

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(source: pathlib.Path = pathlib.Path(__file__).parent) -> dict | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``source``; None outside one (an
    installed wheel) or without git."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def provenance(mesh=None) -> dict:
    """The record for a run started now on ``mesh`` (default: every device)."""
    devices = list(mesh.devices.flat) if mesh is not None else jax.devices()
    return {
        "command": shlex.join(sys.orig_argv),
        "cwd": os.getcwd(),
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "versions": {
            **{package: _version(package) for package in PACKAGES},
            "jdistill": jdistill.__version__,
        },
        "git": git_commit(),
        "devices": {
            "platform": devices[0].platform,
            "kind": devices[0].device_kind,
            "count": len(devices),
            "processes": jax.process_count(),
        },
        "matmul_precision": jax.config.jax_default_matmul_precision or "default",
    }

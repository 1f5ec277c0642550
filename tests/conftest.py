"""Tests run with four fake CPU devices, so the data-parallel path is exercised everywhere.

Compiled programs go to a persistent cache (``JDISTILL_TEST_CACHE``, default
``~/.cache/jdistill/xla-tests``): a second run of the suite compiles little. The fast tier (the
README's ``pytest -q``, which deselects ``slow``) also compiles with XLA's backend optimisations
off: its programs are tiny, compiling them is most of its time, and results differ by float
rounding only. The slow tier keeps XLA's defaults, which the golden records were written with."""

import os
import pathlib

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.environ.get("JDISTILL_TEST_CACHE", str(pathlib.Path.home() / ".cache" / "jdistill" / "xla-tests")),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject's addopts): one worker per core, at most 8, since each worker is a JAX
    process with its own thread pools and compilation."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, 8)


def pytest_configure(config):
    """Before any test module imports jax: the fast tier's compiler flag (see the module docstring)."""
    if "slow" not in config.option.markexpr.replace("not slow", ""):
        os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"


@pytest.fixture(scope="session")
def golden_runs(tmp_path_factory):
    """The training forms of ``tests/golden/forms.py``, each run once on one device when a test first
    asks for it: ``(directory, {form: record})``; the engine and golden tests share them (and their
    finished teachers)."""
    import jax
    from golden import forms

    out = tmp_path_factory.mktemp("golden_runs")
    return out, forms.Runs(out, jax.devices()[:1])

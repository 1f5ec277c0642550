"""Tests run with four fake CPU devices, so the data-parallel path is exercised everywhere
(and compared against one device in test_parallel.py)."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def golden_runs(tmp_path_factory):
    """Every training form of ``tests/golden/forms.py`` run once on one device: ``(directory,
    {form: record})``; the engine and golden tests share it (and its finished teachers)."""
    import jax
    from golden import forms

    out = tmp_path_factory.mktemp("golden_runs")
    return out, forms.run_all(out, jax.devices()[:1])

"""Tests run with four fake CPU devices, so the data-parallel path is exercised everywhere
(and compared against one device in test_parallel.py)."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

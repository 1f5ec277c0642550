"""Write the golden records of the training forms: ``python tests/golden/record.py [FORM ...]``
(default: every form).

Runs under the test suite's four fake CPU devices, training on the first only, as
``tests/test_golden.py`` does, and writes ``tests/golden/<form>.json``. Re-record only when a
change of behaviour is intended, only the forms it changes, and say which and why in the commit.
"""

import json
import os
import pathlib
import sys
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
from forms import run_all  # noqa: E402

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        records = run_all(pathlib.Path(tmp), jax.devices()[:1])
    for form, record in records.items():
        if sys.argv[1:] and form not in sys.argv[1:]:
            continue
        (HERE / f"{form}.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"{form}: {len(record['metrics'])} lines")

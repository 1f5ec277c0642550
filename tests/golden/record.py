"""Write the golden records of the training forms: ``python tests/golden/record.py [--layouts]
[FORM ...]`` (default: every form; ``--layouts``: their checkpoint layouts only).

Runs under the test suite's four fake CPU devices, training on the first only, as
``tests/test_golden.py`` does, and writes ``tests/golden/<form>.json`` and the form's entry of
``tests/golden/checkpoint_layouts.json``. Re-record only when a change of behaviour (or of what a
checkpoint holds) is intended, only the forms it changes, and say which and why in the commit.
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
from forms import LAYOUTS, checkpoint_layout, run_all  # noqa: E402

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        records = run_all(pathlib.Path(tmp), jax.devices()[:1])
        layouts = {form: checkpoint_layout(pathlib.Path(tmp) / form) for form in records}
    layouts_only = "--layouts" in sys.argv[1:]
    chosen = [a for a in sys.argv[1:] if a != "--layouts"]
    recorded = json.loads((HERE / LAYOUTS).read_text()) if (HERE / LAYOUTS).exists() else {}
    for form, record in records.items():
        if chosen and form not in chosen:
            continue
        if not layouts_only:
            (HERE / f"{form}.json").write_text(json.dumps(record, indent=1) + "\n")
        recorded[form] = layouts[form]
        print(f"{form}: {len(record['metrics'])} lines, a checkpoint of {len(layouts[form])} nodes")
    (HERE / LAYOUTS).write_text(json.dumps(recorded, indent=1) + "\n")

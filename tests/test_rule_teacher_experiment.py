"""experiments/rule_teacher_mirror.py: the task obeys its rule, and --smoke runs the whole table."""

import contextlib
import io
import json
import pathlib
import runpy
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "rule_teacher_mirror.py"


@pytest.fixture(scope="module")
def module():
    return runpy.run_path(str(SCRIPT))


def test_the_data_obey_the_mirror_rule_and_labels_cover_the_left_half_only(module):
    data = module["make_data"](0, 30)
    assert data["x"].shape == (30, 2) and np.all(data["x"][:, 0] < 0)
    # The rule is true of the task: a point and its mirror image have the same class.
    test = data["test"]
    np.testing.assert_array_equal(module["true_class"](test), module["true_class"](test * [-1, 1]))


def test_teacher_reads_the_mirror_images_prediction(module):
    # A network blind to x_0 predicts the same for a point and its mirror image (r = p), so the
    # teacher only sharpens: q ∝ p exp(-C (1 - p)).
    params = module["init_mlp"](jax.random.key(0))
    w, b = params[0]
    symmetric = [(w.at[0].set(0.0), b), *params[1:]]
    x = jnp.asarray(module["make_data"](1, 10)["test"][:50])
    p = jax.nn.softmax(module["mlp"](symmetric, x))
    want = p * jnp.exp(-module["C"] * (1 - p))
    np.testing.assert_allclose(
        module["teacher_probs"](symmetric, x), want / want.sum(-1, keepdims=True), atol=1e-5
    )
    # A network that reads x_0 gets a teacher that differs from it.
    assert not np.allclose(
        module["teacher_probs"](params, x), jax.nn.softmax(module["mlp"](params, x)), atol=1e-3
    )


@pytest.mark.slow
def test_smoke_writes_the_table(tmp_path, monkeypatch):
    out = tmp_path / "rules"
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--out", str(out), "--smoke"])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        runpy.run_path(str(SCRIPT), run_name="__main__")
    results = json.loads((out / "results.json").read_text())
    assert list(results["rows"]) == [
        "student, no rule",
        "student + rule teacher",
        "teacher q (rule-projected)",
    ]
    for runs in results["rows"].values():
        assert len(runs) == 1 and 0 <= runs[0]["right_half"] <= 1
    table = (out / "table.md").read_text()
    assert table in printed.getvalue()
    assert (out / "regions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

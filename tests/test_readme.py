"""The README's promises: its first lines are the two commands, its Python examples run, and the
CI script runs the README's test command."""

import json
import pathlib
import re

import jax.numpy as jnp

ROOT = pathlib.Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.DOTALL).group(1).strip().splitlines()
    assert first_block == ["pip install -e . && jdistill demo", "pip install -e '.[test]' && pytest -q"]
    assert first_block[1] in (ROOT / ".ci" / "run").read_text()


def test_readme_python_example_runs_and_distils():
    code = re.search(r"```python\n(.*?)```", README, re.DOTALL).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert float(namespace["agreement"]) > 0.8
    assert jnp.isfinite(namespace["loss"])


def test_readme_game_of_ones_own_trains_through_fit(tmp_path, monkeypatch):
    """The engine section's example: a configuration with build(dataset) -> Game, played by fit."""
    code = re.findall(r"```python\n(.*?)```", README, re.DOTALL)[1]
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    summary = namespace["summary"]
    assert summary["test/accuracy"] > 0.8 and summary["test/agreement"] > 0.8
    assert (
        json.loads((tmp_path / "runs/readme/student/config.json").read_text())["config"]["student"] == "mlp32"
    )

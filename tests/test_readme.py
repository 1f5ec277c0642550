"""The README's promises: its first lines are the two commands, its Python example runs, and the
CI script runs the README's test command."""

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

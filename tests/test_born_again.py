"""Born-again networks: the CWTM and DKPP methods in the trainer, and experiments/born_again.py
end to end on a small MNIST-like directory (--smoke)."""

import argparse
import json
import pathlib
import runpy
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from idx_files import write_mnist_like

from jdistill import losses
from jdistill.data import UNLABELLED
from jdistill.methods import build_method, parse_methods
from jdistill.train import RunDir

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "born_again.py"


def _outputs(seed):
    return (jax.random.normal(jax.random.key(seed), (4, 10)), {})


def test_methods_return_the_losses_and_cwtm_ignores_unlabelled_examples():
    assert parse_methods("cwtm+dkpp") == ("ce", "cwtm", "dkpp")
    student, teacher = _outputs(0), _outputs(1)
    labels = jnp.array([1, 2, UNLABELLED, 3])
    batch = {"label": labels, "key": jax.random.key(7), "epoch": 0.0}
    hparams = {"temperature": jnp.float32(1.0)}
    cwtm = build_method("cwtm").loss(student, teacher, batch, {}, hparams)["cwtm"]
    expected = losses.ban_cwtm(student[0], teacher[0], jnp.maximum(labels, 0))
    np.testing.assert_allclose(cwtm, jnp.where(labels != UNLABELLED, expected, 0.0), rtol=1e-6)
    assert cwtm[2] == 0
    dkpp = build_method("dkpp").loss(student, teacher, batch, {}, hparams)["dkpp"]
    np.testing.assert_allclose(dkpp, losses.ban_dkpp(student[0], teacher[0], key=batch["key"]), rtol=1e-6)


@pytest.fixture(scope="module")
def mnist_like_dir(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("mnist_like"))


def _run(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    runpy.run_path(str(SCRIPT), run_name="__main__")


@pytest.mark.slow
def test_the_chain_runs_each_generation_from_the_previous(mnist_like_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ban"
    args = ["--data-dir", str(mnist_like_dir), "--out", str(out), "--smoke", "--quiet"]
    _run(monkeypatch, *args, "--seeds", "1", "--generations", "3")
    printed = capsys.readouterr().out

    configs = {
        name: RunDir(out / "seed0" / name).flat_config() for name in ("gen0", "gen1", "gen2", "cwtm", "dkpp")
    }
    assert configs["gen0"]["teacher"] is None and configs["gen0"]["methods"] == ["ce"]
    for gen in (1, 2):
        config = configs[f"gen{gen}"]
        assert pathlib.Path(config["teacher"]) == (out / "seed0" / f"gen{gen - 1}").absolute()
        assert config["methods"] == ["ce", "kd"] and config["weights"] == {"ce": 0.0, "kd": 1.0}
        assert config["temperature"] == 1.0 and config["model"] == configs["gen0"]["model"]
    for method in ("cwtm", "dkpp"):
        assert pathlib.Path(configs[method]["teacher"]) == (out / "seed0" / "gen0").absolute()
        assert configs[method]["weights"] == {"ce": 0.0, method: 1.0}

    results = json.loads((out / "results.json").read_text())
    gens = [f"gen {gen} (BAN from gen {gen - 1})" for gen in (1, 2)]
    assert list(results) == ["gen 0 (labels)", *gens, "gen 1, CWTM from gen 0", "gen 1, DKPP from gen 0"]
    for gen, row in enumerate(["gen 0 (labels)", *gens]):
        summary = json.loads((out / "seed0" / f"gen{gen}" / "summary.json").read_text())
        (result,) = results[row]
        assert result["run"] == f"seed0/gen{gen}" and result["test/accuracy"] == summary["test/accuracy"]
        assert 0 <= result["ensemble"] <= 1
    # The ensemble of generation 0 alone is generation 0 (its logits recomputed from the checkpoint).
    (gen0,) = results["gen 0 (labels)"]
    assert gen0["ensemble"] == pytest.approx(gen0["test/accuracy"], abs=1e-6)
    assert all("ensemble" not in s for row in list(results)[3:] for s in results[row])
    table = (out / "table.md").read_text()
    assert table in printed and "gen 2 (BAN from gen 1)" in table and "DKPP" in table
    assert (out / "generations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Re-run without the ablations: the finished generations are reused, CWTM and DKPP left out.
    mtime = (out / "seed0" / "gen2" / "summary.json").stat().st_mtime_ns
    _run(monkeypatch, *args, "--seeds", "1", "--generations", "3", "--no-ablations")
    assert list(json.loads((out / "results.json").read_text())) == ["gen 0 (labels)", *gens]
    assert (out / "seed0" / "gen2" / "summary.json").stat().st_mtime_ns == mtime
    assert "DKPP" not in (out / "table.md").read_text()


def test_table_pairs_each_generation_with_generation_0_of_its_own_chain():
    table = runpy.run_path(str(SCRIPT))["table"]
    config = {"model": "mlp256", "dataset": "mnist", "epochs": 12, "learning_rate": 0.05, "batch_size": 128,
              "weight_decay": 0.0, "max_shift": 0, "hflip": False, "label_noise": 0.4}  # fmt: skip

    def row(run, accuracies, ensembles=None, agreement=0.99):
        return [{"run": f"seed{s}/{run}", "seed": s, "config": config, "train_seconds": 10.0, "test/accuracy": a,
                 "test/agreement": agreement} | ({"ensemble": ensembles[i]} if ensembles else {})
                for i, (s, a) in enumerate(accuracies)]  # fmt: skip

    results = {
        "gen 0 (labels)": row("gen0", [(0, 0.9658), (1, 0.9658), (2, 0.9633)], [0.9658, 0.9658, 0.9633]),
        # listed in another seed order than generation 0: pairing follows the seed, not the position
        "gen 1 (BAN from gen 0)": row(
            "gen1", [(2, 0.9655), (0, 0.9684), (1, 0.9691)], [0.97, 0.9690, 0.9686]
        ),
        "gen 1, DKPP from gen 0": row("dkpp", [(0, 0.9714), (1, 0.9730), (2, 0.9709)], agreement=0.98),
    }
    options = argparse.Namespace(validate=False)
    lines = {r.split(" | ")[0][2:]: r.split(" | ") for r in table(results, options).splitlines()
             if r.startswith("| gen")}  # fmt: skip
    gen1, dkpp = lines["gen 1 (BAN from gen 0)"], lines["gen 1, DKPP from gen 0"]
    assert gen1[2] == "96.55 / 96.84 / 96.91"  # seeds 2, 0, 1 as listed
    # +0.26, +0.33, +0.22 points: mean +0.27, population std 0.045
    assert gen1[3] == "+0.27 +- 0.05" and gen1[4] == "99.00 +- 0.00"
    # ensembles 97.00 - 96.33, 96.90 - 96.58, 96.86 - 96.58: +0.67, +0.32, +0.28
    assert gen1[5] == "96.92 +- 0.06" and gen1[6] == "+0.42 +- 0.18 |"
    assert dkpp[3] == "+0.68 +- 0.09" and dkpp[5] == "" and dkpp[6] == " |"  # no ensemble
    assert lines["gen 0 (labels)"][3] == ""
    assert "label noise 0.4), 3 seeds" in table(results, options)

"""The ViT model, the vit_at / vit_vr methods and experiments/vit_attention_mnist.py end to end."""

import json
import pathlib
import runpy
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from idx_files import write_mnist_like

from jdistill import losses
from jdistill.methods import build_method, check_features, parse_methods
from jdistill.methods.attention import uniform_layers
from jdistill.models import ViT, count_params, create_model

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "vit_attention_mnist.py"


def _rngs(seed=0):
    return nnx.Rngs(jax.random.key(seed, impl="unsafe_rbg"))


def _swap_two_patches(images):
    a, b = images[:, :7, :7], images[:, 7:14, 7:14]
    return images.at[:, :7, :7].set(b).at[:, 7:14, 7:14].set(a)


@pytest.fixture(scope="module")
def models():
    """A small teacher (2 blocks, 4 heads) and student (1 block, 2 heads), built and run in one
    compiled program (eager initialisation compiles every op separately): models, outputs on
    ``images`` and the student's logits on the images with two patches swapped."""
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 28, 28, 1)), jnp.float32)

    @nnx.jit
    def build_and_run(x):
        built = {
            "teacher": ViT((28, 28, 1), 10, depth=2, width=32, heads=4, rngs=_rngs(0)),
            "student": ViT((28, 28, 1), 10, depth=1, width=16, heads=2, rngs=_rngs(1)),
        }
        return built, {n: m(x) for n, m in built.items()}, built["student"](_swap_two_patches(x))[0]

    return build_and_run(images)


def _features(name):
    """Feature shapes (without batch) of the registered model ``name``, by abstract evaluation."""
    x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    out = jax.eval_shape(lambda x: create_model(name, (28, 28, 1), 10, rngs=nnx.Rngs(0))(x), x)
    return out[0].shape, {k: v.shape[1:] for k, v in out[1].items()}


def test_registered_vits_have_the_documented_features():
    logits, features = _features("vit4x64")
    assert logits == (1, 10)
    expected = {"embedding": (64,)}
    for block in range(1, 5):
        expected |= {f"attn{block}": (4, 17, 17), f"values{block}": (4, 17, 16), f"block{block}": (17, 64)}
    assert features == expected
    _, student = _features("vit2x32")
    assert student["attn2"] == (2, 17, 17) and student["values2"] == (2, 17, 16) and len(student) == 7


def test_vit_embedding_is_the_normalised_class_token_and_feeds_the_head(models):
    built, outputs, _ = models
    model = built["student"]
    logits, features = outputs["student"]
    chex.assert_shape(features["attn1"], (2, 2, 17, 17))
    chex.assert_trees_all_close(model.norm(features["block1"][:, 0]), features["embedding"], atol=1e-5)
    chex.assert_trees_all_close(model.head(features["embedding"]), logits, atol=1e-5)


def test_vit_positions_matter(models):
    # Swapping two patches changes the output (learned positions), unlike a bag of patches.
    _, outputs, swapped_logits = models
    assert not np.allclose(swapped_logits, outputs["student"][0], atol=1e-5)


def test_vit_parameter_count_by_hand():
    model = nnx.eval_shape(lambda: ViT((28, 28, 1), 10, depth=2, width=32, heads=2, rngs=nnx.Rngs(0)))
    d, patch_in, tokens, mlp = 32, 49, 17, 64
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * mlp + mlp) + (mlp * d + d)
    expected = (patch_in * d + d) + d + tokens * d + 2 * block + 2 * d + (d * 10 + 10)
    assert count_params(model) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (8, 8, 1)}, "8x8 is not divisible into 7x7 patches"),
        ({"heads": 3}, "width divisible by heads"),
    ],
)
def test_vit_refuses_bad_configurations(kwargs, message):
    args = {"input_shape": (28, 28, 1), "num_classes": 10, "depth": 1, "width": 32, "heads": 2}
    args |= kwargs
    with pytest.raises(ValueError, match=message):
        nnx.eval_shape(lambda: ViT(**args, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize(
    "student, teacher, pairs",
    [
        (2, 4, ((1, 2), (2, 4))),
        (1, 4, ((1, 4),)),
        (3, 3, ((1, 1), (2, 2), (3, 3))),
        (3, 4, ((1, 1), (2, 3), (3, 4))),
    ],
)
def test_uniform_layer_map_pairs_the_last_blocks(student, teacher, pairs):
    assert uniform_layers(student, teacher) == pairs


@pytest.fixture(scope="module")
def shapes():
    return _features("vit2x32")[1], _features("vit4x64")[1]


def test_methods_read_the_paired_blocks(shapes):
    assert build_method("vit_at").features(*shapes) == (("attn1", "attn2"), ("attn2", "attn4"))
    assert build_method("vit_vr").features(*shapes) == (("values1", "values2"), ("values2", "values4"))
    # Options as the command line gives them (JSON lists): MiniLM's last-layer-only transfer.
    method = build_method("vit_at", {"layers": [[2, 4]], "head_map": [[0, 1], [2, 3]]})
    assert method.features(*shapes) == (("attn2",), ("attn4",))
    assert method.head_map == ((0, 1), (2, 3))
    assert parse_methods("kd+vit_at+vit_vr") == ("ce", "kd", "vit_at", "vit_vr")


def test_method_terms_are_the_losses_summed_over_the_paired_blocks(models):
    _, outputs, _ = models
    student, teacher = outputs["student"], outputs["teacher"]
    s, t = student[1], teacher[1]
    # Default: student block 1 <- teacher block 2 (the last ones), teacher heads averaged in pairs.
    terms = build_method("vit_at").loss(student, teacher, {}, {}, {})
    chex.assert_trees_all_close(terms["vit_at"], losses.attention_kl(s["attn1"], t["attn2"]))
    terms = build_method("vit_at", {"layers": [[1, 1], [1, 2]]}).loss(student, teacher, {}, {}, {})
    want = losses.attention_kl(s["attn1"], t["attn1"]) + losses.attention_kl(s["attn1"], t["attn2"])
    chex.assert_trees_all_close(terms["vit_at"], want)
    method = build_method("vit_vr", {"layers": [[1, 1]], "head_map": [3, 0]})
    chex.assert_trees_all_close(
        method.loss(student, teacher, {}, {}, {})["vit_vr"],
        losses.value_relation(s["values1"], t["values1"], head_map=(3, 0)),
    )
    assert terms["vit_at"].shape == (2,) and np.all(np.asarray(terms["vit_at"]) > 0)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"layers": [[3, 4]]}, r"layer pair \[3, 4\] is out of range"),
        ({"head_map": [0, 1, 2]}, "one entry per student head"),
        ({}, "needs the features attn1"),
    ],
)
def test_methods_refuse_what_they_cannot_pair(shapes, options, message):
    student, teacher = shapes
    if not options:  # a model without attention: an MLP
        student = _features("mlp32")[1]
    with pytest.raises(ValueError, match=message):
        check_features([build_method("vit_at", options)], student, teacher)


@pytest.fixture(scope="module")
def mnist_like_dir(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("mnist_like"))


@pytest.mark.slow
def test_the_experiment_runs_end_to_end(mnist_like_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "vit"
    monkeypatch.setattr(
        sys, "argv", [str(SCRIPT), "--data-dir", str(mnist_like_dir), "--out", str(out), "--smoke", "--quiet"]
    )
    runpy.run_path(str(SCRIPT), run_name="__main__")
    printed = capsys.readouterr().out

    results = json.loads((out / "results.json").read_text())
    students = ["student alone (hard labels)", "KD (T = 4)", "KD + attention transfer",
                "KD + attention transfer + value relation"]  # fmt: skip
    assert list(results) == ["teacher vit2x32", *students]  # --smoke: the student's architecture teaches
    for row, (summary,) in results.items():  # one seed
        assert summary["run"] == "teacher" if row.startswith("teacher") else summary["run"].endswith("/seed0")
        assert summary["model"] == "vit2x32" and 0 <= summary["test/accuracy"] <= 1
        assert summary | json.loads((out / summary["run"] / "summary.json").read_text()) == summary
    # The distilled runs logged their attention terms; the student alone has no teacher.
    metrics = [
        json.loads(line) for line in (out / "kd_at_vr" / "seed0" / "metrics.jsonl").read_text().splitlines()
    ]
    assert metrics[-1]["train/loss/vit_at"] > 0 and metrics[-1]["train/loss/vit_vr"] > 0
    assert "test/agreement" not in results[students[0]][0] and "test/agreement" in results[students[2]][0]
    table = (out / "table.md").read_text()
    assert table in printed and "MNIST (256 training images, 200 test images)" in table
    cells = {c[0]: c[1:] for c in (line.strip("| ").split(" | ") for line in table.splitlines()[4:])}
    teacher = results["teacher vit2x32"][0]
    accuracy = f"{100 * teacher['test/accuracy']:.2f}"
    assert cells[f"teacher vit2x32 ({teacher['params']:,} parameters)"] == [accuracy, "", "", "1"]
    for row in students:  # accuracy, agreement with the teacher, last-block attention KL, seeds
        accuracy, agreement, gap, seeds = cells[row]
        assert accuracy == f"{100 * results[row][0]['test/accuracy']:.2f}" and seeds == "1"
        assert (agreement == "") == (row == students[0])
        # Under --smoke the student alone, seed 0, replays the teacher's run: no gap to it.
        assert gap == "0.000" if row == students[0] else float(gap) > 0
    for plot in ("attention_maps.png", "curves.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A different training subset into the same directory is refused.
    (out / "data.json").write_text(json.dumps({"train_size": 1, "test_size": 1}))
    with pytest.raises(SystemExit, match="holds runs on other data"):
        runpy.run_path(str(SCRIPT), run_name="__main__")

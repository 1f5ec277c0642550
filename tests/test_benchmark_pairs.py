"""Every method of the CIFAR-100 benchmark on every teacher -> student pair of its table (the 7
same-architecture and 6 cross-architecture pairs of ``shared/reference/paper-tables.md``), wired as
RepDistiller / mdistiller / DIST_KD wire them: one objective of all the methods per pair, whose
initialisation step and training step run in one compiled function, on random 32x32x3 images of
100 classes. The teacher enters the student's step only through its outputs, so these are random
arrays of the teacher's feature shapes (post-ReLU maps non-negative): no teacher is built or run.
About 6 minutes of CPU time on 2 cores, nearly all of it building and compiling the pairs' steps
(the cross-architecture pairs about 70 % of it): every pair is marked ``slow``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jdistill import losses, recipes
from jdistill.data import Dataset
from jdistill.methods import build_method, parse_methods
from jdistill.models import create_model
from jdistill.train import RunConfig, distill
from jdistill.train.rounds import play_move

SAME_ARCHITECTURE = (
    ("wrn_40_2", "wrn_16_2"),
    ("wrn_40_2", "wrn_40_1"),
    ("resnet56", "resnet20"),
    ("resnet110", "resnet20"),
    ("resnet110", "resnet32"),
    ("resnet32x4", "resnet8x4"),
    ("vgg13", "vgg8"),
)
CROSS_ARCHITECTURE = (
    ("resnet32x4", "ShuffleV1"),
    ("resnet32x4", "ShuffleV2"),
    ("wrn_40_2", "ShuffleV1"),
    ("vgg13", "MobileNetV2"),
    ("ResNet50", "MobileNetV2"),
    ("ResNet50", "vgg8"),
)
METHODS = tuple("kd fitnet at sp cc vid rkd pkt ab ft fsp nst crd dkd dist".split())
INPUT, BATCH = (32, 32, 3), 4
# Compile quickly: these steps run once each (XLA's CPU backend without its expensive LLVM passes).
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def cifar_like(n: int = 8) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n, *INPUT)).astype(np.float32)
    y = (np.arange(n) * 13 % 100).astype(np.int32)
    return Dataset("cifar_like", x, y, x[:4], y[:4], num_classes=100, mean=(0.5,) * 3, std=(0.25,) * 3)


def shapes_of(model: str) -> dict:
    """``{feature: shape}`` of ``model``, found without making its weights."""
    image = jax.ShapeDtypeStruct((1, *INPUT), jnp.float32)
    _, features = jax.eval_shape(lambda x: create_model(model, INPUT, 100, rngs=nnx.Rngs(0))(x), image)
    return {k: v.shape[1:] for k, v in features.items()}


def random_outputs(shapes: dict) -> tuple:
    """Teacher logits and features for a batch: normal, post-ReLU maps made non-negative."""
    rng = np.random.default_rng(1)
    features = {k: rng.normal(size=(BATCH, *s)).astype(np.float32) for k, s in shapes.items()}
    features = {k: v if k.endswith("_pre") else np.maximum(v, 0) for k, v in features.items()}
    return rng.normal(size=(BATCH, 100)).astype(np.float32), features


def leaves(tree) -> dict:
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


# Every pair in the slow tier (about 6 min on 2 cores); tests/test_methods.py steps every method in the fast tier.
PAIRS = [pytest.param(*pair, marks=pytest.mark.slow) for pair in SAME_ARCHITECTURE + CROSS_ARCHITECTURE]


@pytest.mark.parametrize(("teacher", "student"), PAIRS)
def test_every_benchmark_method_steps_on_the_pair(teacher, student, monkeypatch):
    teacher_shapes, student_shapes = shapes_of(teacher), shapes_of(student)
    # What ``build`` reads of a teacher: its feature shapes.
    teacher_model = distill.Teacher(None, None, (None, None), teacher_shapes)
    monkeypatch.setattr(distill, "load_teacher", lambda run_dir, dataset: teacher_model)
    methods = METHODS
    if (teacher, student) in CROSS_ARCHITECTURE or student == "wrn_40_1":
        # FSP needs the same channels in both models: the table has no FSP entry for these pairs.
        with pytest.raises(ValueError, match="fsp: .* must be NHWC maps with the same channels"):
            build_method("fsp").modules(student_shapes, teacher_shapes, None, None)
        methods = tuple(m for m in METHODS if m != "fsp")
    config = RunConfig(
        model=student,
        dataset="cifar_like",
        epochs=1,
        batch_size=BATCH,
        learning_rate=0.01,  # FT's initialisation rate, so that AB, FT and FSP share one
        teacher="random",
        methods=parse_methods("+".join(methods)),
        method_options={
            "crd": {"num_negatives": 16},
            **{m: {"init_epochs": 1} for m in ("ab", "ft", "fsp") if m in methods},
        },
    )
    game = config.build(cifar_like())
    # AB compares equal shapes directly (RepDistiller's identity connector) and maps the others.
    stages = [f"stage{k}_pre" for k in range(1, 5) if f"stage{k}_pre" in student_shapes]
    differing = {str(i) for i, s in enumerate(stages) if student_shapes[s] != teacher_shapes[s]}
    assert set(game.players["student"].params["extras"].get("ab", {}).get("connectors", {})) == differing
    init, train = game.phases
    assert (init.name, train.name) == ("init", "train")

    @jax.jit(compiler_options=QUICK_COMPILE)
    def both_phases(players, batch):
        players, init_metrics = play_move(game, players, init.moves[0], batch)
        after_init = players["student"].params
        players, train_metrics = play_move(game, train.start(players), train.moves[0], batch)
        return after_init, players["student"].params, init_metrics, train_metrics

    batch = game.source.batch(game.source.arrays(), jnp.arange(BATCH), jax.random.key(0))
    batch["frozen"] = random_outputs(teacher_shapes)
    start = game.players["student"].params
    after_init, after_train, init_metrics, train_metrics = both_phases(dict(game.players), batch)
    for phase, metrics in (("init", init_metrics), ("train", train_metrics)):
        for name, value in metrics.items():
            assert np.isfinite(np.asarray(value)), (phase, name, value)
    declared = [build_method(m) for m in config.distill.methods]
    assert {f"loss/{t}" for m in declared for t in m.init_weights} <= set(init_metrics)
    assert {f"loss/{t}" for m in declared for t in m.default_weights} <= set(train_metrics)
    # The initialisation step trains the student's body (AB, FSP) and FT's paraphraser, at 0.01.
    assert float(init_metrics["learning_rate"]) == pytest.approx(0.01)
    before, middle, after = (leaves(p["model"]) for p in (start, after_init, after_train))
    changed = {k for k in before if not np.array_equal(before[k], middle[k])}
    assert changed and not any(k.startswith("['head']") for k in changed)
    paraphraser = leaves(start["extras"]["ft"]["paraphraser"])
    trained = leaves(after_init["extras"]["ft"]["paraphraser"])
    assert all(np.any(paraphraser[k] != trained[k]) for k in paraphraser)
    # The training step trains every parameter of the student.
    untrained = {k for k in middle if np.array_equal(middle[k], after[k])}
    assert not untrained, f"student parameters not trained: {untrained}"


def test_benchmark_weights_and_rates_are_the_references():
    # FSP's initialisation stage is weighted 1 (RepDistiller's -b 50 scales a main-stage term of 0).
    assert build_method("fsp").init_weights == {"fsp": 1.0}
    # DIST: the authors' CIFAR recipe, kd_loss_weight 2 times inter 1 + intra 1.
    assert build_method("dist").default_weights == {"dist_inter": 2.0, "dist_intra": 2.0}
    # FT's initialisation stage at 0.01 (ResNet and WRN students); the recipe leaves other students
    # at the run's rate and scales with the batch.
    assert build_method("ft").init_learning_rate == 0.01
    assert recipes.ft_init_learning_rate("resnet8x4") == 0.01
    assert recipes.ft_init_learning_rate("wrn_16_2", 128) == pytest.approx(0.02)
    for model in ("vgg8", "MobileNetV2", "ShuffleV1", "ResNet50"):
        assert recipes.ft_init_learning_rate(model) is None
    options = recipes.crd_benchmark("vgg8", ("ce", "ft"), teacher_model="vgg13")["method_options"]
    assert options == {"ft": {"init_epochs": 30, "init_learning_rate": None}}
    assert recipes.crd_benchmark("MobileNetV2", ("ce", "dkd"), teacher_model="vgg13")["weights"] == {
        "dkd_nckd": 6.0
    }
    # One optimizer for the initialisation stages: their rates must agree.
    ab, ft, fsp = (build_method(n) for n in ("ab", "ft", "fsp"))
    assert distill.init_learning_rate((ab, fsp), 0.05) == 0.05
    assert distill.init_learning_rate((ab, ft), 0.01) == 0.01
    assert distill.init_learning_rate((ab, build_method("ft", {"init_learning_rate": None})), 0.05) == 0.05
    with pytest.raises(ValueError, match="ask for the learning rates ab 0.05, ft 0.01"):
        distill.init_learning_rate((ab, ft), 0.05)


def test_dkd_ramp_counts_epochs_from_one():
    """mdistiller scales DKD by min(epoch / warmup, 1) with the epoch counted from 1."""
    rng = np.random.default_rng(0)
    s, t = (jnp.asarray(rng.normal(size=(4, 10)), jnp.float32) for _ in range(2))
    labels = jnp.arange(4)
    tckd, nckd = (x.mean() for x in losses.dkd_terms(s, t, labels, temperature=4.0))
    dkd = build_method("dkd", {"warmup_epochs": 20.0})
    for epoch, scale in (
        (0.0, 1 / 20),
        (0.99, 1 / 20),
        (1.0, 2 / 20),
        (18.5, 19 / 20),
        (19.0, 1.0),
        (30.0, 1.0),
    ):
        batch = {"label": labels, "epoch": jnp.float32(epoch)}
        terms = dkd.loss((s, {}), (t, {}), batch, {}, {"temperature": 4.0})
        np.testing.assert_allclose(terms["dkd_tckd"].mean(), scale * tckd, rtol=1e-6, err_msg=str(epoch))
        np.testing.assert_allclose(terms["dkd_nckd"].mean(), scale * nckd, rtol=1e-6, err_msg=str(epoch))


def test_dkd_ramp_shortened_keeps_the_benchmarks_twenty_increments():
    """At 24 epochs the recipe's ramp lasts 2 epochs and still rises by 1/20 every 1/10 epoch (one
    benchmark epoch), where one increment per epoch would give 0.5 then 1."""
    short = build_method("dkd", {"warmup_epochs": 2.0, "ramp_increments": 20})
    per_epoch = build_method("dkd", {"warmup_epochs": 2.0})
    for epoch, scale, coarse in ((0.0, 1 / 20, 1 / 2), (0.09, 1 / 20, 1 / 2), (0.1, 2 / 20, 1 / 2),
                                 (0.95, 10 / 20, 1 / 2), (1.0, 11 / 20, 1.0), (1.95, 20 / 20, 1.0),
                                 (5.0, 1.0, 1.0)):  # fmt: skip
        np.testing.assert_allclose(short.ramp(jnp.float32(epoch)), scale, rtol=1e-6, err_msg=str(epoch))
        np.testing.assert_allclose(per_epoch.ramp(jnp.float32(epoch)), coarse, rtol=1e-6, err_msg=str(epoch))
    assert build_method("dkd", {"warmup_epochs": 0.0}).ramp(jnp.float32(0.0)) == 1.0
    for bad in (0, 2.5, -3, "twenty", True):
        with pytest.raises(ValueError, match="ramp_increments must be a whole number >= 1"):
            build_method("dkd", {"ramp_increments": bad})

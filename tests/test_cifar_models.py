"""Tests for the CIFAR model zoo of the CRD/RepDistiller benchmark: parameter counts and feature
shapes of every model (abstractly, with ``nnx.eval_shape``: nothing is computed), a real forward
and backward pass of two small models, the documented relations between ``stageK`` and
``stageK_pre``, and the pieces where JAX and PyTorch conventions differ (padding, shuffling).

Real models are built inside ``nnx.jit`` with ``unsafe_rbg`` keys (one fast compilation; see
test_models.py) and the checks run on NumPy copies of the results (an eager JAX op compiles once
per shape). The larger models with depthwise convolutions are only checked abstractly and unit by
unit, as compiling them takes tens of seconds on a 2-core CPU.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jdistill.models import (
    MODELS,
    VGG,
    BottleneckResNet,
    MobileNetV2,
    ResNet,
    ShuffleV1,
    ShuffleV2,
    WideResNet,
    count_params,
    create_model,
)
from jdistill.models.layers import channel_shuffle, conv
from jdistill.models.shufflenet import ShuffleV1Unit, ShuffleV2Basic

BATCH = 4
CIFAR_SHAPE = (32, 32, 3)
NUM_CLASSES = 100

# The trainable parameter counts of RepDistiller's models for CIFAR-100.
EXPECTED_PARAMS = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg11": 9_277_284,
    "vgg13": 9_462_180,
    "vgg16": 14_774_436,
    "vgg19": 20_086_692,
    "MobileNetV2": 812_836,
    "ShuffleV1": 949_258,
    "ShuffleV2": 1_355_528,
    "ResNet50": 23_705_252,
}


def _features(stem, stages, embedding):
    """The documented feature shapes: ``stem``, ``stageK`` and ``stageK_pre``, ``embedding``."""
    shapes = {"stem": stem, "embedding": (embedding,)}
    for k, shape in enumerate(stages, start=1):
        shapes[f"stage{k}"] = shapes[f"stage{k}_pre"] = shape
    return shapes


_RESNET = _features((32, 32, 16), [(32, 32, 16), (16, 16, 32), (8, 8, 64)], 64)
_RESNET_X4 = _features((32, 32, 32), [(32, 32, 64), (16, 16, 128), (8, 8, 256)], 256)
_VGG = _features((32, 32, 64), [(16, 16, 128), (8, 8, 256), (4, 4, 512), (4, 4, 512)], 512)


def _wrn(k):
    return _features((32, 32, 16), [(32, 32, 16 * k), (16, 16, 32 * k), (8, 8, 64 * k)], 64 * k)


# Feature shapes (without the batch axis) on 32x32x3 inputs, as the module docstrings give them.
EXPECTED_FEATURES = {
    **{f"resnet{d}": _RESNET for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": _RESNET_X4,
    "resnet32x4": _RESNET_X4,
    **{f"wrn_{d}_{k}": _wrn(k) for d in (16, 40) for k in (1, 2)},
    **{f"vgg{d}": _VGG for d in (8, 11, 13, 16, 19)},
    "MobileNetV2": _features((16, 16, 16), [(16, 16, 12), (8, 8, 16), (4, 4, 48), (2, 2, 160)], 1280),
    "ShuffleV1": _features((32, 32, 24), [(16, 16, 240), (8, 8, 480), (4, 4, 960)], 960),
    "ShuffleV2": _features((32, 32, 24), [(16, 16, 116), (8, 8, 232), (4, 4, 464)], 1024),
    "ResNet50": _features((32, 32, 64), [(32, 32, 256), (16, 16, 512), (8, 8, 1024), (4, 4, 2048)], 2048),
}


def _rngs(seed=0):
    return nnx.Rngs(jax.random.key(seed, impl="unsafe_rbg"))


def _images(shape=CIFAR_SHAPE, batch=BATCH, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (batch, *shape)).astype(np.float32)


def _relu(x):
    return np.maximum(x, 0)


def test_the_registry_holds_the_cifar_zoo():
    assert set(EXPECTED_PARAMS) <= set(MODELS)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_count_and_feature_shapes(name):
    def build_and_call(images):
        model = create_model(name, CIFAR_SHAPE, NUM_CLASSES, rngs=nnx.Rngs(0))
        return model, model(images)

    spec = jax.ShapeDtypeStruct((BATCH, *CIFAR_SHAPE), jnp.float32)
    model, (logits, features) = nnx.eval_shape(build_and_call, spec)
    assert count_params(model) == EXPECTED_PARAMS[name]
    chex.assert_shape(logits, (BATCH, NUM_CLASSES))
    assert {k: v.shape[1:] for k, v in features.items()} == EXPECTED_FEATURES[name]
    chex.assert_tree_shape_prefix(features, (BATCH,))


@pytest.mark.parametrize(
    "model_class", [ResNet, WideResNet, VGG, MobileNetV2, ShuffleV1, ShuffleV2, BottleneckResNet]
)
@pytest.mark.parametrize("shape", [(28, 28, 1), (64, 64, 3), (32, 32)])
def test_models_refuse_other_input_shapes(model_class, shape):
    kwargs = {ResNet: {"depth": 8}, WideResNet: {"depth": 16, "widen_factor": 1}, VGG: {"depth": 8}}
    with pytest.raises(ValueError, match=model_class.__name__) as info:
        model_class(shape, NUM_CLASSES, **kwargs.get(model_class, {}), rngs=nnx.Rngs(0))
    assert str(shape) in str(info.value)


@pytest.mark.parametrize(
    "model_class, kwargs",
    [
        (ResNet, {"depth": 9}),
        (ResNet, {"depth": 2}),
        (WideResNet, {"depth": 15, "widen_factor": 1}),
        (VGG, {"depth": 10}),
    ],
)
def test_models_refuse_unknown_depths(model_class, kwargs):
    with pytest.raises(ValueError, match="depth"):
        model_class(CIFAR_SHAPE, NUM_CLASSES, **kwargs, rngs=nnx.Rngs(0))


# ---------------------------------------------------------------------------------------------
# Real computation on small models


@nnx.jit
def _forward(model, images):
    return model(images)  # train=False


@pytest.fixture(scope="module")
def built():
    """name -> (model, images, logits, features) in eval mode, on freshly initialised models;
    the outputs as NumPy arrays."""
    names = ("resnet8", "wrn_16_1", "vgg8")
    images = _images()
    models = nnx.jit(lambda: {n: create_model(n, CIFAR_SHAPE, NUM_CLASSES, rngs=_rngs()) for n in names})()
    return {name: (model, images, *jax.device_get(_forward(model, images))) for name, model in models.items()}


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1"])
def test_forward_backward_and_batch_statistics(built, name):
    model, images, logits, features = built[name]
    model = nnx.clone(model)  # the fixture's stays at its initial statistics
    chex.assert_tree_all_finite((logits, features))
    assert not np.allclose(logits[0], logits[1])

    @nnx.jit
    def train_step(model, images):
        def loss_fn(model):
            logits, _ = model(images, train=True)
            return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[:, 0])

        return nnx.value_and_grad(loss_fn)(model)

    stats = jax.device_get(nnx.state(model, nnx.BatchStat))
    loss, grads = jax.device_get(train_step(model, images))
    chex.assert_tree_all_finite((loss, grads))
    chex.assert_trees_all_equal_shapes(grads, nnx.state(model, nnx.Param))
    assert all(np.any(g != 0) for g in jax.tree.leaves(grads))
    # train=True normalises with batch statistics and moves the running averages ...
    trained_stats = jax.device_get(nnx.state(model, nnx.BatchStat))
    for before, after in zip(jax.tree.leaves(stats), jax.tree.leaves(trained_stats)):
        assert not np.allclose(before, after)
    # ... train=False uses the running averages and leaves them alone.
    eval_logits, _ = jax.device_get(_forward(model, images))  # compiled already, for the fixture
    chex.assert_trees_all_equal(jax.device_get(nnx.state(model, nnx.BatchStat)), trained_stats)
    assert not np.allclose(eval_logits, logits)


@pytest.mark.parametrize("name", ["resnet8", "vgg8"])
def test_stage_outputs_are_the_relu_of_their_pre_activations(built, name):
    _, _, _, features = built[name]
    stages = [k for k in features if k.startswith("stage") and not k.endswith("_pre")]
    assert stages
    for stage in stages:
        chex.assert_trees_all_equal(features[stage], _relu(features[f"{stage}_pre"]))
        assert float(features[f"{stage}_pre"].min()) < 0.0


def test_wrn_pre_activations_are_the_next_batch_norm(built):
    # Freshly built: running mean 0, running variance 1, scale 1, offset 0.
    _, _, _, features = built["wrn_16_1"]
    for k in (1, 2, 3):
        chex.assert_trees_all_close(features[f"stage{k}_pre"], features[f"stage{k}"] / np.sqrt(1 + 1e-5))
    chex.assert_trees_all_close(
        features["embedding"], _relu(features["stage3_pre"]).mean(axis=(1, 2)), rtol=1e-6
    )


def test_embedding_is_the_pooled_last_stage(built):
    for name, last in (("resnet8", "stage3"), ("vgg8", "stage4")):
        _, _, _, features = built[name]
        chex.assert_trees_all_close(features["embedding"], features[last].mean(axis=(1, 2)), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Units and pieces


def _unit_outputs(unit_class, unit_args, x):
    """``unit_class(*unit_args)(x, train=False)``, built and run in one compiled program."""
    return jax.device_get(nnx.jit(lambda x: unit_class(*unit_args, rngs=_rngs())(x, train=False))(x))


def test_shufflenet_v1_down_unit_concatenates_its_pooled_input():
    x = _relu(_images((8, 8, 24), batch=2))
    pre = _unit_outputs(ShuffleV1Unit, (24, 216, 2, 3), x)
    chex.assert_shape(pre, (2, 4, 4, 240))
    # The last 24 channels: 3x3 average pooling, stride 2, zero padding counted (PyTorch's default).
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    corner = padded[:, 0:3, 0:3].sum(axis=(1, 2)) / 9
    chex.assert_trees_all_close(pre[:, 0, 0, 216:], corner, rtol=1e-6)


def test_shufflenet_v2_pre_activation_is_unshuffled():
    x = _relu(_images((4, 4, 8), batch=2))
    out, pre = _unit_outputs(ShuffleV2Basic, (8,), x)
    chex.assert_trees_all_equal(pre[..., :4], x[..., :4])  # the kept half passes through
    chex.assert_trees_all_equal(out, np.asarray(channel_shuffle(_relu(pre), 2)))


def test_channel_shuffle_interleaves_the_groups():
    x = jnp.arange(6.0).reshape(1, 1, 1, 6)
    chex.assert_trees_all_equal(channel_shuffle(x, 2)[0, 0, 0], jnp.array([0.0, 3, 1, 4, 2, 5]))
    chex.assert_trees_all_equal(channel_shuffle(x, 3)[0, 0, 0], jnp.array([0.0, 2, 4, 1, 3, 5]))


def test_strided_conv_pads_symmetrically_as_pytorch():
    layer = conv(1, 1, 3, stride=2, rngs=_rngs())
    layer.kernel[...] = jnp.ones((3, 3, 1, 1))
    out = layer(jnp.ones((1, 4, 4, 1)))
    # PyTorch's padding=1: windows centred on pixels 0 and 2, so the first one sees 2x2 pixels.
    chex.assert_trees_all_equal(out[0, :, :, 0], jnp.array([[4.0, 6.0], [6.0, 9.0]]))

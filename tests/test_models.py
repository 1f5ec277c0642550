"""Tests for jdistill.models: the built-in models, their features and parameter counts, dropout,
connectors, the registry, and jit through nnx.split / nnx.merge.

Building a model eagerly compiles every initialiser op once per parameter shape, which with
threefry keys takes about half a minute for the seven built-in models on a busy 2-core CPU. So
the tests build with ``unsafe_rbg`` keys (``_rngs``), the built-in models inside one ``nnx.jit``
(one compilation) by the module-scoped ``built`` fixture, and reuse them. One test builds with
plain ``nnx.Rngs(0)`` as documented.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jdistill.models import MLP, MODELS, Connector, LeNet5, SmallCNN, count_params, create_model
from jdistill.models.generator import Generator
from jdistill.models.layers import torch_init

BATCH = 3
MNIST_SHAPE = (28, 28, 1)


def _vit_params(depth, d, patch_inputs=49, tokens=17, classes=10):
    """A ViT: patch embedding, class token, positions; per block two LayerNorms, qkv, projection
    and an MLP of width 2d; a final LayerNorm and the head."""
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 2 * d + 2 * d) + (2 * d * d + d)
    return (patch_inputs * d + d) + d + tokens * d + depth * block + 2 * d + (d * classes + classes)


def _vit_features(depth, d, heads, tokens=17):
    per_block = {"attn": (heads, tokens, tokens), "values": (heads, tokens, d // heads), "block": (tokens, d)}
    return {f"{k}{i}": v for i in range(1, depth + 1) for k, v in per_block.items()} | {"embedding": (d,)}


# Parameter counts by hand: (inputs * outputs + biases) per dense layer and
# (kh * kw * in_channels * out_channels + out_channels) per convolution.
EXPECTED_PARAMS = {
    "mlp1200": (784 * 1200 + 1200) + (1200 * 1200 + 1200) + (1200 * 10 + 10),
    "mlp800": (784 * 800 + 800) + (800 * 800 + 800) + (800 * 10 + 10),
    "mlp256": (784 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10),
    "mlp32": (784 * 32 + 32) + (32 * 10 + 10),
    # conv5x5(1->6), conv5x5(6->16), fc(5*5*16 -> 120), fc(120 -> 84), fc(84 -> 10)
    "lenet5": (5 * 5 * 1 * 6 + 6)
    + (5 * 5 * 6 * 16 + 16)
    + (5 * 5 * 16 * 120 + 120)
    + (120 * 84 + 84)
    + (84 * 10 + 10),
    # conv5x5(1->3), conv5x5(3->8), fc(5*5*8 -> 60), fc(60 -> 42), fc(42 -> 10)
    "lenet5_half": (5 * 5 * 1 * 3 + 3)
    + (5 * 5 * 3 * 8 + 8)
    + (5 * 5 * 8 * 60 + 60)
    + (60 * 42 + 42)
    + (42 * 10 + 10),
    # conv3x3(1->32), conv3x3(32->64), fc(64 -> 128), fc(128 -> 10)
    "small_cnn": (3 * 3 * 1 * 32 + 32) + (3 * 3 * 32 * 64 + 64) + (64 * 128 + 128) + (128 * 10 + 10),
    "vit4x64": _vit_params(4, 64),
    "vit2x32": _vit_params(2, 32),
}

# The models built here, on 28x28x1; the CIFAR zoo (32x32 only) is tested in test_cifar_models.py.
SMALL_MODELS = sorted(EXPECTED_PARAMS)

# Documented feature shapes (without the batch axis) on 28x28x1 inputs.
EXPECTED_FEATURES = {
    "mlp1200": {"hidden1": (1200,), "hidden2": (1200,), "embedding": (1200,)},
    "mlp800": {"hidden1": (800,), "hidden2": (800,), "embedding": (800,)},
    "mlp256": {"hidden1": (256,), "hidden2": (256,), "embedding": (256,)},
    "mlp32": {"hidden1": (32,), "embedding": (32,)},
    # conv1 'SAME' on 28x28 keeps 28x28; pool -> 14x14; conv2 'VALID' 5x5 -> 10x10.
    "lenet5": {"conv1": (28, 28, 6), "conv2": (10, 10, 16), "fc1": (120,), "embedding": (84,)},
    "lenet5_half": {"conv1": (28, 28, 3), "conv2": (10, 10, 8), "fc1": (60,), "embedding": (42,)},
    "small_cnn": {"conv1": (28, 28, 32), "conv2": (14, 14, 64), "embedding": (128,)},
    "vit4x64": _vit_features(4, 64, 4),
    "vit2x32": _vit_features(2, 32, 2),
}


def _rngs(seed=0):
    return nnx.Rngs(jax.random.key(seed, impl="unsafe_rbg"))


def _build(factory, *args, **kwargs):
    """``factory(*args, **kwargs, rngs=_rngs())``, constructed in one compiled program."""
    return nnx.jit(lambda: factory(*args, **kwargs, rngs=_rngs()))()


def _images(shape, batch=BATCH, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (batch, *shape)).astype(np.float32))


@pytest.fixture(scope="module")
def built():
    """name -> (model, images, logits, features) for every built-in model on 28x28x1."""
    images = _images(MNIST_SHAPE)
    models = nnx.jit(
        lambda: {name: create_model(name, MNIST_SHAPE, 10, rngs=_rngs()) for name in SMALL_MODELS}
    )()
    return {name: (model, images, *model(images)) for name, model in models.items()}


def test_the_registry_holds_the_documented_models():
    assert set(EXPECTED_PARAMS) <= set(MODELS)


def test_parameter_counts_match_the_known_values():
    assert EXPECTED_PARAMS["mlp1200"] == 2_395_210
    assert EXPECTED_PARAMS["mlp800"] == 1_276_810
    assert EXPECTED_PARAMS["lenet5"] == 61_706
    assert EXPECTED_PARAMS["lenet5_half"] == 15_738
    assert EXPECTED_PARAMS["mlp256"] == 269_322
    assert EXPECTED_PARAMS["mlp32"] == 25_450
    assert EXPECTED_PARAMS["small_cnn"] == 28_426
    assert EXPECTED_PARAMS["vit4x64"] == 139_018
    assert EXPECTED_PARAMS["vit2x32"] == 19_658


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_model_builds_with_the_documented_outputs(built, name):
    model, _, logits, features = built[name]
    chex.assert_shape(logits, (BATCH, 10))
    chex.assert_tree_all_finite(logits)
    assert count_params(model) == EXPECTED_PARAMS[name]
    assert "embedding" in features
    assert features["embedding"].ndim == 2 and features["embedding"].shape[0] == BATCH
    assert {k: v.shape[1:] for k, v in features.items()} == EXPECTED_FEATURES[name]
    chex.assert_tree_all_finite(features)
    assert not np.allclose(logits[0], logits[1])  # depends on the input


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_parameter_count_of_an_abstract_model(name):
    abstract = nnx.eval_shape(lambda: create_model(name, MNIST_SHAPE, 10, rngs=nnx.Rngs(0)))
    assert count_params(abstract) == EXPECTED_PARAMS[name]


def test_mlp_embedding_is_the_last_hidden_layer(built):
    for name in ("mlp1200", "mlp32"):
        _, _, _, features = built[name]
        last = max(k for k in features if k.startswith("hidden"))
        chex.assert_trees_all_close(features["embedding"], features[last], rtol=0, atol=0)
        # ReLU activations.
        assert float(features[last].min()) >= 0.0


def test_mlp_needs_a_hidden_layer():
    with pytest.raises(ValueError, match="widths"):
        MLP(MNIST_SHAPE, 10, widths=(), rngs=_rngs())


def test_lenet5_on_32x32x3():
    model = _build(LeNet5, (32, 32, 3), 10)
    logits, features = model(_images((32, 32, 3)))
    chex.assert_shape(logits, (BATCH, 10))
    # conv1 'VALID' on 32x32 -> 28x28, pool -> 14x14, conv2 'VALID' -> 10x10.
    chex.assert_shape(features["conv1"], (BATCH, 28, 28, 6))
    chex.assert_shape(features["conv2"], (BATCH, 10, 10, 16))
    chex.assert_shape(features["embedding"], (BATCH, 84))
    assert count_params(model) == EXPECTED_PARAMS["lenet5"] - (5 * 5 * 1 * 6) + (5 * 5 * 3 * 6)


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 32, 1)])
def test_lenet5_refuses_other_input_sizes(shape):
    with pytest.raises(ValueError, match="LeNet5") as info:
        LeNet5(shape, 10, rngs=_rngs())
    assert str(shape) in str(info.value)


@pytest.mark.parametrize(
    "shape, conv1, conv2",
    [((8, 8, 1), (8, 8, 32), (4, 4, 64)), ((32, 32, 3), (32, 32, 32), (16, 16, 64))],
)
def test_small_cnn_on_other_input_sizes(shape, conv1, conv2):
    model = _build(SmallCNN, shape, 10)
    logits, features = model(_images(shape))
    chex.assert_shape(logits, (BATCH, 10))
    chex.assert_shape(features["conv1"], (BATCH, *conv1))
    chex.assert_shape(features["conv2"], (BATCH, *conv2))
    chex.assert_shape(features["embedding"], (BATCH, 128))
    chex.assert_tree_all_finite(logits)


# ---------------------------------------------------------------------------------------------
# Dropout


def test_dropout_model_without_a_key_refuses_to_train(built):
    model, images, _, _ = built["mlp1200"]
    with pytest.raises(ValueError, match="dropout_key"):
        model(images, train=True)


def test_dropout_is_off_when_not_training(built):
    model, images, logits, _ = built["mlp1200"]
    chex.assert_trees_all_close(model(images)[0], logits, rtol=0, atol=0)
    chex.assert_trees_all_close(
        model(images, train=False, dropout_key=jax.random.key(1))[0], logits, rtol=0, atol=0
    )


def test_dropout_depends_on_the_key(built):
    model, images, logits, _ = built["mlp1200"]
    a = model(images, train=True, dropout_key=jax.random.key(1))[0]
    a_again = model(images, train=True, dropout_key=jax.random.key(1))[0]
    b = model(images, train=True, dropout_key=jax.random.key(2))[0]
    chex.assert_trees_all_close(a, a_again, rtol=0, atol=0)
    chex.assert_tree_all_finite(a)
    assert not np.allclose(a, b)
    assert not np.allclose(a, logits)


@pytest.mark.parametrize("name", sorted(set(SMALL_MODELS) - {"mlp1200"}))
def test_models_without_dropout_ignore_train(built, name):
    model, images, logits, _ = built[name]
    chex.assert_trees_all_close(model(images, train=True)[0], logits, rtol=0, atol=0)
    chex.assert_trees_all_close(
        model(images, train=True, dropout_key=jax.random.key(1))[0], logits, rtol=0, atol=0
    )


def test_small_cnn_dropout_acts_after_the_embedding():
    model = _build(SmallCNN, (8, 8, 1), 10, dropout=0.5)
    images = _images((8, 8, 1))
    with pytest.raises(ValueError, match="dropout_key"):
        model(images, train=True)
    eval_logits, eval_features = model(images)
    logits, features = model(images, train=True, dropout_key=jax.random.key(0))
    chex.assert_trees_all_close(features, eval_features, rtol=0, atol=0)
    assert not np.allclose(logits, eval_logits)


# ---------------------------------------------------------------------------------------------
# Connectors


def test_connector_maps_vectors_linearly():
    connector = Connector((42,), (84,), rngs=_rngs())
    assert isinstance(connector.map, nnx.Linear)
    assert count_params(connector) == 42 * 84 + 84
    out = connector(_images((42,)))
    chex.assert_shape(out, (BATCH, 84))
    # Linear: f(2x) - f(0) == 2 (f(x) - f(0)).
    x = _images((42,), seed=1)
    zero = connector(jnp.zeros_like(x))
    chex.assert_trees_all_close(connector(2 * x) - zero, 2 * (connector(x) - zero), rtol=1e-5, atol=1e-5)


def test_connector_maps_feature_maps_with_a_1x1_convolution(built):
    # LeNet-5-half's conv2 (10x10x8) to LeNet-5's (10x10x16), as in a FitNets hint.
    student = built["lenet5_half"][3]["conv2"]
    teacher = built["lenet5"][3]["conv2"]
    connector = Connector(student.shape[1:], teacher.shape[1:], rngs=_rngs())
    assert isinstance(connector.map, nnx.Conv)
    assert connector.map.kernel.shape == (1, 1, 8, 16)
    assert count_params(connector) == 8 * 16 + 16
    out = connector(student)
    chex.assert_shape(out, teacher.shape)
    # A 1x1 convolution acts on each pixel alone: the same channel map everywhere.
    pixel = connector(student[:, 4:5, 7:8, :])
    chex.assert_trees_all_close(pixel, out[:, 4:5, 7:8, :], rtol=1e-5, atol=1e-5)


def test_connector_refuses_a_change_of_spatial_size():
    with pytest.raises(ValueError, match="spatial"):
        Connector((14, 14, 8), (10, 10, 16), rngs=_rngs())


@pytest.mark.parametrize("student, teacher", [((42,), (10, 10, 16)), ((10, 10, 8), (84,)), ((4, 5), (4, 5))])
def test_connector_refuses_mixed_or_unsupported_ranks(student, teacher):
    with pytest.raises(ValueError, match="vectors") as info:
        Connector(student, teacher, rngs=_rngs())
    assert str(list(student)) in str(info.value) and str(list(teacher)) in str(info.value)


# ---------------------------------------------------------------------------------------------
# Registry and parameter counting


def test_create_model_of_an_unknown_name_lists_the_models():
    with pytest.raises(ValueError) as info:
        create_model("resnet9000", MNIST_SHAPE, 10, rngs=_rngs())
    message = str(info.value)
    assert "resnet9000" in message
    for name in MODELS:
        assert name in message


def test_create_model_passes_the_number_of_classes():
    model = create_model("mlp32", (8, 8, 1), 3, rngs=nnx.Rngs(0))
    logits, _ = model(_images((8, 8, 1)))
    chex.assert_shape(logits, (BATCH, 3))
    assert count_params(model) == (64 * 32 + 32) + (32 * 3 + 3)


class _Mixed(nnx.Module):
    """Parameters next to batch statistics and a plain variable."""

    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 4, rngs=rngs)  # 12 + 4 params
        self.norm = nnx.BatchNorm(5, rngs=rngs)  # 5 + 5 params, 5 + 5 batch statistics
        self.counter = nnx.Variable(jnp.zeros((7,)))  # not a parameter


def test_count_params_counts_only_params():
    model = nnx.eval_shape(lambda: _Mixed(nnx.Rngs(0)))  # shapes suffice; nothing to compile
    all_leaves = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model)))
    assert all_leaves == 16 + 10 + 10 + 7
    assert count_params(model) == 16 + 10


def test_count_params_counts_every_param():
    model = nnx.eval_shape(lambda: nnx.Linear(6, 2, use_bias=False, rngs=nnx.Rngs(0)))
    assert count_params(model) == 12


# ---------------------------------------------------------------------------------------------
# jit through nnx.split / nnx.merge


def _jitted_forward(model, **call_kwargs):
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, images, dropout_key=None):
        return nnx.merge(graphdef, state)(images, dropout_key=dropout_key, **call_kwargs)

    return forward, state


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_jit_of_split_model_matches_eager(built, name):
    model, images, logits, features = built[name]
    forward, state = _jitted_forward(model)
    jit_logits, jit_features = forward(state, images)
    chex.assert_trees_all_close(jit_logits, logits, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(jit_features, features, rtol=1e-5, atol=1e-5)
    # A pure function of the state: zero weights and biases give zero logits.
    zero_logits, _ = forward(jax.tree.map(jnp.zeros_like, state), images)
    chex.assert_trees_all_close(zero_logits, jnp.zeros_like(logits), rtol=0, atol=0)


def test_jit_of_split_model_with_dropout_matches_eager(built):
    model, images, _, _ = built["mlp1200"]
    forward, state = _jitted_forward(model, train=True)
    key = jax.random.key(7)
    jit_logits, _ = forward(state, images, key)
    eager_logits, _ = model(images, train=True, dropout_key=key)
    chex.assert_trees_all_close(jit_logits, eager_logits, rtol=1e-5, atol=1e-5)
    assert not np.allclose(forward(state, images, jax.random.key(8))[0], jit_logits)


# ---------------------------------------------------------------- PyTorch's initialisation

# fan_in of every dense and convolution layer, by hand: in_features, or in_channels * kh * kw.
TORCH_FAN_IN = {
    "lenet5": {"conv1": 1 * 5 * 5, "conv2": 6 * 5 * 5, "fc1": 5 * 5 * 16, "fc2": 120, "head": 84},
    "lenet5_half": {"conv1": 1 * 5 * 5, "conv2": 3 * 5 * 5, "fc1": 5 * 5 * 8, "fc2": 60, "head": 42},
    # The data-free generator of 32x32x1 images, noise 100, width 8: linear 100 -> 8 * 8 * 16.
    "generator": {"linear": 100, "conv1": 16 * 3 * 3, "conv2": 16 * 3 * 3, "conv_out": 8 * 3 * 3},
}


def _torch_initialised(name):
    """``name`` on 32x32x1 (the generator: noise 100, width 8) with PyTorch's initialisation."""

    def make():
        if name == "generator":
            return Generator((32, 32, 1), noise_dim=100, width=8, rngs=_rngs())
        return create_model(name, (32, 32, 1), 10, rngs=_rngs())

    return nnx.jit(lambda: torch_init(make(), _rngs(1)))()


@pytest.mark.parametrize("name", TORCH_FAN_IN)
def test_torch_init_draws_every_kernel_and_bias_from_pytorchs_uniform(name):
    """PyTorch's default (``kaiming_uniform_(a=sqrt(5))`` and its bias rule): kernel and bias
    ``U(-b, b)`` with ``b = 1 / sqrt(fan_in)``. Every value lies within ``b``; a kernel fills the
    interval (largest magnitude above 0.85 b, standard deviation ``b / sqrt(3)`` within 20 %);
    biases are drawn, not zero; BatchNorm keeps scale 1 and offset 0."""
    model = _torch_initialised(name)
    for layer, fan_in in TORCH_FAN_IN[name].items():
        bound = 1 / np.sqrt(fan_in)
        kernel, bias = (np.asarray(getattr(getattr(model, layer), p)[...]) for p in ("kernel", "bias"))
        assert np.prod(kernel.shape[:-1]) == fan_in, layer
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound, layer
        assert np.abs(kernel).max() > 0.85 * bound, layer
        np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.2, err_msg=layer)
        assert np.all(bias != 0), layer
    for _, bn in nnx.iter_modules(model):
        if isinstance(bn, nnx.BatchNorm) and bn.scale is not None:
            assert np.all(np.asarray(bn.scale[...]) == 1) and np.all(np.asarray(bn.bias[...]) == 0)


def test_torch_init_is_lecun_normal_over_sqrt_3():
    """Flax's default (LeCun normal: standard deviation ``1 / sqrt(fan_in)``) is ``sqrt(3)`` times
    PyTorch's, which is why the choice matters for a generator whose last convolution feeds tanh."""
    flax_default = _build(LeNet5, (32, 32, 1), 10)
    torch_default = _torch_initialised("lenet5")
    ratio = np.std(np.asarray(flax_default.fc1.kernel[...])) / np.std(
        np.asarray(torch_default.fc1.kernel[...])
    )
    np.testing.assert_allclose(ratio, np.sqrt(3), rtol=0.05)
    assert not np.any(np.asarray(flax_default.fc1.bias[...]))

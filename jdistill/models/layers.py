"""Small pieces shared by the CIFAR models: convolutions with PyTorch's padding and initialisers,
BatchNorm with PyTorch's defaults, conv + BN, pooling and channel shuffling, input checks; and
:func:`torch_init`, PyTorch's default initialisation for any model."""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

# ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``: N(0, 2 / (k * k * out_channels)).
KAIMING_FAN_OUT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch's default for conv and linear weights, ``kaiming_uniform_(a=sqrt(5))``: U(+-1/sqrt(fan_in)).
TORCH_DEFAULT = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def torch_default_bias(fan_in: int) -> nnx.Initializer:
    """PyTorch's default bias initialiser: U(+-1/sqrt(fan_in))."""
    bound = 1 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


# A model's initialisation: Flax's defaults (LeCun-normal kernels, zero biases) or PyTorch's.
INITS = ("flax", "torch")


def torch_init(module: nnx.Module, rngs: nnx.Rngs) -> nnx.Module:
    """Re-draw the kernel and bias of every dense and convolution layer in ``module`` as PyTorch's
    ``nn.Linear`` / ``nn.Conv2d`` defaults: ``U(+-1/sqrt(fan_in))``, ``fan_in`` = in_features or
    in_channels (per group) * kh * kw. Flax's LeCun-normal kernels have ``sqrt(3)`` times that
    standard deviation; the data-free papers' generators and LeNets start from PyTorch's."""
    for _, layer in nnx.iter_modules(module):
        kernel, bias = getattr(layer, "kernel", None), getattr(layer, "bias", None)
        if not (isinstance(kernel, nnx.Param) and kernel.ndim >= 2):
            continue
        fan_in = math.prod(kernel.shape[:-1])
        kernel.set_value(TORCH_DEFAULT(rngs.params(), kernel.shape, kernel.dtype))
        if isinstance(bias, nnx.Param):
            bias.set_value(torch_default_bias(fan_in)(rngs.params(), bias.shape, bias.dtype))
    return module


def require_cifar_input(model: str, input_shape: Sequence[int]) -> int:
    """The channel count of a 32x32xC ``input_shape``; a ValueError naming ``model`` otherwise."""
    if len(input_shape) != 3 or tuple(input_shape[:2]) != (32, 32):
        raise ValueError(f"{model}: input_shape must be 32x32xC (CIFAR), got {tuple(input_shape)}")
    return input_shape[2]


def conv(
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    stride: int = 1,
    groups: int = 1,
    use_bias: bool = False,
    kernel_init: nnx.Initializer = KAIMING_FAN_OUT,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """A square convolution padded by ``kernel_size // 2`` on every side, as PyTorch's
    ``padding=k//2`` (JAX's 'SAME' pads stride-2 convolutions asymmetrically); a bias, when
    present, starts at zero."""
    pad = kernel_size // 2
    return nnx.Conv(
        in_features,
        out_features,
        (kernel_size, kernel_size),
        strides=stride,
        padding=((pad, pad), (pad, pad)),
        feature_group_count=groups,
        use_bias=use_bias,
        kernel_init=kernel_init,
        bias_init=nnx.initializers.zeros_init(),
        rngs=rngs,
    )


def batch_norm(features: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """BatchNorm as PyTorch's ``BatchNorm2d`` (momentum 0.1, epsilon 1e-5), scale 1, offset 0."""
    return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)


def linear(
    in_features: int,
    out_features: int,
    *,
    kernel_init: nnx.Initializer = TORCH_DEFAULT,
    bias_init: nnx.Initializer | None = None,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """A dense layer; PyTorch's default initialisation unless told otherwise."""
    return nnx.Linear(
        in_features,
        out_features,
        kernel_init=kernel_init,
        bias_init=torch_default_bias(in_features) if bias_init is None else bias_init,
        rngs=rngs,
    )


class ConvBN(nnx.Module):
    """A convolution without bias (unless ``use_bias``) followed by BatchNorm; no activation."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size: int, *, rngs: nnx.Rngs, **conv_kwargs
    ):
        self.conv = conv(in_features, out_features, kernel_size, rngs=rngs, **conv_kwargs)
        self.bn = batch_norm(out_features, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return self.bn(self.conv(x), use_running_average=not train)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, C]."""
    return x.mean(axis=(1, 2))


def max_pool2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2, on even-sized maps."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
    """ShuffleNet's channel shuffle on NHWC: channels seen as [groups, C / groups], transposed."""
    b, h, w, c = x.shape
    return x.reshape(b, h, w, groups, c // groups).swapaxes(3, 4).reshape(b, h, w, c)


def staged_forward(model: nnx.Module, images: jax.Array, train: bool):
    """``(logits, features)`` of a model made of ``stem`` (conv-BN), ``stages`` (lists of blocks that
    return their output before the final ReLU) and ``head``: ``stem``, each ``stageK`` after the ReLU
    and ``stageK_pre`` before it, and the globally pooled ``embedding``."""
    h = jax.nn.relu(model.stem(images, train))
    features = {"stem": h}
    for k, stage in enumerate(model.stages, start=1):
        for block in stage:
            pre = block(h, train)
            h = jax.nn.relu(pre)
        features[f"stage{k}_pre"], features[f"stage{k}"] = pre, h
    features["embedding"] = global_avg_pool(h)
    return model.head(features["embedding"]), features

"""Trainable modules that methods add beside the student (RepDistiller's designs).

They are always called while training, so their BatchNorms use batch statistics.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jdistill.losses import class_layout, crd_init_memory, vid_log_scale_init


def _bn(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, use_running_average=False, rngs=rngs)


class ConvRegressor(nnx.Module):
    """RepDistiller's ``ConvReg``: a convolution from the student map [Hs, Ws, Cs] to the teacher's
    [Ht, Wt, Ct] (3x3 stride 2 when Hs = 2 Ht, 4x4 transposed stride 2 when 2 Hs = Ht, else a
    VALID (1+Hs-Ht)x(1+Ws-Wt) kernel), then BatchNorm and (``relu``) ReLU: FitNets' regressor
    with the ReLU, AB's connector without it. [D] vectors get a linear map."""

    def __init__(
        self, student_shape: Sequence[int], teacher_shape: Sequence[int], *, relu: bool = True, rngs: nnx.Rngs
    ):
        s, t = tuple(student_shape), tuple(teacher_shape)
        if len(s) == 1 and len(t) == 1:
            self.map = nnx.Linear(s[0], t[0], rngs=rngs)
            self.bn = None
            return
        if len(s) != 3 or len(t) != 3:
            raise ValueError(
                f"connector: student and teacher features must both be vectors [D] or both maps [H, W, C]; "
                f"got student {list(s)} and teacher {list(t)}"
            )
        (hs, ws, cs), (ht, wt, ct) = s, t
        if hs == 2 * ht:
            self.map = nnx.Conv(cs, ct, (3, 3), strides=2, padding=1, rngs=rngs)
        elif 2 * hs == ht:
            self.map = nnx.ConvTranspose(cs, ct, (4, 4), strides=2, padding=2, rngs=rngs)
        elif hs >= ht and ws >= wt:
            self.map = nnx.Conv(cs, ct, (1 + hs - ht, 1 + ws - wt), padding="VALID", rngs=rngs)
        else:
            raise ValueError(
                f"connector: cannot map a student map of {hs}x{ws} to a teacher map of {ht}x{wt} "
                f"(supported: the same size, half, double, or a larger student map)"
            )
        self.bn = _bn(ct, rngs)
        self.relu = relu

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.map(x)
        if self.bn is None:
            return x
        x = self.bn(x)
        return jax.nn.relu(x) if self.relu else x


class Embed(nnx.Module):
    """Linear map of a flattened feature to ``dim``, optionally L2-normalised (CRD's embedding;
    CC's is not normalised)."""

    def __init__(self, in_dim: int, dim: int, *, normalise: bool, rngs: nnx.Rngs):
        self.linear = nnx.Linear(in_dim, dim, rngs=rngs)
        self.normalise = normalise

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.linear(x.reshape(x.shape[0], -1))
        if not self.normalise:
            return x
        return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class VIDRegressor(nnx.Module):
    """Ahn et al. 2019: the student map's predicted mean of the teacher map (1x1 conv, ReLU, 1x1
    conv, ReLU, 1x1 conv) and a per-channel variance parameter ``log_scale`` (softplus -> variance),
    initialised so the variance starts at 5."""

    def __init__(self, in_channels: int, out_channels: int, *, rngs: nnx.Rngs, init_variance: float = 5.0):
        mid = out_channels
        self.convs = nnx.List(
            [
                nnx.Conv(a, b, (1, 1), use_bias=False, rngs=rngs)
                for a, b in ((in_channels, mid), (mid, mid), (mid, out_channels))
            ]
        )
        self.log_scale = nnx.Param(vid_log_scale_init(out_channels, variance=init_variance))

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = jax.nn.relu(x)
        return x


class _ConvBlock(nnx.Module):
    """3x3 convolution, optional BatchNorm, LeakyReLU 0.1."""

    def __init__(self, in_channels: int, out_channels: int, *, bn: bool, rngs: nnx.Rngs):
        self.conv = nnx.Conv(in_channels, out_channels, (3, 3), rngs=rngs)
        self.bn = _bn(out_channels, rngs) if bn else None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        return jax.nn.leaky_relu(x if self.bn is None else self.bn(x), 0.1)


class Factor(nnx.Module):
    """Kim et al. 2018: FT's paraphraser (``decode=True``: an encoder to ``out_channels`` and a
    decoder back, trained to reconstruct the teacher map; no BatchNorm in the benchmark) or
    translator (encoder only, on the student; with BatchNorm). Three 3x3 blocks each way."""

    def __init__(self, in_channels: int, out_channels: int, *, decode: bool, bn: bool, rngs: nnx.Rngs):
        c, f = in_channels, out_channels
        self.encoder = nnx.List([_ConvBlock(a, b, bn=bn, rngs=rngs) for a, b in ((c, c), (c, f), (f, f))])
        pairs = ((f, f), (f, c), (c, c))
        self.decoder = nnx.List([_ConvBlock(a, b, bn=bn, rngs=rngs) for a, b in pairs]) if decode else None

    def encode(self, x: jax.Array) -> jax.Array:
        for block in self.encoder:
            x = block(x)
        return x

    def decode(self, factor: jax.Array) -> jax.Array:
        for block in self.decoder:
            factor = block(factor)
        return factor


class Memory(nnx.Variable):
    """State a method carries through the step (not trained by the optimizer)."""


class ContrastMemory(nnx.Module):
    """CRD's memory: a bank of ``dim``-vectors per side for every training image (initialised
    uniformly in +-1/sqrt(dim/3), rows replaced by momentum updates as images are seen), the two
    normalisation constants (0 until the first batch sets them), and the class layout used to
    draw negatives from other classes."""

    def __init__(self, labels: np.ndarray, dim: int, *, rngs: nnx.Rngs):
        key_s, key_t = jax.random.split(rngs.params())
        self.memory_s = Memory(crd_init_memory(key_s, len(labels), dim))
        self.memory_t = Memory(crd_init_memory(key_t, len(labels), dim))
        self.z_s = Memory(jnp.zeros((), jnp.float32))
        self.z_t = Memory(jnp.zeros((), jnp.float32))
        order, start, count = class_layout(labels)
        self.class_order = Memory(jnp.asarray(order, jnp.int32))
        self.class_start = Memory(jnp.asarray(start, jnp.int32))
        self.class_count = Memory(jnp.asarray(count, jnp.int32))

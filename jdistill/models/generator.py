"""The image generator of the data-free distillation papers (DFAD, DAFL; ZSKT's is of the same
family), for 28x28 and 32x32 images.

    z [B, nz] -> linear -> [B, s, s, 2w] -> BN -> upsample x2 -> conv3x3(2w) -> BN -> LeakyReLU(0.2)
      -> upsample x2 -> conv3x3(w) -> BN -> LeakyReLU(0.2) -> conv3x3(C) -> tanh -> BN (no affine)

with ``s = size / 4`` and width ``w`` (64 in the papers). ``bn_epsilon`` is the epsilon of the
two BatchNorms after the convolutions: 1e-5 in DFAD, 0.8 in DAFL's reference code (which passes
0.8 where PyTorch expects epsilon), a much softer normalisation. The last BatchNorm standardises each
channel over the batch, so samples live where normalised real images do. Every BatchNorm uses
the batch's statistics: the generator always runs in training mode (its running averages are
neither kept nor needed). Its layers start from Flax's defaults; the papers' code starts from
PyTorch's, ``sqrt(3)`` times narrower (:func:`jdistill.models.layers.torch_init`,
``DataFreeConfig(init="torch")``), which matters here: larger weights saturate the tanh.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def _upsample(x):
    """Nearest-neighbour upsampling by 2 in height and width."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Generator(nnx.Module):
    def __init__(
        self,
        image_shape: Sequence[int],
        *,
        noise_dim: int = 100,
        width: int = 64,
        bn_epsilon: float = 1e-5,
        rngs: nnx.Rngs,
    ):
        height, width_px, channels = image_shape
        if height != width_px or height % 4:
            raise ValueError(
                f"Generator: image_shape must be square with a side divisible by 4 (28x28, 32x32), "
                f"got {tuple(image_shape)}"
            )
        self.image_shape = tuple(image_shape)
        self.noise_dim = noise_dim
        self.start = height // 4
        self.linear = nnx.Linear(noise_dim, self.start * self.start * 2 * width, rngs=rngs)
        bn = {"use_running_average": False, "momentum": 0.9, "rngs": rngs}
        self.bn0 = nnx.BatchNorm(2 * width, epsilon=1e-5, **bn)
        self.conv1 = nnx.Conv(2 * width, 2 * width, (3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(2 * width, epsilon=bn_epsilon, **bn)
        self.conv2 = nnx.Conv(2 * width, width, (3, 3), rngs=rngs)
        self.bn2 = nnx.BatchNorm(width, epsilon=bn_epsilon, **bn)
        self.conv_out = nnx.Conv(width, channels, (3, 3), rngs=rngs)
        self.bn_out = nnx.BatchNorm(channels, epsilon=1e-5, use_scale=False, use_bias=False, **bn)

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.bn_out(self.tanh_output(z))

    def tanh_output(self, z: jax.Array) -> jax.Array:
        """The images before the last BatchNorm, in [-1, 1]. Where ``|tanh| -> 1`` the unit passes
        almost no gradient (``1 - tanh^2``); all of them saturated alike is one constant image."""
        if z.ndim != 2 or z.shape[1] != self.noise_dim:
            raise ValueError(f"Generator: noise must be [batch, {self.noise_dim}], got {z.shape}")
        h = self.linear(z).reshape(z.shape[0], self.start, self.start, -1)
        h = _upsample(self.bn0(h))
        h = jax.nn.leaky_relu(self.bn1(self.conv1(h)), 0.2)
        h = jax.nn.leaky_relu(self.bn2(self.conv2(_upsample(h))), 0.2)
        return jnp.tanh(self.conv_out(h))

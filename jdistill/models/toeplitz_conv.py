"""A stride-1 2-D convolution computed as one matrix product, for small images and channel counts.

Each output row of a ``kh x kw`` convolution reads ``kh`` input rows. Stacking those rows gives a
matrix ``[B * out_h, kh * W * C_in]``; the kernel, laid out as a block-Toeplitz matrix
``[kh * W * C_in, out_w * C_out]`` (entry ``(i, w, c), (o, d)`` is ``kernel[i, w - o, c, d]`` where
``0 <= w - o < kw``, else 0), turns the whole convolution into one GEMM. It does about ``W / kw``
times the multiply-adds of a direct convolution, but on CPU XLA's convolution is far slower than
its matrix product for the shapes of LeNet-5 (1 to 16 channels, 28x28 images): in an ad hoc
timing of single layers (forward and gradient, batch 128, 2 CPU cores shared with other work) it
was 2-8x faster. ``benchmarks/throughput.py`` times the whole LeNet-5 distillation step.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def toeplitz_conv(images: jax.Array, kernel: jax.Array, padding: str = "VALID") -> jax.Array:
    """``images`` [B, H, W, C_in] convolved (cross-correlation, stride 1) with ``kernel``
    [kh, kw, C_in, C_out]; ``padding`` 'VALID' or 'SAME' (odd kernel sizes). Same result as
    ``jax.lax.conv_general_dilated`` with NHWC / HWIO layouts."""
    kh, kw, c_in, c_out = kernel.shape
    if padding == "SAME":
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"toeplitz_conv: 'SAME' padding needs odd kernel sizes, got {kh}x{kw}")
        images = jnp.pad(images, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    elif padding != "VALID":
        raise ValueError(f"toeplitz_conv: padding must be 'SAME' or 'VALID', got {padding!r}")
    b, h, w, c = images.shape
    if c != c_in:
        raise ValueError(f"toeplitz_conv: images have {c} channels, the kernel expects {c_in}")
    out_h, out_w = h - kh + 1, w - kw + 1
    rows = jnp.stack([images[:, i : i + out_h] for i in range(kh)], axis=2)  # [B, out_h, kh, W, C]
    # select[w, o, j] = 1 where input column w feeds output column o through kernel column j.
    offset = jnp.arange(w)[:, None] - jnp.arange(out_w)[None, :]
    select = (offset[:, :, None] == jnp.arange(kw)).astype(kernel.dtype)
    toeplitz = jnp.einsum("woj,ijcd->iwcod", select, kernel).reshape(kh * w * c_in, out_w * c_out)
    out = rows.reshape(b * out_h, kh * w * c_in) @ toeplitz
    return out.reshape(b, out_h, out_w, c_out)


class ToeplitzConv(nnx.Module):
    """A stride-1 convolution layer (kernel [kh, kw, C_in, C_out] and bias, initialised as
    ``nnx.Conv``'s) computed by :func:`toeplitz_conv`."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int],
        *,
        padding: str = "VALID",
        rngs: nnx.Rngs,
    ):
        shape = (*kernel_size, in_features, out_features)
        self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), shape))
        self.bias = nnx.Param(jnp.zeros((out_features,)))
        self.padding = padding

    def __call__(self, images: jax.Array) -> jax.Array:
        return toeplitz_conv(images, self.kernel[...], self.padding) + self.bias[...]

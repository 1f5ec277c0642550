"""The Toeplitz-GEMM convolution against XLA's convolution: values and gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jdistill.models.toeplitz_conv import ToeplitzConv, toeplitz_conv


def _reference(images, kernel, padding):
    return jax.lax.conv_general_dilated(
        images, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest"
    )


@pytest.mark.parametrize(
    ("shape", "kernel_shape", "padding"),
    [
        ((3, 28, 28, 1), (5, 5, 1, 6), "SAME"),
        ((2, 14, 14, 6), (5, 5, 6, 16), "VALID"),
        ((2, 9, 7, 2), (3, 5, 2, 4), "VALID"),  # non-square image and kernel
        ((2, 8, 6, 3), (3, 3, 3, 2), "SAME"),
    ],
)
def test_matches_xla_convolution_and_its_gradients(shape, kernel_shape, padding):
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)
    chex.assert_trees_all_close(
        toeplitz_conv(images, kernel, padding), _reference(images, kernel, padding), atol=1e-4
    )
    weights = jnp.asarray(rng.normal(size=_reference(images, kernel, padding).shape), jnp.float32)
    grads = [
        jax.grad(lambda x, k, f=f: jnp.sum(weights * f(x, k, padding)), argnums=(0, 1))(images, kernel)
        for f in (toeplitz_conv, _reference)
    ]
    chex.assert_trees_all_close(grads[0], grads[1], atol=1e-3)


def test_layer_has_a_conv_layers_parameters_and_adds_the_bias():
    layer = ToeplitzConv(2, 5, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
    chex.assert_shape((layer.kernel[...], layer.bias[...]), [(3, 3, 2, 5), (5,)])
    layer.bias[...] = jnp.arange(5.0)
    x = jnp.ones((1, 4, 4, 2))
    chex.assert_trees_all_close(
        layer(x), _reference(x, layer.kernel[...], "SAME") + jnp.arange(5.0), atol=1e-5
    )


def test_bad_arguments_are_named():
    x = jnp.ones((1, 8, 8, 2))
    with pytest.raises(ValueError, match="padding"):
        toeplitz_conv(x, jnp.ones((3, 3, 2, 1)), "FULL")
    with pytest.raises(ValueError, match="odd kernel"):
        toeplitz_conv(x, jnp.ones((2, 2, 2, 1)), "SAME")
    with pytest.raises(ValueError, match="3 channels"):
        toeplitz_conv(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 2, 1)))

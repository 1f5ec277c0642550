"""torchvision's ImageNet ResNets in the zoo: parameter counts (torchvision's), feature shapes on
224x224 inputs (abstractly, with ``nnx.eval_shape``), the stem's max pool padded as PyTorch's, and a
real forward and backward pass of ResNet-18 on small images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jdistill.models import IMAGENET_MODELS, count_params, create_model, native_input_shape
from jdistill.models.resnet_imagenet import Stem

# torchvision.models.resnet18 / 34 / 50(num_classes=1000): sum(p.numel() for p in model.parameters())
TORCHVISION_PARAMS = {"resnet18_imagenet": 11_689_512, "resnet34_imagenet": 21_797_672,
                      "resnet50_imagenet": 25_557_032}  # fmt: skip


def stages(widths):
    return {"stem": (56, 56, 64), "embedding": (widths[-1],)} | {
        f"stage{k}{suffix}": (56 // 2 ** (k - 1), 56 // 2 ** (k - 1), w)
        for k, w in enumerate(widths, start=1)
        for suffix in ("", "_pre")
    }


@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_parameter_counts_are_torchvisions_and_features_follow_the_stages(name):
    def build_and_call(images):
        model = create_model(name, (224, 224, 3), 1000, rngs=nnx.Rngs(0))
        return model, model(images)

    assert native_input_shape(name) == (224, 224, 3)
    model, (logits, features) = nnx.eval_shape(
        build_and_call, jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    )
    assert count_params(model) == TORCHVISION_PARAMS[name]
    assert logits.shape == (2, 1000)
    widths = (256, 512, 1024, 2048) if name == "resnet50_imagenet" else (64, 128, 256, 512)
    assert {k: v.shape[1:] for k, v in features.items()} == stages(widths)


def test_the_stem_pools_3x3_stride_2_padded_by_one_as_pytorch():
    stem = Stem(1, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 1)).astype(np.float32)
    conv = np.asarray(stem.conv(jnp.asarray(x), train=False))  # [1, 4, 4, 64]
    padded = np.pad(conv, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    expected = np.stack([np.stack([padded[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max((1, 2))
                                   for j in range(2)], 1) for i in range(2)], 1)  # fmt: skip
    np.testing.assert_allclose(np.asarray(stem(jnp.asarray(x), train=False)), expected, rtol=1e-6)


@pytest.mark.slow
def test_resnet18_trains_on_small_images():
    model = create_model("resnet18_imagenet", (64, 64, 3), 10, rngs=nnx.Rngs(0))
    images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 3)), jnp.float32)

    @nnx.jit
    def loss_and_grads(model):
        return nnx.value_and_grad(lambda m: jnp.mean(m(images, train=True)[0] ** 2))(model)

    loss, grads = loss_and_grads(model)
    assert np.isfinite(float(loss))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    with pytest.raises(ValueError, match="input_shape must be HxWxC with H, W >= 32"):
        create_model("resnet18_imagenet", (28, 28, 1), 10, rngs=nnx.Rngs(0))

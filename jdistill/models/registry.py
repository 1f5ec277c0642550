"""Built-in models by name: ``create_model("mlp1200", (28, 28, 1), 10, rngs=nnx.Rngs(0))``."""

import functools
from collections.abc import Callable, Sequence

import jax
from flax import nnx

from jdistill.models.cnn import LeNet5, SmallCNN
from jdistill.models.mlp import MLP

MODELS: dict[str, Callable[..., nnx.Module]] = {
    # Hinton et al. 2015 MNIST pair: a teacher regularised by dropout, an unregularised student.
    "mlp1200": functools.partial(MLP, widths=(1200, 1200), dropout=0.5, input_dropout=0.2),
    "mlp800": functools.partial(MLP, widths=(800, 800)),
    # Smaller MLPs for quick runs and the embedded-data demo.
    "mlp256": functools.partial(MLP, widths=(256, 256)),
    "mlp32": functools.partial(MLP, widths=(32,)),
    "lenet5": LeNet5,
    "lenet5_half": functools.partial(LeNet5, channels=(3, 8), fc=(60, 42)),
    "small_cnn": SmallCNN,
}


def create_model(name: str, input_shape: Sequence[int], num_classes: int, *, rngs: nnx.Rngs) -> nnx.Module:
    """Build the model ``name`` for images of ``input_shape`` (H, W, C) and ``num_classes``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; built-in models: {', '.join(sorted(MODELS))}")
    return MODELS[name](tuple(input_shape), num_classes, rngs=rngs)


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars (``nnx.Param`` leaves) in ``model``."""
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))

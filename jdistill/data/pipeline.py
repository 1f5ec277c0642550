"""On-device batching and augmentation: whole arrays live on the device, batches are gathered
by index inside jit, and augmentation is vectorised over the batch."""

import jax
import jax.numpy as jnp


def epoch_indices(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """A random permutation of ``num_examples`` cut into ``[steps, batch_size]`` (the last
    partial batch is dropped, so every step has the same shape and compiles once)."""
    steps = num_examples // batch_size
    if steps == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the data set ({num_examples} examples)")
    return jax.random.permutation(key, num_examples)[: steps * batch_size].reshape(steps, batch_size)


def random_shift(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
    """Translate each NHWC image by an independent random offset in [-max_shift, max_shift]
    pixels along each axis, filling with zeros (Hinton et al. 2015's input jitter)."""
    if max_shift == 0:
        return images
    batch, height, width, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = jax.random.randint(key, (batch, 2), 0, 2 * max_shift + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, image.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Mirror each NHWC image left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1], images)

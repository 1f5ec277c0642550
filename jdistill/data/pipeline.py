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


def seeded_epoch_indices(seed: int, epoch: int, num_examples: int, batch_size: int) -> jax.Array:
    """:func:`epoch_indices` of epoch ``epoch`` of a run seeded ``seed``: the key
    ``fold_in(key(seed), epoch)``, so every epoch's order is drawn afresh and a resumed run draws
    the same one."""
    return epoch_indices(jax.random.fold_in(jax.random.key(seed), epoch), num_examples, batch_size)


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


def augment(key: jax.Array, images: jax.Array, max_shift: int, hflip: bool) -> jax.Array:
    """The training batches' augmentation: :func:`random_shift` by up to ``max_shift`` pixels, then
    :func:`random_flip` when ``hflip``, each with its own half of ``key``."""
    shift_key, flip_key = jax.random.split(key)
    images = random_shift(shift_key, images, max_shift)
    return random_flip(flip_key, images) if hflip else images

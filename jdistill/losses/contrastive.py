"""Contrastive representation distillation (CRD) as pure functions.

Tian, Krishnan & Isola (2020), "Contrastive Representation Distillation".

RepDistiller's ``CRDLoss`` keeps its state (two memory banks and two
normalisation constants) inside a module and mutates it in the forward pass.
Here that state is passed in and returned, so the caller (a method object or a
train step) owns it:

- ``memory_s``, ``memory_t``: [N, D] banks with one row per training example,
  ``N`` the training-set size; ``memory_s`` holds (a running average of) the
  student's embeddings, ``memory_t`` the teacher's. :func:`crd_init_memory`
  gives RepDistiller's initialisation; :func:`crd_update_memory` the update.
- ``z_s``, ``z_t``: the normalisation constants of the student-side and
  teacher-side scores, "unset" while <= 0 (RepDistiller starts them at -1)
  and fixed by :func:`crd_partition` from the first batch.

One training step (RepDistiller's order, which :func:`crd` composes):

1. ``indices = crd_negatives(key, labels, index, *layout, num_negatives)``;
2. ``scores_s, scores_t = crd_scores(embed_s, embed_t, memory_s, memory_t,
   indices)`` with the current (pre-update) banks;
3. ``z_s = crd_partition(scores_s, z_s, N)`` (likewise ``z_t``);
4. ``loss = crd_nce(scores_s / z_s, num_data=N) + crd_nce(scores_t / z_t,
   num_data=N)`` (per example; RepDistiller weights its mean by 0.8);
5. ``memory_s = crd_update_memory(memory_s, embed_s, index)`` (likewise
   ``memory_t`` with ``embed_t``).

The embeddings are the penultimate features mapped by a learned linear layer
to ``D`` dimensions and L2-normalised (RepDistiller's ``Embed``; the caller's).
The paper's defaults: 16384 negatives, NCE temperature 0.07, memory momentum
0.5, embedding dimension 128.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jdistill.losses import _checks

# RepDistiller's constant in the NCE loss.
_NCE_EPS = 1e-7

# Floor on a memory row's squared norm before normalisation (an all-zero row
# stays zero instead of becoming NaN; RepDistiller has no floor).
_ROW_SQ_EPS = 1e-24


def _check_int(name, x, rank, layout) -> None:
    _checks.check_rank(name, x, rank, layout)
    if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
        raise ValueError(
            f"{name}: expected integer indices of shape {_checks.fmt_shape(jnp.shape(x))}, got "
            f"{jnp.result_type(x)}"
        )


def _check_num_data(num_data) -> None:
    """``num_data`` is a scalar, a positive integer when concrete."""
    if jnp.ndim(num_data) != 0:
        raise ValueError(
            f"num_data: expected a scalar (the training-set size), got shape {_checks.fmt_shape(jnp.shape(num_data))}"
        )
    if isinstance(num_data, jax.core.Tracer):
        return
    if not (float(num_data) >= 1 and float(num_data) == int(num_data)):
        raise ValueError(f"num_data: expected a positive integer (the training-set size), got {num_data!r}")


def _scores(memory, embed, indices, temperature) -> jax.Array:
    """[B, K+1] ``exp(<memory[indices[b, k]], embed[b]> / T)``, memory frozen."""
    memory = jax.lax.stop_gradient(jnp.asarray(memory).astype(jnp.float32))
    embed = jnp.asarray(embed).astype(jnp.float32)
    n, d = memory.shape
    b, k1 = indices.shape
    highest = jax.lax.Precision.HIGHEST
    if n <= k1 * d:
        # All dot products at once ([N, B], reading the bank once), then pick:
        # far less memory traffic than gathering [B, K+1, D] rows when the
        # bank is not much larger than the sample (CIFAR-100: N = 50000,
        # (K+1) * D ~ 2.1M).
        sims = jnp.matmul(memory, embed.T, precision=highest)
        picked = sims[indices, jnp.arange(b)[:, None]]
    else:
        picked = jnp.einsum("bkd,bd->bk", memory[indices], embed, precision=highest)
    return jnp.exp(picked / temperature)


def crd_scores(
    student_embed, teacher_embed, memory_s, memory_t, indices, *, nce_temperature=0.07
) -> tuple[jax.Array, jax.Array]:
    """Unnormalised CRD scores of each example against its positive and negatives.

    ``scores_s[b, k] = exp(<memory_t[indices[b, k]], student_embed[b]> / T)``
    and ``scores_t[b, k] = exp(<memory_s[indices[b, k]], teacher_embed[b]> /
    T)``: each side's embedding is scored against the *other* side's bank, as
    in RepDistiller's ``ContrastMemory`` (``out_v1``, the student's scores, uses
    ``memory_v2``, the teacher's bank, and vice versa). Column 0 is the
    positive, columns 1..K the negatives. The banks are read through
    ``stop_gradient`` (RepDistiller detaches them); gradients flow to the
    embeddings. Dot products use full float32 precision (no TF32): the
    ``exp(x / 0.07)`` would amplify rounding errors.

    Tian et al. (2020), "Contrastive Representation Distillation"; defaults
    T = 0.07, K = 16384, D = 128.

    Args:
      student_embed: [B, D] student embeddings (L2-normalised by the caller).
      teacher_embed: [B, D] teacher embeddings.
      memory_s: [N, D] student-side bank.
      memory_t: [N, D] teacher-side bank.
      indices: [B, K+1] integer dataset indices, column 0 the positive (see
        :func:`crd_negatives`).
      nce_temperature: scalar ``T > 0`` (checked when concrete).

    Returns:
      ``(scores_s, scores_t)``, each [B, K+1] float32.

    Raises:
      ValueError: on wrong ranks or mismatched shapes, non-integer indices or a
        bad temperature.
    """
    _checks.check_rank("student_embed", student_embed, 2, "[batch, dim]")
    _checks.check_match("teacher_embed", teacher_embed, "student_embed", student_embed)
    _checks.check_rank("memory_s", memory_s, 2, "[num_data, dim]")
    _checks.check_match("memory_s", memory_s, "student_embed", student_embed, axes=(1,))
    _checks.check_match("memory_t", memory_t, "memory_s", memory_s)
    _check_int("indices", indices, 2, "[batch, 1 + num_negatives]")
    _checks.check_match("indices", indices, "student_embed", student_embed, axes=(0,))
    _checks.check_positive_scalar("nce_temperature", nce_temperature)
    temperature = jnp.asarray(nce_temperature).astype(jnp.float32)
    scores_s = _scores(memory_t, student_embed, indices, temperature)
    scores_t = _scores(memory_s, teacher_embed, indices, temperature)
    return scores_s, scores_t


def crd_partition(scores, z, num_data) -> jax.Array:
    """The normalisation constant: ``z`` if already set, else from ``scores``.

    ``new_z = z if z > 0 else mean(scores) * num_data``: RepDistiller's
    ``ContrastMemory`` sets each side's constant once, from the first batch's
    unnormalised scores (a Monte-Carlo estimate of the partition function over
    the ``num_data`` examples), and keeps it fixed. Works under ``jit`` (a
    ``where``, not a branch). The estimate is a constant: gradients are
    stopped, as RepDistiller stores it as a Python float.

    Args:
      scores: [B, K+1] unnormalised scores from :func:`crd_scores`.
      z: scalar current constant, <= 0 when unset.
      num_data: the training-set size ``N``: a Python int (best static under
        ``jit``) or a scalar array (checked only when concrete).

    Returns:
      Scalar float32 constant to store and divide by.

    Raises:
      ValueError: if ``scores`` is not rank 2, ``z`` not a scalar, or
        ``num_data`` not a positive integer scalar.
    """
    _checks.check_rank("scores", scores, 2, "[batch, 1 + num_negatives]")
    if jnp.ndim(z) != 0:
        raise ValueError(f"z: expected a scalar (shape []), got shape {_checks.fmt_shape(jnp.shape(z))}")
    _check_num_data(num_data)
    z = jnp.asarray(z).astype(jnp.float32)
    estimate = jnp.mean(jnp.asarray(scores).astype(jnp.float32)) * jnp.asarray(num_data, jnp.float32)
    return jax.lax.stop_gradient(jnp.where(z > 0, z, estimate))


def crd_normalise(scores, z, num_data) -> jax.Array:
    """Scores divided by the normalisation constant.

    ``scores / crd_partition(scores, z, num_data)``: division by ``z`` once
    set, by this batch's estimate while unset (as RepDistiller's first batch).
    Store ``crd_partition(...)`` to keep the constant.

    Args:
      scores: [B, K+1] unnormalised scores.
      z: scalar constant, <= 0 when unset.
      num_data: the training-set size ``N``.

    Returns:
      [B, K+1] float32 normalised scores (estimated probabilities).

    Raises:
      ValueError: as :func:`crd_partition`.
    """
    return jnp.asarray(scores).astype(jnp.float32) / crd_partition(scores, z, num_data)


def crd_nce(scores, *, num_data) -> jax.Array:
    """Per-example NCE loss of RepDistiller's ``ContrastLoss``.

    With ``P = scores`` (normalised), ``m = K`` negatives, noise probability
    ``Pn = 1 / num_data`` and ``eps = 1e-7``:
    ``nce_b = -log(P[b, 0] / (P[b, 0] + m Pn + eps))
    - sum_{k=1..K} log(m Pn / (P[b, k] + m Pn + eps))``: the binary
    classifier ``h = P / (P + m Pn)`` of the paper's Eq. (18) should call the
    positive "data" and the negatives "noise". The batch mean equals
    RepDistiller's ``-(sum log D1 + sum log D0) / B``. It decreases as the
    positive's score grows and as the negatives' scores shrink.

    Tian et al. (2020), "Contrastive Representation Distillation".

    Args:
      scores: [B, K+1] normalised scores (:func:`crd_normalise`), column 0 the
        positive; ``K >= 1``.
      num_data: the training-set size ``N``, as in :func:`crd_partition`.

    Returns:
      [B] float32 losses.

    Raises:
      ValueError: if ``scores`` is not rank 2 with at least 2 columns, or
        ``num_data`` is not a positive integer scalar.
    """
    _checks.check_rank("scores", scores, 2, "[batch, 1 + num_negatives]")
    if jnp.shape(scores)[1] < 2:
        raise ValueError(
            "scores: expected at least 2 columns [batch, 1 + num_negatives] (a positive and >= 1 "
            f"negative), got shape {_checks.fmt_shape(jnp.shape(scores))}"
        )
    _check_num_data(num_data)
    p = jnp.asarray(scores).astype(jnp.float32)
    m = p.shape[1] - 1
    noise = m / jnp.asarray(num_data, jnp.float32)
    log_d1 = jnp.log(p[:, 0] / (p[:, 0] + noise + _NCE_EPS))
    log_d0 = jnp.log(noise / (p[:, 1:] + noise + _NCE_EPS))
    return -(log_d1 + jnp.sum(log_d0, axis=1))


def crd_update_memory(memory, embed, index, *, momentum=0.5) -> jax.Array:
    """Momentum update of a memory bank's rows for this batch.

    ``memory[index[b]] <- v / ||v||`` with ``v = momentum * memory[index[b]] +
    (1 - momentum) * embed[b]``, all other rows unchanged; returns the new bank
    (the input is not modified). The embedding is read through
    ``stop_gradient`` (RepDistiller updates under ``no_grad``); the squared
    norm is floored at 1e-24, so a zero ``v`` gives a zero row, not NaN. Rows
    come out unit-norm. Update ``memory_s`` with the student's embeddings and
    ``memory_t`` with the teacher's, after computing the scores.

    With duplicate entries in ``index`` each duplicate's new row is computed
    from the old row and one of them is written (which one is unspecified, as
    in RepDistiller's ``index_copy_``); updates do not accumulate. A batch
    drawn from a permutation of the dataset has no duplicates.

    Args:
      memory: [N, D] bank.
      embed: [B, D] embeddings of this batch.
      index: [B] integer dataset indices of the batch's examples.
      momentum: weight of the old row (paper default 0.5; may be traced).

    Returns:
      [N, D] float32 updated bank.

    Raises:
      ValueError: on wrong ranks or mismatched shapes, or non-integer index.
    """
    _checks.check_rank("memory", memory, 2, "[num_data, dim]")
    _checks.check_rank("embed", embed, 2, "[batch, dim]")
    _checks.check_match("embed", embed, "memory", memory, axes=(1,))
    _check_int("index", index, 1, "[batch]")
    if jnp.shape(index)[0] != jnp.shape(embed)[0]:
        raise ValueError(
            f"index: expected shape [{jnp.shape(embed)[0]}] (one dataset index per row of embed), got "
            f"{_checks.fmt_shape(jnp.shape(index))}"
        )
    memory = jnp.asarray(memory).astype(jnp.float32)
    embed = jax.lax.stop_gradient(jnp.asarray(embed).astype(jnp.float32))
    rows = momentum * memory[index] + (1.0 - momentum) * embed
    rows = rows * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(rows), axis=1, keepdims=True), _ROW_SQ_EPS))
    return memory.at[index].set(rows)


def crd_init_memory(key, num_data, dim) -> jax.Array:
    """RepDistiller's initial memory bank: uniform in ``[-a, a)``, ``a = sqrt(3 / dim)``.

    Each entry has variance ``1 / dim``, so rows have expected squared norm 1
    but are not exactly unit; a row becomes unit-norm at its first
    :func:`crd_update_memory`. Use independent keys for the two banks.

    Args:
      key: a JAX PRNG key.
      num_data: the training-set size ``N``.
      dim: the embedding dimension ``D`` (paper default 128).

    Returns:
      [N, D] float32 bank.
    """
    bound = float(np.sqrt(3.0 / dim))
    return jax.random.uniform(key, (num_data, dim), jnp.float32, -bound, bound)


def class_layout(labels, num_classes=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dataset indices grouped by class, for :func:`crd_negatives` (numpy, once).

    Args:
      labels: [N] integer class of every training example, in dataset order.
      num_classes: number of classes ``C``; defaults to ``max(labels) + 1``.

    Returns:
      ``(class_order, class_start, class_count)`` int32 arrays: ``class_order``
      [N] the dataset indices sorted by class (stably, so ascending within a
      class); the indices of class ``c`` are ``class_order[class_start[c]:
      class_start[c] + class_count[c]]``; ``class_start``, ``class_count`` [C].

    Raises:
      ValueError: if ``labels`` is not a non-empty rank-1 integer array with
        values in ``[0, num_classes)``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels: expected a non-empty rank-1 integer array [num_data], got {labels.dtype} of shape "
            f"{_checks.fmt_shape(labels.shape)}"
        )
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels: expected values in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )
    order = np.argsort(labels, kind="stable").astype(np.int32)
    count = np.bincount(labels, minlength=num_classes).astype(np.int32)
    start = (np.cumsum(count) - count).astype(np.int32)
    return order, start, count


def crd_negatives(
    key, labels, index, class_order, class_start, class_count, num_negatives, *, replace=True
) -> jax.Array:
    """Samples contrast indices: the example itself, then negatives of other classes.

    Each of the ``num_negatives`` negatives of example ``b`` is uniform over
    the training examples whose class differs from ``labels[b]``, drawn on
    device. With ``y = labels[b]``, ``n_y = class_count[y]`` and ``N`` the
    dataset size: draw ``u`` uniform in ``[0, N - n_y)``, skip class ``y``'s
    block of ``class_order`` (``j = u`` if ``u < class_start[y]`` else ``u +
    n_y``), take ``class_order[j]``. Column 0 is ``index`` (RepDistiller's
    default 'exact' mode: the positive is the example itself).

    ``replace=True`` (the default) draws independently, so an example's
    negatives may repeat (K = 16384 of CIFAR-100's 49500 other-class examples
    gives ~15% repeats); it costs O(B K). RepDistiller instead draws
    ``np.random.choice(cls_negative[y], K, replace=K > len(cls_negative[y]))``,
    i.e. *without* replacement on CIFAR-100. ``replace=False`` reproduces that
    (a uniformly random K-subset in random order, via a sort of B x N random
    keys) and requires ``num_negatives <= N - max(class_count)``, checked when
    ``class_count`` is concrete (otherwise a violation yields examples of the
    own class). Each negative is uniform over the other classes' examples
    either way, so the expected loss is the same.

    Args:
      key: a JAX PRNG key (fresh per step).
      labels: [B] integer classes of the batch's examples.
      index: [B] integer dataset indices of the batch's examples.
      class_order: [N] from :func:`class_layout`.
      class_start: [C] from :func:`class_layout`.
      class_count: [C] from :func:`class_layout`.
      num_negatives: ``K``, a Python int (static under ``jit``).
      replace: sample with replacement (static).

    Returns:
      [B, K+1] int32 dataset indices.

    Raises:
      ValueError: on wrong ranks or shapes, non-integer inputs, a bad
        ``num_negatives``, or too few negatives for ``replace=False``.
    """
    _check_int("labels", labels, 1, "[batch]")
    _check_int("index", index, 1, "[batch]")
    _checks.check_match("index", index, "labels", labels)
    _check_int("class_order", class_order, 1, "[num_data]")
    _check_int("class_start", class_start, 1, "[classes]")
    _check_int("class_count", class_count, 1, "[classes]")
    _checks.check_match("class_count", class_count, "class_start", class_start)
    if not isinstance(num_negatives, (int, np.integer)) or num_negatives < 1:
        raise ValueError(f"num_negatives: expected a positive Python int, got {num_negatives!r}")
    n = jnp.shape(class_order)[0]
    if not replace and not isinstance(class_count, jax.core.Tracer):
        available = n - int(np.max(np.asarray(class_count)))
        if num_negatives > available:
            raise ValueError(
                f"num_negatives: {num_negatives} exceeds the {available} examples outside the largest "
                "class; sampling without replacement (replace=False) needs num_negatives <= that"
            )
    labels = jnp.asarray(labels)
    class_order = jnp.asarray(class_order)
    start = jnp.asarray(class_start)[labels][:, None]
    count = jnp.asarray(class_count)[labels][:, None]
    b = labels.shape[0]
    if replace:
        u = jax.random.randint(key, (b, num_negatives), 0, n - count, dtype=jnp.int32)
        j = jnp.where(u < start, u, u + count)
    else:
        # Random keys, own class pushed to the end; the K smallest are a
        # uniform K-subset of the other classes, in uniformly random order.
        # 32-bit keys make ties (resolved by position) rare.
        keys = jax.random.bits(key, (b, n), jnp.uint32)
        position = jnp.arange(n)[None, :]
        own = (position >= start) & (position < start + count)
        keys = jnp.where(own, jnp.uint32(np.iinfo(np.uint32).max), keys)
        j = jnp.argsort(keys, axis=1)[:, :num_negatives]
    negatives = class_order[j]
    return jnp.concatenate([jnp.asarray(index)[:, None], negatives], axis=1).astype(jnp.int32)


def crd(
    student_embed,
    teacher_embed,
    memory_s,
    memory_t,
    indices,
    z_s,
    z_t,
    *,
    num_data,
    nce_temperature=0.07,
    momentum=0.5,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array, jax.Array, jax.Array]]:
    """One CRD step: per-example loss and the updated state.

    Composes :func:`crd_scores`, :func:`crd_partition`, :func:`crd_nce` and
    :func:`crd_update_memory` as RepDistiller's ``CRDLoss.forward``:
    ``loss_b = nce(scores_s / z_s)_b + nce(scores_t / z_t)_b`` (student side
    scored against the teacher bank and vice versa), with the banks then
    updated at ``indices[:, 0]`` (the batch's own dataset indices in 'exact'
    mode, as :func:`crd_negatives` produces). The returned state carries no
    gradient; use ``jax.value_and_grad(..., has_aux=True)``.

    Tian et al. (2020), "Contrastive Representation Distillation": K = 16384
    negatives, T = 0.07, momentum 0.5, D = 128; RepDistiller's CIFAR-100
    weight for the mean loss is 0.8.

    Args:
      student_embed: [B, D] L2-normalised student embeddings.
      teacher_embed: [B, D] L2-normalised teacher embeddings.
      memory_s: [N, D] student-side bank.
      memory_t: [N, D] teacher-side bank.
      indices: [B, K+1] contrast indices, column 0 the example's own index.
      z_s: scalar student-side constant, <= 0 when unset.
      z_t: scalar teacher-side constant, <= 0 when unset.
      num_data: the training-set size ``N``, as in :func:`crd_partition`.
      nce_temperature: scalar ``T > 0``.
      momentum: memory momentum.

    Returns:
      ``(loss, (memory_s, memory_t, z_s, z_t))``: [B] float32 losses and the
      new state.

    Raises:
      ValueError: as the composed functions.
    """
    scores_s, scores_t = crd_scores(
        student_embed, teacher_embed, memory_s, memory_t, indices, nce_temperature=nce_temperature
    )
    z_s = crd_partition(scores_s, z_s, num_data)
    z_t = crd_partition(scores_t, z_t, num_data)
    loss = crd_nce(scores_s / z_s, num_data=num_data) + crd_nce(scores_t / z_t, num_data=num_data)
    index = jnp.asarray(indices)[:, 0]
    memory_s = crd_update_memory(memory_s, student_embed, index, momentum=momentum)
    memory_t = crd_update_memory(memory_t, teacher_embed, index, momentum=momentum)
    return loss, (memory_s, memory_t, z_s, z_t)

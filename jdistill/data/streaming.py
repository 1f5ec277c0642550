"""Input streamed from the host, for data sets larger than memory (a record store,
:mod:`jdistill.data.records`, or an image folder): :class:`BatchStream`, each
process's part of every round's batch in :class:`jdistill.train.sources.DataSource`'s order (the same
:func:`jdistill.data.epoch_indices` permutation), read and transformed on the host by grain.

Every host-side random choice for example ``i`` in epoch ``e`` of seed ``s`` comes from
:func:`example_rng` ``(s, e, i)``, so a batch depends on neither the process count, nor the number
of threads or worker processes, nor where a run was resumed. grain is imported only when a stream
is made: this module imports without it.
"""

import contextlib
import dataclasses
import functools
import threading

import jax
import numpy as np

from jdistill.data.pipeline import seeded_epoch_indices


def _grain():
    try:
        import grain
    except ImportError:
        raise ImportError("streaming input needs grain: pip install grain") from None
    return grain


def _default_unparsed_profiling_flag() -> None:
    """grain (0.2.18) reads its absl flag ``grain_enable_multiprocess_worker_profiling`` when it starts
    worker processes with JAX loaded, which fails in a program that never parsed absl's flags
    (google/grain#1355, fixed after 0.2.18): mark that one flag as given, at its default value."""
    from absl import flags

    name = "grain_enable_multiprocess_worker_profiling"
    if not flags.FLAGS.is_parsed() and name in flags.FLAGS and not flags.FLAGS[name].present:
        flags.FLAGS[name].present = 1


# ---- the stream ------------------------------------------------------------------------------


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of every host-side random choice for example ``index`` in ``epoch``."""
    return np.random.default_rng((seed, epoch, index))


def epoch_order(seed: int, epoch: int, num_examples: int, batch_size: int) -> np.ndarray:
    """``DataSource.order(seed, epoch)``: the epoch's example indices [steps, batch_size] (int32),
    computed on the host's CPU device when JAX has one (the permutation is the same on any device)."""
    try:
        device = jax.local_devices(backend="cpu")[0]  # this process's own, under jax.distributed
    except RuntimeError:  # JAX_PLATFORMS without cpu
        device = None
    with jax.default_device(device) if device is not None else contextlib.nullcontext():
        return np.asarray(seeded_epoch_indices(seed, epoch, num_examples, batch_size), np.int32)


_orders_lock = threading.Lock()


@functools.lru_cache(maxsize=4)  # the epoch being read and the next, of up to two streams
def _cached_order(seed: int, epoch: int, num_examples: int, batch_size: int) -> np.ndarray:
    order = epoch_order(seed, epoch, num_examples, batch_size)
    order.setflags(write=False)  # shared by every caller
    return order


def _order(seed: int, epoch: int, num_examples: int, batch_size: int) -> np.ndarray:
    with _orders_lock:  # one computation per epoch and process, however many threads ask
        return _cached_order(seed, epoch, num_examples, batch_size)


def _cpu_only_jax(worker_index: int, worker_count: int) -> None:
    """In a grain worker process: JAX on the CPU alone, so that computing an epoch's order there
    never starts an accelerator client (each would claim accelerator memory)."""
    jax.config.update("jax_platforms", "cpu")


@dataclasses.dataclass(frozen=True)
class _Round:
    """Global round ``r`` (counted from epoch 0) -> this process's part of its batch: read each
    example and apply the transform with the example's own generator. It runs in grain's threads or
    worker processes (a top-level class, so that it pickles)."""

    source: object
    transform: object
    seed: int
    batch_size: int
    process_index: int
    process_count: int

    def __call__(self, r) -> dict:
        n, local = len(self.source), self.batch_size // self.process_count
        epoch, round_ = divmod(int(r), n // self.batch_size)
        first = self.process_index * local
        indices = _order(self.seed, epoch, n, self.batch_size)[round_, first : first + local]
        return _stack([_read(self.source, self.transform, self.seed, epoch, int(i)) for i in indices])


def _read(source, transform, seed: int, epoch: int, index: int) -> dict:
    example = source[index]
    image = np.asarray(example["image"])
    if transform is not None:
        image = np.asarray(transform(image, example_rng(seed, epoch, index)))
    return {"image": image, "label": np.int32(example["label"]), "index": np.int32(index)}


def _stack(examples: list[dict]) -> dict:
    first = examples[0]
    for example in examples[1:]:
        if example["image"].shape != first["image"].shape or example["image"].dtype != first["image"].dtype:
            raise ValueError(
                f"example {example['index']} is {example['image'].dtype} {example['image'].shape} but example "
                f"{first['index']} is {first['image'].dtype} {first['image'].shape}: a batch needs one image "
                f"shape (give the stream a transform that crops to a fixed size)"
            )
    return {name: np.stack([example[name] for example in examples]) for name in first}


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class BatchStream:
    """This process's part of every round's batch, epoch after epoch: ``next(stream)`` is
    ``{"image" [local, ...], "label" int32 [local], "index" int32 [local]}``, ``local = batch_size //
    process_count``: the columns ``process_index * local`` to ``(process_index + 1) * local`` of the
    round's row of :func:`epoch_order` (``DataSource``'s order; the last partial batch dropped),
    with ``transform(image, example_rng(seed, epoch, index))`` applied to each image on the host.
    Concatenated over the processes (``jax.make_array_from_process_local_data``), they are the
    global batch.

    grain makes the batches, one grain element per round from the starting position onwards across
    epochs: ``MapDataset.range(...).map(read the round's examples and transform them)``, read ahead
    by ``to_iter_dataset`` with ``threads`` threads and ``prefetch`` rounds in flight (``threads=0``:
    in the calling thread) and, with ``workers > 0``, by that many worker processes (``mp_prefetch``;
    started once, kept across epochs; they need the ``if __name__ == "__main__":`` guard in the main
    script, as grain spawns them). :meth:`get_state` is the position of the next batch (epoch and
    round); :meth:`set_state` continues from it, also with another process or worker count.
    """

    def __init__(
        self,
        source,
        batch_size: int,
        *,
        seed: int,
        transform=None,
        process_index: int = 0,
        process_count: int = 1,
        epoch: int = 0,
        threads: int = 8,
        prefetch: int | None = None,
        workers: int = 0,
    ):
        self._grain = _grain()
        if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
            raise ValueError(
                f"source must be random-access (len(source) and source[i]), got {type(source).__name__}"
            )
        if len(source) == 0:
            raise ValueError("the source is empty")
        self.source, self.transform = source, transform
        self.num_examples = len(source)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.seed = _check_int("seed", seed, 0)
        self.process_count = _check_int("process_count", process_count, 1)
        self.process_index = _check_int("process_index", process_index, 0)
        self.threads = _check_int("threads", threads, 0)
        self.prefetch = _check_int("prefetch", 2 * max(threads, 1) if prefetch is None else prefetch, 1)
        self.workers = _check_int("workers", workers, 0)
        if self.process_index >= self.process_count:
            raise ValueError(f"process_index {process_index} is not below process_count {process_count}")
        if self.batch_size % self.process_count:
            raise ValueError(f"batch_size {batch_size} is not a multiple of process_count {process_count}")
        if self.batch_size > self.num_examples:
            raise ValueError(
                f"batch_size {batch_size} is larger than the data set ({self.num_examples} examples)"
            )
        self.local_batch_size = self.batch_size // self.process_count
        self.steps_per_epoch = self.num_examples // self.batch_size
        self._next = _check_int("epoch", epoch, 0) * self.steps_per_epoch  # global round of the next batch
        self._iterator = None

    @property
    def position(self) -> tuple[int, int]:
        """``(epoch, round within the epoch)`` of the next batch."""
        return divmod(self._next, self.steps_per_epoch)

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's global order [steps_per_epoch, batch_size] (int32), as ``DataSource.order``."""
        return _order(self.seed, epoch, self.num_examples, self.batch_size)

    def _start(self):
        grain = self._grain
        rounds = grain.MapDataset.range(self._next, 2**62).map(
            _Round(
                self.source,
                self.transform,
                self.seed,
                self.batch_size,
                self.process_index,
                self.process_count,
            )
        )
        stream = rounds.to_iter_dataset(
            grain.ReadOptions(
                num_threads=self.threads, prefetch_buffer_size=self.prefetch if self.threads else 0
            )
        )
        if self.workers:
            _default_unparsed_profiling_flag()
            stream = stream.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=self.workers), worker_init_fn=_cpu_only_jax
            )
        self._iterator = iter(stream)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._iterator is None:
            self._start()
        batch = next(self._iterator)
        self._next += 1
        return batch

    def take(self, count: int) -> dict:
        """The next ``count`` batches stacked: [count, local, ...] (a call of ``count`` rounds)."""
        batches = [next(self) for _ in range(_check_int("count", count, 1))]
        return {name: np.stack([b[name] for b in batches]) for name in batches[0]}

    def get_state(self) -> dict:
        """The position of the next batch and what the batches depend on, JSON-serialisable."""
        epoch, round_ = self.position
        return {
            "epoch": epoch,
            "round": round_,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_examples": self.num_examples,
        }

    def set_state(self, state: dict) -> None:
        """Continue from :meth:`get_state`'s position (a stream of the same seed, batch size and data
        set size; the process count may differ)."""
        mine = self.get_state()
        differ = [
            f"{k} {state.get(k)!r} (this stream: {mine[k]!r})"
            for k in ("seed", "batch_size", "num_examples")
            if state.get(k) != mine[k]
        ]
        if differ:
            raise ValueError(f"the stream state is for another stream: {', '.join(differ)}")
        epoch, round_ = state.get("epoch"), state.get("round")
        if not (
            isinstance(epoch, int)
            and isinstance(round_, int)
            and epoch >= 0
            and 0 <= round_ < self.steps_per_epoch
        ):
            raise ValueError(
                f"the stream state's position (epoch {epoch!r}, round {round_!r}) is not one of this stream's"
            )
        self.close()
        self._next = epoch * self.steps_per_epoch + round_

    def close(self) -> None:
        """Stop the read-ahead threads and worker processes (the position is kept)."""
        if self._iterator is not None and hasattr(self._iterator, "close"):
            self._iterator.close()
        self._iterator = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclasses.dataclass(frozen=True)
class _EvalRound:
    """Evaluation batch ``b`` -> this process's columns of it, the padding masked."""

    source: object
    transform: object
    indices: np.ndarray  # [batches, local], padded with example 0
    mask: np.ndarray  # [batches, local], 0 on the padding

    def __call__(self, b) -> dict:
        examples = [_read(self.source, self.transform, 0, 0, int(i)) for i in self.indices[b]]
        return {**_stack(examples), "mask": self.mask[b]}


def eval_batches(source, batch_size: int, *, transform=None, process_index=0, process_count=1, threads=8):
    """Every example of ``source`` once, in order, in batches of ``batch_size`` (the last padded with
    example 0): an iterator of this process's columns of each, as in :class:`BatchStream`, with
    ``"mask"`` float32 (0 on the padding), for exact test metrics on data streamed from the host.
    ``transform`` gets ``example_rng(0, 0, index)`` (an evaluation transform ignores it)."""
    grain = _grain()
    n = len(source)
    batch_size, process_count = (
        _check_int("batch_size", batch_size, 1),
        _check_int("process_count", process_count, 1),
    )
    if n == 0:
        raise ValueError("the source is empty")
    if batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} is not a multiple of process_count {process_count}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not below process_count {process_count}")
    count, local = -(-n // batch_size), batch_size // process_count
    padded = np.arange(count * batch_size)
    columns = slice(process_index * local, (process_index + 1) * local)
    indices = np.where(padded < n, padded, 0).reshape(count, batch_size)[:, columns]
    mask = (padded < n).astype(np.float32).reshape(count, batch_size)[:, columns]
    batches = grain.MapDataset.range(count).map(_EvalRound(source, transform, indices, mask))
    options = grain.ReadOptions(
        num_threads=_check_int("threads", threads, 0), prefetch_buffer_size=2 * threads
    )
    return _closing(iter(batches.to_iter_dataset(options)))


def _closing(iterator):
    try:
        yield from iterator
    finally:
        iterator.close()

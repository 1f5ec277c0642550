"""Checkpoints of a run's players with orbax ``CheckpointManager``."""

import contextlib
import dataclasses
import pathlib
import signal
import threading
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

from jdistill.train import distributed
from jdistill.train.player import LATER_FIELDS, Player


def manager(run_dir: pathlib.Path, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        (run_dir / "checkpoints").absolute(),
        # A process killed while saving leaves a temporary directory; the next start removes it.
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
        ),
    )


@contextlib.contextmanager
def _ctrl_c_deferred():
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until the block is done, then raise
    it: an interrupt must not leave orbax's saving threads half-way. Only the main thread can
    handle signals; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def save(mngr: ocp.CheckpointManager, epoch: int, state) -> None:
    """Save ``state`` as checkpoint number ``epoch`` (epochs completed) and wait for it; a Ctrl-C
    meanwhile takes effect once the checkpoint is complete."""
    with _ctrl_c_deferred():
        mngr.save(epoch, args=ocp.args.StandardSave(state))
        mngr.wait_until_finished()


def restore(mngr: ocp.CheckpointManager, like, epoch: int | None = None):
    """Restore checkpoint ``epoch`` (default: the latest) into the structure, shapes and
    shardings of ``like``; a checkpoint written before one of ``LATER_FIELDS`` existed
    restores into players that leave it unused."""
    epoch = mngr.latest_step() if epoch is None else epoch
    if epoch is None:
        raise FileNotFoundError(f"no checkpoint in {mngr.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        return mngr.restore(epoch, args=ocp.args.StandardRestore(abstract))
    except ValueError as error:
        if "tree structures do not match" not in str(error) or not isinstance(abstract, dict):
            raise
        older = {k: _fields_before(v) for k, v in abstract.items()}
        if all(older[k] is abstract[k] for k in abstract):
            raise
        try:  # a checkpoint written before the player's later fields (None when unused)
            restored = mngr.restore(epoch, args=ocp.args.StandardRestore(older))
        except ValueError:
            raise error from None
        return {
            k: restored[k] if older[k] is abstract[k] else like[k].replace(**restored[k]) for k in abstract
        }


def _fields_before(value):
    """A player whose later fields are all unused (None) as a dictionary of its other fields, the
    structure its checkpoint had before them; anything else as it is."""
    if not isinstance(value, Player) or any(getattr(value, f) is not None for f in LATER_FIELDS):
        return value
    names = [f.name for f in dataclasses.fields(value) if f.metadata.get("pytree_node", True)]
    return {n: getattr(value, n) for n in names if n not in LATER_FIELDS}


def restore_latest_readable(run_dir: pathlib.Path, like_at):
    """``(manager, epoch, state)`` of the latest checkpoint of ``run_dir`` that can be read, in the
    structure of ``like_at(epoch)``; ``(manager, 0, like_at(0))`` without checkpoints. A later one
    that cannot be read (a truncated file, emptied metadata) is moved to
    ``unreadable_checkpoints/`` with a warning, so that nothing is lost and training goes on from
    the one before. If none can be read, nothing is moved and the error names the directory."""
    mngr = manager(run_dir)
    unreadable = []
    for epoch in sorted(mngr.all_steps(), reverse=True):
        try:
            state = restore(mngr, like_at(epoch), epoch)
        except Exception as error:  # orbax and tensorstore raise many types for damaged files
            first_line = (str(error).splitlines() or [""])[0]
            first_line = first_line.split(" See full")[0]  # tensorstore appends a repr of its spec
            unreadable.append((epoch, f"{type(error).__name__}: {first_line[:200]}"))
            continue
        if unreadable:
            mngr = _set_aside(run_dir, unreadable)
        return mngr, epoch, state
    if unreadable:
        raise ValueError(
            f"no checkpoint in {run_dir / 'checkpoints'} can be read (epoch {unreadable[0][0]}: "
            f"{unreadable[0][1]}); the run cannot resume: start it again in another --out directory"
        )
    return mngr, 0, like_at(0)


def _set_aside(run_dir: pathlib.Path, unreadable: list[tuple[int, str]]) -> ocp.CheckpointManager:
    """Move the ``unreadable`` checkpoints to ``unreadable_checkpoints/`` (process 0 moves them; the
    others wait); a fresh manager."""
    aside = run_dir / "unreadable_checkpoints"
    for epoch, why in unreadable:
        target = aside / str(epoch)
        suffix = 1
        while target.exists():
            target, suffix = aside / f"{epoch}.{suffix}", suffix + 1
        if distributed.is_primary():
            aside.mkdir(exist_ok=True)
            (run_dir / "checkpoints" / str(epoch)).rename(target)
        warnings.warn(
            f"checkpoint {epoch} of {run_dir} cannot be read ({why}); moved to {target}, resuming "
            "from the one before",
            stacklevel=3,
        )
    distributed.barrier("unreadable checkpoints set aside")
    return manager(run_dir)


def restore_variables(
    run_dir: pathlib.Path, player: str, params_like, rest_like, *, format: int, host: bool = False
):
    """``(params, rest)`` of ``player`` in the latest checkpoint of the run in ``run_dir``, in the
    structure of ``params_like`` and ``rest_like`` (arrays or ``jax.ShapeDtypeStruct``; the rest of
    the checkpoint is not read): onto the devices of ``*_like``, or with ``host`` into host memory
    as numpy arrays (PRNG keys, which numpy cannot hold, onto this process's first device), so that no device
    ever holds a whole model it will shard. ``format`` 1 (jdistill 0.1) saved one ``TrainState``
    instead of a dictionary of players."""
    mngr = manager(run_dir)
    abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    item = {"params": abstract(params_like)}
    if jax.tree.leaves(rest_like):  # an empty template would not match a saved rest with state (CRD's banks)
        item["rest"] = abstract(rest_like)
    item = item if format == 1 else {player: item}
    if host:
        restore_args = jax.tree.map(
            lambda leaf: (
                ocp.ArrayRestoreArgs(sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
                if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
                else ocp.RestoreArgs(restore_type=np.ndarray)
            ),
            item,
        )
    else:
        restore_args = ocp.checkpoint_utils.construct_restore_args(item)  # onto the devices of ``*_like``
    restored = mngr.restore(
        mngr.latest_step(),
        args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True),
    )
    wanted = jax.tree_util.tree_flatten_with_path(item)[0]
    for (path, want), got in zip(wanted, jax.tree.leaves(restored), strict=True):
        if tuple(want.shape) != tuple(got.shape):  # a numpy restore takes the saved shape as it is
            where = jax.tree_util.keystr(path)
            raise ValueError(f"{where} is saved as {tuple(got.shape)}, the model's is {tuple(want.shape)}")
    restored = restored if format == 1 else restored[player]
    return restored["params"], restored.get("rest", rest_like)

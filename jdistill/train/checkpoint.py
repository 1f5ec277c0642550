"""Checkpoints of a run's players with orbax ``CheckpointManager``."""

import contextlib
import pathlib
import signal
import threading

import jax
import orbax.checkpoint as ocp


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
    shardings of ``like``."""
    epoch = mngr.latest_step() if epoch is None else epoch
    if epoch is None:
        raise FileNotFoundError(f"no checkpoint in {mngr.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return mngr.restore(epoch, args=ocp.args.StandardRestore(abstract))


def restore_variables(run_dir: pathlib.Path, player: str, params_like, rest_like, *, format: int):
    """``(params, rest)`` of ``player`` in the latest checkpoint of the run in ``run_dir``, in the
    structure of ``params_like`` and ``rest_like`` (the rest of the checkpoint is not read).
    ``format`` 1 (jdistill 0.1) saved one ``TrainState`` instead of a dictionary of players."""
    mngr = manager(run_dir)
    abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    item = {"params": abstract(params_like), "rest": abstract(rest_like)}
    item = item if format == 1 else {player: item}
    restore_args = ocp.checkpoint_utils.construct_restore_args(item)  # onto the devices of ``*_like``
    restored = mngr.restore(
        mngr.latest_step(),
        args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True),
    )
    restored = restored if format == 1 else restored[player]
    return restored["params"], restored["rest"]

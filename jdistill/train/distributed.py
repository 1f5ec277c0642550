"""Several processes in one run (several hosts, or several processes on one), opt-in, through
``jax.distributed``: every process runs the same command, the mesh spans every process's devices,
and process 0 alone writes the run directory (``config.json``, ``metrics.jsonl``, events, summary)
while orbax writes each checkpoint from all of them.

    jdistill train-teacher ... --coordinator-address host0:1234 --num-processes 2 --process-id 0
    jdistill train-teacher ... --coordinator-address host0:1234 --num-processes 2 --process-id 1
    jdistill train-teacher ... --distributed   # SLURM, Open MPI, TPU pods, Kubernetes: JAX reads them

On CPU devices the processes exchange arrays through gloo (``jax_cpu_collectives_implementation``).
"""

import os

import jax
import numpy as np
from jax.experimental import multihost_utils

MESSAGE_BYTES = 1024  # of a failure's one-line message sent from process 0 to the others


class StoppedOnProcess0(RuntimeError):
    """Raised on the other processes when process 0 could not go on (its message is repeated)."""


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    from_environment: bool = False,
) -> bool:
    """Start ``jax.distributed`` with JAX's own arguments, or, with ``from_environment``, from what
    JAX detects in the cluster's environment. Nothing is started when neither is asked for;
    returns whether it was. Must run before anything else uses JAX."""
    given = {"--coordinator-address": coordinator_address, "--num-processes": num_processes,
             "--process-id": process_id}  # fmt: skip
    if not from_environment and all(v is None for v in given.values()):
        return False
    if from_environment and any(v is not None for v in given.values()):
        raise ValueError(
            "--distributed reads the processes from the environment: give it or the three options"
        )
    if not from_environment:
        missing = [name for name, value in given.items() if value is None]
        if missing:
            raise ValueError(
                f"several processes need all of {', '.join(given)}; missing {', '.join(missing)}"
            )
        host, _, port = coordinator_address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--coordinator-address must be HOST:PORT, got {coordinator_address!r}")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(
                f"--process-id must be in 0..{num_processes - 1} for --num-processes {num_processes}, "
                f"got {process_id}"
            )
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if from_environment:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True


def is_primary() -> bool:
    """Whether this process writes the run directory (process 0; the only one without several)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (nothing to wait for in one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def on_primary(action, name: str):
    """Run ``action()`` on process 0 and share how it went: its result there (``None`` elsewhere);
    if it raised, process 0 raises the error and every other process :class:`StoppedOnProcess0`
    with the same line, instead of waiting for a process that stopped."""
    if jax.process_count() == 1:
        return action()
    result, error, message = None, None, b""
    if is_primary():
        try:
            result = action()
        except Exception as raised:  # shared with the other processes, then raised again here
            error, message = raised, (str(raised) or type(raised).__name__).encode()[:MESSAGE_BYTES]
    sent = np.zeros(MESSAGE_BYTES + 1, np.uint8)
    sent[0], sent[1 : 1 + len(message)] = error is not None, np.frombuffer(message, np.uint8)
    received = np.asarray(multihost_utils.broadcast_one_to_all(sent))
    if error is not None:
        raise error
    if received[0]:
        text = bytes(received[1:]).rstrip(b"\0").decode(errors="replace")
        raise StoppedOnProcess0(f"process 0 stopped at {name}: {text}")
    return result

"""Why one round per call runs without a loop: a convolution layer's gradient step compiled
directly and inside a one-iteration ``lax.fori_loop``, seconds per step (median of 5 after a
warm-up) on the current backend. On the CPU, XLA leaves a loop body's convolutions to its generic
emitter.

    python benchmarks/loop_convolutions.py

Prints one line per ``batch x size x channels in -> out`` case:
``CASE direct=S s loop=S s ratio=R``.
"""

import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

CASES = [(256, 28, 16, 16), (256, 28, 32, 16), (256, 14, 32, 32), (64, 32, 16, 16)]


def seconds_per_step(fn, params, x, repeats: int = 5) -> float:
    params = fn(params, x)
    jax.block_until_ready(params)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        params = fn(params, x)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}")
    for batch, size, c_in, c_out in CASES:
        graphdef, params = nnx.split(nnx.Conv(c_in, c_out, (3, 3), rngs=nnx.Rngs(0)))
        x = jax.random.normal(jax.random.key(0), (batch, size, size, c_in))

        def step(p, x):
            grads = jax.grad(lambda q: jnp.sum(jnp.square(nnx.merge(graphdef, q)(x))))(p)
            return jax.tree.map(lambda a, g: a - 1e-3 * g, p, grads)

        direct = seconds_per_step(jax.jit(step), params, x)
        looped = seconds_per_step(
            jax.jit(lambda p, x: jax.lax.fori_loop(0, 1, lambda i, q: step(q, x), p)), params, x
        )
        case = f"{batch}x{size}x{size}x{c_in}->{c_out}"
        print(f"{case} direct={direct:.4f} s loop={looped:.4f} s ratio={looped / direct:.1f}")


if __name__ == "__main__":
    main()

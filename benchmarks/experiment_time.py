"""How long an experiment's command trains on this machine, measured before it is run, and the least
time this machine's matrix products allow it.

Every run of the command (an ``experiments/`` script built on :mod:`jdistill.experiment`, with its
own options) is played in order into a scratch directory with its epochs cut to ``--probe-epochs``
(a teacher before its students, on the command's own data, through :func:`jdistill.train.fit` as
the command plays it). A run's projected training time is the median of its probe epochs after the
first (which compiles) times its epochs: the quantity the experiments' tables sum as their training
time (each epoch's ``seconds`` in ``metrics.jsonl``; evaluation and checkpoints are not in it).

The floor: the FLOPs of one round by XLA's cost analysis (of the program before optimisation,
which counts every matrix product as ``2 m n k``), times the rounds of the run, over this machine's
fastest rate of the matrix products ``--gemm`` in the runs' dtype (the best of 5 timings of each;
default ``[100, 1200] @ [1200, 1200]`` and ``[1200, 100] @ [100, 1200]``, the forward and weight-
gradient products of a batch of 100 through the Hinton teacher's 1200-unit layer). No run trains
faster than its products allow, so a command whose floor exceeds a time budget cannot meet it on
this machine in that dtype, whatever the code around the products does.

    python benchmarks/experiment_time.py experiments/hinton_mnist.py --data-dir ../shared/data/mnist
    python benchmarks/experiment_time.py experiments/hinton_mnist.py --data-dir ../shared/data/mnist \\
        --schedule long
    python benchmarks/experiment_time.py --dtype bfloat16 experiments/hinton_mnist.py --data-dir ...

This script's own options come before the experiment's script; everything after it is the
experiment's command line (without ``--out``). ``--dtype bfloat16`` sets every run's compute dtype
(mixed precision: the command's table was not measured that way). It prints, per run,

    NAME epochs=E rounds/epoch=R s/epoch=S projected=P min GFLOP/round=G floor=F min

then ``total projected=H h floor=L h``, this machine's rate of each product and the rate the runs
achieve (their FLOPs over the projected time). Runs must have an ``epochs`` field (``RunConfig``);
only the first phase of a game is costed (the Hinton runs have one). On a shared machine the
figures vary from run to run.
"""

import argparse
import dataclasses
import importlib.util
import json
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
from throughput import flops_of  # benchmarks/: the script's own directory

from jdistill.experiment import options_from, parser_for, planned_runs, with_data
from jdistill.train import fit, groups, make_mesh
from jdistill.train.parallel import replicated
from jdistill.train.rounds import cache_frozen_outputs, make_rounds


def experiment_of(script: str):
    """The ``EXPERIMENT`` of an experiment script, imported from its path."""
    path = pathlib.Path(script)
    if not path.is_file():
        raise SystemExit(f"experiment_time.py: no experiment script at {script}")
    sys.path.insert(0, str(path.parent.absolute()))  # experiments import their neighbours
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "EXPERIMENT"):
        raise SystemExit(f"experiment_time.py: {script} declares no EXPERIMENT (jdistill.experiment)")
    return module.EXPERIMENT


def gemm_rate(shapes: list[tuple[int, int, int]], dtype, repeats: int = 200) -> dict[str, float]:
    """FLOP/s of a jitted ``[M, K] @ [K, N]`` product in ``dtype`` (float32 accumulation) for each
    ``(M, K, N)`` of ``shapes``: the fastest of 5 timings of ``repeats`` products."""
    rates = {}
    for m, k, n in shapes:
        key_a, key_b = jax.random.split(jax.random.key(0))
        a = jax.random.normal(key_a, (m, k)).astype(dtype)
        b = jax.random.normal(key_b, (k, n)).astype(dtype)
        product = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
        jax.block_until_ready(product(a, b))
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeats):
                out = product(a, b)
            jax.block_until_ready(out)
            times.append((time.perf_counter() - start) / repeats)
        rates[f"{m}x{k}x{n}"] = 2 * m * k * n / min(times)
    return rates


def round_flops(config, dataset) -> tuple[float, int]:
    """XLA's count (before optimisation) of one round of the run's first phase, and its rounds per
    epoch; the teachers' outputs read from the table the engine computes once where the batches are
    not augmented, as in the run."""
    game = config.build(dataset)
    mesh = make_mesh(jax.devices()[:1])
    teachers = jax.device_put(dict(game.teachers), replicated(mesh))
    data = game.source.arrays()
    table = cache_frozen_outputs(game, teachers, mesh)
    if table is not None:
        data["frozen"] = table
    rounds = make_rounds(game, 0, 1, mesh, cached=table is not None, owners={})
    lowered = rounds.lower(
        dict(game.players), teachers, data, game.source.order(0, 0), 0, 0, dict(game.hparams)
    )
    return flops_of(lowered), game.source.steps_per_epoch


def probe(run, options, scratch: pathlib.Path, epochs: int) -> list[float]:
    """The training seconds of each of the run's first ``epochs`` epochs, played into ``scratch``."""
    if run.before is not None:
        run.before()
    config = run.config.replace(epochs=epochs, eval_every=epochs)
    fit(
        config,
        scratch / run.name,
        dataset=options.dataset,
        progress=False,
        steps_per_call=options.steps_per_call,
    )
    lines = (scratch / run.name / "metrics.jsonl").read_text().splitlines()
    return [record["seconds"] for record in map(json.loads, lines) if "seconds" in record]


def field(config, name: str):
    """A field of a run's configuration by its flat name (``epochs``, ``dtype``); one line if it has none."""
    fields = groups.flat(config)
    if name not in fields:
        raise ValueError(f"the runs' configurations ({type(config).__name__}) have no {name!r} field")
    return fields[name]


def project(experiment, args) -> tuple:
    """Every run of the command probed, its line printed; the projected seconds, the floor's seconds,
    the FLOPs, the product rate of each dtype, the runs."""
    shapes = [tuple(int(v) for v in shape.split(",")) for shape in args.gemm]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        command = parser_for(experiment).parse_args([*args.experiment_args, "--out", str(scratch)])
        options = with_data(experiment, options_from(experiment, command))
        runs = planned_runs(experiment, options)
        if args.dtype:
            runs = [dataclasses.replace(r, config=r.config.replace(dtype=args.dtype)) for r in runs]
        rates = {d: gemm_rate(shapes, jnp.dtype(d)) for d in sorted({field(r.config, "dtype") for r in runs})}
        rate = {d: max(by_shape.values()) for d, by_shape in rates.items()}
        total = floor = flops = 0.0
        for run in runs:
            seconds = probe(run, options, scratch, args.probe_epochs)
            per_epoch, epochs = statistics.median(seconds[1:]), field(run.config, "epochs")
            flops_per_round, rounds = round_flops(run.config, options.dataset)
            run_flops = flops_per_round * rounds * epochs
            run_floor = run_flops / rate[field(run.config, "dtype")]
            total, floor, flops = total + per_epoch * epochs, floor + run_floor, flops + run_flops
            print(f"{run.name} epochs={epochs} rounds/epoch={rounds} s/epoch={per_epoch:.2f} "
                  f"projected={per_epoch * epochs / 60:.1f} min GFLOP/round={flops_per_round / 1e9:.3f} "
                  f"floor={run_floor / 60:.1f} min", flush=True)  # fmt: skip
    return total, floor, flops, rates, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe-epochs", type=int, default=3, help="epochs played of each run (at least 2)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="every run's compute dtype (default: the runs' own)")  # fmt: skip
    parser.add_argument("--gemm", nargs="+", default=["100,1200,1200", "1200,100,1200"], metavar="M,K,N",
                        help="the products whose fastest rate sets the floor")  # fmt: skip
    parser.add_argument("script", help="the experiment's script, e.g. experiments/hinton_mnist.py")
    parser.add_argument("experiment_args", nargs=argparse.REMAINDER, help="its options (without --out)")
    args = parser.parse_args()
    if args.probe_epochs < 2:
        raise SystemExit("experiment_time.py: --probe-epochs must be at least 2 (the first compiles)")
    experiment = experiment_of(args.script)
    try:
        total, floor, flops, rates, runs = project(experiment, args)
    except (ValueError, OSError) as e:
        raise SystemExit(f"experiment_time.py: error: {e}") from None
    print(f"total projected={total / 3600:.2f} h floor={floor / 3600:.2f} h ({len(runs)} runs, "
          f"{jax.devices()[0].platform}, {jax.device_count()} device(s))")  # fmt: skip
    for dtype, by_shape in rates.items():
        print(
            f"rate {dtype} products "
            + " ".join(f"{k}={v / 1e9:.0f}" for k, v in by_shape.items())
            + " GFLOP/s"
        )
    print(f"rate achieved by the runs (projected): {flops / total / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()

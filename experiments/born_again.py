"""Born-again networks (Furlanello et al. 2018): does a student of its teacher's own size beat
it, generation after generation?

Per seed, one chain: generation 0 trains on the labels; generation k + 1, the same architecture,
schedule and seed, trains on generation k's outputs only (``kd`` at T = 1, no label term: the
paper's BAN objective). The paper's two ablations train a generation 1 from generation 0 too: CWTM
(labels, weighted by generation 0's confidence) and DKPP (generation 0's distribution with its
non-argmax probabilities permuted). The born-again ensemble of generations 0..k averages their
softmax outputs on the evaluation images. Every number is an accuracy, mean +- std over seeds;
differences to generation 0 are paired within a chain (same seed).

Two presets (``--preset``; any option given explicitly overrides the preset's value):

- ``mnist``: ``mlp256`` on MNIST, 12 epochs, SGD 0.05 cosine, batch 128.
- ``cifar10-subset``: the regime where the literature expects born-again gains (a data-limited,
  over-parameterised CIFAR ResNet trained to convergence): ``resnet8`` on the 4,000-image CIFAR-10
  subset, 120 epochs, SGD 0.05 cosine, batch 64, weight decay 5e-4, 4-pixel crops and flips.
  ``--label-noise R`` corrupts that fraction of the training labels (the test set stays clean).

    python experiments/born_again.py --data-dir ../shared/data/mnist --out runs/born_again_mnist
        # 3 seeds x (4 generations + CWTM + DKPP) = 18 runs of 12 epochs. Measured: 23 min wall
        # (1,138 s of training) on 2 CPU cores shared with other jobs (load 10-20); about 8 min
        # expected on 2 idle cores (mlp256 trains at 1.5 s per epoch there)
    python experiments/born_again.py --preset cifar10-subset --generations 3 \\
        --data-dir ../shared/data/cifar10-subset/cifar10_subset.npz --out runs/born_again_cifar10 \\
        --no-ablations    # generations 0-2 only: 9 runs of 120 epochs
    python experiments/born_again.py --data-dir ../shared/data/mnist --out runs/born_again_val --validate
        # every run evaluated on a held-out part of the training set instead of the test set

Every run is a run directory under ``--out`` (``seed{s}/gen{k}``, ``seed{s}/cwtm``,
``seed{s}/dkpp``): re-running resumes and skips finished runs. Writes ``table.md``,
``results.json`` and ``generations.png`` to ``--out``.
"""

import argparse
import dataclasses
import json
import pathlib

import jax
import numpy as np

from jdistill import losses
from jdistill.data import load_dataset
from jdistill.report import evaluated, markdown_table, mean_std
from jdistill.train import RunConfig, fit, load_teacher, teacher_forward

SMOKE_EPOCHS = 1
PRESETS = {
    "mnist": dict(dataset="mnist", model="mlp256", epochs=12, lr=0.05, batch_size=128, weight_decay=0.0,
                  max_shift=0, hflip=False, holdout=1 / 6),
    "cifar10-subset": dict(dataset="npz", model="resnet8", epochs=120, lr=0.05, batch_size=64,
                           weight_decay=5e-4, max_shift=4, hflip=True, holdout=0.1),
}  # fmt: skip


def base_config(args) -> RunConfig:
    return RunConfig(
        model=args.model,
        dataset=args.dataset,
        data_dir=args.data_dir,
        epochs=SMOKE_EPOCHS if args.smoke else args.epochs,
        learning_rate=args.lr,
        batch_size=32 if args.smoke else args.batch_size,
        weight_decay=args.weight_decay,
        max_shift=args.max_shift,
        hflip=args.hflip,
        label_noise=args.label_noise,
        holdout_fraction=args.holdout if args.validate else 0.0,
    )


def student_config(base: RunConfig, teacher_dir: pathlib.Path, seed: int, method: str) -> RunConfig:
    """Generation k + 1 from ``teacher_dir``: ``kd`` (BAN), ``cwtm`` or ``dkpp``, all without the
    plain label term and at T = 1."""
    return dataclasses.replace(
        base,
        seed=seed,
        teacher=str(teacher_dir.absolute()),
        methods=("ce", method),
        weights={"ce": 0.0, method: 1.0},
        temperature=1.0,
    )


def test_logits(run_dir: pathlib.Path, dataset) -> np.ndarray:
    """The finished run's logits on the evaluation images, in inference mode."""
    model = load_teacher(str(run_dir), dataset)
    forward = jax.jit(lambda x: teacher_forward(model.graphdef, model.variables, x)[0])
    images = dataset.normalise(dataset.x_test)
    return np.concatenate([np.asarray(forward(images[i : i + 1000])) for i in range(0, len(images), 1000)])


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gens = np.arange(len(results["generation"]))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for key, label, offset in (
        ("generation", "generation k alone", -0.04),
        ("ensemble", "ensemble 0..k", 0.04),
    ):
        acc = np.array(results[key]) * 100  # [generations, seeds]
        ax.errorbar(gens + offset, acc.mean(1), yerr=acc.std(1), marker="o", capsize=4, label=label)
    for key, marker in (("cwtm", "s"), ("dkpp", "^")):
        if not results[key]:
            continue
        acc = np.array(results[key]) * 100
        ax.errorbar(
            1.12,
            acc.mean(),
            yerr=acc.std(),
            marker=marker,
            capsize=4,
            ls="none",
            label=f"gen 1 {key.upper()}",
        )
    ax.set_xticks(gens)
    ax.set_xlabel("generation (0: trained on labels)")
    ax.set_ylabel(f"{results['evaluated_on']} accuracy (%)")
    ax.set_title(
        f"Born-again {results['model']} on {results['dataset']}, mean +- std over {results['seeds']} seeds"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mnist", help="see the module docstring")
    parser.add_argument(
        "--data-dir", default=None, help="MNIST IDX files or the .npz file; MNIST default: tfds"
    )
    parser.add_argument("--out", default="runs/born_again_mnist")
    parser.add_argument("--dataset", choices=("mnist", "npz", "cifar10", "cifar100"), help="the preset's")
    parser.add_argument("--model", help="the preset's")
    parser.add_argument("--epochs", type=int, help="epochs of every generation (the preset's)")
    parser.add_argument("--lr", type=float, help="SGD learning rate, cosine schedule (the preset's)")
    parser.add_argument("--batch-size", type=int, help="the preset's")
    parser.add_argument("--weight-decay", type=float, help="the preset's")
    parser.add_argument("--max-shift", type=int, help="random translation in pixels (the preset's)")
    parser.add_argument("--hflip", action=argparse.BooleanOptionalAction, help="the preset's")
    parser.add_argument(
        "--holdout", type=float, help="training fraction held out by --validate (the preset's)"
    )
    parser.add_argument(
        "--label-noise", type=float, default=0.0, help="fraction of training labels corrupted"
    )
    parser.add_argument("--generations", type=int, default=4, help="generations, counting generation 0")
    parser.add_argument("--seeds", type=int, default=3, help="independent chains")
    parser.add_argument(
        "--ablations",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train the CWTM and DKPP generation 1 of each chain",
    )
    parser.add_argument("--validate", action="store_true", help="evaluate on held-out training images")
    parser.add_argument("--smoke", action="store_true", help="1 epoch, batch 32: for tests of the pipeline")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.generations < 2 or args.seeds < 1:
        parser.error("--generations must be >= 2 and --seeds >= 1")
    out = pathlib.Path(args.out)
    dataset = load_dataset(args.dataset, args.data_dir)
    base = base_config(args)
    evaluation_set = dataset.holdout(args.holdout) if args.validate else dataset

    acc = {"generation": [[] for _ in range(args.generations)], "cwtm": [], "dkpp": []}
    method_agreement = {"cwtm": [], "dkpp": []}
    ensemble = [[] for _ in range(args.generations)]
    agreement = [[] for _ in range(args.generations)]
    seconds = []
    for seed in range(args.seeds):
        chain = []
        for gen in range(args.generations):
            run_dir = out / f"seed{seed}" / f"gen{gen}"
            config = (
                dataclasses.replace(base, seed=seed)
                if gen == 0
                else student_config(base, chain[-1], seed, "kd")
            )
            summary = fit(
                config, run_dir, dataset=dataset, progress=not args.quiet, label=f"s{seed} gen{gen}"
            )
            chain.append(run_dir)
            acc["generation"][gen].append(evaluated(summary))
            agreement[gen].append(summary.get("val/agreement", summary.get("test/agreement")))
            seconds.append(summary["train_seconds"])
        for method in ("cwtm", "dkpp") if args.ablations else ():
            config = student_config(base, chain[0], seed, method)
            summary = fit(
                config,
                out / f"seed{seed}" / method,
                dataset=dataset,
                progress=not args.quiet,
                label=f"s{seed} {method}",
            )
            acc[method].append(evaluated(summary))
            method_agreement[method].append(evaluated(summary, "agreement"))
            seconds.append(summary["train_seconds"])
        logits = [test_logits(d, evaluation_set) for d in chain]
        for gen in range(args.generations):
            probs = losses.ensemble_probabilities(np.stack(logits[: gen + 1]))
            ensemble[gen].append(float(np.mean(np.asarray(probs).argmax(-1) == evaluation_set.y_test)))

    gen0 = np.array(acc["generation"][0])
    rows = []
    for gen in range(args.generations):
        single = np.array(acc["generation"][gen])
        rows.append([
            f"gen {gen}" + (" (labels)" if gen == 0 else f" (BAN from gen {gen - 1})"),
            mean_std(single),
            "" if gen == 0 else mean_std(single - gen0),
            "" if gen == 0 else mean_std(agreement[gen]),
            mean_std(ensemble[gen]),
            "" if gen == 0 else mean_std(np.array(ensemble[gen]) - gen0),
        ])  # fmt: skip
    for method in ("cwtm", "dkpp") if args.ablations else ():
        single = np.array(acc[method])
        rows.append(
            [
                f"gen 1, {method.upper()} from gen 0",
                mean_std(single),
                mean_std(single - gen0),
                mean_std(method_agreement[method]),
                "",
                "",
            ]
        )
    where = "held-out" if args.validate else "test"
    table = markdown_table(
        [
            "generation",
            f"{where} accuracy (%)",
            "minus gen 0 (points)",
            "agreement with its teacher (%)",
            "ensemble 0..k (%)",
            "ensemble minus gen 0 (points)",
        ],
        rows,
    )
    note = (
        f"\n{args.model} on {args.dataset}, {base.epochs} epochs per generation (SGD, lr "
        f"{base.learning_rate}, cosine, batch {base.batch_size}, weight decay {base.weight_decay}, "
        f"shift {base.max_shift}, flip {base.hflip}, label noise {base.label_noise}), {args.seeds} "
        f"seeds (one chain each): mean +- std over seeds; differences paired by seed. Training time: "
        f"{sum(seconds):.0f} s over {len(seconds)} runs.\n"
    )
    results = {
        "preset": args.preset,
        "dataset": args.dataset,
        "label_noise": args.label_noise,
        "model": args.model,
        "epochs": base.epochs,
        "seeds": args.seeds,
        "evaluated_on": f"{len(evaluation_set.y_test)} {where} images",
        **acc,
        "ensemble": ensemble,
        "agreement": agreement,
        "method_agreement": method_agreement,
        "train_seconds": seconds,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + note)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    results["evaluated_on"] = where
    plot(results, out / "generations.png")
    print(table + note)


if __name__ == "__main__":
    main()

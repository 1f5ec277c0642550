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
        # 3 seeds x (4 generations + CWTM + DKPP) = 18 runs of 12 epochs: 7.3 min wall (333 s of
        # training) on 2 idle CPU cores (AVX-512 EPYC, 2026-12-02)
    python experiments/born_again.py --preset cifar10-subset --generations 3 \\
        --data-dir ../shared/data/cifar10-subset/cifar10_subset.npz --out runs/born_again_cifar10 \\
        --no-ablations    # generations 0-2 only: 9 runs of 120 epochs
    python experiments/born_again.py --data-dir ../shared/data/mnist --out runs/born_again_val --validate
        # every run evaluated on a held-out part of the training set instead of the test set

Every run is a run directory under ``--out`` (``seed{s}/gen{k}``, ``seed{s}/cwtm``,
``seed{s}/dkpp``): re-running resumes and skips finished runs. Writes ``table.md``,
``results.json`` (each generation's summaries with its ensemble's accuracy) and
``generations.png`` to ``--out``.
"""

import argparse

import jax
import numpy as np

from jdistill import losses
from jdistill.experiment import Experiment, Run, main
from jdistill.report import evaluated, markdown_table, mean_std, paired_difference
from jdistill.train import RunConfig, RunDir, load_teacher, teacher_forward

PRESETS = {
    "mnist": dict(dataset="mnist", model="mlp256", epochs=12, lr=0.05, batch_size=128, weight_decay=0.0,
                  max_shift=0, hflip=False, holdout=1 / 6),
    "cifar10-subset": dict(dataset="npz", model="resnet8", epochs=120, lr=0.05, batch_size=64,
                           weight_decay=5e-4, max_shift=4, hflip=True, holdout=0.1),
}  # fmt: skip


def runs(options):
    """Per seed, generation 0, each generation from the one before, then CWTM and DKPP from generation 0:
    the students without the plain label term and at T = 1."""
    a = options.args
    if a.generations < 2:
        raise ValueError(f"--generations must be at least 2, got {a.generations}")
    base = RunConfig(model=a.model, dataset=a.dataset, data_dir=options.data_dir, epochs=a.epochs,
                     learning_rate=a.lr, batch_size=a.batch_size, weight_decay=a.weight_decay,
                     max_shift=a.max_shift, hflip=a.hflip, label_noise=a.label_noise)  # fmt: skip
    for seed in options.seeds:

        def student(teacher, method):
            teacher = str(options.out / f"seed{seed}" / teacher)
            weights = {"ce": 0.0, method: 1.0}
            return base.replace(
                seed=seed, teacher=teacher, methods=("ce", method), weights=weights, temperature=1.0
            )

        yield Run(f"seed{seed}/gen0", base.replace(seed=seed), "gen 0 (labels)")
        for gen in range(1, a.generations):
            yield Run(
                f"seed{seed}/gen{gen}", student(f"gen{gen - 1}", "kd"), f"gen {gen} (BAN from gen {gen - 1})"
            )
        for method in ("cwtm", "dkpp") if a.ablations else ():
            yield Run(f"seed{seed}/{method}", student("gen0", method), f"gen 1, {method.upper()} from gen 0")


def test_logits(run_dir, dataset) -> np.ndarray:
    """The finished run's logits on the evaluation images, in inference mode."""
    model = load_teacher(str(run_dir), dataset)
    forward = jax.jit(lambda x: teacher_forward(model.graphdef, model.variables, x)[0])
    images = dataset.normalise(dataset.x_test)
    return np.concatenate([np.asarray(forward(images[i : i + 1000])) for i in range(0, len(images), 1000)])


def measure(run_dir, options) -> dict:
    """A generation k's ensemble: the accuracy of generations 0..k of its chain, softmax outputs averaged."""
    if not run_dir.name.startswith("gen"):
        return {}
    holdout = RunDir(run_dir).config().data.holdout_fraction
    dataset = options.dataset.holdout(holdout) if holdout else options.dataset
    logits = np.stack(
        [test_logits(run_dir.parent / f"gen{k}", dataset) for k in range(int(run_dir.name[3:]) + 1)]
    )
    predicted = np.asarray(losses.ensemble_probabilities(logits)).argmax(-1)
    return {"ensemble": float(np.mean(predicted == dataset.y_test))}


def by_seed(summaries, key=None) -> dict[int, float]:
    """Each chain's accuracy (or ``key``, where a summary has it), by its seed."""
    return {s["seed"]: s[key] if key else evaluated(s) for s in summaries if not key or key in s}


def table(results, options):
    """One row per generation and ablation: accuracy (mean +- std over seeds, and each seed's), the
    difference to generation 0 paired by chain (seed), agreement with its teacher, and the ensemble
    of generations 0..k with its own paired difference."""
    gen0 = by_seed(next(iter(results.values())))
    rows = []
    for k, (row, summaries) in enumerate(results.items()):
        single, ensemble = by_seed(summaries), by_seed(summaries, "ensemble")
        rows.append([
            row, mean_std(list(single.values())), " / ".join(f"{100 * v:.2f}" for v in single.values()),
            paired_difference(single, gen0) if k else "",
            mean_std([evaluated(s, "agreement") for s in summaries]) if k else "",
            mean_std(list(ensemble.values())) if ensemble else "",
            paired_difference(ensemble, gen0) if k else "",
        ])  # fmt: skip
    where = "held-out" if options.validate else "test"
    headers = [
        "generation",
        f"{where} accuracy (%)",
        "per seed",
        "minus gen 0 (points, paired)",
        "agreement with its teacher (%)",
    ]
    headers += ["ensemble 0..k (%)", "ensemble minus gen 0 (points, paired)"]
    c = next(iter(results.values()))[0]["config"]
    seconds = [s["train_seconds"] for summaries in results.values() for s in summaries]
    return markdown_table(headers, rows) + (
        f"\n{c['model']} on {c['dataset']}, {c['epochs']} epochs per generation (SGD, lr "
        f"{c['learning_rate']}, cosine, batch {c['batch_size']}, weight decay {c['weight_decay']}, shift "
        f"{c['max_shift']}, flip {c['hflip']}, label noise {c['label_noise']}), {len(gen0)} seeds (one chain "
        f"each): mean +- std over seeds; differences "
        f"paired by seed. Training time: {sum(seconds):.0f} s over {len(seconds)} runs.\n"
    )


def plots(results, options):
    """``generations.png``: each generation alone and its ensemble; CWTM and DKPP beside generation 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chain = [summaries for summaries in results.values() if "ensemble" in summaries[0]]
    gens = np.arange(len(chain))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    alone = [[evaluated(s) for s in summaries] for summaries in chain]
    ensemble = [[s["ensemble"] for s in summaries] for summaries in chain]
    for values, label, offset in ((alone, "generation k alone", -0.04), (ensemble, "ensemble 0..k", 0.04)):
        acc = 100 * np.array(values)  # [generations, seeds]
        ax.errorbar(gens + offset, acc.mean(1), yerr=acc.std(1), marker="o", capsize=4, label=label)
    for (row, summaries), marker in zip(list(results.items())[len(chain) :], "s^"):
        acc = 100 * np.array([evaluated(s) for s in summaries])
        ax.errorbar(
            1.12, acc.mean(), yerr=acc.std(), marker=marker, capsize=4, ls="none", label=row.split(" from")[0]
        )
    ax.set_xticks(gens)
    ax.set_xlabel("generation (0: trained on labels)")
    ax.set_ylabel(f"{'held-out' if options.validate else 'test'} accuracy (%)")
    ax.set_title(
        f"Born-again {chain[0][0]['model']} on {options.args.dataset}, mean +- std over {len(chain[0])} seeds"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(options.out / "generations.png", dpi=120)
    plt.close(fig)


def preset_options(parser):
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mnist", help="see the module docstring")
    parser.add_argument("--dataset", choices=("mnist", "npz", "cifar10", "cifar100"), help="the preset's")


def experiment(argv=None) -> Experiment:
    """The experiment as the command line ``argv`` sets it: the preset (with --dataset if given)
    decides the data set loaded, the default of --holdout and every option's default."""
    pre = argparse.ArgumentParser(add_help=False)
    preset_options(pre)
    known = pre.parse_known_args(argv)[0]
    preset = PRESETS[known.preset]
    chosen = preset | {k: v for k, v in vars(known).items() if v is not None}

    def add_options(parser):
        preset_options(parser)
        parser.add_argument("--model", help="the preset's")
        parser.add_argument("--epochs", type=int, help="epochs of every generation (the preset's)")
        parser.add_argument("--lr", type=float, help="SGD learning rate, cosine schedule (the preset's)")
        parser.add_argument("--batch-size", type=int, help="the preset's")
        parser.add_argument("--weight-decay", type=float, help="the preset's")
        parser.add_argument("--max-shift", type=int, help="random translation in pixels (the preset's)")
        parser.add_argument("--hflip", action=argparse.BooleanOptionalAction, help="the preset's")
        parser.add_argument(
            "--label-noise", type=float, default=0.0, help="fraction of training labels corrupted"
        )
        parser.add_argument("--generations", type=int, default=4, help="generations, counting generation 0")
        parser.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=True,
                            help="also train the CWTM and DKPP generation 1 of each chain")  # fmt: skip
        parser.set_defaults(**preset)

    return Experiment(__doc__, chosen["dataset"], runs, table, plots, add_options, measure=measure,
                      default_out="runs/born_again_mnist", smoke={"epochs": 1, "batch_size": 32},
                      holdout_fraction=chosen["holdout"])  # fmt: skip


if __name__ == "__main__":
    main(experiment())

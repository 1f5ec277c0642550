"""Online distillation on MNIST: two peers trained together vs each trained alone, 3 seeds.

Two 784-256-256-10 ReLU MLPs (``mlp256``) train together from scratch for 20 epochs (SGD with
Nesterov momentum 0.9, learning rate 0.05 on a cosine schedule, batch 128), in three ways that
share each seed's initialisations and data order:

- **alone**: each peer on the hard labels only (``mutual_weight=0``, no discriminator);
- **mutual learning**: each peer also learns from the other's predictions, ``KL(p_j || p_k)`` at
  T = 1 with weight 1 (Zhang et al. 2018, "Deep Mutual Learning");
- **mutual learning + discriminators**: each peer also fools a discriminator of its own that tells
  the other peer's last hidden layer (``embedding``) from its own (Chung et al. 2020,
  "Feature-map-level Online Adversarial Knowledge Distillation"), with weight 0.1 (at 1, with a
  constant discriminator rate, the term overwhelmed the labels in a 15-epoch run on held-out
  training images) and BCE, one discriminator step per peer step, Adam at 1e-3 decayed on the
  peers' cosine schedule.

The table reports the peers' test accuracy (mean of the two, then mean +- std over seeds) and
the accuracy of the two peers' ensemble (mean of their probabilities).

    python experiments/online_mnist.py --data-dir ../shared/data/mnist --out runs/online_mnist
        # 9.8 min on 2 otherwise idle CPU cores (2026-12-03): an epoch (a pair of peers trained at
        # once) 2.4-2.5 s (median) alone or with mutual learning, 3.5 s with the discriminators,
        # plus evaluation and a checkpoint per epoch
    python experiments/online_mnist.py --data-dir DIR --out DIR --smoke   # the pipeline in seconds

Every run is a run directory under ``--out`` (``alone/seed0``, ``mutual/seed0``, ...). Writes
``table.md``, ``results.json`` and ``curves.png`` (mean peer accuracy per epoch) to ``--out``.
"""

from jdistill.adversarial.online import OnlineConfig
from jdistill.experiment import Experiment, Run, main
from jdistill.report import evaluated, markdown_table, mean_std, plot_learning_curves

VARIANTS = {
    "alone": ("each peer alone (hard labels)", {"mutual_weight": 0.0}),
    "mutual": ("online: mutual learning, T = 1", {"mutual_weight": 1.0, "temperature": 1.0}),
    "adversarial": (
        "online: mutual learning + discriminators on the embedding",
        {"mutual_weight": 1.0, "temperature": 1.0, "disc_input": "feature:embedding", "adv_weight": 0.1},
    ),
}


def runs(options):
    for name, (row, changes) in VARIANTS.items():
        for seed in options.seeds:
            config = OnlineConfig(model="mlp256", dataset="mnist", data_dir=options.data_dir,
                                  epochs=options.args.epochs, num_peers=2, seed=seed, **changes)  # fmt: skip
            yield Run(f"{name}/seed{seed}", config, row)


def table(results, options):
    rows = [
        [row, mean_std([evaluated(s) for s in summaries]),
         mean_std([evaluated(s, "ensemble_accuracy") for s in summaries]), len(summaries),
         f"{sum(s['train_seconds'] for s in summaries) / 60:.1f}"]
        for row, summaries in results.items()
    ]  # fmt: skip
    headers = ["training", "peer accuracy (%)", "2-peer ensemble (%)", "seeds", "train min"]
    where = "held-out training images" if options.validate else "the test set"
    return (
        f"Two mlp256 peers on MNIST, accuracy on {where} (mean +- std over seeds of the two peers' mean; "
        f"ensemble: mean of the peers' probabilities).\n\n" + markdown_table(headers, rows)
    )


def plots(results, options):
    plot_learning_curves(
        {row: [options.out / s["run"] for s in summaries] for row, summaries in results.items()},
        options.out / "curves.png",
        metric=("val" if options.validate else "test") + "/accuracy",
        title="Two MNIST peers: mean peer accuracy",
        zoom=None if options.smoke else 1.5,
    )


EXPERIMENT = Experiment(
    __doc__, "mnist", runs, table, plots, smoke_examples=(384, 200),
    add_options=lambda parser: parser.add_argument("--epochs", type=int, default=20),
)  # fmt: skip

if __name__ == "__main__":
    main(EXPERIMENT)

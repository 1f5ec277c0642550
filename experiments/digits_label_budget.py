"""When does distillation help on the bundled digits? A sweep over the fraction of labelled
training images, the rest serving as an unlabelled transfer set.

For each labelled fraction: a teacher ``mlp1200`` (dropout) and a student ``mlp32`` alone train on
the labelled images; a student ``mlp32`` distils from the teacher (hard labels where known + soft
targets at T = 4) on every training image. Every run gets the same budget of optimizer steps
(1,500, batch 32), so the student alone is not under-trained at small fractions. Accuracy is on the
540 held-out test images, mean +- std over seeds.

    python experiments/digits_label_budget.py --out runs/label_budget
        # 2 min 20 s measured on 2 shared CPU cores (--quiet); up to 8 minutes when they are busy

Runs ``frac0.05/teacher``, ``frac0.05/alone0``, ``frac0.05/kd0``, ...; writes ``table.md``,
``results.json`` and ``label_budget.png`` (test accuracy against labelled fraction) to ``--out``.
"""

import math

import numpy as np

from jdistill.experiment import Experiment, Run, main, training_data
from jdistill.report import evaluated, markdown_table, mean_std
from jdistill.train import RunConfig

STEPS, BATCH = 1500, 32  # every run: 1,500 optimizer steps; evaluated and saved at the end only
BASE = RunConfig(model="mlp32", dataset="digits", epochs=1, batch_size=BATCH, learning_rate=0.05,
                 checkpoint_every=10_000, eval_every=10_000)  # fmt: skip


def train_set(options, fraction: float):
    """The training set of the runs of ``fraction`` (without its held-out part under --validate)."""
    return training_data(EXPERIMENT, options).hide_labels(fraction)


def epochs_for(examples: int) -> int:
    return math.ceil(STEPS / (examples // BATCH))


def runs(options):
    for fraction in (float(f) for f in options.args.fractions.split(",")):
        data, row, where = train_set(options, fraction), str(fraction), f"frac{fraction}"
        epochs = epochs_for(len(data.labelled().y_train))
        alone = BASE.replace(epochs=epochs, labelled_fraction=fraction)
        teacher = options.out / where / "teacher"
        yield Run(f"{where}/teacher", alone.replace(model="mlp1200"), row)
        for seed in options.seeds:
            yield Run(f"{where}/alone{seed}", alone.replace(seed=seed), row)
            kd = alone.replace(epochs=epochs_for(len(data.y_train)), teacher=str(teacher),
                                     methods=("ce", "kd"), seed=seed)  # fmt: skip
            yield Run(f"{where}/kd{seed}", kd, row)


def accuracies(summaries) -> dict[str, list[float]]:
    """``teacher``, ``alone`` and ``kd`` -> the accuracies of a fraction's runs."""
    by_kind = {}
    for s in summaries:  # frac0.05/teacher, frac0.05/alone0, frac0.05/kd0, ...
        by_kind.setdefault(s["run"].split("/")[-1].rstrip("0123456789"), []).append(evaluated(s))
    return by_kind


def table(results, options):
    rows = []
    for row, summaries in results.items():
        acc, fraction = accuracies(summaries), float(row)
        rows.append([f"{fraction:.0%}", len(train_set(options, fraction).labelled().y_train),
                     f"{100 * acc['teacher'][0]:.2f}", mean_std(acc["alone"]), mean_std(acc["kd"]),
                     f"{100 * (np.mean(acc['kd']) - np.mean(acc['alone'])):+.2f}"])  # fmt: skip
    headers = ["labelled fraction", "labelled images", "teacher %", "student alone %", "student KD %"]
    return markdown_table(headers + ["KD - alone (points)"], rows)


def plots(results, options):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions, acc = [float(row) for row in results], [accuracies(s) for s in results.values()]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(fractions, [100 * a["teacher"][0] for a in acc], "k--", label="teacher mlp1200 (seed 0)")
    for key, label in (("alone", "student mlp32 alone"), ("kd", "student mlp32 by KD")):
        mean, std = (np.array([100 * f(a[key]) for a in acc]) for f in (np.mean, np.std))
        ax.errorbar(fractions, mean, yerr=std, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
    ax.set_xlabel("fraction of training labels known")
    ax.set_ylabel(f"{'held-out' if options.validate else 'test'} accuracy (%)")
    ax.set_title("digits: distillation through an unlabelled transfer set")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(options.out / "label_budget.png", dpi=120)
    plt.close(fig)


EXPERIMENT = Experiment(
    __doc__, "digits", runs, table, plots, smoke={"epochs": 1}, smoke_examples=(1000, 200),
    default_out="runs/label_budget",
    add_options=lambda parser: parser.add_argument("--fractions", default="0.05,0.1,0.2,0.5,1.0"),
)  # fmt: skip

if __name__ == "__main__":
    main(EXPERIMENT)

"""When does distillation help on the bundled digits? A sweep over the fraction of labelled
training images, the rest serving as an unlabelled transfer set.

For each labelled fraction: a teacher ``mlp1200`` (dropout) and a student ``mlp32`` alone train on
the labelled images; a student ``mlp32`` distils from the teacher (hard labels where known + soft
targets at T = 4) on every training image. Every run gets the same budget of optimizer steps
(batch 32), so the student alone is not under-trained at small fractions. Accuracy is on the 540
held-out test images, mean +- std over seeds.

    python experiments/digits_label_budget.py --out runs/label_budget      # about 8 minutes on 2 CPU cores

Writes ``table.md`` and ``label_budget.png`` (test accuracy against labelled fraction) to ``--out``.
"""

import argparse
import dataclasses
import json
import math
import pathlib

import numpy as np

from jdistill.data import load_digits
from jdistill.report import markdown_table, mean_std
from jdistill.train import RunConfig, fit

STEPS = 1500
BATCH = 32


def epochs_for(examples: int) -> int:
    return math.ceil(STEPS / (examples // BATCH))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/label_budget")
    parser.add_argument("--fractions", default="0.05,0.1,0.2,0.5,1.0")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    dataset = load_digits()
    base = RunConfig(
        model="mlp32",
        dataset="digits",
        epochs=1,
        batch_size=BATCH,
        learning_rate=0.05,
        checkpoint_every=10_000,
        eval_every=10_000,  # evaluate and save at the end only,
    )
    results = []
    for fraction in (float(f) for f in args.fractions.split(",")):
        labelled = len(dataset.hide_labels(fraction).labelled().y_train)
        alone_epochs, kd_epochs = epochs_for(labelled), epochs_for(len(dataset.y_train))
        teacher_dir = out / f"frac{fraction}" / "teacher"
        teacher_config = dataclasses.replace(
            base, model="mlp1200", epochs=alone_epochs, labelled_fraction=fraction
        )
        teacher = fit(teacher_config, teacher_dir, dataset=dataset, label=f"{fraction:.0%} teacher")
        row = {
            "fraction": fraction,
            "labelled": labelled,
            "teacher": teacher["test/accuracy"],
            "alone": [],
            "kd": [],
        }
        for seed in range(args.seeds):
            alone = dataclasses.replace(base, epochs=alone_epochs, labelled_fraction=fraction, seed=seed)
            kd = dataclasses.replace(
                alone, epochs=kd_epochs, teacher=str(teacher_dir.absolute()), methods=("ce", "kd")
            )
            row["alone"].append(
                fit(
                    alone,
                    out / f"frac{fraction}" / f"alone{seed}",
                    dataset=dataset,
                    label=f"{fraction:.0%} alone s{seed}",
                )["test/accuracy"]
            )
            row["kd"].append(
                fit(
                    kd,
                    out / f"frac{fraction}" / f"kd{seed}",
                    dataset=dataset,
                    label=f"{fraction:.0%} kd s{seed}",
                )["test/accuracy"]
            )
        results.append(row)

    table = markdown_table(
        [
            "labelled fraction",
            "labelled images",
            "teacher %",
            "student alone %",
            "student KD %",
            "KD - alone (points)",
        ],
        [
            [
                f"{r['fraction']:.0%}",
                r["labelled"],
                f"{100 * r['teacher']:.2f}",
                mean_std(r["alone"]),
                mean_std(r["kd"]),
                f"{100 * (np.mean(r['kd']) - np.mean(r['alone'])):+.2f}",
            ]
            for r in results
        ],
    )
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "label_budget.png")
    print(table)


def plot(results, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = [r["fraction"] for r in results]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(fractions, [100 * r["teacher"] for r in results], "k--", label="teacher mlp1200 (seed 0)")
    for key, label in (("alone", "student mlp32 alone"), ("kd", "student mlp32 by KD")):
        mean = np.array([100 * np.mean(r[key]) for r in results])
        std = np.array([100 * np.std(r[key]) for r in results])
        ax.errorbar(fractions, mean, yerr=std, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
    ax.set_xlabel("fraction of training labels known")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits: distillation through an unlabelled transfer set")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()

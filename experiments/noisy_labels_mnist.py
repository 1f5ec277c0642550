"""Do soft targets filter label noise? MNIST with 0, 20, 40 and 60 % of the training labels
corrupted (symmetric noise, fixed seed; the test set is clean).

Per noise rate, all on the same noisy labels: a student ``mlp32`` trained on them alone; a bigger
teacher ``mlp256`` trained on them; students ``mlp32`` distilled from that teacher with the
objective ``alpha * CE(noisy label) + (1 - alpha) * T^2 KL(teacher_T || student_T)`` over a small
grid of alpha (the hard-label weight) and T. ``alpha`` is the lambda of Li et al. 2017 ("Learning
from Noisy Labels with Distillation"), whose target is lambda * noisy label + (1 - lambda) *
teacher prediction. Noise: each training label, with probability ``rate``, becomes a class drawn
uniformly from the other nine (``Dataset.with_label_noise``).

Memorisation of the noise grows with training, so both the final accuracy and the best accuracy
over the epochs are reported; the best epoch is chosen on the test set (an optimistic bound on
early stopping), so conclusions rest on the final accuracy. The teacher is also scored on its own
training images against their clean labels: on the images whose label was corrupted, how often
it predicts the true class (its soft targets then correct the label) or the noisy one (it has
memorised it).

    python experiments/noisy_labels_mnist.py --data-dir ../shared/data/mnist --out runs/noisy_labels_mnist
        # 4 rates x (1 teacher + 3 students alone + 4 distilled x 3 seeds) = 64 runs of 10 epochs.
        # Measured on 2 CPU cores shared with other jobs (load 10-20): 31 min wall in two passes
        # (--grid-seeds 1, then the default 3, resuming), 1,426 s of training recorded; about
        # 15 min expected on 2 idle cores

Every run is a run directory under ``--out`` (``noise{rate}/teacher``, ``noise{rate}/alone/seed{s}``,
``noise{rate}/kd_a{alpha}_T{T}/seed{s}``): re-running resumes and skips finished runs. Writes
``table.md``, ``results.json`` and ``accuracy_vs_noise.png`` to ``--out``.
"""

import argparse
import dataclasses
import json
import pathlib

import jax
import numpy as np

from jdistill.data import load_dataset
from jdistill.report import markdown_table, mean_std
from jdistill.train import RunConfig, fit, load_teacher, teacher_forward

NOISE_SEED = 0


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def logits_on(run_dir: pathlib.Path, dataset, images: np.ndarray) -> np.ndarray:
    """The finished run's logits on ``images``, in inference mode."""
    model = load_teacher(str(run_dir), dataset)
    forward = jax.jit(lambda x: teacher_forward(model.graphdef, model.variables, x)[0])
    images = dataset.normalise(images)
    return np.concatenate([np.asarray(forward(images[i : i + 1000])) for i in range(0, len(images), 1000)])


def teacher_on_training_set(run_dir, dataset, noisy) -> dict:
    """How the teacher's predictions on its training images relate to the clean and noisy labels."""
    predicted = logits_on(run_dir, dataset, dataset.x_train).argmax(-1)
    corrupted = noisy.y_train != dataset.y_train
    out = {"clean_accuracy": float(np.mean(predicted == dataset.y_train))}
    if corrupted.any():
        out["corrupted_true_class"] = float(np.mean(predicted[corrupted] == dataset.y_train[corrupted]))
        out["corrupted_noisy_label"] = float(np.mean(predicted[corrupted] == noisy.y_train[corrupted]))
    return out


def plot(rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = np.array([row["rate"] for row in rows]) * 100
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, which in zip(axes, ("final", "best")):
        series = {"student alone": [row["alone"][which] for row in rows]}
        series["teacher (mlp256)"] = [[row["teacher"][which]] for row in rows]
        for name in rows[0]["kd"]:
            kd = rows[0]["kd"][name]
            series[f"KD alpha={kd['alpha']:g} T={kd['temperature']:g}"] = [
                row["kd"][name][which] for row in rows
            ]
        for label, values in series.items():
            acc = [np.array(v) * 100 for v in values]
            style = {"ls": "--"} if label.startswith("teacher") else {}
            ax.errorbar(
                rates,
                [a.mean() for a in acc],
                yerr=[a.std() for a in acc],
                marker="o",
                capsize=3,
                label=label,
                **style,
            )
        ax.set_xlabel("training labels corrupted (%)")
        ax.set_title(
            f"{which} test accuracy" + (" (best epoch, chosen on the test set)" if which == "best" else "")
        )
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="MNIST IDX files; default: tensorflow-datasets")
    parser.add_argument("--out", default="runs/noisy_labels_mnist")
    parser.add_argument("--rates", default="0,0.2,0.4,0.6", help="noise rates, comma-separated")
    parser.add_argument("--alphas", default="0,0.5", help="hard-label weights of the distilled students")
    parser.add_argument("--temperatures", default="1,4", help="temperatures of the distilled students")
    parser.add_argument("--student", default="mlp32")
    parser.add_argument("--teacher", default="mlp256")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every run")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (cosine schedule)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the student alone")
    parser.add_argument("--grid-seeds", type=int, default=3, help="seeds of each distilled student")
    parser.add_argument("--smoke", action="store_true", help="rate 0.4, 1 epoch, one cell: for tests")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    if args.smoke:
        args.rates, args.alphas, args.temperatures, args.epochs = "0.4", "0.5", "4", 1
        args.seeds = args.grid_seeds = 1
    out = pathlib.Path(args.out)
    dataset = load_dataset("mnist", args.data_dir)
    base = RunConfig(
        model=args.student,
        dataset="mnist",
        data_dir=args.data_dir,
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=32 if args.smoke else 128,
        label_noise_seed=NOISE_SEED,
    )
    cells = [(a, t) for a in floats(args.alphas) for t in floats(args.temperatures)]

    def run(config, run_dir, label):
        summary = fit(config, run_dir, dataset=dataset, progress=not args.quiet, label=label)
        return summary["test/accuracy"], summary["test/best_accuracy"], summary["train_seconds"]

    rows, seconds = [], []
    for rate in floats(args.rates):
        rate_dir = out / f"noise{rate:g}"
        noisy = dataset.with_label_noise(rate, seed=NOISE_SEED)
        row = {"rate": rate, "changed_fraction": float(np.mean(noisy.y_train != dataset.y_train))}
        teacher_config = dataclasses.replace(base, model=args.teacher, label_noise=rate)
        final, best, sec = run(teacher_config, rate_dir / "teacher", f"{rate:.0%} teacher")
        seconds.append(sec)
        row["teacher"] = {
            "final": final,
            "best": best,
            **teacher_on_training_set(rate_dir / "teacher", dataset, noisy),
        }
        row["alone"] = {"final": [], "best": []}
        for seed in range(args.seeds):
            config = dataclasses.replace(base, label_noise=rate, seed=seed)
            final, best, sec = run(config, rate_dir / "alone" / f"seed{seed}", f"{rate:.0%} alone s{seed}")
            row["alone"]["final"].append(final)
            row["alone"]["best"].append(best)
            seconds.append(sec)
        row["kd"] = {}
        for alpha, temperature in cells:
            name = f"kd_a{alpha:g}_T{temperature:g}"
            cell = row["kd"][name] = {"alpha": alpha, "temperature": temperature, "final": [], "best": []}
            for seed in range(args.grid_seeds):
                config = dataclasses.replace(
                    base,
                    label_noise=rate,
                    seed=seed,
                    teacher=str((rate_dir / "teacher").absolute()),
                    methods=("ce", "kd"),
                    weights={"ce": alpha, "kd": 1.0 - alpha},
                    temperature=temperature,
                )
                final, best, sec = run(config, rate_dir / name / f"seed{seed}", f"{rate:.0%} {name} s{seed}")
                cell["final"].append(final)
                cell["best"].append(best)
                seconds.append(sec)
        rows.append(row)

    def both(values) -> str:
        return f"{mean_std(values['final'])} ({mean_std(values['best'])})"

    headers = ["noise (%)", "labels changed (%)", f"teacher {args.teacher}", f"{args.student} alone"]
    headers += [f"KD alpha={a:g} T={t:g}" for a, t in cells]
    table = markdown_table(
        headers,
        [
            [
                f"{row['rate'] * 100:g}",
                f"{row['changed_fraction'] * 100:.2f}",
                f"{row['teacher']['final'] * 100:.2f} ({row['teacher']['best'] * 100:.2f})",
                both(row["alone"]),
                *[both(cell) for cell in row["kd"].values()],
            ]
            for row in rows
        ],
    )
    # Student seed s alone and distilled share initialisation and data order: paired differences.
    paired = min(args.seeds, args.grid_seeds)
    gain_table = markdown_table(
        ["noise (%)", *[f"KD alpha={a:g} T={t:g} minus alone" for a, t in cells]],
        [
            [
                f"{row['rate'] * 100:g}",
                *[
                    mean_std(np.subtract(cell["final"][:paired], row["alone"]["final"][:paired]))
                    for cell in row["kd"].values()
                ],
            ]
            for row in rows
        ],
    )
    teacher_table = markdown_table(
        [
            "noise (%)",
            "teacher: clean training labels predicted (%)",
            "on corrupted images: true class (%)",
            "on corrupted images: the noisy label (%)",
        ],
        [
            [
                f"{row['rate'] * 100:g}",
                f"{row['teacher']['clean_accuracy'] * 100:.2f}",
                *[
                    f"{row['teacher'][key] * 100:.2f}" if key in row["teacher"] else "-"
                    for key in ("corrupted_true_class", "corrupted_noisy_label")
                ],
            ]
            for row in rows
        ],
    )
    note = (
        f"\nTest accuracy (%), final epoch and, in parentheses, the best epoch (chosen on the test set). "
        f"{args.epochs} epochs, SGD lr {args.lr}, cosine, batch {base.batch_size}; noise seed {NOISE_SEED}. "
        f"Students alone: mean +- std over {args.seeds} seeds; distilled students: {args.grid_seeds} seed(s); "
        f"teacher: 1 seed. alpha weighs the noisy hard labels. Training time: {sum(seconds):.0f} s over "
        f"{len(seconds)} runs.\n\nDistilled minus alone, final test accuracy in points, paired by seed "
        f"(same initialisation and data order), mean +- std over {paired} pair(s):\n\n"
    )
    teacher_note = "\nThe teacher on its own (noisy) training images:\n\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + note + gain_table + teacher_note + teacher_table)
    results = {
        "student": args.student,
        "teacher": args.teacher,
        "epochs": args.epochs,
        "noise_seed": NOISE_SEED,
        "rows": rows,
        "train_seconds": seconds,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(rows, out / "accuracy_vs_noise.png")
    print(table + note + gain_table + teacher_note + teacher_table)


if __name__ == "__main__":
    main()

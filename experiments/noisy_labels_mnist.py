"""Do soft targets filter label noise? MNIST with 0, 20, 40 and 60 % of the training labels
corrupted (symmetric noise, noise seed 0: each label, with probability ``rate``, becomes a class
drawn uniformly from the other nine; ``Dataset.with_label_noise``); the test set is clean.

Per rate, on the same noisy labels, 10 epochs each (SGD lr 0.05, cosine, batch 128): a teacher
``mlp256``; a student ``mlp32`` alone; ``mlp32`` students distilled with ``alpha * CE(noisy label)
+ (1 - alpha) * T^2 KL(teacher_T || student_T)``, alpha (Li et al. 2017's lambda, "Learning from
Noisy Labels with Distillation") in {0, 0.5}, T in {1, 4}. Memorisation grows with training, so the
final and the best accuracy over the epochs are reported; the best epoch is chosen on the test set
(an optimistic bound on early stopping), so conclusions rest on the final one. On its training
images whose label was corrupted, does the teacher predict the true class (its soft targets correct
the label) or the noisy one (it has memorised it)?

    python experiments/noisy_labels_mnist.py --data-dir ../shared/data/mnist --out runs/noisy_labels_mnist
        # 4 rates x (1 teacher + 3 students alone + 4 distilled x 3 seeds) = 64 runs of 10 epochs.
        # 11.5 min on 2 otherwise idle CPU cores (2026-12-03), 481 s of training recorded; 31 min
        # in two passes when the cores were shared with other jobs (load 10-20)

Runs ``noise{rate}/teacher``, ``noise{rate}/alone/seed{s}``, ``noise{rate}/kd_a{alpha}_T{T}/seed{s}``;
``accuracy_vs_noise.png`` plots the final and the best accuracy against the rate.
"""

import jax
import numpy as np

from jdistill.experiment import Experiment, Run, main
from jdistill.report import evaluated, markdown_table, mean_std
from jdistill.train import RunConfig, RunDir, load_teacher, teacher_forward
from jdistill.train.distill import prepare_dataset

NOISE_SEED = 0


def grid(options):
    """The noise rates, the distilled students (name -> (alpha, T)) and their number of seeds."""
    a = options.args
    texts = ("0.4", "0.5", "4") if options.smoke else (a.rates, a.alphas, a.temperatures)
    rates, alphas, temperatures = ([float(v) for v in text.split(",") if v.strip()] for text in texts)
    cells = {f"kd_a{x:g}_T{t:g}": (x, t) for x in alphas for t in temperatures}
    return rates, cells, 1 if options.smoke else a.grid_seeds


def runs(options):
    a, (rates, cells, kd_seeds) = options.args, grid(options)
    for rate in rates:
        base = RunConfig(model=a.student, dataset="mnist", data_dir=options.data_dir, epochs=a.epochs,
                         learning_rate=a.lr, label_noise=rate, label_noise_seed=NOISE_SEED)  # fmt: skip
        teacher = f"noise{rate:g}/teacher"
        yield Run(teacher, base.replace(model=a.teacher), teacher)
        students = {"alone": ({}, options.seeds)}
        for name, (alpha, t) in cells.items():
            kd = {"teacher": str(options.out / teacher), "methods": ("ce", "kd"), "temperature": t}
            students[name] = ({**kd, "weights": {"ce": alpha, "kd": 1.0 - alpha}}, range(kd_seeds))
        for name, (changes, seeds) in students.items():
            for seed in seeds:
                config = base.replace(seed=seed, **changes)
                yield Run(f"noise{rate:g}/{name}/seed{seed}", config, f"noise{rate:g}/{name}")


def accuracy(results, rate, name, metric="accuracy"):
    return [evaluated(s, metric) for s in results[f"noise{rate:g}/{name}"]]


def teacher_on_training_set(run_dir, data) -> list[str]:
    """Labels changed, and the teacher's predictions on its training images: the clean label, and on
    the corrupted ones the true class and the noisy label (%)."""
    config = RunDir(run_dir).config()
    noisy = prepare_dataset(config, data)
    clean = prepare_dataset(config.replace(label_noise=0.0), data).y_train
    model = load_teacher(str(run_dir), data)
    forward = jax.jit(lambda x: teacher_forward(model.graphdef, model.variables, x)[0].argmax(-1))
    images = data.normalise(noisy.x_train)
    predicted = np.concatenate([forward(images[i : i + 1000]) for i in range(0, len(images), 1000)])
    wrong = noisy.y_train != clean
    on_wrong = [
        np.mean(predicted[wrong] == y[wrong]) if wrong.any() else None for y in (clean, noisy.y_train)
    ]
    values = [wrong.mean(), np.mean(predicted == clean), *on_wrong]
    return [f"{100 * v:.2f}" if v is not None else "-" for v in values]


def table(results, options):
    (rates, cells, kd_seeds), a = grid(options), options.args
    teacher = {
        r: teacher_on_training_set(options.out / f"noise{r:g}/teacher", options.dataset) for r in rates
    }
    paired = min(len(options.seeds), kd_seeds)  # student seed s alone and distilled: same init, data order
    config = RunDir(options.out / f"noise{rates[0]:g}/teacher").config()
    seconds = [s["train_seconds"] for summaries in results.values() for s in summaries]
    kd = [f"KD alpha={x:g} T={t:g}" for x, t in cells.values()]
    where = "held-out" if options.validate else "test"
    accuracies = markdown_table(
        ["noise (%)", "labels changed (%)", f"teacher {a.teacher}", f"{a.student} alone", *kd],
        [[f"{r * 100:g}", teacher[r][0],
          *[f"{mean_std(accuracy(results, r, n))} ({mean_std(accuracy(results, r, n, 'best_accuracy'))})"
            for n in ["teacher", "alone", *cells]]] for r in rates],
    )  # fmt: skip
    gains = markdown_table(
        ["noise (%)", *[f"{k} minus alone" for k in kd]],
        [[f"{r * 100:g}", *[mean_std(np.subtract(accuracy(results, r, n)[:paired],
                                                 accuracy(results, r, "alone")[:paired])) for n in cells]]
         for r in rates],
    )  # fmt: skip
    teachers = markdown_table(
        ["noise (%)", "teacher: clean training labels predicted (%)", "on corrupted images: true class (%)",
         "on corrupted images: the noisy label (%)"],
        [[f"{r * 100:g}", *teacher[r][1:]] for r in rates],
    )  # fmt: skip
    return (
        f"{accuracies}\n{where.capitalize()} accuracy (%), final epoch and, in parentheses, the best epoch "
        f"(chosen on the {where} set). {config.loop.epochs} epochs, SGD lr {config.optimizer.learning_rate}, "
        f"cosine, batch {config.loop.batch_size}; noise seed {NOISE_SEED}. Students alone: mean +- std over "
        f"{len(options.seeds)} seeds; distilled students: {kd_seeds} seed(s); teacher: 1 seed. alpha weighs "
        f"the noisy hard labels. Training time: {sum(seconds):.0f} s over {len(seconds)} runs.\n\n"
        f"Distilled minus alone, final {where} accuracy in points, paired by seed (same initialisation and "
        f"data order), mean +- std over {paired} pair(s):\n\n{gains}\n"
        f"The teacher on its own (noisy) training images:\n\n{teachers}"
    )


def plots(results, options):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (rates, cells, _), where = grid(options), "held-out" if options.validate else "test"
    series = {"alone": "student alone", "teacher": f"teacher ({options.args.teacher})"}
    series |= {name: f"KD alpha={x:g} T={t:g}" for name, (x, t) in cells.items()}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    titles = {"accuracy": f"final {where} accuracy",
              "best_accuracy": f"best {where} accuracy (best epoch, chosen on the {where} set)"}  # fmt: skip
    for ax, (metric, title) in zip(axes, titles.items()):
        for name, label in series.items():
            acc = [100 * np.array(accuracy(results, r, name, metric)) for r in rates]
            style = {"ls": "--"} if name == "teacher" else {}
            ax.errorbar(np.array(rates) * 100, [v.mean() for v in acc], yerr=[v.std() for v in acc],
                        marker="o", capsize=3, label=label, **style)  # fmt: skip
        ax.set(xlabel="training labels corrupted (%)", title=title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{where} accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(options.out / "accuracy_vs_noise.png", dpi=120)
    plt.close(fig)


def add_options(parser):
    parser.add_argument("--rates", default="0,0.2,0.4,0.6", help="noise rates (--smoke: 0.4)")
    parser.add_argument("--alphas", default="0,0.5", help="KD students' hard-label weights (--smoke: 0.5)")
    parser.add_argument("--temperatures", default="1,4", help="KD students' temperatures (--smoke: 4)")
    parser.add_argument("--student", default="mlp32")
    parser.add_argument("--teacher", default="mlp256")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every run")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (cosine schedule)")
    parser.add_argument("--grid-seeds", type=int, default=3, help="seeds per KD student (--seeds: alone)")


EXPERIMENT = Experiment(
    __doc__, "mnist", runs, table, plots, add_options, smoke={"epochs": 1, "batch_size": 32},
    default_out="runs/noisy_labels_mnist",
)  # fmt: skip

if __name__ == "__main__":
    main(EXPERIMENT)

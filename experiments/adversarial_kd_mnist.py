"""Adversarial KD on MNIST: does a discriminator on the logits help a student beyond KD?

Xu, Hsu & Huang 2017 ("Training shallow and thin networks for acceleration via knowledge distillation
with conditional adversarial networks"); Belagiannis et al. 2018 ("Adversarial Network Compression").
A LeNet-5 teacher (61.7k parameters) trains once on hard labels; a LeNet-5-half student (15.7k: half
the channels and units, the pair of the data-free distillation papers) then trains, for each seed,
(a) on hard labels alone, (b) by KD (0.1 CE + 0.9 KD at T = 2) and (c) by the same KD plus
``adv_weight`` times the non-saturating fooling loss of a discriminator (MLP 256-256, LeakyReLU) that
learns to tell the teacher's logits from the student's, one discriminator step per student step. Data
order, initialisation, optimizer and schedule are the same across (a)-(c).

Why this pair: a convolutional pair with a real capacity gap (4x fewer parameters) that fits the time
budget on 2 CPU cores; Hinton's mlp1200 -> mlp800 is much heavier (2.4M and 1.3M parameters). Measured
on 2 shared CPU cores (load 2-3): a LeNet-5 teacher epoch takes 10-20 s (6 epochs: 99.0 %); a
LeNet-5-half epoch 5-8 s alone, 8-10 s by KD and 11-22 s with the discriminator (its step runs the
teacher and the student forward once more). Choices from short trials (seed 0, 2 epochs, the 6-epoch
teacher): SGD 0.02 (at 0.05, KD at T = 4 collapsed to chance in the first epoch); T = 2 (at T = 4 and
0.02, KD reached 95.7 % against 97.8 % alone; at T = 2 98.0 %, and 98.1 % with the adversarial term);
adversarial weight 0.1 (the best of 0.1, 0.3 and 1.0 in one-epoch trials, all within 0.4 %).

    python experiments/adversarial_kd_mnist.py --data-dir ../shared/data/mnist --out runs/adversarial_kd_mnist
        # teacher 6 epochs, students 6 epochs x 3 seeds: 7.3 min on 2 otherwise idle CPU cores
        # (2026-12-03; teacher 47 s, a student 27 s alone, 30 s by KD, 41 s with the discriminator)
    python experiments/adversarial_kd_mnist.py --data-dir ../shared/data/mnist --out runs/adv_smoke --smoke
        # the pipeline on 512 training images, 1 epoch, 1 seed (tests)

Runs ``teacher`` (``--teacher-dir``: reuse a finished LeNet-5 teacher run instead), ``alone/seed0``,
``kd/seed0``, ``kd_adv/seed0``, ...; writes ``table.md`` (test accuracy, mean +- std over seeds),
``results.json`` and ``curves.png`` (test accuracy against training step).
"""

import pathlib

from jdistill.adversarial.discriminator import AdversarialKDConfig
from jdistill.experiment import Experiment, Run, main
from jdistill.report import evaluated, markdown_table, mean_std, plot_learning_curves
from jdistill.train import RunConfig, RunDir

ROWS = {  # run name -> (row, objective weights; adv_weight is --adv-weight unless set)
    "alone": ("student, hard labels only", {"ce_weight": 1.0, "kd_weight": 0.0, "adv_weight": 0.0}),
    "kd": ("student, KD", {"ce_weight": 0.1, "kd_weight": 0.9, "adv_weight": 0.0}),
    "kd_adv": ("student, KD + adversarial", {"ce_weight": 0.1, "kd_weight": 0.9}),
}


def add_options(parser):
    parser.add_argument("--teacher-dir", default=None, help="a finished LeNet-5 MNIST teacher run to reuse")
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=6, help="epochs of every student")
    parser.add_argument("--lr", type=float, default=0.02, help="students' SGD learning rate (cosine)")
    parser.add_argument("--temperature", type=float, default=2.0, help="T of the KD term")
    parser.add_argument("--adv-weight", type=float, default=0.1, help="weight of the fooling loss")
    parser.add_argument("--disc-lr", type=float, default=2e-4, help="discriminator's Adam learning rate")
    parser.add_argument("--objective", default="bce", help="bce, least_squares or hinge")
    parser.add_argument("--disc-input", default="logits", help="logits, probs or feature:NAME")


def teacher_dir(options) -> pathlib.Path:
    return pathlib.Path(options.args.teacher_dir or options.out / "teacher").absolute()


def runs(options):
    a = options.args
    if not a.teacher_dir:
        yield Run("teacher", RunConfig("lenet5", "mnist", a.teacher_epochs, data_dir=options.data_dir))
    for name, (row, weights) in ROWS.items():
        for seed in options.seeds:
            config = AdversarialKDConfig(
                teacher=str(teacher_dir(options)), model="lenet5_half", epochs=a.epochs, dataset="mnist",
                data_dir=options.data_dir, seed=seed, learning_rate=a.lr, temperature=a.temperature,
                disc_learning_rate=a.disc_lr, objective=a.objective, disc_input=a.disc_input,
                **{"adv_weight": a.adv_weight, **weights})  # fmt: skip
            yield Run(f"{name}/seed{seed}", config, row)


def table(results, options):
    a, teacher = options.args, RunDir(teacher_dir(options)).summary()
    rows = [["teacher LeNet-5", mean_std([evaluated(teacher)]), "", 1, f"{teacher['train_seconds']:.0f}"]]
    rows += [[f"{row} (LeNet-5-half)", mean_std([evaluated(s) for s in runs]),
              mean_std([evaluated(s, "agreement") for s in runs]), len(runs),
              f"{sum(s['train_seconds'] for s in runs) / len(runs):.0f}"]
             for row, runs in results.items()]  # fmt: skip
    last = [RunDir(options.out / s["run"]).metrics()[-1] for s in results[ROWS["kd_adv"][0]]]
    real, fake = (mean_std([m[f"train/disc/{side}_accuracy"] for m in last]) for side in ("real", "fake"))
    return (
        f"MNIST test accuracy (%) after {results[ROWS['kd'][0]][0]['epochs']} student epochs, mean +- std "
        f"over seeds. KD: 0.1 CE + 0.9 KD (T = {a.temperature:g}); adversarial: + {a.adv_weight} x "
        f"{a.objective} fooling loss of a discriminator on the {a.disc_input} (Adam {a.disc_lr:g}); "
        f"students: SGD {a.lr:g}, cosine.\n\n"
        + markdown_table(
            ["net", "test accuracy", "agreement with the teacher", "seeds", "train seconds per run"], rows
        )
        + f"\nThe discriminator in the last epoch (training batches): teacher's logits recognised "
        f"{real} %, student's {fake} % (50 %: chance).\n"
    )


def plots(results, options):
    groups = {"teacher LeNet-5": [teacher_dir(options)]}
    groups.update({row: [options.out / s["run"] for s in runs] for row, runs in results.items()})
    title = "Adversarial KD on MNIST: LeNet-5 -> LeNet-5-half"
    plot_learning_curves(groups, options.out / "curves.png", title=title, zoom=2.0)


EXPERIMENT = Experiment(__doc__, "mnist", runs, table, plots, add_options, smoke={"epochs": 1},
                        smoke_examples=(512, 256), default_out="runs/adversarial_kd_mnist")  # fmt: skip

if __name__ == "__main__":
    main(EXPERIMENT)

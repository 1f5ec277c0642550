"""Attention transfer between vision transformers on MNIST: student alone vs KD vs KD + attention
transfer (and + MiniLM value relation), 3 seeds.

A ``vit4x64`` teacher (7x7 patches, 16 patches + a class token, 4 pre-LayerNorm blocks of width 64,
4 heads) trains once; a ``vit2x32`` student (2 blocks of width 32, 2 heads) then trains from the same
initialisations and data order on hard labels (``ce``), + KD at T = 4 (``kd``), + ``vit_at``
(MiniLM's ``KL(teacher || student)`` of the attention per head and query token; the uniform layer
map, student blocks 1, 2 <- teacher blocks 2, 4; each student head <- the mean of two consecutive
teacher heads), + ``vit_vr`` (MiniLM's value relation on the same blocks and heads). Every weight
is the methods' default, 1 (MiniLM sums its two terms unweighted), untuned. AdamW (decoupled weight
decay 0.05), learning rate 2e-3 after a linear warm-up (teacher 2 epochs, students 1), cosine decay,
batch 128, translations of up to 1 pixel; teacher 15 epochs, students 12, on the first 12,000
(``--train-size``) training images (a ViT epoch is slow on a CPU); the full 10,000 test images.
The table adds each student's agreement with the teacher and the ``attention_kl`` of its last block
to the teacher's last block on the test set (mapped heads). ``--smoke`` uses a vit2x32 teacher.

    python experiments/vit_attention_mnist.py --data-dir ../shared/data/mnist --out runs/vit_attention_mnist
        # 13 min on 2 CPU cores (2026-12-03; short IRG runs shared them for 6 of those minutes):
        # 125 s of teacher training and 534 s for the 12 students; 35.5 min on cores shared with
        # other jobs (load average 7-18)
    python experiments/vit_attention_mnist.py --data-dir DIR --out DIR --smoke   # the pipeline in seconds

Every run is a run directory under ``--out`` (``teacher``, ``alone/seed0``, ``kd/seed0``, ...). Writes
``table.md``, ``results.json``, ``curves.png`` and ``attention_maps.png`` (the class token's attention
over the patches, per head, in the last block of the teacher and of a KD and a KD + AT student, for
one test image) to ``--out``.
"""

import json
import math

import jax
import numpy as np

from jdistill import losses
from jdistill.experiment import Experiment, Run, main, training_data
from jdistill.report import evaluated, markdown_table, mean_std, plot_learning_curves
from jdistill.train import RunConfig, load_teacher, teacher_forward

TEACHER, STUDENT = "vit4x64", "vit2x32"
ROWS = {
    "alone": ("student alone (hard labels)", ("ce",)),
    "kd": ("KD (T = 4)", ("ce", "kd")),
    "kd_at": ("KD + attention transfer", ("ce", "kd", "vit_at")),
    "kd_at_vr": ("KD + attention transfer + value relation", ("ce", "kd", "vit_at", "vit_vr")),
}
PLOT_IMAGE = 0  # index of the test image whose attention is drawn


def data(options):
    """The runs' data (the first ``--train-size`` training images), split under ``--validate``."""
    return training_data(EXPERIMENT, options)


def runs(options):
    """The teacher, then the students; refuses an ``--out`` whose runs saw other data (``data.json``:
    the run directories do not record the training subset)."""
    args, dataset, record = options.args, data(options), options.out / "data.json"
    sizes = {"train_size": len(dataset.y_train), "test_size": len(dataset.y_test)}
    if record.exists() and json.loads(record.read_text()) != sizes:
        raise ValueError(
            f"{options.out} holds runs on other data ({record.read_text().strip()}); use another --out"
        )
    record.write_text(json.dumps(sizes) + "\n")
    config = RunConfig
    common = dict(dataset="mnist", data_dir=options.data_dir, optimizer="adam", learning_rate=2e-3,
                  weight_decay=0.05, max_shift=1, eval_every=args.eval_every, checkpoint_every=4)  # fmt: skip
    model = STUDENT if options.smoke else TEACHER  # compiling is most of a smoke run
    yield Run(
        "teacher", config(model, epochs=args.teacher_epochs, warmup_epochs=2, **common), f"teacher {model}"
    )
    for name, (row, methods) in ROWS.items():
        distil = {"teacher": str(options.out / "teacher"), "methods": methods, "temperature": 4.0}
        for seed in options.seeds:
            student = config(STUDENT, epochs=args.epochs, warmup_epochs=1, seed=seed, **common,
                             **(distil if methods != ("ce",) else {}))  # fmt: skip
            yield Run(f"{name}/seed{seed}", student, row)


def last_attention(run_dirs, dataset, images, batch: int = 500) -> list[np.ndarray]:
    """For each finished run in ``run_dirs`` (one model), its last block's attention on ``images``,
    [N, heads, tokens, tokens]; one compiled forward serves every run."""
    runs = [load_teacher(str(d), dataset) for d in run_dirs]
    block = f"attn{sum(name.startswith('attn') for name in runs[0].shapes)}"
    forward = jax.jit(lambda variables, x: teacher_forward(runs[0].graphdef, variables, x)[1][block])
    return [np.concatenate([jax.device_get(forward(r.variables, images[i : i + batch]))
                            for i in range(0, len(images), batch)]) for r in runs]  # fmt: skip


def table(results, options):
    dataset, where = data(options), "held-out" if options.validate else "test"
    (teacher_row, (teacher,)), *students = results.items()
    (reference,) = last_attention([options.out / teacher["run"]], dataset, dataset.x_test)
    runs = [s for _, summaries in students for s in summaries]
    attention = iter(last_attention([options.out / s["run"] for s in runs], dataset, dataset.x_test))
    rows = [[f"{teacher_row} ({teacher['params']:,} parameters)", mean_std([evaluated(teacher)]), "", "", 1]]
    for row, summaries in students:
        agreement = [evaluated(s, "agreement") for s in summaries if s["methods"] != ["ce"]]
        gaps = [float(np.mean(losses.attention_kl(next(attention), reference))) for _ in summaries]
        accuracy = mean_std([evaluated(s) for s in summaries])
        rows.append(
            [row, accuracy, mean_std(agreement) if agreement else "", mean_std(gaps, 1.0, 3), len(summaries)]
        )
    headers = ["model", f"{where} accuracy (%)", "agreement with teacher (%)",
               "last-block attention KL to teacher", "seeds"]  # fmt: skip
    seconds = sum(s["train_seconds"] for s in runs)
    return (
        f"MNIST ({len(dataset.y_train):,} training images, {len(dataset.y_test):,} {where} images); "
        f"student {STUDENT} ({runs[0]['params']:,} parameters), {runs[0]['epochs']} epochs; "
        f"teacher {teacher['epochs']} epochs. Mean +- std over seeds. Training time: "
        f"teacher {teacher['train_seconds']:.0f} s, students {seconds:.0f} s in all.\n\n"
    ) + markdown_table(headers, rows)


def plots(results, options):
    """``attention_maps.png``: a row per model, the image, then the class token's attention over the
    patches per head; ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset, (teacher_row, *students) = data(options), results
    image = dataset.x_test[PLOT_IMAGE : PLOT_IMAGE + 1]
    (reference,) = last_attention([options.out / "teacher"], dataset, image)
    kd, kd_at = last_attention([options.out / row / "seed0" for row in ("kd", "kd_at")], dataset, image)
    maps = {
        teacher_row: reference[0],
        f"teacher, mapped onto {kd.shape[1]} heads": losses.map_heads(reference, kd.shape[1])[0],
        f"student: {ROWS['kd'][0]}, seed 0": kd[0],
        f"student: {ROWS['kd_at'][0]}, seed 0": kd_at[0],
    }
    cols = 1 + max(m.shape[0] for m in maps.values())
    fig, axes = plt.subplots(len(maps), cols, figsize=(1.8 * cols, 1.9 * len(maps)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, (label, attention) in enumerate(maps.items()):
        axes[row, 0].imshow(image[0, ..., 0], cmap="gray")
        axes[row, 0].set_title(label, fontsize=7, loc="left")
        side = math.isqrt(attention.shape[-1] - 1)
        for h, head in enumerate(np.asarray(attention)):
            # Row 0 is the class token's query; column 0 its attention to itself (given in the title).
            axes[row, h + 1].imshow(head[0, 1:].reshape(side, side), cmap="viridis", vmin=0)
            axes[row, h + 1].set_title(f"head {h + 1} (cls {head[0, 0]:.2f})", fontsize=7)
    fig.suptitle("class token's attention over the 7x7-pixel patches, last block (each panel scaled to its "
                 "maximum; cls: its attention to itself)", fontsize=8)  # fmt: skip
    fig.tight_layout()
    fig.savefig(options.out / "attention_maps.png", dpi=120)
    plt.close(fig)
    plot_learning_curves(
        {row: [options.out / s["run"] for s in results[row]] for row in students},
        options.out / "curves.png",
        metric=("val" if options.validate else "test") + "/accuracy",
        title=f"{STUDENT} students of a {results[teacher_row][0]['model']} teacher on MNIST",
    )


def add_options(parser):
    parser.add_argument("--train-size", type=int, default=12000, help="first N MNIST training images")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=12, help="student epochs")
    parser.add_argument("--eval-every", type=int, default=2, help="epochs between test evaluations")


EXPERIMENT = Experiment(
    __doc__, "mnist", runs, table, plots, add_options, default_out="runs/vit_attention_mnist",
    smoke={"epochs": 1, "batch_size": 64, "warmup_epochs": 0}, smoke_examples=(256, 200),
    data=lambda dataset, options: dataset.first(options.args.train_size),
)  # fmt: skip

if __name__ == "__main__":
    main(EXPERIMENT)

"""Attention transfer between vision transformers on MNIST: student alone vs KD vs KD + attention
transfer (and + MiniLM value relation), 3 seeds.

A teacher ViT (``vit4x64``: 7x7 patches, 16 patches + a class token, 4 pre-LayerNorm blocks of
width 64 with 4 heads) is trained once; a shallower, narrower student (``vit2x32``: 2 blocks of
width 32, 2 heads) then trains in four ways from the same initialisations and data order:

- **alone**: hard labels (``ce``);
- **KD**: hard labels + soft targets at T = 4 (``kd``, weight 1);
- **KD + AT**: + ``vit_at``: ``KL(teacher || student)`` of the attention distributions per head
  and query token (MiniLM's reduction), student block 1 <- teacher block 2 and student block 2 <-
  teacher block 4 (the uniform layer map), each student head <- the mean of two consecutive
  teacher heads (weight 1);
- **KD + AT + VR**: + ``vit_vr``: MiniLM's value relation on the same blocks and heads (weight 1).

Term weights are the methods' defaults (1 each; MiniLM sums its two terms unweighted); they were
not tuned. All runs: AdamW (decoupled weight decay 0.05), learning rate 2e-3 after a linear
warm-up (2 epochs for the teacher, 1 for the students), cosine decay, batch 128, translations of up
to 1 pixel; the teacher trains 15 epochs, the students 12, on the first 12,000 (``--train-size``)
MNIST training images (CPU cost: a ViT epoch is far slower than an MLP's); the test set is the
full 10,000 images. The table also gives each student's agreement with the teacher and how far
its last block's attention is from the teacher's last block on the test set (the ``attention_kl``
the AT term minimises, mapped heads).

    python experiments/vit_attention_mnist.py --data-dir ../shared/data/mnist --out runs/vit_attention_mnist
        # 35.5 min on 2 CPU cores shared with other jobs (load average 7-18); the run directories
        # record 607 s of teacher training and 1193 s for the 12 students (92-141 s each)
    python experiments/vit_attention_mnist.py --data-dir DIR --out DIR --smoke   # the pipeline in seconds

Every run is a run directory under ``--out`` (``teacher``, ``alone/seed0``, ``kd/seed0``, ...):
re-running the command resumes an interrupted run from its last checkpoint and skips finished
ones. Writes ``table.md``, ``results.json``, ``attention_maps.png`` (the class token's attention
over the patches, per head, in the last block of the teacher and of a KD and a KD + AT student,
for one test image) and ``curves.png`` to ``--out``.
"""

import argparse
import dataclasses
import json
import math
import pathlib

import jax
import numpy as np

from jdistill import losses
from jdistill.data import load_dataset
from jdistill.report import markdown_table, mean_std, plot_learning_curves
from jdistill.train import RunConfig, fit, load_teacher, teacher_forward

TEACHER, STUDENT = "vit4x64", "vit2x32"
ROWS = {
    "alone": ("student alone (hard labels)", ("ce",)),
    "kd": ("KD (T = 4)", ("ce", "kd")),
    "kd_at": ("KD + attention transfer", ("ce", "kd", "vit_at")),
    "kd_at_vr": ("KD + attention transfer + value relation", ("ce", "kd", "vit_at", "vit_vr")),
}
SMOKE_TRAIN, SMOKE_TEST = 256, 200  # examples kept by --smoke
PLOT_IMAGE = 0  # index of the test image whose attention is drawn


def base_config(args, **changes) -> RunConfig:
    return RunConfig(
        model=STUDENT,
        dataset="mnist",
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=64 if args.smoke else 128,
        optimizer="adam",
        learning_rate=2e-3,
        weight_decay=0.05,
        warmup_epochs=0 if args.smoke else 1,
        max_shift=1,
        eval_every=args.eval_every,
        checkpoint_every=4,
        **changes,
    )


def teacher_config(args) -> RunConfig:
    warmup = 0 if args.smoke else 2
    return dataclasses.replace(
        base_config(args), model=args.teacher_model, epochs=args.teacher_epochs, warmup_epochs=warmup
    )


def student_config(args, row: str, seed: int, teacher_dir: pathlib.Path) -> RunConfig:
    methods = ROWS[row][1]
    if methods == ("ce",):
        return base_config(args, seed=seed)
    return base_config(args, seed=seed, teacher=str(teacher_dir.absolute()), methods=methods, temperature=4.0)


def last_attention(run_dirs, dataset, images, batch: int = 500) -> list[np.ndarray]:
    """For each finished run in ``run_dirs`` (one model), the attention of its last block on
    ``images``, [N, heads, tokens, tokens]; one compiled forward serves every run."""
    runs = [load_teacher(str(d), dataset) for d in run_dirs]
    depth = sum(name.startswith("attn") for name in runs[0].shapes)
    graphdef = runs[0].graphdef
    forward = jax.jit(lambda variables, x: teacher_forward(graphdef, variables, x)[1][f"attn{depth}"])
    return [
        np.concatenate(
            [
                jax.device_get(forward(r.variables, images[i : i + batch]))
                for i in range(0, len(images), batch)
            ]
        )
        for r in runs
    ]


def attention_gap(student: np.ndarray, teacher: np.ndarray) -> float:
    """Mean over images of ``attention_kl`` (teacher heads mapped onto the student's)."""
    return float(np.mean(losses.attention_kl(student, teacher)))


def render(results: dict) -> str:
    t = results["teacher"]
    rows = [[f"teacher {t['model']} ({t['params']:,} parameters)", mean_std([t["accuracy"]]), "", "", 1]]
    for name, r in results["rows"].items():
        rows.append(
            [
                ROWS[name][0],
                mean_std(r["accuracy"]),
                mean_std(r["agreement"]) if r["agreement"] else "",
                mean_std(r["attention_kl"], scale=1.0, digits=3),
                len(r["accuracy"]),
            ]
        )
    headers = [
        "model",
        "test accuracy (%)",
        "agreement with teacher (%)",
        "last-block attention KL to teacher",
        "seeds",
    ]
    text = (
        f"MNIST ({results['train_size']:,} training images, {results['test_size']:,} test images); "
        f"student {STUDENT} ({results['student_params']:,} parameters), {results['epochs']} epochs; "
        f"teacher {results['teacher_epochs']} epochs. Mean +- std over seeds. Training time: "
        f"teacher {t['train_seconds']:.0f} s, students {results['student_train_seconds']:.0f} s in all.\n\n"
    )
    return text + markdown_table(headers, rows)


def plot_attention(image, maps: dict, path: pathlib.Path) -> None:
    """Row per model: the image, then the class token's attention over the patches, per head."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 1 + max(m.shape[0] for m in maps.values())
    fig, axes = plt.subplots(len(maps), cols, figsize=(1.8 * cols, 1.9 * len(maps)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, (label, attn) in enumerate(maps.items()):
        axes[row, 0].imshow(image[..., 0], cmap="gray")
        axes[row, 0].set_title(label, fontsize=7, loc="left")
        side = math.isqrt(attn.shape[-1] - 1)
        for h, head in enumerate(attn):
            # Row 0 is the class token's query; column 0 its attention to itself (given in the title).
            axes[row, h + 1].imshow(head[0, 1:].reshape(side, side), cmap="viridis", vmin=0)
            axes[row, h + 1].set_title(f"head {h + 1} (cls {head[0, 0]:.2f})", fontsize=7)
    fig.suptitle(
        "class token's attention over the 7x7-pixel patches, last block (each panel scaled to its maximum; "
        "cls: its attention to itself)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check_data(out: pathlib.Path, data: dict) -> None:
    """The run directories do not record the training subset: refuse to mix subsets in ``out``."""
    path = out / "data.json"
    if path.exists() and json.loads(path.read_text()) != data:
        raise SystemExit(f"{out} holds runs on other data ({path.read_text().strip()}); use another --out")
    path.write_text(json.dumps(data) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="MNIST IDX files; default: tensorflow-datasets")
    parser.add_argument("--out", default="runs/vit_attention_mnist")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=12000, help="first N MNIST training images")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=12, help="student epochs")
    parser.add_argument("--eval-every", type=int, default=2, help="epochs between test evaluations")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"tiny data, 1 epoch, 1 seed, a {STUDENT} teacher: tests the pipeline",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    args.teacher_model = TEACHER
    if args.smoke:  # the student's architecture as the teacher, too: compiling is most of a smoke run
        args.seeds, args.train_size, args.teacher_epochs, args.epochs = 1, SMOKE_TRAIN, 1, 1
        args.teacher_model = STUDENT
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    dataset = load_dataset("mnist", args.data_dir)
    test_size = SMOKE_TEST if args.smoke else len(dataset.y_test)
    dataset = dataset.first(args.train_size, test_size)
    check_data(out, {"train_size": len(dataset.y_train), "test_size": test_size})

    def run(config: RunConfig, name: str) -> dict:
        return fit(config, out / name, dataset=dataset, progress=not args.quiet, label=name)

    teacher_dir = out / "teacher"
    teacher = run(teacher_config(args), "teacher")
    summaries = {
        row: [run(student_config(args, row, s, teacher_dir), f"{row}/seed{s}") for s in range(args.seeds)]
        for row in ROWS
    }

    (teacher_attn,) = last_attention([teacher_dir], dataset, dataset.x_test)
    dirs = [out / row / f"seed{s}" for row in ROWS for s in range(args.seeds)]
    attentions = iter(last_attention(dirs, dataset, dataset.x_test))
    students = {row: [next(attentions) for _ in range(args.seeds)] for row in ROWS}
    results = {
        "train_size": len(dataset.y_train),
        "test_size": test_size,
        "epochs": args.epochs,
        "teacher_epochs": args.teacher_epochs,
        "student_params": summaries["alone"][0]["params"],
        "teacher": {
            "model": args.teacher_model,
            "accuracy": teacher["test/accuracy"],
            "params": teacher["params"],
            "train_seconds": teacher["train_seconds"],
        },
        "rows": {
            row: {
                "accuracy": [s["test/accuracy"] for s in summaries[row]],
                "agreement": [s["test/agreement"] for s in summaries[row] if "test/agreement" in s],
                "attention_kl": [attention_gap(a, teacher_attn) for a in students[row]],
                "train_seconds": [s["train_seconds"] for s in summaries[row]],
            }
            for row in ROWS
        },
    }
    results["student_train_seconds"] = sum(sum(r["train_seconds"]) for r in results["rows"].values())
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (out / "table.md").write_text(table)

    student_heads = students["kd"][0].shape[1]
    maps = {
        f"teacher {args.teacher_model}": teacher_attn[PLOT_IMAGE],
        f"teacher, mapped onto {student_heads} heads": np.asarray(
            losses.map_heads(teacher_attn[PLOT_IMAGE : PLOT_IMAGE + 1], student_heads)[0]
        ),
        **{f"student: {ROWS[row][0]}, seed 0": students[row][0][PLOT_IMAGE] for row in ("kd", "kd_at")},
    }
    plot_attention(dataset.x_test[PLOT_IMAGE], maps, out / "attention_maps.png")
    plot_learning_curves(
        {ROWS[row][0]: [out / row / f"seed{s}" for s in range(args.seeds)] for row in ROWS},
        out / "curves.png",
        title=f"{STUDENT} students of a {args.teacher_model} teacher on MNIST",
    )
    print(table)


if __name__ == "__main__":
    main()

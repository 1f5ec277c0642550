"""Generative latent mapping on MNIST: a VAE teacher, and smaller students that learn its encoder
(image -> latent point) and decoder (latent point -> image) from teacher-generated pairs only.

- **Teacher**: an MLP VAE, 784-512-256-(16 + 16) encoder and 16-256-512-784 Bernoulli decoder,
  latent size 16, trained on the MNIST training images (pixel intensities as Bernoulli targets) for
  12 epochs with Adam at 1e-3 on a cosine schedule, batch 128, the negative ELBO.
- **Students**: an encoder and a decoder with one hidden layer of 128 (and, to show the size
  trade-off, of 32) ReLU units. Each step draws 128 fresh latent points ``z ~ N(0, I)`` and the
  teacher decoder's mean images ``x_t = sigmoid(decoder(z))``; the encoder regresses ``z`` from
  ``x_t`` (squared error), the decoder matches the teacher's per-pixel Bernoulli distributions from
  ``z`` (KL, i.e. cross-entropy on the teacher's soft pixels). 3,000 Adam steps at 1e-3, cosine.
  The students never see a real image.
- **A fixed MNIST classifier**: LeNet-5 trained on the real training set (3 epochs, Adam 2e-3),
  scores teacher and student samples decoded from the same latent points.

Evaluation on 10,000 held-out latent points (a fixed key no training step draws from) and on the
10,000 MNIST test images. Hyperparameters are common defaults (Adam 1e-3, batch 128), not tuned;
the test set is used only for the reported numbers.

    python experiments/generative_mapping_mnist.py --data-dir ../shared/data/mnist --out runs/generative_mapping
        # about 15 minutes on 2 idle CPU cores (estimated from an idle teacher epoch of 18 s and
        # 500 student steps of 22 s); measured 24 min for 1 seed + 20 min to add seeds 1-2 while
        # the 2 cores ran at a load average of 10-17: teacher 573 s, LeNet-5 163 s, students
        # 229-268 s (h128) and 74-195 s (h32) of training each, evaluation 2-3 min
    python experiments/generative_mapping_mnist.py --data-dir DIR --out DIR --smoke   # the pipeline in seconds

Every training run is a run directory under ``--out`` (``teacher``, ``classifier``,
``student_h128/seed0``, ...): re-running resumes and skips finished runs. Writes ``table.md``,
``results.json``, ``samples.png`` (teacher vs student samples from the same latent points; real
test images encoded by the teacher and by the students) and ``curves.png`` to ``--out``.
"""

import argparse
import json
import pathlib

import jax
import numpy as np

from jdistill.data import load_dataset
from jdistill.generative import (
    MappingConfig,
    VAEConfig,
    classifier_scores,
    heldout_latents,
    load_mapping,
    load_vae,
    mapping_metrics,
    real_image_metrics,
    save_grid,
    throughput,
    train_mapping,
    train_vae,
)
from jdistill.models import count_params
from jdistill.report import markdown_table, mean_std
from jdistill.train import RunConfig, RunDir, fit, load_teacher, teacher_forward

STUDENTS = {"h128": (128,), "h32": (32,)}  # name -> hidden widths of the student's encoder and decoder
SMOKE_STUDENTS = {"h32": (32,)}
SMOKE_TRAIN, SMOKE_TEST = 384, 200  # examples kept by --smoke
GRID = 12  # images per row of the sample grid


def configs(args, data_dir: str | None):
    smoke = args.smoke
    vae = VAEConfig(
        data_dir=data_dir, epochs=1 if smoke else args.teacher_epochs, batch_size=64 if smoke else 128
    )
    classifier = RunConfig(
        model="mlp32" if smoke else "lenet5",
        dataset="mnist",
        data_dir=data_dir,
        epochs=1 if smoke else 3,
        optimizer="adam",
        learning_rate=2e-3,
        batch_size=64 if smoke else 128,
    )
    students = {
        (name, seed): MappingConfig(
            teacher=str(pathlib.Path(args.out) / "teacher"),
            encoder_widths=widths,
            decoder_widths=widths,
            epochs=2 if smoke else args.student_epochs,
            steps_per_epoch=5 if smoke else 500,
            batch_size=32 if smoke else 128,
            eval_points=100 if smoke else 2000,
            seed=seed,
        )
        for name, widths in (SMOKE_STUDENTS if smoke else STUDENTS).items()
        for seed in range(args.seeds)
    }
    return vae, classifier, students


def _images(model):
    """Latent points -> the model's mean images."""
    return lambda z: jax.nn.sigmoid(model.decoder(z))


def evaluate(
    out: pathlib.Path, students: dict, dataset, classifier_dir, *, n_points: int, smoke: bool
) -> dict:
    """Fidelity, classifier scores and throughput of every student against the teacher."""
    teacher, teacher_config, _ = load_vae(out / "teacher")
    t = teacher.module()
    z = heldout_latents(n_points, teacher_config.latent_dim)
    x_test = dataset.x_test.astype(np.float32)
    classifier = load_teacher(str(classifier_dir), dataset)
    probs_of = jax.jit(
        lambda x: jax.nn.softmax(teacher_forward(classifier.graphdef, classifier.variables, x)[0])
    )

    def probabilities(images):
        return np.concatenate(
            [np.asarray(probs_of(images[i : i + 1000])) for i in range(0, len(images), 1000)]
        )

    teacher_images = np.asarray(jax.jit(_images(t))(z))
    teacher_probs = probabilities(teacher_images)
    teacher_labels = teacher_probs.argmax(-1)
    speed = {"repeats": 1 if smoke else 5, "min_seconds": 0.02 if smoke else 0.3}
    bench_z, bench_x = z[:1000], teacher_images[:1000]
    results = {
        "teacher": {
            "encoder_params": count_params(t.encoder),
            "decoder_params": count_params(t.decoder),
            "classifier": classifier_scores(teacher_probs),
            "decoder_images_per_s": throughput(_images(t), bench_z, **speed),
            "encoder_images_per_s": throughput(lambda x: t.encode(x)[0], bench_x, **speed),
        },
        "real_test_images": {"classifier": classifier_scores(probabilities(x_test))},
        "classifier_summary": RunDir(classifier_dir).summary(),
        "students": {},
    }
    for (name, seed), config in students.items():
        student, _ = load_mapping(out / f"student_{name}" / f"seed{seed}")
        s = student.module()
        student_images = np.asarray(jax.jit(_images(s))(z))
        student_probs = probabilities(student_images)
        scores = classifier_scores(student_probs)
        scores["agreement_with_teacher"] = float(np.mean(student_probs.argmax(-1) == teacher_labels))
        entry = results["students"].setdefault(name, {"widths": list(config.encoder_widths), "seeds": []})
        entry["encoder_params"], entry["decoder_params"] = count_params(s.encoder), count_params(s.decoder)
        entry["seeds"].append(
            {
                "seed": seed,
                **mapping_metrics(teacher, student, z),
                **real_image_metrics(teacher, student, x_test),
                "classifier": scores,
                "decoder_images_per_s": throughput(_images(s), bench_z, **speed),
                "encoder_images_per_s": throughput(s.encoder, bench_x, **speed),
                "train_seconds": RunDir(out / f"student_{name}" / f"seed{seed}").summary()["train_seconds"],
            }
        )
    return results


def grids(out: pathlib.Path, students: dict, dataset, path: pathlib.Path) -> None:
    """``samples.png``: the same latent points decoded by the teacher and by each student (seed 0);
    real test images and their reconstructions through the teacher's and the students' encoders."""
    teacher, teacher_config, _ = load_vae(out / "teacher")
    t = teacher.module()
    z = heldout_latents(GRID, teacher_config.latent_dim)
    x = dataset.x_test[:GRID].astype(np.float32)
    sig = jax.nn.sigmoid
    rows = {"teacher decoder(z)": sig(t.decoder(z))}
    recon = {"real test image": x, "teacher dec(teacher enc(x))": sig(t.decoder(t.encode(x)[0]))}
    for name in dict.fromkeys(name for name, _ in students):
        student, _ = load_mapping(out / f"student_{name}" / "seed0")
        s = student.module()
        rows[f"student {name} decoder(z)"] = sig(s.decoder(z))
        recon[f"teacher dec(student {name} enc(x))"] = sig(t.decoder(s.encoder(x)))
        recon[f"student {name} dec(enc(x))"] = sig(s.decoder(s.encoder(x)))
    save_grid(path, {**rows, **recon}, title="top: the same latent points; bottom: real test images")


def curves(out: pathlib.Path, students: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    teacher = RunDir(out / "teacher").metrics()
    axes[0].plot([m["epoch"] for m in teacher], [m["test/neg_elbo"] for m in teacher], marker="o")
    axes[0].set(xlabel="epoch", ylabel="nats per image", title="teacher: test negative ELBO")
    panels = [
        (axes[1], "test/encoder/unexplained", "student encoder: latent MSE / var(z)"),
        (axes[2], "test/decoder/kl", "student decoder: KL to the teacher"),
    ]
    for ax, metric, title in panels:
        for name, seed in students:
            lines = RunDir(out / f"student_{name}" / f"seed{seed}").metrics()
            ax.plot([m["step"] for m in lines], [m[metric] for m in lines], label=f"{name} seed {seed}")
        ax.set(xlabel="student step", yscale="log", title=title)
        ax.legend(fontsize=7)
    axes[2].set_ylabel("nats per image")
    reference = lines[-1]["test/teacher_encoder/unexplained"]  # the same for every student
    axes[1].axhline(reference, color="gray", ls="--", label="teacher encoder mean")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _stat(seeds: list[dict], key: str, digits: int = 4) -> str:
    values = [s[key] for s in seeds]
    return mean_std(values, scale=1.0, digits=digits)


def render(results: dict) -> str:
    teacher, students = results["teacher"], results["students"]
    n = results["heldout_points"]
    first = next(iter(students.values()))["seeds"][:1]  # the teacher's reference: the same for every student
    fidelity_rows = [
        [
            "teacher encoder mean (reference)",
            _stat(first, "teacher_encoder/latent_mse"),
            _stat(first, "teacher_encoder/unexplained"),
            "",
            "",
            _stat(first, "roundtrip/teacher_encoder", 5),
            "",
        ]
    ]
    for name, r in students.items():
        s = r["seeds"]
        fidelity_rows.append(
            [
                f"student {name} ({len(s)} seed{'s' * (len(s) > 1)})",
                _stat(s, "encoder/latent_mse"),
                _stat(s, "encoder/unexplained"),
                _stat(s, "decoder/pixel_mse", 5),
                _stat(s, "decoder/kl", 2),
                _stat(s, "roundtrip/student_encoder", 5),
                _stat(s, "real/encoder_unexplained"),
            ]
        )
    text = (
        f"VAE teacher (latent {results['latent_dim']}, test negative ELBO "
        f"{results['teacher_summary']['test/neg_elbo']:.2f} nats, {results['teacher_active_dims']} "
        f"active latent dimensions) and students trained on teacher-generated pairs only. Fidelity on "
        f"{n:,} held-out latent points z and the teacher's mean images x_t = sigmoid(decoder(z)); 'real' columns on the "
        f"{results['test_images']:,} MNIST test images.\n\n"
    )
    text += markdown_table(
        [
            "encoder / decoder",
            "latent MSE per dim",
            "latent MSE / var(z)",
            "decoder pixel MSE vs teacher",
            "decoder KL (nats/image)",
            "round trip: teacher dec(enc(x_t)) pixel MSE",
            "real images: MSE / var to teacher means",
        ],
        fidelity_rows,
    )
    recon = [["teacher dec(teacher enc(x))", _stat(first, "real/recon_teacher", 5)]]
    for name, r in students.items():
        recon.append(
            [f"teacher dec(student {name} enc(x))", _stat(r["seeds"], "real/recon_student_encoder", 5)]
        )
        recon.append(
            [f"student {name} dec(student {name} enc(x))", _stat(r["seeds"], "real/recon_student", 5)]
        )
    text += "\nReconstruction of the real test images (pixel MSE against the image):\n\n"
    text += markdown_table(["path", "pixel MSE"], recon)

    size_rows = [
        [
            "teacher",
            f"{teacher['encoder_params']:,}",
            f"{teacher['decoder_params']:,}",
            f"{teacher['encoder_images_per_s']:,.0f}",
            f"{teacher['decoder_images_per_s']:,.0f}",
            "",
        ]
    ]
    for name, r in students.items():
        enc = np.median([s["encoder_images_per_s"] for s in r["seeds"]])
        dec = np.median([s["decoder_images_per_s"] for s in r["seeds"]])
        size_rows.append(
            [
                f"student {name}",
                f"{r['encoder_params']:,} ({teacher['encoder_params'] / r['encoder_params']:.1f}x smaller)",
                f"{r['decoder_params']:,} ({teacher['decoder_params'] / r['decoder_params']:.1f}x smaller)",
                f"{enc:,.0f} ({enc / teacher['encoder_images_per_s']:.1f}x)",
                f"{dec:,.0f} ({dec / teacher['decoder_images_per_s']:.1f}x)",
                f"{np.mean([s['train_seconds'] for s in r['seeds']]):.0f}",
            ]
        )
    text += (
        "\nSize and speed (jitted, batch of 1,000, median of repeated timings on this CPU; "
        f"{results['speed_note']}):\n\n"
    )
    text += markdown_table(
        ["model", "encoder params", "decoder params", "encoder img/s", "decoder img/s", "train s"], size_rows
    )

    c = results["classifier_summary"]
    score_rows = []
    for label, scores in [
        ("real test images", results["real_test_images"]["classifier"]),
        ("teacher samples", teacher["classifier"]),
    ]:
        score_rows.append([label, f"{scores['confidence']:.4f}", f"{scores['class_entropy']:.4f}",
                           f"{scores['inception_score']:.3f}", ""])  # fmt: skip
    for name, r in students.items():
        s = [x["classifier"] for x in r["seeds"]]
        score_rows.append(
            [
                f"student {name} samples",
                _stat(s, "confidence"),
                _stat(s, "class_entropy"),
                _stat(s, "inception_score", 3),
                mean_std([x["agreement_with_teacher"] for x in s]),
            ]
        )
    text += (
        f"\nA fixed {c['model']} classifier (test accuracy {100 * c['test/accuracy']:.2f} %) on samples "
        f"decoded from the same "
        f"{n:,} latent points (mean images; max entropy of the class histogram ln 10 = 2.3026):\n\n"
    )
    text += markdown_table(
        ["images", "confidence", "class-histogram entropy", "inception score", "same label as teacher (%)"],
        score_rows,
    )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="MNIST IDX files; default: tensorflow-datasets")
    parser.add_argument("--out", default="runs/generative_mapping")
    parser.add_argument("--teacher-epochs", type=int, default=12)
    parser.add_argument("--student-epochs", type=int, default=6, help="of 500 steps each")
    parser.add_argument("--seeds", type=int, default=3, help="student seeds (one teacher)")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_TRAIN} training images, a few steps")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    dataset = load_dataset("mnist", args.data_dir)
    if args.smoke:
        dataset = dataset.first(SMOKE_TRAIN, SMOKE_TEST)
    vae, classifier, students = configs(args, args.data_dir)
    progress = not args.quiet
    teacher_summary = train_vae(vae, out / "teacher", dataset=dataset, progress=progress)
    fit(classifier, str(out / "classifier"), dataset=dataset, progress=progress, label="classifier lenet5")
    for (name, seed), config in students.items():
        train_mapping(
            config, out / f"student_{name}" / f"seed{seed}", progress=progress, label=f"{name}/seed{seed}"
        )

    n_points = 500 if args.smoke else 10_000
    results = evaluate(out, students, dataset, out / "classifier", n_points=n_points, smoke=args.smoke)
    _, teacher_config, _ = load_vae(out / "teacher")
    first = next(iter(results["students"].values()))["seeds"][0]
    results.update(
        latent_dim=teacher_config.latent_dim,
        heldout_points=n_points,
        test_images=len(dataset.y_test),
        teacher_summary=teacher_summary,
        teacher_active_dims=first["real/active_dims"],
        speed_note=f"{jax.device_count()} CPU device(s), measured while the machine may have been shared",
    )
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (out / "table.md").write_text(table)
    grids(out, students, dataset, out / "samples.png")
    curves(out, students, out / "curves.png")
    print(table)


if __name__ == "__main__":
    main()

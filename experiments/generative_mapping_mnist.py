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

    python experiments/generative_mapping_mnist.py --data-dir ../shared/data/mnist \\
        --out runs/generative_mapping
        # 6.6 min on 2 CPU cores, idle but for a short run in the first 1.3 min (2026-12-03):
        # teacher 102 s, LeNet-5 23 s, students 31-34 s (h128) and 27-32 s (h32) of training each;
        # with jdistill 0.1's loop on cores at a load average of 10-17, 24 min for 1 seed + 20 min
        # to add seeds 1-2
    python experiments/generative_mapping_mnist.py --data-dir DIR --out DIR --smoke  # the pipeline in seconds

Runs ``teacher``, ``classifier``, ``student_h128/seed0``, ...; ``results.json`` holds each run's
summary with its evaluation. ``samples.png``: teacher vs student samples from the same latent points,
and real test images encoded by the teacher and by the students; ``curves.png``: the training curves.
"""

import jax
import numpy as np

from jdistill.experiment import Experiment, Run, main
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
)
from jdistill.report import evaluated, markdown_table, mean_std
from jdistill.train import RunConfig, RunDir, load_teacher, teacher_forward

STUDENTS = {"h128": (128,), "h32": (32,)}  # name -> hidden widths of the student's encoder and decoder
SMOKE_STUDENTS = {"h32": (32,)}
GRID = 12  # images per row of the sample grid


def runs(options):
    a, smoke, data_dir = options.args, options.smoke, options.data_dir
    batch = 64 if smoke else 128
    vae = VAEConfig(data_dir=data_dir, epochs=1 if smoke else a.teacher_epochs, batch_size=batch)
    yield Run("teacher", vae, "teacher")
    classifier = RunConfig(model="mlp32" if smoke else "lenet5", dataset="mnist", data_dir=data_dir,
                           epochs=1 if smoke else 3, optimizer="adam", learning_rate=2e-3,
                           batch_size=batch)  # fmt: skip
    yield Run("classifier", classifier, "classifier")
    for name, widths in (SMOKE_STUDENTS if smoke else STUDENTS).items():
        for seed in options.seeds:
            config = MappingConfig(teacher=str(options.out / "teacher"), encoder_widths=widths,
                                   decoder_widths=widths, epochs=2 if smoke else a.student_epochs,
                                   steps_per_epoch=5 if smoke else 500, batch_size=32 if smoke else 128,
                                   eval_points=100 if smoke else 2000, seed=seed)  # fmt: skip
            yield Run(f"student_{name}/seed{seed}", config, name)


def students(results) -> list[str]:
    return [name for name in results if name not in ("teacher", "classifier")]


def _images(model):
    """Latent points -> the model's mean images."""
    return lambda z: jax.nn.sigmoid(model.decoder(z))


def evaluate(results, options) -> None:
    """Adds to every summary in ``results`` (so to ``results.json``) its fidelity, classifier scores
    and throughput against the teacher, on held-out latent points and the test images."""
    out, dataset, smoke = options.out, options.dataset, options.smoke
    teacher, teacher_config, _ = load_vae(out / "teacher")
    t = teacher.module()
    n_points = 500 if smoke else 10_000
    z = heldout_latents(n_points, teacher_config.latent_dim)
    x_test = dataset.x_test.astype(np.float32)
    classifier = load_teacher(str(out / "classifier"), dataset)
    probs_of = jax.jit(
        lambda x: jax.nn.softmax(teacher_forward(classifier.graphdef, classifier.variables, x)[0])
    )

    def probabilities(images):
        return np.concatenate(
            [np.asarray(probs_of(images[i : i + 1000])) for i in range(0, len(images), 1000)]
        )

    teacher_images = np.asarray(jax.jit(_images(t))(z))
    teacher_probs = probabilities(teacher_images)
    speed = {"repeats": 1 if smoke else 5, "min_seconds": 0.02 if smoke else 0.3}
    bench_z, bench_x = z[:1000], teacher_images[:1000]
    results["classifier"][0]["real_test_images"] = classifier_scores(probabilities(x_test))
    results["teacher"][0].update(
        classifier=classifier_scores(teacher_probs),
        decoder_images_per_s=throughput(_images(t), bench_z, **speed),
        encoder_images_per_s=throughput(lambda x: t.encode(x)[0], bench_x, **speed),
        latent_dim=teacher_config.latent_dim,
        heldout_points=n_points,
        test_images=len(dataset.y_test),
        speed_note=f"{jax.device_count()} CPU device(s), measured while the machine may have been shared",
    )
    for summary in (s for name in students(results) for s in results[name]):
        student, _ = load_mapping(out / summary["run"])
        s = student.module()
        student_probs = probabilities(np.asarray(jax.jit(_images(s))(z)))
        scores = classifier_scores(student_probs)
        scores["agreement_with_teacher"] = float(
            np.mean(student_probs.argmax(-1) == teacher_probs.argmax(-1))
        )
        summary.update(
            **mapping_metrics(teacher, student, z),
            **real_image_metrics(teacher, student, x_test),
            classifier=scores,
            decoder_images_per_s=throughput(_images(s), bench_z, **speed),
            encoder_images_per_s=throughput(s.encoder, bench_x, **speed),
        )
    results["teacher"][0]["active_dims"] = results[students(results)[0]][0]["real/active_dims"]


def _stat(summaries: list[dict], key: str, digits: int = 4) -> str:
    return mean_std([s[key] for s in summaries], scale=1.0, digits=digits)


def table(results, options) -> str:
    evaluate(results, options)
    (teacher,), (c,), names = results["teacher"], results["classifier"], students(results)
    n, first = teacher["heldout_points"], results[names[0]][:1]  # the teacher's reference: in every student
    fidelity = [
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
    recon = [["teacher dec(teacher enc(x))", _stat(first, "real/recon_teacher", 5)]]
    size = [
        [
            "teacher",
            f"{teacher['encoder_params']:,}",
            f"{teacher['decoder_params']:,}",
            f"{teacher['encoder_images_per_s']:,.0f}",
            f"{teacher['decoder_images_per_s']:,.0f}",
            "",
        ]
    ]
    scores = [
        [label, f"{s['confidence']:.4f}", f"{s['class_entropy']:.4f}", f"{s['inception_score']:.3f}", ""]
        for label, s in [
            ("real test images", c["real_test_images"]),
            ("teacher samples", teacher["classifier"]),
        ]
    ]
    for name in names:
        s = results[name]
        fidelity.append(
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
        recon += [
            [f"teacher dec(student {name} enc(x))", _stat(s, "real/recon_student_encoder", 5)],
            [f"student {name} dec(student {name} enc(x))", _stat(s, "real/recon_student", 5)],
        ]
        enc, dec = (np.median([x[f"{part}_images_per_s"] for x in s]) for part in ("encoder", "decoder"))
        size.append(
            [
                f"student {name}",
                *(
                    f"{s[0][k]:,} ({teacher[k] / s[0][k]:.1f}x smaller)"
                    for k in ("encoder_params", "decoder_params")
                ),
                f"{enc:,.0f} ({enc / teacher['encoder_images_per_s']:.1f}x)",
                f"{dec:,.0f} ({dec / teacher['decoder_images_per_s']:.1f}x)",
                f"{np.mean([x['train_seconds'] for x in s]):.0f}",
            ]
        )
        k = [x["classifier"] for x in s]
        scores.append(
            [
                f"student {name} samples",
                _stat(k, "confidence"),
                _stat(k, "class_entropy"),
                _stat(k, "inception_score", 3),
                mean_std([x["agreement_with_teacher"] for x in k]),
            ]
        )
    return (
        f"VAE teacher (latent {teacher['latent_dim']}, test negative ELBO {teacher['test/neg_elbo']:.2f} "
        f"nats, {teacher['active_dims']} active latent dimensions) and students trained on teacher-generated "
        f"pairs only. Fidelity on {n:,} held-out latent points z and the teacher's mean images x_t = "
        f"sigmoid(decoder(z)); 'real' columns on the {teacher['test_images']:,} MNIST test images.\n\n"
        + markdown_table(
            [
                "encoder / decoder",
                "latent MSE per dim",
                "latent MSE / var(z)",
                "decoder pixel MSE vs teacher",
                "decoder KL (nats/image)",
                "round trip: teacher dec(enc(x_t)) pixel MSE",
                "real images: MSE / var to teacher means",
            ],
            fidelity,
        )
        + "\nReconstruction of the real test images (pixel MSE against the image):\n\n"
        + markdown_table(["path", "pixel MSE"], recon)
        + "\nSize and speed (jitted, batch of 1,000, median of repeated timings on this CPU; "
        f"{teacher['speed_note']}):\n\n"
        + markdown_table(
            ["model", "encoder params", "decoder params", "encoder img/s", "decoder img/s", "train s"], size
        )
        + f"\nA fixed {c['model']} classifier (test accuracy {100 * evaluated(c):.2f} %) on samples decoded "
        f"from the same {n:,} latent points (mean images; max entropy of the class histogram ln 10 = "
        "2.3026):\n\n"
        + markdown_table(
            [
                "images",
                "confidence",
                "class-histogram entropy",
                "inception score",
                "same label as teacher (%)",
            ],
            scores,
        )
    )


def plots(results, options) -> None:
    """``samples.png``: the same latent points decoded by the teacher and by each student (seed 0);
    real test images and their reconstructions through the teacher's and the students' encoders.
    ``curves.png``: the teacher's test negative ELBO and the students' held-out errors."""
    out = options.out
    teacher, teacher_config, _ = load_vae(out / "teacher")
    t = teacher.module()
    z = heldout_latents(GRID, teacher_config.latent_dim)
    x = options.dataset.x_test[:GRID].astype(np.float32)
    sig = jax.nn.sigmoid
    rows = {"teacher decoder(z)": sig(t.decoder(z))}
    recon = {"real test image": x, "teacher dec(teacher enc(x))": sig(t.decoder(t.encode(x)[0]))}
    for name in students(results):
        s = load_mapping(out / results[name][0]["run"])[0].module()
        rows[f"student {name} decoder(z)"] = sig(s.decoder(z))
        recon[f"teacher dec(student {name} enc(x))"] = sig(t.decoder(s.encoder(x)))
        recon[f"student {name} dec(enc(x))"] = sig(s.decoder(s.encoder(x)))
    save_grid(
        out / "samples.png", {**rows, **recon}, title="top: the same latent points; bottom: real test images"
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    elbo = RunDir(out / "teacher").metrics()
    axes[0].plot([m["epoch"] for m in elbo], [m["test/neg_elbo"] for m in elbo], marker="o")
    axes[0].set(xlabel="epoch", ylabel="nats per image", title="teacher: test negative ELBO")
    panels = [
        (axes[1], "test/encoder/unexplained", "student encoder: latent MSE / var(z)"),
        (axes[2], "test/decoder/kl", "student decoder: KL to the teacher"),
    ]
    for ax, metric, title in panels:
        for s in (s for name in students(results) for s in results[name]):
            lines = RunDir(out / s["run"]).metrics()
            ax.plot(
                [m["step"] for m in lines],
                [m[metric] for m in lines],
                label=s["run"].removeprefix("student_").replace("/seed", " seed "),
            )
        ax.set(xlabel="student step", yscale="log", title=title)
        ax.legend(fontsize=7)
    axes[2].set_ylabel("nats per image")
    reference = lines[-1]["test/teacher_encoder/unexplained"]  # the same for every student
    axes[1].axhline(reference, color="gray", ls="--", label="teacher encoder mean")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def add_options(parser):
    parser.add_argument("--teacher-epochs", type=int, default=12)
    parser.add_argument("--student-epochs", type=int, default=6, help="of 500 steps each")


EXPERIMENT = Experiment(__doc__, "mnist", runs, table, plots, add_options, smoke={},
                        smoke_examples=(384, 200), default_out="runs/generative_mapping")  # fmt: skip

if __name__ == "__main__":
    main(EXPERIMENT)

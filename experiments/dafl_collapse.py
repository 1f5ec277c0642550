"""How DAFL's generator collapses, and whether a changed setting stops it: one DAFL run (LeNet-5 ->
LeNet-5-half on MNIST, ``data_free_mnist.py``'s configuration) up to its checkpoint of epoch
``--branch-at``, then branches from that checkpoint, each playing ``--branch-epochs`` more epochs:
one unchanged, one per ``--set FIELD=VALUE`` (a :class:`DataFreeConfig` field; the rest as the
run's; a learning rate too, though the optimizer state holds it). A branch plays the very rounds
the unchanged run would (same round keys, same noise), so it differs from it only by its setting.

    python experiments/dafl_collapse.py --data-dir ../shared/data/mnist --out runs/dafl_collapse \\
        --branch-at 45 --branch-epochs 10 --set information_entropy_weight=10 \\
        --set activation_weight=0 --set generator_learning_rate=0.02
        # the CPU configuration's seed 0, which collapses by iteration 2,500 (epoch 50), branched at
        # iteration 2,250; 85 epochs of 50 iterations in all, 60 min of training on 2 CPU cores (README)

Writes ``table.md`` (the run's generated-image statistics every ``--every`` epochs up to the
branch point, then every branch's at each of its epochs, and where each collapsed) and
``trajectory.png``; runs ``teacher_dafl`` (unless ``--teacher``), ``base`` and one directory per
branch, each resumable (a branch directory records in ``branched_from.json`` the run, the epoch and
the fields it changed). Collapse: the teacher's class histogram on generated samples has an
entropy of at most 0.05 (:data:`jdistill.adversarial.inspection.COLLAPSED`).
"""

import argparse
import json
import pathlib
import shutil
import sys

import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from data_free_mnist import CONFIGS  # noqa: E402

from jdistill.adversarial.data_free import DataFreeConfig, paper_teacher, teacher_dataset  # noqa: E402
from jdistill.adversarial.inspection import COLLAPSED, collapse_iteration  # noqa: E402
from jdistill.data import load_dataset  # noqa: E402
from jdistill.report import markdown_table  # noqa: E402
from jdistill.train import RunDir, checkpoint, fit, load_teacher  # noqa: E402

SHOWN = ("test/accuracy", "generated/class_entropy", "generated/tanh_std", "generated/tanh_saturation",
         "generated/max_abs_pixel", "generated/teacher_abs_logit", "train/generator/one_hot",
         "train/generator/information_entropy")  # fmt: skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="MNIST's IDX files")
    parser.add_argument("--out", required=True, help="folder of the runs and the table")
    parser.add_argument(
        "--config", choices=sorted(CONFIGS), default="cpu", help="data_free_mnist.py's setting"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher", help="a finished DAFL teacher's run directory (default: train one)")
    parser.add_argument("--branch-at", type=int, required=True, help="the epoch whose checkpoint branches")
    parser.add_argument("--branch-epochs", type=int, default=4, help="epochs each branch plays")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="one branch with this DataFreeConfig field changed (repeat for more branches)")  # fmt: skip
    parser.add_argument("--every", type=int, default=5, help="epochs between the run's rows in table.md")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.branch_at < 1 or args.branch_epochs < 1 or args.every < 1:
        parser.error("--branch-at, --branch-epochs and --every must be at least 1")
    try:
        args.changes = {branch_name(text): changes(text) for text in args.set}
    except ValueError as error:
        parser.error(str(error))
    return args


def branch_name(text: str) -> str:
    return text.replace("/", "_")


FIXED = ("method", "teacher", "seed", "iterations", "iterations_per_epoch")  # what makes the rounds the run's


def changes(text: str) -> dict:
    """``"FIELD=VALUE"`` -> ``{FIELD: VALUE}``, the value read as JSON (a number, true/false) or else
    kept as text; the fields that make a branch's rounds the run's own (:data:`FIXED`) are refused."""
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise ValueError(f"--set takes FIELD=VALUE, got {text!r}")
    if field in FIXED:
        raise ValueError(
            f"--set cannot change {field}: a branch plays the run's own rounds from its checkpoint"
        )
    try:
        return {field: json.loads(value)}
    except json.JSONDecodeError:
        return {field: value}


def config_of(args, teacher: str, epochs: int, **changed) -> DataFreeConfig:
    fields = {**CONFIGS[args.config].data_free["dafl"], **changed}
    per_epoch = fields.get("iterations_per_epoch", 50)
    fields["iterations"] = epochs * per_epoch
    return DataFreeConfig(teacher, "dafl", data_dir=args.data_dir, image_size=CONFIGS[args.config].image_size,
                          init="torch", seed=args.seed, **fields)  # fmt: skip


def branch(
    base: pathlib.Path, target: pathlib.Path, epoch: int, config: DataFreeConfig, dataset, changed: dict
) -> None:
    """Start ``target`` as ``base`` up to its checkpoint of ``epoch``: that checkpoint and the
    metrics lines up to it (nothing if ``target`` already exists: it resumes as any run). The
    optimizer states keep each player's base learning rate (``optax.inject_hyperparams``), so the
    checkpoint is restored and saved again with ``config``'s rates: a changed rate takes effect."""
    if target.exists():
        return
    if not (base / "checkpoints" / str(epoch)).exists():
        raise ValueError(f"{base} has no checkpoint of epoch {epoch}")
    fresh = dict(config.build(dataset).players)
    state = checkpoint.restore(checkpoint.manager(base), fresh, epoch)
    rate = lambda player: optax.tree_utils.tree_get(player.opt_state, "learning_rate")  # noqa: E731
    state = {name: player.replace(opt_state=optax.tree_utils.tree_set(player.opt_state, learning_rate=rate(fresh[name])))
             for name, player in state.items()}  # fmt: skip
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    checkpoint.save(checkpoint.manager(staging), epoch, state)
    lines = [line for line in RunDir(base).metrics() if line["epoch"] <= epoch]
    (staging / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    record = {"run": str(base.resolve()), "epoch": epoch, "changed": changed}
    (staging / "branched_from.json").write_text(json.dumps(record, indent=2) + "\n")
    staging.rename(target)


def value(record: dict, key: str) -> str:
    v = record.get(key)
    if v is None:
        return ""
    return f"{100 * v:.2f}" if key == "test/accuracy" else f"{v:.3f}"


def blank_image(teacher: str, dataset) -> tuple[int, float]:
    """The teacher's class and mean ``|logit|`` on the blank image, 0 at every standardised pixel
    (each at the training set's mean): what a generator whose tanh outputs are all alike makes,
    since its last BatchNorm maps them to 0."""
    model = load_teacher(teacher, dataset).frozen.module().model
    logits = np.asarray(model(jnp.zeros((1, *dataset.input_shape)), train=False)[0][0])
    return int(np.argmax(logits)), float(np.mean(np.abs(logits)))


def report(out: pathlib.Path, args, names: list[str], blank: tuple[int, float]) -> str:
    base = RunDir(out / "base").metrics()
    head = ["run", "epoch", "iteration", *(k.split("/")[-1] for k in SHOWN)]
    rows = [["base", r["epoch"], r["step"], *(value(r, k) for k in SHOWN)]
            for r in base if r["epoch"] % args.every == 0 or r["epoch"] == args.branch_at]  # fmt: skip
    verdicts = []
    for name in names:
        metrics = RunDir(out / name).metrics()
        rows += [[name, r["epoch"], r["step"], *(value(r, k) for k in SHOWN)]
                 for r in metrics if r["epoch"] > args.branch_at]  # fmt: skip
        at = collapse_iteration([r for r in metrics if r["epoch"] > args.branch_at])
        verdicts.append(f"- {name}: " + (f"collapsed by iteration {at}" if at else "did not collapse"))
    return (
        f"# DAFL's collapse, branched at epoch {args.branch_at} ({args.config} configuration, seed {args.seed})\n\n"
        f"Generated-image statistics on the teacher (collapse: class entropy <= {COLLAPSED}); "
        f"`tanh_std` is the spread of the generator's tanh outputs that its last BatchNorm divides by; "
        f"`one_hot` and `information_entropy` are the generator's weighted terms, means over the epoch.\n\n"
        + markdown_table(head, rows)
        + "\n"
        + "\n".join(verdicts)
        + f"\n\nThe teacher on the blank image (every pixel at the training set's mean, 0 once standardised), "
        f"which a generator whose tanh outputs are all alike makes: class {blank[0]}, mean |logit| {blank[1]:.2f}.\n"
    )


def plot(out: pathlib.Path, names: list[str], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for name in ["base", *names]:
        metrics = RunDir(out / name).metrics()
        steps = [r["step"] for r in metrics]
        for ax, key in zip(axes, ("test/accuracy", "generated/tanh_std")):
            ax.plot(
                steps,
                [r.get(key, float("nan")) for r in metrics],
                label=name,
                lw=1.2 if name == "base" else 1,
            )
    axes[0].set_ylabel("student test accuracy")
    axes[1].set_ylabel("spread of the tanh outputs")
    axes[1].set_xlabel("iteration")
    axes[0].legend(fontsize=7)
    fig.suptitle("DAFL on MNIST: the run and its branches", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    progress = not args.quiet
    teacher = args.teacher or str(out / "teacher_dafl")
    branches = {"same": {}, **args.changes}
    try:  # every branch's configuration before any training: a bad field is named at once
        configs = {name: config_of(args, teacher, args.branch_at + args.branch_epochs, **changed)
                   for name, changed in branches.items()}  # fmt: skip
    except (TypeError, ValueError) as error:
        sys.exit(f"dafl_collapse.py: {error}")
    dataset = teacher_dataset(load_dataset("mnist", args.data_dir), CONFIGS[args.config].image_size)
    if args.teacher is None:
        epochs = CONFIGS[args.config].teacher_epochs
        recipe = paper_teacher("dafl", data_dir=args.data_dir, **({"epochs": epochs} if epochs else {}))
        fit(recipe, teacher, dataset=dataset, progress=progress, label="teacher_dafl")
    fit(
        config_of(args, teacher, args.branch_at),
        out / "base",
        dataset=dataset,
        progress=progress,
        label="base",
    )
    for name, changed in branches.items():
        branch(out / "base", out / name, args.branch_at, configs[name], dataset, changed)
        fit(configs[name], out / name, dataset=dataset, progress=progress, label=name)
    table = report(out, args, list(branches), blank_image(teacher, dataset))
    (out / "table.md").write_text(table)
    plot(out, list(branches), out / "trajectory.png")
    print(table)


if __name__ == "__main__":
    main()

"""The ``data-free``, ``adversarial-kd`` and ``online`` commands: options generated from their
configuration dataclasses' fields (``--field-name``, typed as the field, its default shown), each
command building its configuration and playing it with :func:`jdistill.train.fit`."""

import dataclasses
import json
import pathlib
import sys

from jdistill.cli_options import add_config_options, given_values, print_configuration

DATASET_HELP = (
    "data set: 'digits' (bundled with scikit-learn), 'mnist', 'cifar10', 'cifar100', or 'npz' "
    "(one .npz file with x_train, y_train, x_test, y_test)"
)
DATA_DIR_HELP = (
    "where the data set's files are: for mnist the directory of the four IDX .gz files, for cifar10/100 "
    "the extracted official python-format folder (cifar-10-batches-py/, cifar-100-python/) or its parent, "
    "for npz the file; without it, mnist and cifar come through tensorflow-datasets"
)
STEPS_PER_CALL_HELP = (
    "rounds run in one jitted call (lax.scan): the same metrics, less Python dispatch on an accelerator "
    "(keep 1 on the CPU); default: 1"
)


def add_run_options(parser, data_dir: bool = True, teacher: bool = True) -> None:
    """``--data-dir`` (unless the configuration has it), ``--out``, ``--steps-per-call``,
    ``--quiet``, ``--shard-teacher`` (where there is a teacher) and the options of several
    processes, common to every training command."""
    if data_dir:
        parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument(
        "--out",
        required=True,
        help="run directory (config.json, metrics.jsonl, checkpoints/, "
        "summary.json); re-running the same command there resumes from the last checkpoint",
    )
    parser.add_argument("--steps-per-call", type=int, default=1, help=STEPS_PER_CALL_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    if teacher:
        parser.add_argument(
            "--shard-teacher",
            action="store_true",
            help="each device holds 1/N of the frozen teacher (fully sharded) instead of all of it: for "
            "teachers larger than one device's memory; the same results",
        )
    add_process_options(parser)


def add_process_options(parser) -> None:
    """The options of a run in several processes (:mod:`jdistill.train.distributed`)."""
    several = parser.add_argument_group(
        "several processes (jax.distributed; every process runs the same command, process 0 writes --out)"
    )
    several.add_argument("--coordinator-address", default=None, metavar="HOST:PORT",
                         help="process 0's address, the same for every process")  # fmt: skip
    several.add_argument("--num-processes", type=int, default=None, metavar="N", help="processes in all")
    several.add_argument("--process-id", type=int, default=None, metavar="I", help="this process: 0..N-1")
    several.add_argument("--distributed", action="store_true",
                         help="take all three from the cluster's environment (SLURM, Open MPI, TPU pods, "
                         "Kubernetes), as jax.distributed.initialize() does")  # fmt: skip


def start_processes(args) -> None:
    """``jax.distributed`` as the options of :func:`add_process_options` ask (nothing without them)."""
    from jdistill.train import distributed

    distributed.initialize(
        args.coordinator_address, args.num_processes, args.process_id, from_environment=args.distributed
    )


def command(
    sub, name: str, config_class, helps: dict, *, help: str, description: str, options={}, **settings
) -> None:
    """The subcommand ``name`` that plays ``config_class``: an option for each field in ``helps``
    (:func:`jdistill.cli_options.add_config_options`; ``options`` renames some) and the run options."""
    parser = sub.add_parser(name, help=help, description=description)
    add_config_options(parser, config_class, helps=helps, flags=options, **settings)
    add_run_options(
        parser, data_dir=False, teacher="teacher" in {f.name for f in dataclasses.fields(config_class)}
    )
    parser.set_defaults(func=play(config_class))


def play(config_class):
    """The command that builds ``config_class`` from the options given, plays it
    (:func:`start`) and prints the summary."""

    def command(args) -> None:
        config = config_class(**given_values(args, config_class))
        print(json.dumps(start(args, config, {}), indent=2))

    return command


def start(args, config, sources: dict) -> dict:
    """Build ``config``'s game (what cannot start, such as an unknown model, unreadable data, a
    teacher of other data or an ``--out`` that is a file, fails here in one line, before anything
    is printed or written), print
    the effective configuration, and play it into ``--out``; the summary."""
    from jdistill.train import RunDir, fit

    start_processes(args)
    RunDir(args.out).check_place()
    game = config.build()
    print_configuration(args.command, config, sources)
    return fit(
        game,
        args.out,
        progress=not args.quiet,
        steps_per_call=args.steps_per_call,
        shard_teachers=getattr(args, "shard_teacher", False),
    )


def start_cohort(args, runs: list, sources: dict) -> list[dict]:
    """:func:`start` for several runs trained together (``runs``: ``(name, configuration)``, each
    into ``--out/name``), the data set read once; their summaries."""
    from jdistill.data import load_dataset
    from jdistill.train import RunDir, fit_cohort

    start_processes(args)
    RunDir(args.out).check_place()
    lead = runs[0][1]
    dataset = load_dataset(lead.data.dataset, lead.data.data_dir, crop_size=lead.data.crop_size)
    games = [config.build(dataset) for _, config in runs]
    print_configuration(args.command, lead, sources)
    names = ", ".join(name for name, _ in runs)
    print(
        f"jdistill {args.command}: {len(runs)} runs in one step, into {args.out}/: {names}", file=sys.stderr
    )
    return fit_cohort(
        games,
        [pathlib.Path(args.out) / name for name, _ in runs],
        progress=not args.quiet,
        steps_per_call=args.steps_per_call,
        shard_teachers=getattr(args, "shard_teacher", False),
    )


DATA_FREE_HELP = {
    "teacher": "run directory of a finished teacher",
    "method": "dfad, dafl or zskt",
    "dataset": DATASET_HELP,
    "model": "built-in model name of the student (see 'jdistill models')",
    "data_dir": DATA_DIR_HELP,
    "image_size": "resize the data set's images to this side first (32: the papers' MNIST); the teacher must "
    "have been trained on images of that size",
    "seed": "seed of the student, the generator and the noise",
    "iterations": "rounds of the game (DFAD's paper: 2000 on MNIST)",
    "iterations_per_epoch": "rounds between evaluations, metrics lines and checkpoints",
    "batch_size": "generated images per step",
    "noise_dim": "dimension of the generator's Gaussian noise",
    "generator_width": "channels of the generator's last hidden layer (the papers: 64)",
    "generator_bn_epsilon": "epsilon of the generator's inner BatchNorms (default: DAFL 0.8, else 1e-5)",
    "student_steps": "student steps per generator step (default: DFAD 5, DAFL 1, ZSKT 10)",
    "at_weight": "ZSKT: weight of attention transfer",
    "at_features": "ZSKT: comma-separated features of teacher and student whose attention maps are matched",
    "activation_feature": "DAFL: the teacher's feature whose activation the generator raises",
    "one_hot_weight": "DAFL: weight of the teacher's cross-entropy against its own argmax",
    "information_entropy_weight": "DAFL: weight of the class-balance term, natural log (default 5 / ln 10 = "
    "2.17, the reference's 5 with log10)",
    "activation_weight": "DAFL: weight of the teacher's feature activation term",
    "samples_every": "iterations between sample grids (samples/iter_*.png)",
    "histogram_samples": "generated samples in each class histogram",
    "collapse_restarts": "on a collapse into one class, go back to the last checkpoint with new noise, at most "
    "this many times (the DAFL authors' remedy; default 0: only name it)",
    "checkpoint_every": "epochs between checkpoints",
}

ADVERSARIAL_KD_HELP = {
    "teacher": "run directory of a finished 'train-teacher' run",
    "data_dir": DATA_DIR_HELP,
    "model": "built-in model name of the student",
    "dataset": "data set of the teacher",
    "epochs": "passes over the training set",
    "seed": "seed of the student (the discriminator's is seed + 1)",
    "batch_size": "batch size",
    "ce_weight": "hard-label weight",
    "kd_weight": "KD weight",
    "adv_weight": "weight of the student's fooling loss; 0 is plain KD and trains no discriminator",
    "temperature": "T of KD and of --disc-input probs",
    "objective": "adversarial objective: bce (non-saturating), least_squares (LSGAN) or hinge",
    "gp_weight": "weight of the WGAN-GP gradient penalty on D (0: off)",
    "disc_input": "what D sees: logits, probs (softmax(logits / T)) or feature:NAME (a named feature, "
    "same shape in teacher and student; see 'jdistill models --features')",
    "conditional": "condition D on the one-hot label",
    "disc_steps": "discriminator steps per student step",
    "disc_widths": "D's hidden widths, comma-separated",
    "eval_every": "evaluate on the test set every N epochs",
}

ONLINE_HELP = {
    "data_dir": DATA_DIR_HELP,
    "model": "built-in model name of every peer (see 'jdistill models')",
    "dataset": DATASET_HELP,
    "epochs": "passes over the training set",
    "num_peers": "number of peers K trained together (>= 2)",
    "seed": "seed of the peers' and discriminators' initialisation, data order, dropout, jitter",
    "batch_size": "batch of every step, shared by all peers",
    "max_shift": "random translation of each training image by up to this many pixels",
    "mutual_weight": "weight of the mutual-learning term T^2 KL(peer j || peer k), averaged over j != k "
    "(0 with --disc-input none: every peer trains alone)",
    "temperature": "softmax temperature T of the mutual-learning term and of --disc-input probs",
    "disc_input": "what the discriminators compare: none (pure mutual learning), logits, probs "
    "(softmax(z/T)), or feature:NAME (a named feature map; 'jdistill models --features' lists them)",
    "adv_weight": "weight of each peer's term for fooling its discriminator",
    "objective": "discriminator objective: bce, least_squares or hinge",
    "gp_weight": "weight of the discriminators' gradient penalty (WGAN-GP; 0: none)",
    "disc_steps": "discriminator steps per peer step (on the same batch)",
    "disc_hidden": "hidden units of each of the discriminators' two hidden layers",
    "eval_every": "evaluate on the test set every N epochs (and at the end)",
}


LM_HELP = {
    "teacher": "run directory of a finished 'jdistill lm' run on the same corpus (none: learn the corpus)",
    "model": "lm_teacher (4 x 128, 826k parameters at 259 tokens) or lm_student (2 x 64, 117k)",
    "corpus": "stdlib (the Python standard library's source as bytes, split by file) or markov (a synthetic "
    "order-2 Markov language whose next-token distributions are known)",
    "context": "tokens per sequence",
    "max_bytes": "stdlib: bytes of source read at most",
    "markov_vocab": "markov: tokens of the language",
    "markov_seed": "markov: seed of the language and of its sampled splits",
    "epochs": "passes over the training sequences",
    "batch_size": "sequences per step",
    "seed": "seed of initialisation, data order, dropout and sampling",
    "loss": "ce (learn the corpus, or with --form sequence the teacher's samples) or the divergence from the "
    "teacher: forward_kl, reverse_kl, jsd, skew_forward_kl, skew_reverse_kl, tvd",
    "form": "the sequences distilled on: token (the corpus's), sequence (the teacher's samples), on_policy "
    "(the student's own samples with probability --on-policy-fraction, GKD)",
    "temperature": "softmax temperature of both models in the divergence",
    "beta": "jsd: the mixture weight of the teacher (0.5: the Jensen-Shannon divergence; TRL's beta)",
    "alpha": "skew KLs: the weight of the first distribution in the mixture",
    "ce_weight": "weight of the corpus's cross-entropy added to the divergence",
    "top_k": "read the teacher through its k most probable tokens per position (the sparse divergences; "
    "none: the whole vocabulary)",
    "sparse_mode": "with --top-k: tail (the rest of the vocabulary as one bucket) or renormalised (over the k)",
    "teacher_cache": "a directory of 'jdistill cache-lm-teacher' for --teacher: read its top-k tokens from disk "
    "instead of running the teacher (--form token)",
    "prompt_length": "tokens of each corpus sequence that a sample continues",
    "on_policy_fraction": "on_policy: probability that a step trains on the student's own samples",
    "sample_temperature": "temperature of the samples",
    "evaluate_on": "the split evaluated: validation (for choosing anything) or test",
    "eval_every": "evaluate every N epochs (and at the end)",
    "checkpoint_every": "epochs between checkpoints",
}


def add_parsers(sub) -> None:
    """Register ``data-free``, ``adversarial-kd`` and ``online`` on ``jdistill``'s subparsers."""
    from jdistill.adversarial.data_free import DATA_FREE_METHODS, DataFreeConfig
    from jdistill.adversarial.discriminator import AdversarialKDConfig
    from jdistill.adversarial.online import OnlineConfig
    from jdistill.losses.adversarial import OBJECTIVES

    command(
        sub,
        "data-free",
        DataFreeConfig,
        DATA_FREE_HELP,
        help="distil a teacher without its training data: DFAD, DAFL or ZSKT",
        description="Data-free distillation: a generator synthesises the transfer set and the frozen teacher "
        "judges it; the student never sees a real training image. The data set is read for its test "
        "set (to score the student) and the teacher's input statistics only. The student's and the "
        "generator's optimizers default to the method's paper's.",
        required=("teacher", "method", "dataset"),
        skip=("dtype",),  # float32 only
        choices={"method": DATA_FREE_METHODS},
        aliases={
            "--student": "model",
            "--student-lr": "student_learning_rate",
            "--generator-lr": "generator_learning_rate",
            "--grad-clip": ("student_clip_norm", "generator_clip_norm"),
        },
        dynamic_defaults={
            "student_optimizer": "the method's paper's",
            "generator_optimizer": "the method's paper's",
        },
    )
    command(
        sub,
        "adversarial-kd",
        AdversarialKDConfig,
        ADVERSARIAL_KD_HELP,
        help="distil a teacher into a student that also learns to fool a discriminator",
        description="Adversarial KD (Xu et al. 2017; Belagiannis et al. 2018): a discriminator learns to "
        "tell the teacher's outputs from the student's; the student minimises ce_weight * CE + kd_weight * "
        "KD + adv_weight * fooling loss. Re-running the same command resumes from the last checkpoint.",
        required=("teacher", "model", "epochs"),
        choices={"objective": OBJECTIVES},
        aliases={"--student": "model", "--lr": "learning_rate", "--disc-lr": "disc_learning_rate"},
    )
    from jdistill.lm import CORPORA, FORMS, LOSSES, SPARSE_MODES, LMConfig

    command(
        sub,
        "lm",
        LMConfig,
        LM_HELP,
        help="train a language model, or distil one into a smaller one (token-level, sequence-level, on-policy)",
        description="Language-model distillation on a corpus every machine has: without --teacher the model "
        "learns the corpus; with one, the student minimises --loss against it on the sequences of --form. "
        "Reports the test split's cross-entropy and perplexity and, on the synthetic language, the KL to the "
        "true next-token distributions.",
        choices={
            "corpus": CORPORA,
            "loss": LOSSES,
            "form": FORMS,
            "sparse_mode": SPARSE_MODES,
            "evaluate_on": ("test", "validation"),
        },  # fmt: skip
        aliases={"--student": "model", "--lr": "learning_rate"},
    )
    command(
        sub,
        "online",
        OnlineConfig,
        ONLINE_HELP,
        help="train K peers together from scratch (mutual learning, discriminators between peers)",
        description="Online distillation: K peers of one architecture learn from the labels and from each "
        "other (deep mutual learning, Zhang et al. 2018), optionally with a discriminator per peer that "
        "it learns to fool (Chung et al. 2020). --mutual-weight 0 --disc-input none trains the peers alone.",
        required=("model", "dataset", "epochs"),
        choices={"objective": OBJECTIVES},
        aliases={"--lr": "learning_rate", "--disc-lr": "disc_learning_rate"},
    )

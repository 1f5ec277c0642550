"""Language-model distillation on a synthetic language whose next-token distributions are known:
a student alone against token-level forward KL, reverse KL, JSD, skew KL and on-policy (GKD)
distillation from one teacher, 3 seeds.

The language: an order-2 Markov chain over ``--vocab`` tokens (32), each row of transition
probabilities drawn from a Dirichlet of concentration 0.1 (peaked, not deterministic; seed 0),
4,096 training, 256 test sequences of ``--context`` tokens (32) sampled from it
(``jdistill.data.text.MarkovLanguage``). Its best achievable cross-entropy is known, and so is every
model's KL(true next-token distribution || model) per token, the table's main column.

The teacher: ``lm_teacher`` (4 blocks of width 128, 4 heads; rotary positions) trained on the
sequences with cross-entropy for ``--teacher-epochs`` epochs (Adam 3e-3, cosine, batch 32).
The students: ``lm_student`` (2 blocks of width 64, 2 heads; about 7x fewer parameters), trained
for ``--epochs`` epochs with the same optimizer. The rate was chosen on the validation sequences
(``jdistill lm --evaluate-on validation``): 8 teacher epochs reached a KL to the truth of 0.205
nats/token at 3e-3 against 1.165 at 1e-2; 10 epochs of the student alone 0.286 against 0.316. The
teacher trains for those 8 epochs: a first run of 30 memorised the 131,072 training tokens (its
training cross-entropy fell to 1.11 nats/token, below the language's best of 1.80) and ended
worse than the students.

- **alone**: cross-entropy on the sequences;
- **forward KL**: KL(teacher || student) on the sequences' tokens (token-level KD, T = 1);
- **reverse KL**: KL(student || teacher) (MiniLLM's direction, Gu et al. 2024);
- **JSD**: the Jensen-Shannon divergence (beta = 0.5);
- **skew KL**: KL(teacher || 0.1 teacher + 0.9 student) (DistiLLM, Ko et al. 2024);
- **on-policy**: JSD (beta = 0.5) on the student's own samples (the first 8 tokens of a sequence
  continued at temperature 1) in half of the steps, on the sequences in the others (GKD, Agarwal
  et al. 2024, lambda = 0.5);
- **sequence-level KD**: cross-entropy on the teacher's samples (the first token of a corpus
  sequence continued to its length at temperature 1, drawn in every step; Kim & Rush 2016). A
  first run continued the first 8 tokens, as the on-policy row does; its students never learned
  the first 7 positions, which the test scores (Markov: KL to the truth 0.505 against 0.293 alone);
- **forward KL from the cache**: forward KL against the teacher's 8 most probable tokens per
  position and a tail bucket for the rest, read from a cache written once after the teacher
  (``jdistill cache-lm-teacher``; ``teacher_cache/`` under ``--out``); the teacher is not run.

On ``--corpus stdlib`` (the Python standard library's source as bytes, split by file) the teacher
trains 5 epochs (its validation cross-entropy rose after the fifth of a 6-epoch pilot) and each
student 4, what fits 30 minutes on 2 CPU cores; the rest is as above.

Nothing is chosen: every number is the last epoch's, on the test sequences.

    python experiments/lm_distillation.py --out runs/lm_distillation     # about 12 minutes on 2 CPU cores
    python experiments/lm_distillation.py --out DIR --smoke               # the pipeline in a minute
    python experiments/lm_distillation.py --corpus stdlib --out DIR       # the standard library's source
        # (1 MB by default, --max-bytes; cross-entropy and perplexity only): 27 minutes on 2 CPU cores

Writes ``table.md``, ``results.json`` and ``curves.png`` (the KL to the truth per epoch) to ``--out``.
"""

from jdistill.experiment import Experiment, Run, main
from jdistill.lm import LMConfig, load_corpus, teacher_cache
from jdistill.report import markdown_table, mean_std, plot_learning_curves

TOP_K = 8  # tokens per position in the teacher cache

ROWS = {
    "alone": ("student alone (cross-entropy)", {}),
    "forward_kl": ("forward KL", {"loss": "forward_kl"}),
    "reverse_kl": ("reverse KL", {"loss": "reverse_kl"}),
    "jsd": ("JSD (beta 0.5)", {"loss": "jsd", "beta": 0.5}),
    "skew_kl": ("skew forward KL (alpha 0.1)", {"loss": "skew_forward_kl", "alpha": 0.1}),
    "on_policy": (
        "on-policy JSD (GKD, lambda 0.5)",
        {"loss": "jsd", "form": "on_policy", "on_policy_fraction": 0.5},
    ),
    "sequence_whole": (
        "sequence-level KD (teacher samples, cross-entropy)",
        {"loss": "ce", "form": "sequence", "prompt_length": 1},
    ),
    "cached_top_k": (f"forward KL, teacher's top {TOP_K} from the cache", {"loss": "forward_kl"}),
}


EPOCHS = {"markov": (8, 10), "stdlib": (5, 4)}  # (teacher, students) unless --teacher-epochs, --epochs


def epochs(args) -> tuple[int, int]:
    """The teacher's and the students' epochs: the corpus's defaults, or as given."""
    teacher, students = EPOCHS[args.corpus]
    return args.teacher_epochs or teacher, args.epochs or students


def base(options, **changes) -> LMConfig:
    args = options.args
    values = dict(corpus=args.corpus, markov_vocab=args.vocab, max_bytes=args.max_bytes, context=args.context,
                  batch_size=32, epochs=epochs(args)[1], learning_rate=3e-3)  # fmt: skip
    return LMConfig(**{**values, **changes})


def runs(options):
    teacher_epochs = 1 if options.smoke else epochs(options.args)[0]
    yield Run("teacher", base(options, model="lm_teacher", epochs=teacher_epochs), row="teacher (lm_teacher)")
    teacher, cache = str(options.out / "teacher"), options.out / "teacher_cache"

    def write_cache():
        if not (cache / "manifest.json").exists():
            teacher_cache.write(teacher, cache, top_k=TOP_K)

    for name, (row, changes) in ROWS.items():
        cached = {"teacher_cache": str(cache)} if name == "cached_top_k" else {}
        for seed in options.seeds:
            distilled = {"teacher": teacher} if changes else {}
            yield Run(
                f"{name}/seed{seed}",
                base(options, model="lm_student", seed=seed, **distilled, **changes, **cached),
                row,
                before=write_cache if cached else None,
            )


def corpus(_, options):
    return load_corpus(base(options))


def table(results, options):
    markov = options.args.corpus == "markov"
    rows = []
    for row, summaries in results.items():
        rows.append([
            row,
            *([mean_std([s["test/kl_to_truth"] for s in summaries], scale=1, digits=4)] if markov else []),
            mean_std([s["test/ce"] for s in summaries], scale=1, digits=4),
            mean_std([s["test/perplexity"] for s in summaries], scale=1, digits=3),
            len(summaries),
            f"{sum(s['train_seconds'] for s in summaries) / 60:.1f}",
        ])  # fmt: skip
    kl = ["KL to the truth (nats/token)"] if markov else []
    headers = ["model", *kl, "test cross-entropy (nats/token)", "perplexity", "seeds", "train min"]
    first, args = next(iter(results.values()))[0], options.args
    if markov:
        what = (f"An order-2 Markov language over {args.vocab} tokens, sequences of {args.context}; the best "
                f"achievable cross-entropy is {first['best_ce']:.4f} nats/token.")  # fmt: skip
    else:
        what = (f"The Python standard library's source as bytes (fingerprint "
                f"{first['corpus_fingerprint'][:12]}), sequences of {args.context}.")  # fmt: skip
    return f"{what} Last epoch, test sequences, mean +- std over seeds.\n\n" + markdown_table(headers, rows)


def plots(results, options):
    plot_learning_curves(
        {row: [options.out / s["run"] for s in summaries] for row, summaries in results.items()},
        options.out / "curves.png",
        metric="test/kl_to_truth" if options.args.corpus == "markov" else "test/ce",
        title="KL(true next-token distribution || model) on the test sequences"
        if options.args.corpus == "markov"
        else "cross-entropy on the test sequences (nats/token)",
        percent=False,
    )


def add_options(parser):
    parser.add_argument("--corpus", choices=("markov", "stdlib"), default="markov")
    parser.add_argument(
        "--max-bytes", type=int, default=1_000_000, help="stdlib: bytes of source read at most"
    )
    parser.add_argument("--vocab", type=int, default=32, help="markov: tokens of the language")
    parser.add_argument("--context", type=int, default=32, help="tokens per sequence")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="default: markov 8, stdlib 5")
    parser.add_argument(
        "--epochs", type=int, default=None, help="the students' (default: markov 10, stdlib 4)"
    )


EXPERIMENT = Experiment(__doc__, None, runs, table, plots, add_options=add_options, data=corpus,
                        smoke={"epochs": 1})  # fmt: skip

if __name__ == "__main__":
    main(EXPERIMENT)

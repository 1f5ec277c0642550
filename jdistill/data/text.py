"""Token sequences for language models, from data every machine has (no download).

Two sources, both packed into fixed-length sequences [N, T + 1] (inputs ``[:, :-1]``, targets
``[:, 1:]``) with a mask that is False on padding:

- :func:`load_stdlib`: a real corpus, the Python standard library's own ``*.py`` sources, split by
  file into train / validation / test by a hash of the relative path and tokenized by bytes
  (:func:`encode`: ids 0-255 are the bytes, then ``BOS`` 256, ``EOS`` 257, ``PAD`` 258). Its
  ``fingerprint`` names the exact files and contents, which differ between Python versions.
- :class:`MarkovLanguage`: a synthetic language with a known next-token distribution, so that a
  model's KL(true || model) per token and the best achievable cross-entropy are known.
"""

import dataclasses
import functools
import hashlib
import os
import pathlib
import sys
import sysconfig
from collections.abc import Sequence

import numpy as np

BOS, EOS, PAD = 256, 257, 258  # after the 256 byte values
BYTE_VOCAB = 259
SPLITS = ("train", "validation", "test")
# Directories never read: the test suites (and their data), installed packages, bytecode.
SKIPPED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})


def encode(text: bytes | str, *, bos: bool = True, eos: bool = True) -> np.ndarray:
    """Bytes (a str as UTF-8) -> int32 ids, one per byte, framed by ``BOS`` and ``EOS``."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    ids = np.frombuffer(data, np.uint8).astype(np.int32)
    return np.concatenate([[BOS] * bos, ids, [EOS] * eos]).astype(np.int32)


def decode(ids) -> bytes:
    """Ids -> the bytes they encode; the special ids (>= 256) are dropped."""
    ids = np.asarray(ids).reshape(-1)
    return ids[(ids >= 0) & (ids < 256)].astype(np.uint8).tobytes()


@dataclasses.dataclass(frozen=True)
class Sequences:
    """Packed sequences: ``tokens`` [N, T + 1] int32 and ``mask`` [N, T + 1] bool (False on padding)."""

    tokens: np.ndarray
    mask: np.ndarray

    def __post_init__(self):
        if self.tokens.ndim != 2 or self.mask.shape != self.tokens.shape:
            raise ValueError(
                f"Sequences: tokens must be [N, T + 1], mask alike; got {self.tokens.shape} {self.mask.shape}"
            )

    @property
    def inputs(self) -> np.ndarray:
        return self.tokens[:, :-1]

    @property
    def targets(self) -> np.ndarray:
        return self.tokens[:, 1:]

    @property
    def target_mask(self) -> np.ndarray:
        """[N, T]: which targets are real tokens (the loss's weights)."""
        return self.mask[:, 1:]


def pack(documents: Sequence[np.ndarray], length: int, *, pad_id: int = PAD) -> Sequences:
    """Concatenate ``documents`` (each already framed, e.g. by :func:`encode`) into one stream and
    cut it into windows of ``length + 1`` tokens starting every ``length`` tokens, so consecutive
    windows share one token and every token but the first is a target exactly once. The last
    window is padded with ``pad_id`` (mask False)."""
    if length < 1:
        raise ValueError(f"pack: length must be >= 1, got {length}")
    stream = (
        np.concatenate([np.asarray(d, np.int32) for d in documents]) if documents else np.zeros(0, np.int32)
    )
    n = max(0, -(-(len(stream) - 1) // length))  # windows needed for len - 1 targets
    tokens = np.full((n * length + 1,), pad_id, np.int32)
    tokens[: len(stream)] = stream
    mask = np.arange(len(tokens)) < len(stream)
    index = np.arange(n)[:, None] * length + np.arange(length + 1)
    return Sequences(tokens[index], mask[index])


@dataclasses.dataclass(frozen=True)
class TextCorpus:
    """Train / validation / test :class:`Sequences` over ``vocab_size`` ids; ``fingerprint`` (sha256
    hex) identifies the source exactly; ``info`` says what was read (file counts, bytes and paths
    per split, ...)."""

    name: str
    train: Sequences
    validation: Sequences
    test: Sequences
    vocab_size: int
    fingerprint: str
    info: dict


def _unit_hash(tag: str, relative_path: str) -> float:
    """A number in [0, 1) fixed by ``tag`` and the path: the first 8 bytes of sha256."""
    digest = hashlib.sha256(f"{tag}:{relative_path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(relative_path: str, fractions: Sequence[float] = (0.9, 0.05, 0.05)) -> str:
    """The split of a file, by a hash of its POSIX relative path: "train" if ``u < fractions[0]``,
    "validation" if ``u < fractions[0] + fractions[1]``, else "test" (``u`` uniform in [0, 1))."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"split fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}"
        )
    u = _unit_hash("split", relative_path)
    return "train" if u < fractions[0] else "validation" if u < fractions[0] + fractions[1] else "test"


def stdlib_root() -> pathlib.Path:
    """This Python's standard library directory (``sysconfig.get_paths()["stdlib"]``)."""
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: str | os.PathLike | None = None, *, max_file_bytes: int = 200_000) -> list[str]:
    """Sorted POSIX paths, relative to ``root`` (default: :func:`stdlib_root`), of its ``*.py``
    files outside ``SKIPPED_DIRS`` and no larger than ``max_file_bytes``."""
    root = pathlib.Path(root) if root is not None else stdlib_root()
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in SKIPPED_DIRS]
        for name in files:
            path = pathlib.Path(directory, name)
            if name.endswith(".py") and path.is_file() and path.stat().st_size <= max_file_bytes:
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def load_stdlib(
    length: int = 128,
    *,
    max_bytes: int = 4_000_000,
    max_file_bytes: int = 200_000,
    fractions: Sequence[float] = (0.9, 0.05, 0.05),
    root: str | os.PathLike | None = None,
) -> TextCorpus:
    """The standard library's Python sources as a byte-level corpus of sequences of ``length + 1``.

    Files (:func:`stdlib_files`) are taken in the order of a hash of their path (a fixed shuffle)
    until the next would pass ``max_bytes`` in all; each goes wholly to the split
    :func:`split_of` gives it (90 / 5 / 5 % of files by default), is encoded with ``BOS`` and
    ``EOS`` and packed (:func:`pack`) with its split's other files in path order. The fingerprint
    is sha256 over every selected file's path, size and content sha256, in path order.
    """
    root = pathlib.Path(root) if root is not None else stdlib_root()
    candidates = sorted(
        stdlib_files(root, max_file_bytes=max_file_bytes), key=lambda p: _unit_hash("order", p)
    )
    chosen, total = [], 0
    for relative in candidates:
        size = (root / relative).stat().st_size
        if total + size > max_bytes:
            break
        chosen.append(relative)
        total += size
    fingerprint = hashlib.sha256()
    documents, paths = {split: [] for split in SPLITS}, {split: [] for split in SPLITS}
    sizes = {split: 0 for split in SPLITS}
    for relative in sorted(chosen):
        content = (root / relative).read_bytes()
        fingerprint.update(f"{relative}\0{len(content)}\0{hashlib.sha256(content).hexdigest()}\n".encode())
        split = split_of(relative, fractions)
        documents[split].append(encode(content))
        paths[split].append(relative)
        sizes[split] += len(content)
    info = {
        "root": str(root),
        "python": sys.version.split()[0],
        "files": {split: len(paths[split]) for split in SPLITS},
        "bytes": sizes,
        "paths": paths,
        "max_bytes": max_bytes,
        "max_file_bytes": max_file_bytes,
        "fractions": tuple(fractions),
    }
    splits = {split: pack(documents[split], length) for split in SPLITS}
    return TextCorpus(
        "stdlib", **splits, vocab_size=BYTE_VOCAB, fingerprint=fingerprint.hexdigest(), info=info
    )


@dataclasses.dataclass(frozen=True)
class MarkovLanguage:
    """A Markov chain of order ``k`` over ``V`` tokens: ``transitions`` [V] * k + [V], float64,
    ``transitions[a, b, c] = P(x_{t+1} = c | x_{t-1} = a, x_t = b)`` for k = 2.

    :meth:`create` draws each row from a symmetric Dirichlet(``concentration``): at 0.1 and V = 64
    a row's expected entropy is ``psi(64 * 0.1 + 1) - psi(1.1)`` = 2.36 nats against ``ln 64`` =
    4.16 (peaked, never deterministic). Of order 2 (the default) a model must learn a separate
    distribution for each of the V^2 = 4096 contexts (262,144 probabilities), which takes capacity
    and data; order 1 would be a V x V table that any model learns. Measured on 2 shared CPU cores
    (sequences of 16, batch 128, Adam 3e-3, 200 s each): ``lm_teacher``'s shape at V = 64 (801,536
    parameters) was 0.39 nats above the best cross-entropy after 4.0M tokens and still falling,
    ``lm_student``'s (104,192) 0.59 above after 22M tokens, falling slowly. Sequences start in the
    stationary distribution of the chain's k-grams, so every position is distributed alike; the
    best achievable cross-entropy per token is the :meth:`entropy_rate` (after the first k - 1
    positions, which have less context: :meth:`best_cross_entropy`).
    """

    transitions: np.ndarray

    def __post_init__(self):
        t = self.transitions
        if t.ndim < 2 or len(set(t.shape)) != 1 or not np.allclose(t.sum(-1), 1) or (t < 0).any():
            raise ValueError(
                f"MarkovLanguage: transitions must be [V] * (k + 1) rows of probabilities, got {t.shape}"
            )

    @classmethod
    def create(
        cls, vocab_size: int = 64, *, order: int = 2, concentration: float = 0.1, seed: int = 0
    ) -> "MarkovLanguage":
        """Rows drawn from Dirichlet(``concentration``) with ``numpy.random.default_rng(seed)``."""
        if vocab_size < 2 or order < 1 or concentration <= 0:
            raise ValueError(
                "MarkovLanguage: needs vocab_size >= 2, order >= 1, concentration > 0, "
                f"got {vocab_size}, {order}, {concentration}"
            )
        rng = np.random.default_rng(seed)
        rows = rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size**order)
        rows = np.maximum(rows, 1e-300)  # a Dirichlet draw may underflow to 0: keep the chain ergodic
        return cls((rows / rows.sum(-1, keepdims=True)).reshape((vocab_size,) * (order + 1)))

    @property
    def vocab_size(self) -> int:
        return self.transitions.shape[-1]

    @property
    def order(self) -> int:
        return self.transitions.ndim - 1

    @functools.cached_property
    def stationary(self) -> np.ndarray:
        """The stationary distribution of k consecutive tokens, [V] * k (power iteration)."""
        pi = np.full(self.transitions.shape[:-1], 1.0 / self.vocab_size**self.order)
        for _ in range(100_000):
            new = (pi[..., None] * self.transitions).sum(0)  # P(x_2..x_{k+1}) from P(x_1..x_k)
            if np.abs(new - pi).sum() < 1e-14:
                return new
            pi = new
        raise ValueError("MarkovLanguage: the stationary distribution did not converge")

    def _prefix_marginal(self, n: int) -> np.ndarray:
        """P(x_0 .. x_{n-1}) for n <= k, [V] * n."""
        return self.stationary.sum(axis=tuple(range(n, self.order)))

    def entropy_rate(self) -> float:
        """``H = -sum_ctx pi(ctx) sum_c P(c | ctx) ln P(c | ctx)`` in nats: the best achievable
        expected cross-entropy per token once k tokens of context are known."""
        t = self.transitions
        row_entropy = -(t * np.log(t)).sum(-1)
        return float((self.stationary * row_entropy).sum())

    def best_cross_entropy(self, length: int) -> float:
        """Expected mean over positions t = 0 .. length - 1 of ``H(x_{t+1} | x_0..x_t)``: the lowest
        mean cross-entropy a model can reach on targets ``[:, 1:]`` of sampled [N, length + 1]."""

        def entropy(p):
            return float(-(p * np.log(p)).sum())

        h = [
            entropy(self._prefix_marginal(t + 2)) - entropy(self._prefix_marginal(t + 1))
            for t in range(min(length, self.order - 1))
        ]
        return (sum(h) + (length - len(h)) * self.entropy_rate()) / length

    def sample(self, n: int, length: int, *, seed: int = 0) -> np.ndarray:
        """``n`` sequences of ``length`` tokens, [n, length] int32, the first k from the stationary
        distribution of k-grams."""
        if length < self.order:
            raise ValueError(f"MarkovLanguage.sample: length must be >= order {self.order}, got {length}")
        rng = np.random.default_rng(seed)
        v, k = self.vocab_size, self.order
        start = rng.choice(v**k, size=n, p=self.stationary.reshape(-1))
        out = np.zeros((n, length), np.int32)
        out[:, :k] = np.stack(np.unravel_index(start, (v,) * k), axis=1)
        cdf = np.cumsum(self.transitions.reshape(v**k, v), axis=-1)
        for t in range(k, length):
            context = np.ravel_multi_index(tuple(out[:, t - k + i] for i in range(k)), (v,) * k)
            u = rng.random(n)[:, None]
            out[:, t] = np.minimum((cdf[context] < u).sum(-1), v - 1)
        return out

    def next_token_probs(self, tokens) -> np.ndarray:
        """Tokens [..., T] -> [..., T, V] float32: at position t, the true distribution of the
        token after it given tokens 0..t (for t < k - 1 from the stationary k-gram marginals)."""
        tokens = np.asarray(tokens)
        k = self.order
        out = np.zeros((*tokens.shape, self.vocab_size))
        for t in range(min(k - 1, tokens.shape[-1])):
            joint = self._prefix_marginal(t + 2)[tuple(tokens[..., i] for i in range(t + 1))]
            out[..., t, :] = joint / joint.sum(-1, keepdims=True)
        if tokens.shape[-1] >= k:
            contexts = tuple(tokens[..., i : tokens.shape[-1] - k + 1 + i] for i in range(k))
            out[..., k - 1 :, :] = self.transitions[contexts]
        return out.astype(np.float32)

    def fingerprint(self) -> str:
        """sha256 of the transition table's float64 bytes."""
        return hashlib.sha256(np.ascontiguousarray(self.transitions, np.float64).tobytes()).hexdigest()

    def corpus(
        self, length: int = 128, *, train: int = 4096, validation: int = 256, test: int = 256, seed: int = 0
    ) -> TextCorpus:
        """Sampled sequences [N, length + 1] for each split (seeds ``seed``, ``seed + 1``,
        ``seed + 2``), no padding."""
        counts = {"train": train, "validation": validation, "test": test}
        splits = {}
        for i, split in enumerate(SPLITS):
            tokens = self.sample(counts[split], length + 1, seed=seed + i)
            splits[split] = Sequences(tokens, np.ones(tokens.shape, bool))
        info = {"order": self.order, "entropy_rate": self.entropy_rate(), "seed": seed}
        return TextCorpus(
            "markov", **splits, vocab_size=self.vocab_size, fingerprint=self.fingerprint(), info=info
        )

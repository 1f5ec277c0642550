"""Tests for jdistill.data.text: the byte tokenizer, packing, the standard-library corpus (file
selection, deterministic split by file, fingerprint) and the synthetic Markov language (its true
next-token distributions, sampling and entropy rate against direct numpy computations)."""

import numpy as np
import pytest

from jdistill.data.text import (
    BOS,
    BYTE_VOCAB,
    EOS,
    PAD,
    SPLITS,
    MarkovLanguage,
    decode,
    encode,
    load_stdlib,
    pack,
    split_of,
    stdlib_files,
)


def test_byte_tokenizer_round_trip_and_framing():
    data = bytes(range(256)) * 3
    ids = encode(data)
    assert ids.dtype == np.int32 and ids[0] == BOS and ids[-1] == EOS and len(ids) == len(data) + 2
    assert decode(ids) == data
    assert decode(encode("naïve ∑ code\n", bos=False, eos=False)) == "naïve ∑ code\n".encode()
    assert decode([BOS, 104, PAD, 105, EOS]) == b"hi"
    assert (BOS, EOS, PAD, BYTE_VOCAB) == (256, 257, 258, 259)


def test_packing_shapes_overlap_and_padding():
    docs = [encode(b"abcdefg"), encode(b"xyz")]  # 9 + 5 = 14 tokens, 13 targets
    seq = pack(docs, 4)
    assert seq.tokens.shape == (4, 5) and seq.mask.shape == (4, 5) and seq.tokens.dtype == np.int32
    stream = np.concatenate(docs)
    np.testing.assert_array_equal(seq.tokens[:, :-1].reshape(-1)[:13], stream[:13])
    np.testing.assert_array_equal(seq.tokens[:-1, -1], seq.tokens[1:, 0])  # windows share one token
    np.testing.assert_array_equal(seq.targets[seq.target_mask], stream[1:])  # each target once
    assert seq.mask.sum() == 14 + 3 and (seq.tokens[~seq.mask] == PAD).all()
    assert seq.inputs.shape == seq.targets.shape == seq.target_mask.shape == (4, 4)
    assert pack([encode(b"abc")], 4).tokens.shape == (1, 5)  # 4 targets fill one window
    assert pack([], 4).tokens.shape == (0, 5)
    with pytest.raises(ValueError, match="length must be >= 1"):
        pack(docs, 0)


@pytest.fixture
def fake_stdlib(tmp_path):
    """A directory shaped like a standard library: packages, test directories, bytecode, a big file."""
    files = {
        "os.py": b"import sys\n" * 5,
        "json/__init__.py": b"x = 1\n",
        "json/decoder.py": b"def f():\n    return 2\n",
        "email/mime/text.py": b"# text\n" * 3,
        "test/test_os.py": b"assert True\n",
        "unittest/tests/test_case.py": b"pass\n",
        "json/__pycache__/decoder.py": b"cached\n",
        "site-packages/pkg/mod.py": b"pkg\n",
        "big.py": b"#" * 5000,
        "README.txt": b"not python\n",
    }
    files |= {f"pkg{i}/mod{i}.py": f"value = {i}\n".encode() * (i + 1) for i in range(40)}
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    return tmp_path


def test_file_selection_skips_tests_bytecode_packages_and_large_files(fake_stdlib):
    found = stdlib_files(fake_stdlib, max_file_bytes=1000)
    assert found == sorted(found) and len(found) == 44
    assert {"os.py", "json/decoder.py", "email/mime/text.py"} <= set(found)
    assert not any(
        p.startswith(("test/", "unittest/tests", "site-packages")) or "__pycache__" in p for p in found
    )
    assert "big.py" not in found and "big.py" in stdlib_files(fake_stdlib, max_file_bytes=10_000)


def test_split_by_file_is_deterministic_disjoint_and_capped(fake_stdlib):
    corpus = load_stdlib(8, max_file_bytes=1000, root=fake_stdlib)
    again = load_stdlib(8, max_file_bytes=1000, root=fake_stdlib)
    assert corpus.fingerprint == again.fingerprint and corpus.vocab_size == BYTE_VOCAB
    for split in SPLITS:
        np.testing.assert_array_equal(getattr(corpus, split).tokens, getattr(again, split).tokens)
    paths = corpus.info["paths"]
    assert sum(len(p) for p in paths.values()) == 44 and len(set().union(*paths.values())) == 44
    assert all(split_of(p) == split for split in SPLITS for p in paths[split])
    # Every byte of every file of a split is in that split's sequences, framed by BOS and EOS.
    for split in SPLITS:
        seq = getattr(corpus, split)
        real = np.concatenate([seq.tokens[0, :1], seq.targets[seq.target_mask]]) if len(seq.tokens) else []
        expected = b"".join((fake_stdlib / p).read_bytes() for p in paths[split])
        assert decode(real) == expected and corpus.info["bytes"][split] == len(expected)
        assert (np.asarray(real) == BOS).sum() == len(paths[split])
    # A cap keeps a prefix of the hash order; files keep their split; the fingerprint changes.
    capped = load_stdlib(8, max_bytes=200, max_file_bytes=1000, root=fake_stdlib)
    assert sum(capped.info["bytes"].values()) <= 200 and capped.fingerprint != corpus.fingerprint
    assert all(set(capped.info["paths"][s]) <= set(paths[s]) for s in SPLITS)
    (fake_stdlib / "os.py").write_bytes(b"import sys\n" * 6)  # the content is in the fingerprint
    assert load_stdlib(8, max_file_bytes=1000, root=fake_stdlib).fingerprint != corpus.fingerprint


def test_split_fractions_over_the_real_standard_library():
    paths = stdlib_files()
    assert len(paths) > 100
    counts = {s: sum(split_of(p) == s for p in paths) for s in SPLITS}
    assert 0.85 < counts["train"] / len(paths) < 0.95 and min(counts.values()) > 0
    assert [split_of(p) for p in paths] == [split_of(p) for p in paths]
    everything = {s: sum(split_of(p, (0.0, 0.0, 1.0)) == s for p in paths) for s in SPLITS}
    assert everything == {"train": 0, "validation": 0, "test": len(paths)}
    with pytest.raises(ValueError, match="summing to 1"):
        split_of("os.py", (0.5, 0.5, 0.5))


def test_real_corpus_is_capped_and_packed():
    corpus = load_stdlib(64, max_bytes=300_000)
    assert 0 < sum(corpus.info["bytes"].values()) <= 300_000
    assert corpus.train.tokens.shape[1] == 65 and corpus.train.tokens.max() < BYTE_VOCAB
    assert len(corpus.fingerprint) == 64 and corpus.info["python"]


def _stationary_by_eigenvector(lang):
    """The stationary distribution of the chain on k-grams from the explicit V^k x V^k matrix."""
    v, k = lang.vocab_size, lang.order
    n = v**k
    t = lang.transitions.reshape(n, v)
    m = np.zeros((n, n))
    for ctx in range(n):
        successor = (ctx * v) % n + np.arange(v)  # drop the oldest token, append c
        m[ctx, successor] += t[ctx]
    values, vectors = np.linalg.eig(m.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    return pi / pi.sum(), t


@pytest.mark.parametrize("order", [1, 2])
def test_entropy_rate_against_a_direct_computation(order):
    lang = MarkovLanguage.create(5, order=order, concentration=0.3, seed=order)
    pi, t = _stationary_by_eigenvector(lang)
    np.testing.assert_allclose(lang.stationary.reshape(-1), pi, atol=1e-10)
    direct = -sum(pi[c] * sum(p * np.log(p) for p in t[c]) for c in range(len(pi)))
    assert lang.entropy_rate() == pytest.approx(direct, rel=1e-9)
    assert lang.best_cross_entropy(50) >= lang.entropy_rate()


def test_true_distributions_sum_to_one_and_sampling_follows_them():
    lang = MarkovLanguage.create(4, order=2, concentration=0.5, seed=3)
    x = lang.sample(4000, 60, seed=0)
    assert x.shape == (4000, 60) and x.dtype == np.int32 and x.min() >= 0 and x.max() < 4
    probs = lang.next_token_probs(x)
    assert probs.shape == (4000, 60, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-6)
    # Empirical transition frequencies against the table (236,000 transitions over 16 contexts).
    counts = np.zeros((4, 4, 4))
    np.add.at(counts, (x[:, :-2], x[:, 1:-1], x[:, 2:]), 1)
    n = counts.sum(-1, keepdims=True)
    err = np.abs(counts / n - lang.transitions)
    assert (err < 5 * np.sqrt(0.25 / n) + 1e-3).all()
    # Position 0: P(x1 | x0) from the stationary pairs; the first pair follows them.
    np.testing.assert_allclose(
        probs[0, 0], lang.stationary[x[0, 0]] / lang.stationary[x[0, 0]].sum(), rtol=1e-6
    )
    pairs = np.zeros((4, 4))
    np.add.at(pairs, (x[:, 0], x[:, 1]), 1)
    np.testing.assert_allclose(pairs / len(x), lang.stationary, atol=0.03)
    # The mean true cross-entropy of the targets approaches the best achievable.
    ce = -np.log(np.take_along_axis(probs[:, :-1], x[:, 1:, None], -1)).mean()
    assert ce == pytest.approx(lang.best_cross_entropy(59), abs=0.02)


def test_default_language_and_its_corpus():
    lang = MarkovLanguage.create()
    assert lang.transitions.shape == (64, 64, 64) and lang.order == 2
    assert 2.0 < lang.entropy_rate() < 2.7 < np.log(64)
    corpus = lang.corpus(16, train=32, validation=8, test=8, seed=5)
    assert (
        corpus.train.tokens.shape == (32, 17)
        and corpus.test.tokens.shape == (8, 17)
        and corpus.train.mask.all()
    )
    assert corpus.vocab_size == 64 and corpus.fingerprint == MarkovLanguage.create().fingerprint()
    assert corpus.fingerprint != MarkovLanguage.create(seed=1).fingerprint()
    np.testing.assert_array_equal(
        corpus.validation.tokens, lang.corpus(16, train=32, validation=8, test=8, seed=5).validation.tokens
    )
    with pytest.raises(ValueError, match="concentration > 0"):
        MarkovLanguage.create(concentration=0)

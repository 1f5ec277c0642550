"""Tests for jdistill.models.transformer_lm: shapes and dtypes, causality, hidden states and the head,
dropout, cached sampling against the uncached forward, the sampler's distribution, and the named
configurations' parameter counts from the architecture's formula.

Models are tiny (vocab 64, context 16, 2 blocks of width 32) and built inside one ``nnx.jit`` with
``unsafe_rbg`` keys, as in test_models.py, so that initialisers compile once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jdistill.models.registry import count_params
from jdistill.models.transformer_lm import LM_CONFIGS, TransformerLM, create_lm, next_token, sample

VOCAB, CONTEXT, WIDTH, PROMPT, STEPS = 64, 16, 32, 4, 12
# Sampling cases: temperature (traced) and key index; all with top_k = 5 (one compiled path).
CASES = {"greedy": (0.0, 0), "greedy_key1": (0.0, 1), "t0.7": (0.7, 0), "t0.7_key1": (0.7, 1)}


def _rngs():
    return nnx.Rngs(jax.random.key(0, impl="unsafe_rbg"))


@pytest.fixture(scope="module")
def built():
    """The tiny model and one with RMSNorm and dropout 0.5, built in one compiled program."""
    small = {"depth": 2, "width": WIDTH, "heads": 2}
    return nnx.jit(
        lambda: {
            "lm": TransformerLM(VOCAB, CONTEXT, **small, rngs=_rngs()),
            "rms_dropout": TransformerLM(VOCAB, CONTEXT, **small, norm="rms", dropout=0.5, rngs=_rngs()),
        }
    )()


@pytest.fixture(scope="module")
def lm(built):
    return built["lm"]


def _tokens(batch=2, length=CONTEXT, seed=1):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, VOCAB, dtype=jnp.int32)


_forward = nnx.jit(lambda model, tokens: (model(tokens), model.hidden(tokens)))


def test_shapes_dtypes_and_the_head_from_hidden_states(lm):
    logits, h = _forward(lm, _tokens())
    assert logits.shape == (2, CONTEXT, VOCAB) and logits.dtype == jnp.float32
    assert h.shape == (2, CONTEXT, WIDTH) and h.dtype == jnp.float32
    w = lm.head_weight()
    assert w.shape == (WIDTH, VOCAB) and w.dtype == jnp.float32
    np.testing.assert_array_equal(w, lm.embed.embedding[...].T)  # tied
    # What a chunked loss computes: h W, chunk by chunk.
    np.testing.assert_allclose(np.asarray(h) @ np.asarray(w), logits, atol=1e-5)
    np.testing.assert_allclose(np.asarray(h[:, :4]) @ np.asarray(w), logits[:, :4], atol=1e-5)


def test_untied_head_has_its_own_matrix():
    untied = nnx.eval_shape(
        lambda: TransformerLM(VOCAB, CONTEXT, depth=2, width=WIDTH, heads=2, tie_weights=False, rngs=_rngs())
    )
    tied = nnx.eval_shape(lambda: TransformerLM(VOCAB, CONTEXT, depth=2, width=WIDTH, heads=2, rngs=_rngs()))
    assert untied.head.kernel.shape == (WIDTH, VOCAB) and tied.head is None
    assert count_params(untied) == count_params(tied) + WIDTH * VOCAB


def test_a_future_token_does_not_change_earlier_logits(lm):
    tokens = _tokens()
    changed = tokens.at[:, 9].set((tokens[:, 9] + 1) % VOCAB)
    (a, _), (b, _) = _forward(lm, tokens), _forward(lm, changed)
    np.testing.assert_allclose(a[:, :9], b[:, :9], atol=1e-6)
    assert np.abs(a[:, 9:] - b[:, 9:]).min(axis=-1).max() > 0  # every later position sees it


def test_bfloat16_computes_in_bfloat16_with_float32_parameters_and_logits(lm):
    tokens = _tokens()
    abstract = nnx.eval_shape(
        lambda: TransformerLM(VOCAB, CONTEXT, depth=2, width=WIDTH, heads=2, dtype=jnp.bfloat16, rngs=_rngs())
    )
    assert {p.dtype for p in jax.tree.leaves(nnx.state(abstract, nnx.Param))} == {jnp.dtype(jnp.float32)}
    logits, h = nnx.eval_shape(lambda m: (m(tokens), m.hidden(tokens)), abstract)
    assert h.dtype == jnp.bfloat16 and logits.dtype == jnp.float32
    # As jdistill.train.game.computing_in does: set ``dtype`` on every Flax layer of a float32 model.
    lm16 = nnx.clone(lm)
    for _, layer in nnx.iter_modules(lm16):
        if hasattr(layer, "dtype") and hasattr(layer, "param_dtype"):
            layer.dtype = jnp.bfloat16
    logits16, h16 = _forward(lm16, tokens)
    assert h16.dtype == jnp.bfloat16 and logits16.dtype == jnp.float32
    assert 0 < np.abs(np.asarray(logits16) - np.asarray(_forward(lm, tokens)[0])).max() < 0.1


def test_rms_norm_and_dropout(built):
    model, tokens = built["rms_dropout"], _tokens()
    run = nnx.jit(lambda m, t: (m(t, train=True, dropout_key=jax.random.key(0)),
                                m(t, train=True, dropout_key=jax.random.key(1)), m(t), m(t)))  # fmt: skip
    a, b, c, d = run(model, tokens)
    assert not np.allclose(a, b) and not np.allclose(a, c)
    np.testing.assert_array_equal(c, d)  # train=False: no dropout
    np.testing.assert_array_equal(a, run(model, tokens)[0])  # the same key, the same mask
    with pytest.raises(ValueError, match="dropout_key"):
        model(tokens, train=True)


def _uncached(lm, prompt, key, temperature, top_k):
    """Token i drawn as :func:`sample` draws it, from the full forward over the whole sequence so far
    (no cache). The sequence lives in a fixed buffer; the model is causal (tested above), so the
    logits at position P + i - 1 are those of the prefix."""
    buffer = jnp.concatenate([prompt, jnp.zeros((prompt.shape[0], STEPS), jnp.int32)], axis=1)
    keys = jax.random.split(key, STEPS)

    def step(i, buffer):
        logits = jnp.take(lm(buffer), PROMPT + i - 1, axis=1)
        token, _ = next_token(logits, keys[i], temperature=temperature, top_k=top_k)
        return buffer.at[:, PROMPT + i].set(token)

    return jax.lax.fori_loop(0, STEPS, step, buffer)


@pytest.fixture(scope="module")
def sampled(lm):
    """For each case: (cached tokens, their log-probabilities, uncached tokens, the full forward's
    log-probabilities of the cached tokens), all cases in one compiled program (vmapped)."""

    @nnx.jit
    def run(lm, prompt, temperatures, keys):
        def one(temperature, key):
            tokens, logprobs = sample(
                lm, prompt, steps=STEPS, key=key, temperature=temperature, top_k=5, return_logprobs=True
            )
            full = jax.nn.log_softmax(lm(tokens[:, :-1])[:, PROMPT - 1 :], axis=-1)
            return tokens, logprobs, _uncached(lm, prompt, key, temperature, 5), full

        return jax.vmap(one)(temperatures, keys)

    prompt = _tokens(batch=3, length=PROMPT, seed=2)
    temperatures = jnp.array([t for t, _ in CASES.values()])
    keys = jax.random.split(jax.random.key(7))[jnp.array([k for _, k in CASES.values()])]
    out = run(lm, prompt, temperatures, keys)
    results = {name: [np.asarray(a[i]) for a in out] for i, name in enumerate(CASES)}
    return prompt, results, lambda: run(lm, prompt, temperatures, keys)


@pytest.mark.parametrize("case", list(CASES))
def test_cached_sampling_gives_the_tokens_of_the_full_forward(sampled, case):
    prompt, results, _ = sampled
    tokens, logprobs, uncached, full = results[case]
    assert tokens.shape == (3, PROMPT + STEPS) and tokens.dtype == np.int32 and logprobs.shape == (3, STEPS)
    np.testing.assert_array_equal(tokens[:, :PROMPT], prompt)
    np.testing.assert_array_equal(tokens, uncached)
    # The log-probabilities are the model's own (temperature 1, untruncated) of the drawn tokens.
    expected = np.take_along_axis(full, tokens[:, PROMPT:, None], axis=-1)[..., 0]
    np.testing.assert_allclose(logprobs, expected, atol=1e-5)
    rank = (full > expected[..., None]).sum(-1)  # how many tokens were more probable
    assert (rank == 0).all() if case.startswith("greedy") else 0 < rank.max() < 5


def test_sampling_is_seeded_and_checks_its_length(lm, sampled):
    prompt, results, rerun = sampled
    np.testing.assert_array_equal(results["greedy"][0], results["greedy_key1"][0])  # no randomness
    assert not np.array_equal(results["t0.7"][0], results["t0.7_key1"][0])
    np.testing.assert_array_equal(results["t0.7"][0], rerun()[0][2])
    with pytest.raises(ValueError, match="context 16"):
        sample(lm, prompt, steps=CONTEXT, key=jax.random.key(0))
    with pytest.raises(ValueError, match="exceed the context"):
        lm(_tokens(length=CONTEXT + 1))


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.5, None), (1.0, 2), (0.0, None)])
def test_next_token_draws_from_the_tempered_truncated_softmax(temperature, top_k):
    p = np.array([0.6, 0.3, 0.1])
    logits = jnp.broadcast_to(jnp.log(jnp.asarray(p, jnp.float32)), (20_000, 3))
    draw = jax.jit(next_token, static_argnames="top_k")
    tokens, logprobs = draw(logits, jax.random.key(0), temperature=jnp.float32(temperature), top_k=top_k)
    tempered = p ** (1 / temperature) if temperature else (p == p.max()).astype(float)
    if top_k is not None:
        tempered = np.where(np.arange(3) < top_k, tempered, 0)
    frequencies = np.bincount(np.asarray(tokens), minlength=3) / len(tokens)
    np.testing.assert_allclose(frequencies, tempered / tempered.sum(), atol=0.015)  # 4 standard errors
    np.testing.assert_allclose(logprobs, np.log(p)[tokens], rtol=1e-6)


def _lm_params(vocab, depth, d, mlp_ratio=4):
    """Embedding V x D (the tied head adds nothing); per block two LayerNorms (scale and bias), qkv,
    output projection and the MLP, each with biases; the final LayerNorm."""
    block = (
        2 * 2 * d
        + (d * 3 * d + 3 * d)
        + (d * d + d)
        + (d * mlp_ratio * d + mlp_ratio * d)
        + (mlp_ratio * d * d + d)
    )
    return vocab * d + depth * block + 2 * d


@pytest.mark.parametrize(
    "name, depth, width", [("lm_teacher", 4, 128), ("lm_student", 2, 64)], ids=["teacher", "student"]
)
def test_named_configurations_and_their_parameter_counts(name, depth, width):
    lm = nnx.eval_shape(lambda: create_lm(name, 259, 128, rngs=nnx.Rngs(0)))
    assert len(lm.blocks) == depth and lm.embed.embedding.shape == (259, width) and lm.head is None
    assert count_params(lm) == _lm_params(259, depth, width)
    assert count_params(nnx.eval_shape(lambda: create_lm(name, 259, 1024, rngs=nnx.Rngs(0)))) == count_params(
        lm
    )


def test_named_counts_as_documented():
    counts = {
        n: count_params(nnx.eval_shape(lambda n=n: create_lm(n, 259, 128, rngs=nnx.Rngs(0))))
        for n in LM_CONFIGS
    }
    assert counts == {"lm_teacher": 826_496, "lm_student": 116_672}


def test_bad_configurations_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown language model 'lm_huge'"):
        create_lm("lm_huge", 64, 16, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="even head width"):
        TransformerLM(64, 16, depth=1, width=30, heads=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="norm must be one of"):
        TransformerLM(64, 16, depth=1, width=32, heads=2, norm="batch", rngs=nnx.Rngs(0))

"""Generation: the KV cache (through the model's modules, and the folded fast path) against recomputing
the whole context, the cropping window, sampling filters, stop tokens, beam search."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import tinygrad_lite as tl
from gpt.generation import (FoldedKVCache, KVCache, LayerKVCache, beam_search, forward_cached, forward_folded,
                            next_window_start, sample_next_token)
from test_gpt_model import tiny_model

DECODING = [dict(use_cache=False), dict(decoder="modules"), dict(decoder="folded")]  # no cache, then both caches


def generate_every_way(model, prompt, new_tokens, **sampling):
    """The tokens of each entry of DECODING; sampled ones from the same seed."""
    return [model.generate(prompt, new_tokens, **way, **sampling, generator=np.random.default_rng(7))
            for way in DECODING]


# ------------------------------------------------ cache against no cache

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=0.9, top_k=5)], ids=["greedy", "top_k"])
def test_decoders_equal_no_cache_within_block(bias, sampling):
    model = tiny_model(seed=3, bias=bias)
    prompt = np.random.default_rng(3).integers(0, 23, (2, 5))  # batch 2, a prompt of 5: a prefill, then steps
    uncached, modules, folded = generate_every_way(model, prompt, 11, **sampling)  # ends at block_size 16
    assert uncached.shape == (2, 16) and np.array_equal(uncached[:, :5], prompt)
    assert np.array_equal(modules, uncached)
    assert np.array_equal(folded, uncached)


@pytest.mark.parametrize("prompt_length", [1, 16, 20])  # one token; exactly block_size; longer than the block
@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.0, top_k=5)], ids=["greedy", "top_k"])
def test_decoders_equal_no_cache_past_block_size(prompt_length, sampling):
    """Past block_size the context is cropped (the window jumps and the cache is refilled); all paths crop alike."""
    model = tiny_model(seed=4)
    prompt = np.random.default_rng(4).integers(0, 23, (3, prompt_length))
    uncached, modules, folded = generate_every_way(model, prompt, 40, **sampling)
    assert uncached.shape == (3, prompt_length + 40)
    assert np.array_equal(modules, uncached)
    assert np.array_equal(folded, uncached)


def test_rows_of_a_batch_decode_independently():
    model = tiny_model(seed=9)
    prompts = np.random.default_rng(9).integers(0, 23, (3, 4))
    for decoder in ("modules", "folded"):
        together = model.generate(prompts, 25, temperature=0, decoder=decoder)
        alone = np.concatenate([model.generate(row[None], 25, temperature=0, decoder=decoder) for row in prompts])
        assert np.array_equal(together, alone)


@pytest.mark.parametrize("make_cache, forward", [(KVCache, forward_cached), (FoldedKVCache, forward_folded)],
                         ids=["modules", "folded"])
def test_cached_logits_match_full_forward(make_cache, forward):
    model = tiny_model(seed=5)
    idx = np.random.default_rng(5).integers(0, 23, (2, 16))
    full = model(idx)[0].numpy()  # (2, 16, vocab)
    cache = make_cache(model, 2)
    with tl.no_grad():
        np.testing.assert_allclose(forward(model, idx[:, :7], cache), full[:, 6], atol=1e-4)  # a prefill
        for t in range(7, 16):  # then one position at a time, up to block_size
            np.testing.assert_allclose(forward(model, idx[:, t:t + 1], cache), full[:, t], atol=1e-4)
        assert cache.length == 16
        cache.reset()  # the buffers are reused from position 0
        np.testing.assert_allclose(forward(model, idx[:, :3], cache), full[:, 2], atol=1e-4)


def test_default_decoder_runs_the_models_attention_modules():
    model = tiny_model(seed=2)
    calls = []
    attention = model.h[1].attn
    original = attention.forward
    attention.forward = lambda x, cache=None: calls.append((x.shape, cache.length)) or original(x, cache)
    model.generate(np.array([[1, 2, 3]]), 4, temperature=0)
    # the prompt once (nothing cached yet), then one position per new token
    assert calls == [((1, 3, 32), 0), ((1, 1, 32), 3), ((1, 1, 32), 4), ((1, 1, 32), 5)]


def test_kv_cache_errors():
    model = tiny_model()
    cache = KVCache(model, 2)
    k = tl.Tensor(np.zeros((2, 2, 3, 16), dtype=np.float32))
    with pytest.raises(RuntimeError, match="no_grad"):
        model(np.zeros((2, 3), dtype=np.int64), cache=cache)  # autograd is on: the cache would cut the graph
    with tl.no_grad():
        model(np.zeros((2, 3), dtype=np.int64), cache=cache)
        with pytest.raises(ValueError, match="one at a time"):  # attention's causal mask is top-left aligned
            model(np.zeros((2, 2), dtype=np.int64), cache=cache)
        with pytest.raises(ValueError, match="block_size is 16"):
            model(np.zeros((2, 14), dtype=np.int64), cache=cache)
        with pytest.raises(ValueError, match=r"expected \(2, 2, T, 16\)"):  # batch 1 would be broadcast silently
            cache.layers[0].append(k[:1], k[:1])
        layer = LayerKVCache(2, 2, 4, 16, np.float32, np)
        layer.append(k, k)
        with pytest.raises(ValueError, match="exceed block_size 4"):
            layer.append(k[:, :, :2], k[:, :, :2])
    with pytest.raises(ValueError, match="decoder"):
        model.generate([[1]], 2, decoder="fast")
    with pytest.raises(ValueError, match="decoder"):
        beam_search(model, [[1]], 2, 2, decoder="fast")


# ---------------------------------------------------------------- the window

def test_window_jumps_by_half_a_block():
    assert next_window_start(0, 16, 16) == 0
    assert next_window_start(0, 17, 16) == 9      # keep the last 8
    assert next_window_start(9, 25, 16) == 9
    assert next_window_start(9, 26, 16) == 18


# ------------------------------------------------------- options and sampling

def test_generate_restores_training_mode_and_validates():
    model = tiny_model().train()
    out = model.generate([[1, 2]], 3)
    assert out.shape == (1, 5) and model.training
    for bad in (dict(temperature=-1), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            model.generate([[1]], 2, **bad)
    with pytest.raises(ValueError, match=r"\[0, 23\)"):
        model.generate([[99]], 2)


def test_stop_tokens_end_generation():
    model = tiny_model(seed=6)
    prompt = np.array([[1, 2, 3]])
    greedy = model.generate(prompt, 10, temperature=0)
    stop = int(greedy[0, 5])  # a token greedy decoding emits at step 3
    first = int(np.argmax(greedy[0, 3:] == stop)) + 3
    stopped = model.generate(prompt, 10, temperature=0, stop_tokens=[stop])
    assert np.array_equal(stopped[0], greedy[0, :first + 1])


def test_sampling_filters():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    rng = np.random.default_rng(0)
    draws = lambda **kw: {int(sample_next_token(logits, generator=rng, **kw)[0]) for _ in range(300)}  # noqa: E731
    assert draws(top_k=2) == {0, 1}
    assert draws(top_p=0.7) == {0, 1}          # 0.5 < 0.7, 0.5 + 0.3 >= 0.7
    assert draws(top_p=0.5) == {0}
    assert draws(temperature=0) == {0}
    assert draws() == {0, 1, 2, 3}
    # temperature -> 0 approaches greedy; counts follow the probabilities
    counts = np.bincount([int(sample_next_token(logits, generator=rng)[0]) for _ in range(4000)], minlength=4)
    np.testing.assert_allclose(counts / 4000, [0.5, 0.3, 0.15, 0.05], atol=0.03)


# --------------------------------------------------------------- beam search

def test_beam_search():
    model = tiny_model(seed=8, vocab_size=7)
    prompt = np.array([[1, 2]])
    greedy = model.generate(prompt, 4, temperature=0)
    assert np.array_equal(model.beam_search(prompt, 4, num_beams=1), greedy)

    def log_prob(sequence):
        logits, _ = model(sequence[None, :-1])
        z = logits.numpy()[0, 1:].astype(np.float64)  # predictions for the new tokens
        z -= z.max(-1, keepdims=True)
        z -= np.log(np.exp(z).sum(-1, keepdims=True))
        return sum(z[i, t] for i, t in enumerate(sequence[2:]))

    # with as many beams as there are 3-token continuations, beam search is exhaustive
    best = model.beam_search(prompt, 3, num_beams=7 ** 3)[0]
    brute = max(itertools.product(range(7), repeat=3), key=lambda c: log_prob(np.array([1, 2, *c])))
    assert tuple(best[2:]) == brute
    beams3 = model.beam_search(prompt, 4, num_beams=3)[0]
    assert log_prob(beams3) >= log_prob(greedy[0]) - 1e-9
    # past block_size (16), with the window's refills and the beams reordered in the cache, both decoders agree
    long = [beam_search(model, prompt, 30, 3, decoder=decoder) for decoder in ("modules", "folded")]
    assert np.array_equal(*long)

"""The GPT model: shapes, parameter counts, the KV cache, sampling, beam search, and parity with
Hugging Face's GPT-2 (a randomly initialised GPT2LMHeadModel saved with save_pretrained)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import tinygrad_lite as tl
from gpt import GPT, GPTConfig
from gpt.generation import next_window_start, sample_next_token


def tiny_model(seed: int = 0, **overrides) -> GPT:
    tl.manual_seed(seed)
    settings = dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=True)
    settings.update(overrides)
    model = GPT(GPTConfig(**settings))
    # GPT-2's std-0.02 init gives near-uniform logits, where greedy ties are a coin toss;
    # larger weights make the comparisons below meaningful.
    rng = np.random.default_rng(seed)
    for _, param in model.named_parameters():
        param.data = (param.data + rng.normal(0, 0.3, param.shape)).astype(np.float32)
    return model.eval()


# ------------------------------------------------------------------ forward

def test_forward_shapes_and_loss():
    model = tiny_model()
    idx = np.random.default_rng(0).integers(0, 23, (3, 10))
    logits, loss = model(idx)
    assert logits.shape == (3, 10, 23) and loss is None
    logits2, loss = model(tl.Tensor(idx), targets=idx)
    assert np.array_equal(logits.numpy(), logits2.numpy())
    # the mean cross-entropy, by hand
    z = logits.numpy().astype(np.float64)
    log_probs = z - z.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_probs, idx[..., None], -1).mean()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_gradients_reach_every_parameter():
    model = tiny_model(dropout=0.1).train()
    idx = np.random.default_rng(1).integers(0, 23, (2, 16))
    _, loss = model(idx, targets=np.roll(idx, -1, axis=1))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and np.abs(param.grad.numpy()).sum() > 0, name


def test_sequence_longer_than_block_size_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="block_size is 16"):
        model(np.zeros((1, 17), dtype=np.int64))
    with pytest.raises(TypeError, match="integer"):
        model(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(batch, time\)"):
        model(np.zeros(4, dtype=np.int64))


def test_weight_tying_and_gpt2_initialisation():
    tl.manual_seed(0)
    config = GPTConfig(vocab_size=100, block_size=32, n_layer=8, n_head=4, n_embd=64)
    model = GPT(config)
    assert model.lm_head.weight is model.wte.weight
    assert "lm_head.weight" not in dict(model.named_parameters())
    assert np.std(model.wte.weight.numpy()) == pytest.approx(0.02, rel=0.1)
    assert np.std(model.h[0].mlp.c_fc.weight.numpy()) == pytest.approx(0.02, rel=0.1)
    residual = np.concatenate([b.attn.c_proj.weight.numpy().ravel() for b in model.h])
    assert np.std(residual) == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert np.all(model.h[0].attn.c_attn.bias.numpy() == 0) and np.all(model.ln_f.weight.numpy() == 1)


def test_num_params_and_param_table():
    model = tiny_model()
    C, V, T, L = 32, 23, 16, 2
    per_layer = (4 * C * C + 4 * C) + (8 * C * C + 5 * C) + 4 * C
    expected = V * C + T * C + L * per_layer + 2 * C
    assert model.num_params() == expected
    assert model.num_params(include_position_embeddings=False) == expected - T * C
    assert sum(model.param_counts().values()) == expected
    table = model.param_table()
    for word in ("token embedding", "position embedding", "attention", "MLP", "layer norms", f"{expected:,}"):
        assert word in table


def test_gpt2_small_size_by_formula():
    # GPT-2 small: 124,439,808 parameters (nanoGPT prints 123.65M, leaving out the 786,432 of wpe).
    C, V, T, L = 768, 50257, 1024, 12
    counts = V * C + T * C + L * ((4 * C * C + 4 * C) + (8 * C * C + 5 * C) + 4 * C) + 2 * C
    assert counts == 124_439_808


# --------------------------------------------------------------- generation

@pytest.mark.parametrize("bias", [True, False])
def test_kv_cache_greedy_equals_no_cache_within_block(bias):
    model = tiny_model(seed=3, bias=bias)
    prompt = np.random.default_rng(3).integers(0, 23, (2, 5))
    cached = model.generate(prompt, 11, temperature=0, use_cache=True)
    uncached = model.generate(prompt, 11, temperature=0, use_cache=False)
    assert cached.shape == (2, 16)
    assert np.array_equal(cached, uncached)
    assert np.array_equal(cached[:, :5], prompt)


def test_kv_cache_equals_no_cache_past_block_size():
    """Past block_size the context is cropped (the window jumps); both paths crop alike."""
    model = tiny_model(seed=4)
    prompt = np.random.default_rng(4).integers(0, 23, (1, 20))  # already longer than the block
    cached = model.generate(prompt, 40, temperature=0, use_cache=True)
    uncached = model.generate(prompt, 40, temperature=0, use_cache=False)
    assert np.array_equal(cached, uncached)
    sampled = [model.generate(prompt, 40, temperature=1.0, top_k=5, use_cache=flag,
                              generator=np.random.default_rng(7)) for flag in (True, False)]
    assert np.array_equal(*sampled)


def test_cached_logits_match_full_forward():
    from gpt.generation import KVCache, forward_cached

    model = tiny_model(seed=5)
    idx = np.random.default_rng(5).integers(0, 23, (2, 12))
    full, _ = model(idx)
    cache = KVCache(model, 2)
    first = forward_cached(model, idx[:, :7], cache)  # a prefill
    np.testing.assert_allclose(first, full.numpy()[:, 6], atol=1e-4)
    for t in range(7, 12):  # then one position at a time
        step = forward_cached(model, idx[:, t:t + 1], cache)
        np.testing.assert_allclose(step, full.numpy()[:, t], atol=1e-4)


def test_window_jumps_by_half_a_block():
    assert next_window_start(0, 16, 16) == 0
    assert next_window_start(0, 17, 16) == 9      # keep the last 8
    assert next_window_start(9, 25, 16) == 9
    assert next_window_start(9, 26, 16) == 18


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


# --------------------------------------------------------- Hugging Face parity

HF_CONFIGS = [
    dict(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4),
    dict(vocab_size=97, n_positions=24, n_embd=48, n_layer=3, n_head=3),
    dict(vocab_size=31, n_positions=8, n_embd=16, n_layer=1, n_head=1),
]


@pytest.mark.parametrize("settings", HF_CONFIGS)
def test_from_pretrained_matches_hugging_face(settings, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(**settings, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # beyond the 0.02 init, so the logits are far from uniform and every weight matters
        for param in hf.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    hf.save_pretrained(tmp_path, safe_serialization=True)

    ours = GPT.from_pretrained(tmp_path)
    assert ours.num_params() == hf.num_parameters()
    idx = np.random.default_rng(0).integers(0, settings["vocab_size"], (2, settings["n_positions"]))
    with torch.no_grad():
        expected = hf(torch.tensor(idx)).logits.numpy()
    logits, _ = ours(idx)
    np.testing.assert_allclose(logits.numpy(), expected, atol=1e-4, rtol=0)

    prompt = idx[:1, :3]
    new_tokens = settings["n_positions"] - 3
    with torch.no_grad():
        hf_tokens = hf.generate(torch.tensor(prompt), attention_mask=torch.ones(prompt.shape, dtype=torch.long),
                                max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                pad_token_id=0).numpy()
    assert np.array_equal(ours.generate(prompt, new_tokens, temperature=0), hf_tokens)
    assert np.array_equal(ours.generate(prompt, new_tokens, temperature=0, use_cache=False), hf_tokens)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "vocab_size": 5, "n_positions": 4, '
                                          '"n_embd": 8, "n_layer": 1, "n_head": 1}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match="pickle"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="safetensors"):
        GPT.from_pretrained(tmp_path)

"""The GPT model: shapes, parameter counts, and parity with Hugging Face's GPT-2 (a randomly
initialised GPT2LMHeadModel saved with save_pretrained). Generation: tests/test_generation.py."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tinygrad_lite as tl
from gpt import GPT, GPTConfig


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
    assert np.array_equal(ours.generate(prompt, new_tokens, temperature=0, decoder="folded"), hf_tokens)


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

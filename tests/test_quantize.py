"""int8 weight-only quantization (gpt/quantize.py): the error bound, the bytes, and a quantized
GPT that forward, evaluation and generate accept."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_lite as tl
from tinygrad_lite import nn
from gpt import GPT, GPTConfig
from gpt.quantize import QuantizedLinear, dequantize_per_channel, int8, quantize_per_channel, weight_bytes
from gpt.train import estimate_loss


def test_per_channel_quantization_is_within_half_a_step_of_each_row():
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 1, (6, 40)).astype(np.float32) * np.array([1e-3, 0.1, 1, 10, 100, 0])[:, None]
    q, scale = quantize_per_channel(weight)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (6,)
    assert np.abs(q).max() == 127 and q.min() >= -127
    np.testing.assert_array_equal(np.abs(q[:5]).max(axis=1), 127)  # each row uses its full range
    np.testing.assert_allclose(scale[:5], np.abs(weight[:5]).max(axis=1) / 127, rtol=1e-6)
    assert scale[5] == 1.0 and not q[5].any()                        # an all-zero row: exact, no 0 / 0
    error = np.abs(dequantize_per_channel(q, scale) - weight)
    assert (error <= scale[:, None] / 2 * (1 + 1e-5)).all()
    relative = error.max(axis=1)[:5] / np.abs(weight[:5]).max(axis=1)
    assert (relative <= 0.5 / 127 + 1e-6).all()                      # small rows are as precise as big ones
    with pytest.raises(ValueError, match="2-D float weight"):
        quantize_per_channel(q)


def test_quantized_linear_computes_x_times_the_dequantized_weight():
    tl.manual_seed(0)
    layer = nn.Linear(12, 5)
    quantized = QuantizedLinear(layer)
    x = tl.randn(3, 4, 12)
    expected = x.numpy() @ quantized.dequantized_weight().numpy().T + layer.bias.numpy()
    np.testing.assert_allclose(quantized(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(quantized(x).numpy(), layer(x).numpy(), atol=0.02)
    with pytest.raises(ValueError, match=r"QuantizedLinear\(12, 5\)"):
        quantized(tl.randn(3, 11))


def _tiny_gpt(bias: bool = True) -> GPT:
    tl.manual_seed(0)
    return GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=64, bias=bias)).eval()


def test_int8_gpt_is_a_copy_whose_logits_stay_close_and_generate_works():
    model = _tiny_gpt()
    quantized = int8(model)
    assert all(isinstance(module, nn.Linear) is False for module in quantized.modules())
    assert isinstance(model.h[0].mlp.c_fc, nn.Linear)  # the original is untouched
    idx = np.random.default_rng(0).integers(0, 32, (2, 16))
    with tl.no_grad():
        logits, quantized_logits = model(idx)[0].numpy(), quantized(idx)[0].numpy()
    error = np.abs(quantized_logits - logits).max()
    assert 0 < error < 0.01 * np.abs(logits).max() + 1e-3, f"int8 logits off by {error}"
    out = quantized.generate(idx[:, :4], 10, temperature=0.8, generator=np.random.default_rng(0))
    assert out.shape == (2, 14) and out.dtype.kind == "i" and (out < 32).all()
    np.testing.assert_array_equal(out[:, :4], idx[:, :4])
    with pytest.raises(AttributeError, match="decoder='modules'"):  # the folded decoder reads float weights
        quantized.generate(idx[:, :4], 2, decoder="folded")


@pytest.mark.gpu
def test_int8_gpt_on_the_gpu_matches_the_cpu_one():
    quantized = int8(_tiny_gpt())
    idx = np.random.default_rng(0).integers(0, 32, (2, 16))
    with tl.no_grad():
        on_cpu = quantized(idx)[0].numpy()
        quantized.to("cuda")
        assert quantized.h[0].attn.c_attn.weight_int8.dtype == np.int8  # .to keeps integer buffers' dtype
        on_gpu = quantized(tl.backend.to_device(idx, "cuda"))[0].numpy()
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-4, atol=1e-5)


def test_int8_gpt_is_accepted_by_estimate_loss():
    class Data:  # the one method estimate_loss uses
        def get_batch(self, split, batch_size, block_size, rng):
            x = rng.integers(0, 32, (batch_size, block_size))
            return x, (x + 1) % 32

    model = _tiny_gpt()
    losses = estimate_loss(model, Data(), 2, 16, 3, np.random.default_rng(0))
    quantized_losses = estimate_loss(int8(model), Data(), 2, 16, 3, np.random.default_rng(0))
    assert abs(quantized_losses["val"] - losses["val"]) < 0.01


@pytest.mark.parametrize("bias", [True, False])
def test_int8_weight_bytes(bias):
    model = _tiny_gpt(bias)
    quantized = int8(model)
    c, vocab = 64, 32
    linear_weights = 2 * 12 * c * c + vocab * c  # four Linears per block, and lm_head (tied to wte)
    linear_outputs = 2 * (3 * c + c + 4 * c + c) + vocab
    # float32: every parameter once (lm_head is wte); int8: the Linear weights at a byte each (lm_head's an
    # int8 copy of wte, which the embedding keeps in float32), plus a float32 scale per output row
    assert weight_bytes(model) == 4 * model.num_params()
    expected = 4 * model.num_params() - 4 * (linear_weights - vocab * c) + linear_weights + 4 * linear_outputs
    assert weight_bytes(quantized) == expected
    if not bias:  # as nanoGPT's Shakespeare model; with biases this tiny model's embeddings, biases weigh 30.2%
        assert weight_bytes(quantized) <= 0.30 * weight_bytes(model)

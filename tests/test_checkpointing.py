"""Activation checkpointing (tinygrad_lite/utils/checkpoint.py): the same gradients, bit for bit,
with less memory held between forward and backward."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import tinygrad_lite as tl
from tinygrad_lite.utils.checkpoint import checkpoint
from gpt import GPT, GPTConfig
from gpt.model import Block


def _config(**overrides) -> GPTConfig:
    settings = dict(vocab_size=16, block_size=8, n_layer=2, n_head=2, n_embd=16)
    settings.update(overrides)
    return GPTConfig(**settings)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_checkpointed_block_gives_bit_identical_gradients_in_float64(device):
    tl.manual_seed(0)
    block = Block(_config()).double().to(device)
    x_values = np.random.default_rng(0).normal(size=(3, 8, 16))
    results = []
    for use_checkpoint in (False, True):
        block.zero_grad()
        x = tl.Tensor(x_values, requires_grad=True, device=device)
        out = checkpoint(block, x) if use_checkpoint else block(x)
        (out * out).sum().backward()
        results.append((out.numpy(), x.grad.numpy(), {n: p.grad.numpy().copy() for n, p in block.named_parameters()}))
    (out_a, dx_a, grads_a), (out_b, dx_b, grads_b) = results
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(dx_a, dx_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == 12
    for name in grads_a:
        np.testing.assert_array_equal(grads_a[name], grads_b[name], err_msg=name)


def _model_gradients(checkpoint_blocks: bool, dropout: float):
    tl.manual_seed(0)
    model = GPT(_config(dropout=dropout, checkpoint_blocks=checkpoint_blocks)).double()
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 16, (3, 8)), rng.integers(0, 16, (3, 8))
    _, loss = model(x, y)
    loss.backward()
    grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    return loss.item(), grads, tl.backend.get_rng_state()


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_checkpoint_blocks_gives_the_same_model_gradients_bit_for_bit(dropout):
    # with dropout the rerun must draw the same masks, and the generator must end where it would have
    loss_a, grads_a, rng_a = _model_gradients(False, dropout)
    loss_b, grads_b, rng_b = _model_gradients(True, dropout)
    assert loss_a == loss_b and rng_a == rng_b
    for name in grads_a:
        np.testing.assert_array_equal(grads_a[name], grads_b[name], err_msg=name)


def test_checkpoint_reruns_under_the_autocast_of_its_forward():
    tl.manual_seed(0)
    block = Block(_config())
    x_values = np.random.default_rng(0).normal(size=(2, 8, 16)).astype(np.float32)
    grads = []
    for use_checkpoint in (False, True):
        block.zero_grad()
        x = tl.Tensor(x_values, requires_grad=True)
        with tl.autocast(tl.float16):
            out = checkpoint(block, x) if use_checkpoint else block(x)
        out.float().sum().backward()  # backward outside autocast, as in training
        grads.append(block.mlp.c_fc.weight.grad.numpy())
    np.testing.assert_array_equal(grads[0], grads[1])


def _peak_bytes_of_backward_graph(checkpoint_blocks: bool) -> int:
    tl.manual_seed(0)
    model = GPT(_config(n_layer=6, n_embd=32, block_size=32, checkpoint_blocks=checkpoint_blocks))
    x = np.random.default_rng(0).integers(0, 16, (4, 32))
    model(x, x)[1].backward()  # the gradients exist before measuring: only the step's own memory counts
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    model(x, x)[1].backward()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - before


def test_checkpoint_blocks_lowers_the_peak_memory_of_a_six_layer_step():
    plain, checkpointed = _peak_bytes_of_backward_graph(False), _peak_bytes_of_backward_graph(True)
    assert checkpointed < 0.6 * plain, f"peak {checkpointed:,} bytes checkpointed vs {plain:,} plain"


def test_checkpoint_checks_its_arguments_and_is_a_plain_call_without_grad():
    block = Block(_config())
    x = tl.randn(1, 8, 16)
    with pytest.raises(TypeError, match="input 0 is ndarray"):
        checkpoint(block, x.numpy())
    with pytest.raises(TypeError, match="must return one Tensor"):
        checkpoint(lambda t: (t, t), tl.randn(2, requires_grad=True))
    with tl.no_grad():
        out = checkpoint(block, x)
    assert out._ctx is None
    np.testing.assert_array_equal(out.numpy(), block(x).numpy())

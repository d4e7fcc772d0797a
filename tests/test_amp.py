"""Mixed precision (tinygrad_lite/amp.py): autocast's casts, GradScaler's skip/backoff/growth,
and a float16 training run that follows the float32 one."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_lite as tl
from tinygrad_lite import functional as F
from tinygrad_lite import nn
from gpt import GPT, GPTConfig


def test_autocast_runs_linear_in_float16_and_gives_float32_grads():
    tl.manual_seed(0)
    layer = nn.Linear(8, 4)
    x = tl.randn(3, 8)
    with tl.autocast(tl.float16):
        y = layer(x)
    assert y.dtype == tl.float16
    y.float().sum().backward()
    assert layer.weight.dtype == tl.float32 and layer.weight.grad.dtype == tl.float32
    assert layer.bias.grad.dtype == tl.float32
    # the float16 product is the float32 one to float16 rounding; the weight grad is sum_n x_n (exact-ish)
    expected = x.numpy() @ layer.weight.numpy().T + layer.bias.numpy()
    np.testing.assert_allclose(y.numpy().astype(np.float32), expected, rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(layer.weight.grad.numpy(), np.tile(x.numpy().sum(0), (4, 1)), rtol=2e-2, atol=2e-2)


def test_autocast_is_scoped_and_can_be_switched_off_inside():
    a, b = tl.randn(4, 4), tl.randn(4, 4)
    with tl.autocast(tl.float16):
        assert (a @ b).dtype == tl.float16
        with tl.autocast(enabled=False):
            assert (a @ b).dtype == tl.float32
        assert tl.amp.get_autocast_dtype() == np.float16
    assert (a @ b).dtype == tl.float32 and not tl.amp.is_autocast_enabled()
    with tl.autocast("cuda", dtype=tl.float16):  # torch's spelling: the device type first
        assert (a @ b).dtype == tl.float16


def test_autocast_keeps_the_range_hungry_ops_in_float32():
    x = tl.randn(6, 5).half()
    with tl.autocast(tl.float16):
        assert F.cross_entropy(x, np.arange(6) % 5).dtype == tl.float32
        assert F.softmax(x, dim=-1).dtype == tl.float32
        assert F.layer_norm(x, 5, tl.ones(5), tl.zeros(5)).dtype == tl.float32
        q = k = v = tl.randn(2, 3, 4)
        assert F.scaled_dot_product_attention(q, k, v, is_causal=True).dtype == tl.float16


def test_autocast_rejects_dtypes_it_cannot_use():
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        with tl.autocast(tl.int32):
            pass
    if tl.amp.bfloat16 is None:  # NumPy's bfloat16 is ml_dtypes'
        with pytest.raises(TypeError, match="ml_dtypes"):
            with tl.autocast("bfloat16"):
                pass


def _linear_and_sgd(init_scale: float, growth_interval: int):
    tl.manual_seed(0)
    layer = nn.Linear(3, 2)
    return layer, tl.optim.SGD(layer.parameters(), lr=0.1), tl.amp.GradScaler(init_scale=init_scale,
                                                                              growth_interval=growth_interval)


def test_grad_scaler_unscales_exactly_and_steps():
    layer, optimizer, scaler = _linear_and_sgd(init_scale=2.0 ** 10, growth_interval=100)
    x = tl.randn(5, 3)
    layer(x).sum().backward()
    expected = layer.weight.grad.numpy().copy()
    layer.zero_grad()
    scaler.scale(layer(x).sum()).backward()
    np.testing.assert_array_equal(layer.weight.grad.numpy(), expected * 2.0 ** 10)  # a power of 2: exact
    scaler.unscale_(optimizer)
    np.testing.assert_array_equal(layer.weight.grad.numpy(), expected)
    with pytest.raises(RuntimeError, match="already called"):
        scaler.unscale_(optimizer)
    before = layer.weight.numpy().copy()
    scaler.step(optimizer)
    np.testing.assert_allclose(layer.weight.numpy(), before - 0.1 * expected, rtol=1e-6)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 10


def test_grad_scaler_skips_an_overflowed_step_then_recovers_and_grows():
    layer, optimizer, scaler = _linear_and_sgd(init_scale=16.0, growth_interval=2)
    x = tl.randn(5, 3)

    def step(inject_inf: bool):
        optimizer.zero_grad()
        scaler.scale(layer(x).sum()).backward()
        if inject_inf:
            layer.weight.grad.data[0, 0] = np.inf
        before = layer.weight.numpy().copy()
        scaler.step(optimizer)
        scaler.update()
        return not np.array_equal(before, layer.weight.numpy())

    assert step(inject_inf=True) is False          # skipped: the weights did not move
    assert scaler.get_scale() == 8.0 and scaler.skipped_steps == 1
    assert np.isfinite(layer.weight.numpy()).all()
    assert step(inject_inf=False) is True          # the next clean step is taken
    assert scaler.get_scale() == 8.0
    assert step(inject_inf=False) is True          # 2 clean steps (growth_interval): the scale doubles
    assert scaler.get_scale() == 16.0
    assert step(inject_inf=False) is True and scaler.get_scale() == 16.0
    state = scaler.state_dict()
    fresh = tl.amp.GradScaler()
    fresh.load_state_dict(state)
    assert fresh.get_scale() == 16.0 and fresh.state_dict() == state


def test_grad_scaler_disabled_is_a_plain_step():
    layer, optimizer, _ = _linear_and_sgd(init_scale=16.0, growth_interval=2)
    scaler = tl.amp.GradScaler(enabled=False)
    loss = layer(tl.randn(5, 3)).sum()
    assert scaler.scale(loss) is loss and scaler.get_scale() == 1.0
    loss.backward()
    before = layer.weight.numpy().copy()
    scaler.step(optimizer)
    scaler.update()
    assert not np.array_equal(before, layer.weight.numpy())


# ------------------------------------------------ float16 training follows float32

def _train(use_amp: bool, steps: int, init_scale: float = 2.0 ** 16, device: str = "cpu"):
    """A tiny GPT on a learnable sequence, AdamW with clipping, the loop of amp.py's docstring."""
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=16))  # NumPy float16 is slow
    model.to(device)
    optimizer = model.configure_optimizer(lr=3e-3, weight_decay=0.1)
    scaler = tl.amp.GradScaler(init_scale=init_scale, enabled=use_amp)
    rng = np.random.default_rng(0)
    text = (np.arange(400) * 7 + rng.integers(0, 2, 400)) % 16  # mostly predictable: the loss falls far
    losses = []
    for _ in range(steps):
        starts = rng.integers(0, text.size - 9, 4)
        x = tl.backend.to_device(np.stack([text[s:s + 8] for s in starts]), device)
        y = tl.backend.to_device(np.stack([text[s + 1:s + 9] for s in starts]), device)
        with tl.autocast(tl.float16, enabled=use_amp):
            _, loss = model(x, y)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        tl.optim.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
    return np.array(losses), model, optimizer, scaler


def test_float16_training_tracks_float32_within_0_05_over_200_steps():
    reference, *_ = _train(use_amp=False, steps=200)
    mixed, model, optimizer, scaler = _train(use_amp=True, steps=200)
    assert reference[-20:].mean() < reference[:5].mean() - 0.5  # it learned something
    gap = np.abs(mixed - reference).max()
    assert 0 < gap <= 0.05, f"float16 and float32 loss curves differ by up to {gap:.4f}"
    # master weights and optimizer state stayed float32
    assert all(p.dtype == tl.float32 for p in model.parameters())
    assert all(value.dtype == np.float32 for state in optimizer.state.values() for value in state.values()
               if hasattr(value, "dtype") and value.ndim > 0)
    assert scaler.skipped_steps == 0


@pytest.mark.gpu
def test_float16_training_on_the_gpu_tracks_float32():
    reference, *_ = _train(use_amp=False, steps=200, device="cuda")
    mixed, model, _, scaler = _train(use_amp=True, steps=200, device="cuda")
    gap = np.abs(mixed - reference).max()
    assert 0 < gap <= 0.05, f"float16 and float32 loss curves on the GPU differ by up to {gap:.4f}"
    assert all(p.dtype == tl.float32 and p.device == "cuda" for p in model.parameters())


def test_too_large_a_loss_scale_overflows_float16_and_backs_off():
    # 2**40 times the loss gradient overflows float16 (max 65504) in backward: steps are skipped
    # and the scale halved until the gradients fit, then training goes on.
    with np.errstate(over="ignore", invalid="ignore"):  # the overflows are the point
        losses, _, _, scaler = _train(use_amp=True, steps=30, init_scale=2.0 ** 40)
    assert scaler.skipped_steps >= 10 and scaler.get_scale() <= 2.0 ** 30
    assert np.isfinite(losses).all() and losses[-5:].mean() < losses[0]

"""Everything on the GPU: the op table, the fused kernels, nn + optim, checkpoints, the GPT, training.

Each GPU result is compared with the CPU's (the same code on NumPy) and,
where PyTorch has CUDA, with PyTorch on the GPU. Every test is marked ``gpu``:
without CuPy or a GPU they are skipped with the reason (see conftest.py).
On a GPU machine:

    pip install -e ".[test,gpu-cuda12]"        # or gpu-cuda13, to match `nvidia-smi`
    python -m pytest tests/ -m gpu -v
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_lite as tl
from gpt import GPT, GPTConfig
from op_table import OPS, OpRow
from tinygrad_lite import backend, cuda_kernels, fused, optim
from tinygrad_lite import functional as F

pytestmark = pytest.mark.gpu

ROWS = {row.name: row for row in OPS}
TORCH_CUDA = torch.cuda.is_available()
TORCH_DTYPE = {"float64": torch.float64, "float32": torch.float32}


def f32(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ------------------------------------------------------------ the op table


def run_ours(row: OpRow, case, dtype: str, device: str):
    inputs = [tl.Tensor(a.astype(dtype), requires_grad=True, device=device) for a in case.arrays]
    out = row.ours(*inputs, **case.extra)
    upstream = np.random.default_rng(0).standard_normal(out.shape).astype(dtype)
    out.backward(tl.Tensor(upstream, device=device))
    return out, inputs, upstream


def run_torch_cuda(row: OpRow, case, dtype: str, upstream):
    """The row's torch version on the GPU, or None for rows whose torch lambda builds CPU-only
    extras (``torch.from_numpy(targets)`` cannot meet CUDA inputs): those are checked against the CPU only."""
    inputs = [torch.tensor(a.astype(dtype), requires_grad=True, device="cuda") for a in case.arrays]
    try:
        out = row.theirs(*inputs, **case.extra)
    except (RuntimeError, TypeError):  # "Expected all tensors to be on the same device"
        return None
    out.backward(torch.from_numpy(upstream).cuda())
    return out.detach().cpu().numpy(), [t.grad.cpu().numpy() if t.grad is not None else None for t in inputs]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ROWS)
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_op_table_on_the_gpu_matches_the_cpu_and_torch_cuda(name, dtype, data):
    row = ROWS[name]
    case = data.draw(row.inputs)
    cpu_out, cpu_inputs, upstream = run_ours(row, case, dtype, "cpu")
    gpu_out, gpu_inputs, _ = run_ours(row, case, dtype, "cuda")
    rtol, atol = (1e-9, 1e-11) if dtype == "float64" else (row.rtol32, row.atol32)

    assert gpu_out.device == "cuda" and gpu_out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(gpu_out.numpy(), cpu_out.numpy(), rtol=rtol, atol=atol, err_msg=f"{name} forward")
    for i, (gpu, cpu) in enumerate(zip(gpu_inputs, cpu_inputs)):
        assert gpu.grad is not None and gpu.grad.device == "cuda", f"{name}: input {i} has no CUDA gradient"
        np.testing.assert_allclose(gpu.grad.numpy(), cpu.grad.numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"{name} gradient of input {i}")
    if TORCH_CUDA:
        theirs = run_torch_cuda(row, case, dtype, upstream)
        if theirs is not None:
            out, grads = theirs
            np.testing.assert_allclose(gpu_out.numpy(), out, rtol=rtol, atol=atol, err_msg=f"{name} vs torch cuda")
            for i, (gpu, grad) in enumerate(zip(gpu_inputs, grads)):
                expected = np.zeros(gpu.shape, dtype) if grad is None else grad
                np.testing.assert_allclose(gpu.grad.numpy(), expected, rtol=rtol, atol=atol,
                                           err_msg=f"{name} gradient of input {i} vs torch cuda")


def test_mixing_devices_names_the_op_and_the_devices():
    a, b = tl.Tensor([1.0, 2.0]), tl.Tensor([3.0, 4.0], device="cuda")
    with pytest.raises(RuntimeError, match=r"Add: inputs are on different devices \(cpu, cuda\)"):
        a + b
    with pytest.raises(RuntimeError, match=r"MatMul: .*\(cuda, cpu\)"):
        b.reshape(1, 2) @ a.reshape(2, 1)


def test_to_device_is_differentiable_and_round_trips():
    x = tl.Tensor(f32(3, 4), requires_grad=True)
    y = (x.to("cuda") * 2.0).sum()
    assert y.device == "cuda"
    y.backward()
    assert x.grad.device == "cpu"
    np.testing.assert_array_equal(x.grad.numpy(), np.full((3, 4), 2.0, np.float32))
    assert x.cuda().cpu().device == "cpu"
    np.testing.assert_array_equal(tl.Tensor(x.numpy(), device="cuda").numpy(), x.numpy())


# ---------------------------------------------------- kernels vs their twins


def three_ways(fn, arrays, upstream_seed=99):
    """fn on the CPU (the twin), on the GPU with the kernels and on the GPU with them off.

    Returns {path: (output, grads, creator)} with numpy results; the creator (the
    output's Function) tells which path ran.
    """
    results = {}
    for path, device in (("cpu", "cpu"), ("kernel", "cuda"), ("gpu twin", "cuda")):
        tensors = [tl.Tensor(a, requires_grad=True, device=device) for a in arrays]
        if path == "gpu twin":
            with cuda_kernels.disabled():
                out = fn(*tensors)
        else:
            out = fn(*tensors)
        creator = out._ctx
        upstream = np.random.default_rng(upstream_seed).standard_normal(out.shape).astype(np.float32)
        if path == "gpu twin":
            with cuda_kernels.disabled():
                out.backward(upstream)
        else:
            out.backward(upstream)
        results[path] = (out.numpy(), [t.grad.numpy() for t in tensors], creator)
    return results


def assert_paths_agree(results, rtol=2e-5, atol=2e-5):
    cpu_out, cpu_grads, _ = results["cpu"]
    for path in ("kernel", "gpu twin"):
        out, grads, _ = results[path]
        scale = max(1.0, float(np.abs(cpu_out).max()))
        np.testing.assert_allclose(out, cpu_out, rtol=rtol, atol=atol * scale, err_msg=f"{path} forward")
        for i, (grad, cpu_grad) in enumerate(zip(grads, cpu_grads)):
            scale = max(1.0, float(np.abs(cpu_grad).max()))
            np.testing.assert_allclose(grad, cpu_grad, rtol=rtol, atol=atol * scale, err_msg=f"{path} grad {i}")


ROW_SHAPES = [(7,), (4, 1), (3, 65), (8, 16, 256), (5, 1030), (2, 50304)]


@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("log", [False, True])
def test_softmax_kernels_equal_their_twin(shape, log):
    fn = (lambda x: F.log_softmax(x, axis=-1)) if log else (lambda x: F.softmax(x, axis=-1))
    results = three_ways(fn, [f32(*shape, seed=1, scale=4.0)])
    assert results["kernel"][2].on_gpu and not results["gpu twin"][2].on_gpu
    assert_paths_agree(results)


def test_softmax_over_another_axis_uses_the_twin_on_the_gpu():
    results = three_ways(lambda x: F.softmax(x, axis=0), [f32(5, 3, seed=2)])
    assert not results["kernel"][2].on_gpu
    assert_paths_agree(results)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("rows, classes", [(1, 1), (6, 65), (256, 1030), (64, 50304)])
def test_cross_entropy_kernels_equal_their_twin(rows, classes, reduction):
    targets = np.random.default_rng(3).integers(0, classes, rows)
    targets[::3] = -100  # some ignored rows
    if (targets == -100).all():
        targets[0] = 0
    results = three_ways(lambda x: F.cross_entropy(x, targets, reduction=reduction), [f32(rows, classes, seed=4,
                                                                                          scale=3.0)])
    assert results["kernel"][2].on_gpu
    assert_paths_agree(results)


def test_cross_entropy_with_every_target_ignored_is_nan_and_zero_gradient_on_the_gpu():
    logits = tl.Tensor(f32(3, 5), requires_grad=True, device="cuda")
    loss = F.cross_entropy(logits, np.full(3, -100))
    assert math.isnan(loss.item())
    loss.backward()
    np.testing.assert_array_equal(logits.grad.numpy(), np.zeros((3, 5), np.float32))


@pytest.mark.parametrize("affine", ["both", "weight", "none"])
@pytest.mark.parametrize("shape", [(3, 2), (4, 64, 384), (7, 1030), (2, 3, 768)])
def test_layer_norm_kernels_equal_their_twin(shape, affine):
    dim = shape[-1]
    arrays = [f32(*shape, seed=5, scale=2.0) + 1.0]
    if affine != "none":
        arrays.append(f32(dim, seed=6) + 1.0)
    if affine == "both":
        arrays.append(f32(dim, seed=7))

    def fn(x, *params):
        return F.layer_norm(x, x.shape[-1:], params[0] if params else None, params[1] if len(params) > 1 else None)

    results = three_ways(fn, arrays)
    assert results["kernel"][2].on_gpu
    assert_paths_agree(results, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(), (5,), (64, 1536), (3, 7, 9)])
def test_gelu_kernels_equal_their_twin(shape):
    results = three_ways(lambda x: F.gelu(x, approximate="tanh"), [f32(*shape, seed=8, scale=3.0)])
    assert results["kernel"][2].on_gpu
    assert_paths_agree(results, rtol=1e-5, atol=1e-5)


ATTENTION_SHAPES = [  # (batch dims, Tq, Tk, D)
    ((4, 6), 256, 256, 64),   # nanoGPT's GPU Shakespeare run
    ((2, 3), 100, 100, 40),
    ((2,), 65, 65, 32),
    ((1, 2), 1, 1, 8),
    ((3,), 17, 130, 16),      # Tq < Tk
]


@pytest.mark.parametrize("mode", ["matmul", "flash"])
@pytest.mark.parametrize("is_causal", [True, False])
@pytest.mark.parametrize("batch, tq, tk, d", ATTENTION_SHAPES)
def test_attention_kernels_equal_their_twin(batch, tq, tk, d, is_causal, mode):
    arrays = [f32(*batch, tq, d, seed=9), f32(*batch, tk, d, seed=10), f32(*batch, tk, d, seed=11)]
    previous = cuda_kernels.attention_mode()
    cuda_kernels.set_attention_mode(mode)
    try:
        results = three_ways(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), arrays)
    finally:
        cuda_kernels.set_attention_mode(previous)
    assert results["kernel"][2].algorithm == ("flash" if mode == "flash" else "fused_softmax")
    assert results["gpu twin"][2].algorithm == "plain"
    assert_paths_agree(results, rtol=1e-4, atol=2e-5)


def test_attention_with_broadcast_batch_uses_the_fused_softmax():
    arrays = [f32(2, 3, 5, 4, seed=12), f32(3, 5, 4, seed=13), f32(1, 3, 5, 4, seed=14)]
    results = three_ways(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), arrays)
    assert results["kernel"][2].algorithm == "fused_softmax"
    assert_paths_agree(results, rtol=1e-4, atol=2e-5)


def test_flash_attention_on_the_gpu_equals_its_tiled_numpy_twin():
    q, k, v = f32(2, 3, 40, 16, seed=15), f32(2, 3, 40, 16, seed=16), f32(2, 3, 40, 16, seed=17)
    grad = f32(2, 3, 40, 16, seed=18)
    xp = backend.get_xp("cuda")
    scale = 1.0 / math.sqrt(16)
    out, lse = cuda_kernels.flash_attention_forward(xp.asarray(q), xp.asarray(k), xp.asarray(v), scale, True)
    expected_out, expected_lse = fused.flash_attention_tiled(q, k, v, is_causal=True)
    np.testing.assert_allclose(out.get(), expected_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lse.get().reshape(expected_lse.shape), expected_lse, rtol=1e-4, atol=1e-5)
    grads = cuda_kernels.flash_attention_backward(xp.asarray(q), xp.asarray(k), xp.asarray(v), out, lse,
                                                  xp.asarray(grad), scale, True)
    expected = fused.flash_attention_tiled_backward(q, k, v, expected_out, expected_lse, grad, is_causal=True)
    for actual, desired in zip(grads, expected):
        np.testing.assert_allclose(actual.get(), desired, rtol=1e-4, atol=1e-5)


def test_auto_attention_picks_flash_only_for_huge_score_matrices(monkeypatch):
    monkeypatch.setattr(cuda_kernels, "_attention_mode", "auto")
    xp = backend.get_xp("cuda")
    q = xp.zeros((2, 4, 64, 32), dtype=np.float32)
    assert cuda_kernels.attention_algorithm(q, q, q) == "fused_softmax"
    monkeypatch.setattr(cuda_kernels, "FLASH_AUTO_BYTES", 1000)
    assert cuda_kernels.attention_algorithm(q, q, q) == "flash"
    wide = xp.zeros((2, 4, 64, 128), dtype=np.float32)  # head size above FLASH_MAX_HEAD_DIM
    assert cuda_kernels.attention_algorithm(wide, wide, wide) == "fused_softmax"
    assert cuda_kernels.attention_algorithm(q.astype(np.float64), q, q) is None


# ---------------------------------------------------------------- optimizer


def make_params(device, dtype=np.float32, seed=21):
    rng = np.random.default_rng(seed)
    shapes = [(8, 5), (8,), (3, 8), (1,), (64, 33)]
    return [tl.Tensor(rng.standard_normal(s).astype(dtype), requires_grad=True, device=device) for s in shapes]


def set_grads(params, step):
    rng = np.random.default_rng(100 + step)
    for p in params:
        p.grad = tl.Tensor(rng.standard_normal(p.shape).astype(p.dtype), device=p.device)


@pytest.mark.parametrize("make", [
    lambda p, fused: optim.AdamW([{"params": p[:3], "weight_decay": 0.1}, {"params": p[3:], "weight_decay": 0.0}],
                                 lr=0.01, betas=(0.9, 0.99), fused=fused),
    lambda p, fused: optim.Adam(p, lr=0.01, weight_decay=0.05, fused=fused),
])
def test_adam_kernel_is_bit_identical_to_the_cpu_and_to_the_loop(make):
    """One CUDA kernel per group = the NumPy fused twin = the per-parameter loop, bit for bit."""
    runs = {}
    for name, device, is_fused in (("cpu fused", "cpu", True), ("cuda kernel", "cuda", True),
                                   ("cuda loop", "cuda", False)):
        params = make_params(device)
        arrays = [p.data for p in params]
        optimizer = make(params, is_fused)
        for step in range(4):
            set_grads(params, step)
            optimizer.step()
        assert all(p.data is a for p, a in zip(params, arrays))  # updated in place
        runs[name] = (params, optimizer)
    kernel_params, kernel_optimizer = runs["cuda kernel"]
    assert isinstance(kernel_optimizer._flat[0].exp_avg, backend.get_xp("cuda").ndarray)
    for name in ("cpu fused", "cuda loop"):
        for a, b in zip(kernel_params, runs[name][0]):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"cuda kernel vs {name}")
    state = kernel_optimizer.state_dict()  # the per-parameter format, as numpy arrays
    assert state["state"][0]["exp_avg"].shape == (8, 5) and isinstance(state["state"][0]["exp_avg"], np.ndarray)
    cpu_state = runs["cpu fused"][1].state_dict()
    np.testing.assert_array_equal(state["state"][4]["exp_avg_sq"], cpu_state["state"][4]["exp_avg_sq"])


def test_float64_parameters_on_the_gpu_use_the_array_twin():
    cpu, gpu = make_params("cpu", np.float64), make_params("cuda", np.float64)
    optimizers = [optim.AdamW(p, lr=0.01) for p in (cpu, gpu)]
    for step in range(3):
        for params, optimizer in zip((cpu, gpu), optimizers):
            set_grads(params, step)
            optimizer.step()
    for a, b in zip(gpu, cpu):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


def test_clip_grad_norm_on_the_gpu():
    cpu, gpu = make_params("cpu"), make_params("cuda")
    set_grads(cpu, 0)
    set_grads(gpu, 0)
    norm_cpu, norm_gpu = optim.clip_grad_norm_(cpu, 0.5), optim.clip_grad_norm_(gpu, 0.5)
    assert isinstance(norm_gpu, float) and norm_gpu == pytest.approx(norm_cpu, rel=1e-6)
    for a, b in zip(gpu, cpu):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-6)


def test_optimizer_state_follows_the_model_between_devices():
    params = make_params("cpu")
    optimizer = optim.AdamW(params, lr=0.01)
    set_grads(params, 0)
    optimizer.step()
    for p in params:  # what Module.to does
        p.data = backend.to_device(p.data, "cuda")
    set_grads(params, 1)
    optimizer.step()
    assert all(backend.is_cuda(optimizer.state[p]["exp_avg"]) for p in params)
    optimizer.fused = False  # the loop moves state too
    for p in params:
        p.data = backend.to_device(p.data, "cpu")
    set_grads(params, 2)
    optimizer.step()
    assert all(not backend.is_cuda(optimizer.state[p]["exp_avg"]) for p in params)


# ----------------------------------------------------- nn, GPT, checkpoints


def tiny_gpt(seed=0, **overrides):
    tl.manual_seed(seed)
    settings_ = dict(vocab_size=37, block_size=32, n_layer=2, n_head=4, n_embd=64, dropout=0.0, bias=True)
    settings_.update(overrides)
    return GPT(GPTConfig(**settings_))


def batches(count, batch=4, block=32, vocab=37):
    rng = np.random.default_rng(7)
    return [(rng.integers(0, vocab, (batch, block)), rng.integers(0, vocab, (batch, block))) for _ in range(count)]


def train_steps(model, optimizer, data):
    losses = []
    for x, y in data:
        _, loss = model(x, y)
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_gpt_training_on_the_gpu_follows_the_cpu_trajectory():
    data = batches(6)
    runs = {}
    for device in ("cpu", "cuda"):
        model = tiny_gpt()
        optimizer = model.configure_optimizer(lr=3e-3, weight_decay=0.1)  # built before the move
        model.to(device)
        runs[device] = (model, train_steps(model, optimizer, data))
    (cpu_model, cpu_losses), (gpu_model, gpu_losses) = runs["cpu"], runs["cuda"]
    assert all(p.device == "cuda" for p in gpu_model.parameters())
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-4)
    for (name, a), (_, b) in zip(gpu_model.named_parameters(), cpu_model.named_parameters()):
        # a relative norm: Adam's m / sqrt(v) can turn float32 noise in a near-zero gradient into an lr-sized step
        difference = np.linalg.norm(a.numpy() - b.numpy()) / np.linalg.norm(b.numpy())
        assert difference < 1e-3, (name, difference)


def test_gpt_checkpoint_from_the_gpu_loads_on_the_cpu_and_back(tmp_path):
    from gpt.checkpoint import load_checkpoint, load_model, save_checkpoint

    data = batches(4)
    model = tiny_gpt().to("cuda")
    optimizer = model.configure_optimizer(lr=3e-3, weight_decay=0.1)
    train_steps(model, optimizer, data[:2])
    save_checkpoint(tmp_path, "last", model=model, model_config=model.config.to_dict(), tokenizer={"kind": "none"},
                    train_state={"iteration": 2}, optimizer=optimizer)

    saved = load_checkpoint(tmp_path)
    cpu_model = load_model(saved)  # on the CPU
    for (name, a), (_, b) in zip(model.named_parameters(), cpu_model.named_parameters()):
        assert b.device == "cpu"
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    cpu_optimizer = cpu_model.configure_optimizer(lr=3e-3, weight_decay=0.1)
    cpu_optimizer.load_state_dict(saved.optimizer_state)
    cpu_losses = train_steps(cpu_model, cpu_optimizer, data[2:])

    back = load_model(saved).to("cuda")  # and back onto the GPU
    back_optimizer = back.configure_optimizer(lr=3e-3, weight_decay=0.1)
    back_optimizer.load_state_dict(saved.optimizer_state)
    assert all(backend.is_cuda(s["exp_avg"]) for s in back_optimizer.state.values())
    gpu_losses = train_steps(back, back_optimizer, data[2:])
    continued = train_steps(model, optimizer, data[2:])
    np.testing.assert_allclose(gpu_losses, continued, rtol=1e-5)  # (scatter-add atomics: not bit-exact)
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-4)

    tl.save(back.state_dict(), tmp_path / "weights.safetensors")  # tl.save / tl.load across devices
    on_gpu = tl.load(tmp_path / "weights.safetensors", device="cuda")
    assert all(t.device == "cuda" for t in on_gpu.values())


@pytest.mark.parametrize("hf_settings", [dict(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4),
                                         dict(vocab_size=97, n_positions=64, n_embd=128, n_layer=2, n_head=2)])
def test_hugging_face_gpt2_parity_on_the_gpu(hf_settings, tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(**hf_settings, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for param in hf.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    hf.save_pretrained(tmp_path, safe_serialization=True)

    ours = GPT.from_pretrained(tmp_path).to("cuda")
    idx = np.random.default_rng(0).integers(0, hf_settings["vocab_size"], (2, hf_settings["n_positions"]))
    device = "cuda" if TORCH_CUDA else "cpu"
    hf = hf.to(device)
    torch_idx = torch.tensor(idx, device=device)
    with torch.no_grad():
        expected_logits = hf(torch_idx).logits.cpu().numpy()
    logits, _ = ours(idx)
    assert logits.device == "cuda"
    np.testing.assert_allclose(logits.numpy(), expected_logits, atol=1e-4, rtol=0)

    # gradients: HF shifts the labels itself; ours gets the shifted targets, the last position ignored
    targets = np.concatenate([idx[:, 1:], np.full((2, 1), -100)], axis=1)
    _, loss = ours(idx, targets)
    loss.backward()
    hf_out = hf(torch_idx, labels=torch_idx)
    hf_out.loss.backward()
    np.testing.assert_allclose(loss.item(), hf_out.loss.item(), rtol=1e-5)
    hf_params = dict(hf.named_parameters())
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    for name, param in ours.named_parameters():
        hf_name = name if name.startswith("lm_head") else "transformer." + name
        if hf_name not in hf_params:  # the tied lm_head
            continue
        expected = hf_params[hf_name].grad.cpu().numpy()
        if name.endswith(conv1d):
            expected = expected.T
        np.testing.assert_allclose(param.grad.numpy(), expected, atol=2e-4, rtol=1e-3, err_msg=name)

    prompt = idx[:1, :3]
    new_tokens = min(12, hf_settings["n_positions"] - 3)
    with torch.no_grad():
        hf_tokens = hf.generate(torch.tensor(prompt, device=device),
                                attention_mask=torch.ones(prompt.shape, dtype=torch.long, device=device),
                                max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                pad_token_id=0).cpu().numpy()
    assert np.array_equal(ours.generate(prompt, new_tokens, temperature=0), hf_tokens)


def test_short_gpu_training_run_drives_the_loss_down(tmp_path):
    from gpt.train import TrainConfig, train

    words = ["the", "king", "queen", "and", "of", "my", "lord", "to", "thee", "shall", "love", "is", "not"]
    rng = np.random.default_rng(0)
    text = "\n".join(" ".join(rng.choice(words, 8)).capitalize() + "." for _ in range(3000))
    data = tmp_path / "text.txt"
    data.write_text(text, encoding="utf-8")
    config = TrainConfig(data=str(data), cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "out"),
                         n_layer=2, n_head=4, n_embd=64, block_size=32, batch_size=16, max_iters=60, lr=3e-3,
                         min_lr=3e-4, warmup_iters=5, eval_interval=30, eval_iters=4, final_eval_iters=8,
                         sample_tokens=20, device="cuda", progress=False)
    result = train(config)
    assert result.iterations == 60 and not result.interrupted
    first, last = np.mean(result.train_losses[:5]), np.mean(result.train_losses[-5:])
    assert last < first - 0.8, (first, last)
    assert result.final_val_loss < first - 0.8
    assert result.sample


# -------------------------------------------------------- the backend itself


def test_rng_is_seeded_per_device_and_its_state_round_trips():
    tl.manual_seed(123)
    a = tl.randn(1000, device="cuda").numpy()
    tl.manual_seed(123)
    assert np.array_equal(tl.randn(1000, device="cuda").numpy(), a)
    state = backend.get_rng_state("cuda")
    b = tl.rand(50, device="cuda").numpy()
    backend.set_rng_state(state, "cuda")
    assert np.array_equal(tl.rand(50, device="cuda").numpy(), b)
    x = tl.Tensor(np.ones(10_000, np.float32), device="cuda")
    kept = F.dropout(x, 0.25).numpy()
    assert 0.7 < (kept > 0).mean() < 0.8 and np.allclose(kept[kept > 0], 1 / 0.75)


def test_memory_pool_stats_and_empty_cache():
    x = tl.zeros(1024, 1024, device="cuda")
    stats = backend.memory_pool_stats()
    assert stats["used_bytes"] >= 4 * 1024 * 1024 and stats["pool_bytes"] >= stats["used_bytes"]
    assert stats["device_total_bytes"] > 0
    del x
    backend.empty_cache()
    assert backend.memory_pool_stats()["pool_bytes"] <= stats["pool_bytes"]
    backend.synchronize("cuda")


def test_tf32_is_off_by_default_and_switchable():
    if backend.tf32_enabled():
        pytest.skip("CUPY_TF32=1 is set in this environment")
    a = tl.Tensor(f32(256, 256, seed=30), device="cuda")
    exact = (a @ a).numpy()
    np.testing.assert_allclose(exact, a.numpy().astype(np.float64) @ a.numpy().astype(np.float64), rtol=1e-4,
                               atol=1e-3)
    backend.set_tf32(True)
    try:
        assert backend.tf32_enabled()
        (a @ a).numpy()  # runs (on GPUs without TF32 it is plain float32)
    finally:
        backend.set_tf32(False)
    assert not backend.tf32_enabled()

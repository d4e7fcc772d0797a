"""One GPT training step, tinygrad_lite vs PyTorch eager, side by side.

Both sides compute the same function: the peer is Hugging Face's
``GPT2LMHeadModel`` with the matching config (no dropout) and *our* weights
copied in; the first step's losses are checked to agree. A step is forward,
loss, backward, gradient clipping and an AdamW update. Steps are interleaved
(ours, theirs, ours, ...) after a warm-up and the medians are compared.

    python benchmarks/bench_train_step.py                 # baby and small, 2 threads
    python benchmarks/bench_train_step.py --config baby --steps 30 --threads 2
    python benchmarks/bench_train_step.py --device cuda   # on a GPU machine

Peak memory is measured separately: each side runs alone in a subprocess
(``--memory-only``) and reports its peak resident set (CPU) or the peak of
the GPU memory pool.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = {
    # name: (n_layer, n_head, n_embd, block_size, batch_size, vocab_size)
    "baby": (4, 4, 128, 64, 12, 65),  # nanoGPT's CPU Shakespeare run (the default training run)
    "small": (6, 6, 384, 256, 4, 65),
    "shakespeare-gpu": (6, 6, 384, 256, 64, 65),  # nanoGPT's GPU Shakespeare run
    "gpt2-124m": (12, 12, 768, 1024, 8, 50304),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), action="append",
                        help="configuration(s) to run (default: baby and small on cpu, "
                             "shakespeare-gpu and gpt2-124m on cuda)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP/torch threads (same for both)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-only", choices=["ours", "torch"], help=argparse.SUPPRESS)
    return parser.parse_args()


ARGS = parse_args()
# Thread counts must be fixed before numpy (and its BLAS) is imported.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[variable] = str(ARGS.threads)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as the training script sets it (tinygrad_lite/cpu.py)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import machine  # noqa: E402  (benchmarks/machine.py)
import tinygrad_lite as tl  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402

tl.cpu.tune()  # as training does
from tinygrad_lite import optim  # noqa: E402

CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def build_ours(name: str, device: str):
    n_layer, n_head, n_embd, block_size, _, vocab = CONFIGS[name]
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=n_layer, n_head=n_head,
                          n_embd=n_embd, dropout=0.0, bias=True))
    if device != "cpu":
        model.to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    return model, optimizer


def build_torch(name: str, device: str, ours_model=None):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(ARGS.threads)
    n_layer, n_head, n_embd, block_size, _, vocab = CONFIGS[name]
    config = GPT2Config(vocab_size=vocab, n_positions=block_size, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_new",
                        layer_norm_epsilon=1e-5, bos_token_id=None, eos_token_id=None)
    model = GPT2LMHeadModel(config)
    if ours_model is not None:  # copy our weights so both sides compute the same function
        state = {}
        for key, value in ours_model.state_dict().items():
            array = value.numpy()
            if key.endswith(CONV1D_SUFFIXES):
                array = array.T  # HF stores these as Conv1D (in, out)
            hf_key = key if key.startswith("lm_head.") else "transformer." + key
            state[hf_key] = torch.from_numpy(np.ascontiguousarray(array))
        missing, unexpected = model.load_state_dict(state, strict=False)
        real_missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
        if real_missing or unexpected:
            raise RuntimeError(f"weight copy mismatch: missing {real_missing}, unexpected {unexpected}")
    model.to(device)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.99), foreach=True)
    return model, optimizer


def make_batches(name: str, count: int):
    _, _, _, block_size, batch, vocab = CONFIGS[name]
    rng = np.random.default_rng(1)
    return [(rng.integers(0, vocab, (batch, block_size)), rng.integers(0, vocab, (batch, block_size)))
            for _ in range(count)]


def step_ours(model, optimizer, x, y, device: str) -> float:
    _, loss = model(x, y)
    loss.backward()
    optim.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()  # .item() also synchronises the GPU


def step_torch(model, optimizer, x, y, device: str) -> float:
    import torch

    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y).to(device)
    loss = model(xt, labels=None).logits
    loss = torch.nn.functional.cross_entropy(loss.reshape(-1, loss.shape[-1]), yt.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def flops_per_step(name: str, model) -> float:
    """nanoGPT's estimate: 6 N per token for the weights plus 12 L H Q T for attention, x3 for fwd+bwd."""
    n_layer, n_head, n_embd, block_size, batch, _ = CONFIGS[name]
    n_params = sum(p.numel() for p in model.parameters()) - block_size * n_embd  # without position embeddings
    per_token = 6 * n_params + 12 * n_layer * n_head * (n_embd // n_head) * block_size
    return per_token * batch * block_size


def gemm_peak_gflops() -> float:
    """The machine's float32 GEMM speed through numpy's BLAS (the limit both sides chase)."""
    best = 0.0
    for n in (512, 1024):
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        a @ a
        start = time.perf_counter()
        repeats = 10
        for _ in range(repeats):
            a @ a
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def peak_memory_mb(side: str, name: str) -> float:
    """Run one side alone in a subprocess and return its peak memory (MB) during training."""
    command = [sys.executable, os.path.abspath(__file__), "--memory-only", side, "--config", name,
               "--device", ARGS.device, "--threads", str(ARGS.threads), "--steps", "5"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_mb"]


def memory_only(side: str, name: str) -> None:
    device = ARGS.device
    batches = make_batches(name, 6)
    if side == "ours":
        model, optimizer = build_ours(name, device)
        step = step_ours
    else:
        model, optimizer = build_torch(name, device)
        step = step_torch
    for x, y in batches:
        step(model, optimizer, x, y, device)
    if device == "cuda":
        if side == "ours":
            peak = tl.backend.get_xp("cuda").get_default_memory_pool().total_bytes() / 2**20
        else:
            import torch
            peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _peak_rss_mb()
    print(json.dumps({"peak_mb": peak}))


def _peak_rss_mb() -> float:
    """This process's peak resident set. VmHWM belongs to the process's own memory map, so unlike
    ru_maxrss it does not inherit the high-water mark of the parent that forked it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_config(name: str, device: str, peak_gflops: float) -> dict:
    ours_model, ours_opt = build_ours(name, device)
    torch_model, torch_opt = build_torch(name, device, ours_model)
    batches = make_batches(name, ARGS.warmup + ARGS.steps)

    first_ours = step_ours(ours_model, ours_opt, *batches[0], device)
    first_torch = step_torch(torch_model, torch_opt, *batches[0], device)
    if abs(first_ours - first_torch) > 1e-3 * max(1.0, abs(first_torch)):
        raise RuntimeError(f"first-step losses differ: ours {first_ours:.6f} vs torch {first_torch:.6f}")
    for x, y in batches[1:ARGS.warmup]:
        step_ours(ours_model, ours_opt, x, y, device)
        step_torch(torch_model, torch_opt, x, y, device)

    times = {"ours": [], "torch": []}
    for x, y in batches[ARGS.warmup:]:
        for side, step, model, opt in (("ours", step_ours, ours_model, ours_opt),
                                       ("torch", step_torch, torch_model, torch_opt)):
            start = time.perf_counter()
            step(model, opt, x, y, device)
            times[side].append(time.perf_counter() - start)

    _, _, _, block_size, batch, _ = CONFIGS[name]
    flops = flops_per_step(name, ours_model)
    result = {"config": name, "device": device, "first_loss_ours": first_ours, "first_loss_torch": first_torch}
    for side in ("ours", "torch"):
        median = float(np.median(times[side]))
        result[f"{side}_ms"] = median * 1e3
        result[f"{side}_tokens_per_s"] = batch * block_size / median
        result[f"{side}_gflops"] = flops / median / 1e9
    result["ratio"] = result["ours_ms"] / result["torch_ms"]
    result["peak_gemm_gflops"] = peak_gflops
    return result


def main() -> None:
    names = ARGS.config or (["baby", "small"] if ARGS.device == "cpu" else ["shakespeare-gpu", "gpt2-124m"])
    if ARGS.memory_only:
        memory_only(ARGS.memory_only, names[0])
        return
    import torch

    print(f"tinygrad_lite vs PyTorch {torch.__version__} eager, device={ARGS.device}, threads={ARGS.threads}, "
          f"{ARGS.steps} timed steps after {ARGS.warmup} warm-up")
    print(machine.describe())
    peak = gemm_peak_gflops() if ARGS.device == "cpu" else float("nan")
    if ARGS.device == "cpu":
        print(f"numpy float32 GEMM peak on this machine: {peak:.1f} GFLOP/s")
    for name in names:
        r = run_config(name, ARGS.device, peak)
        print(f"\n[{name}] first-step loss: ours {r['first_loss_ours']:.5f}, torch {r['first_loss_torch']:.5f}")
        print(f"  ours : {r['ours_ms']:8.2f} ms/iter  {r['ours_tokens_per_s']:9.0f} tok/s  {r['ours_gflops']:6.1f} GFLOP/s")
        print(f"  torch: {r['torch_ms']:8.2f} ms/iter  {r['torch_tokens_per_s']:9.0f} tok/s  {r['torch_gflops']:6.1f} GFLOP/s")
        print(f"  ratio ours/torch (median step time): {r['ratio']:.3f}")
        if not ARGS.no_memory:
            ours_mb, torch_mb = peak_memory_mb("ours", name), peak_memory_mb("torch", name)
            kind = "peak RSS" if ARGS.device == "cpu" else "peak GPU memory"
            print(f"  {kind}: ours {ours_mb:.0f} MB, torch {torch_mb:.0f} MB (each side alone in a subprocess)")


if __name__ == "__main__":
    main()

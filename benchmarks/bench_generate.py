"""Sampling speed: no cache, the KV cache through the model's modules, and the folded fast path.

The model is the default training run's (4 layers, 4 heads, n_embd 128, block_size 64, vocab 65;
random weights: the work per token does not depend on them). Each round generates the same
tokens three ways, in turn (``gpt.generation.generate`` with ``use_cache=False``,
``decoder="modules"`` and ``decoder="folded"``); the medians over the rounds are reported,
with each cache's speed-up over no cache.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_generate.py
    python benchmarks/bench_generate.py --tokens 500 --rounds 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as examples/sample.py sets it (tinygrad_lite/cpu.py)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import machine  # noqa: E402  (benchmarks/machine.py)
import tinygrad_lite as tl  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402
from gpt.generation import generate  # noqa: E402

WAYS = {"no cache": dict(use_cache=False), "KV cache, modules": dict(decoder="modules"),
        "KV cache, folded": dict(decoder="folded")}


def tokens_per_second(model: GPT, tokens: int, way: dict, seed: int) -> tuple[float, np.ndarray]:
    prompt = np.zeros((1, 1), dtype=np.int64)
    started = time.perf_counter()
    ids = generate(model, prompt, tokens, temperature=0.8, top_k=200, generator=np.random.default_rng(seed), **way)
    tl.backend.synchronize(model.wte.weight.device)
    return tokens / (time.perf_counter() - started), ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=500, help="tokens generated per run (default 500)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the three ways (default 5)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    tl.cpu.tune()  # as examples/sample.py does
    print(machine.describe())
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)).to(args.device)
    speeds = {name: [] for name in WAYS}
    for _ in range(2):  # warm-up: first-call costs (allocations, thread start)
        for way in WAYS.values():
            tokens_per_second(model, 50, way, seed=0)
    for round_index in range(args.rounds):
        outputs = []
        for name, way in WAYS.items():
            speed, ids = tokens_per_second(model, args.tokens, way, seed=round_index)
            speeds[name].append(speed)
            outputs.append(ids)
        if not all(np.array_equal(outputs[0], ids) for ids in outputs[1:]):
            raise RuntimeError("the three ways generated different tokens")
    baseline = statistics.median(speeds["no cache"])
    print(f"{args.tokens} tokens, temperature 0.8, top_k 200, median of {args.rounds} interleaved rounds")
    for name, values in speeds.items():
        median = statistics.median(values)
        print(f"{name:<20}{median:>10,.0f} tokens/s  {1e6 / median:>8,.0f} us/token  "
              f"{median / baseline:>6.1f}x   (rounds: {', '.join(f'{v:,.0f}' for v in values)})")


if __name__ == "__main__":
    main()

"""Activation checkpointing: peak memory and time of one GPT training step, with and without.

    python benchmarks/bench_checkpointing.py                     # 6 layers, n_embd 128, T 128, batch 8
    python benchmarks/bench_checkpointing.py --n-layer 6 --n-embd 384 --n-head 6 --block-size 256 --batch-size 4

(Threads: OPENBLAS_NUM_THREADS and TINYGRAD_LITE_CPU_THREADS, as for training.)

A step is forward, loss and backward (the optimizer is the same either way and left out).
Peak memory is the peak of Python-tracked allocations during the step, from ``tracemalloc``
(NumPy reports every array's buffer to it), over what was allocated before the step: the
parameters and their gradients are counted in both columns, the activations are the
difference. Time is the median of interleaved steps (plain, checkpointed, plain, ...), measured
without tracemalloc (which slows allocation down). ``--device cuda`` reports the CuPy memory
pool's peak instead (untested here: no GPU on the development machine).
"""
from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy

import tinygrad_lite as tl
from gpt.model import GPT, GPTConfig


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-layer", type=int, default=6)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=65)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (after one warm-up)")
    return parser.parse_args()


def make_models(args: argparse.Namespace) -> dict[str, GPT]:
    """The same weights twice, one model checkpointing its blocks."""
    models = {}
    for name, checkpoint_blocks in (("plain", False), ("checkpointed", True)):
        tl.manual_seed(0)
        config = GPTConfig(vocab_size=args.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                           n_head=args.n_head, n_embd=args.n_embd, checkpoint_blocks=checkpoint_blocks)
        models[name] = GPT(config)
    return models


def training_step(model: GPT, x, y) -> float:
    model.zero_grad()
    _, loss = model(x, y)
    loss.backward()
    return loss.item()


def peak_bytes_of_step(model: GPT, x, y) -> tuple[int, float]:
    """(peak bytes allocated during one step above the bytes held before it, the loss)."""
    training_step(model, x, y)  # grads exist from here on: the baseline holds them in both variants
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    loss = training_step(model, x, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - before, loss


def main() -> None:
    args = parse_args()
    models = make_models(args)
    rng = numpy.random.default_rng(0)
    x = rng.integers(0, args.vocab_size, (args.batch_size, args.block_size))
    y = rng.integers(0, args.vocab_size, (args.batch_size, args.block_size))
    parameter_bytes = sum(p.data.nbytes for p in models["plain"].parameters())
    print(f"GPT {args.n_layer} layers, n_embd {args.n_embd}, {args.n_head} heads, T {args.block_size}, "
          f"batch {args.batch_size}: {parameter_bytes / 2**20:.1f} MiB of float32 parameters")

    peaks, losses = {}, {}
    for name, model in models.items():
        peaks[name], losses[name] = peak_bytes_of_step(model, x, y)
    if losses["plain"] != losses["checkpointed"]:
        raise SystemExit(f"the two models disagree: loss {losses['plain']} vs {losses['checkpointed']}")

    times = {name: [] for name in models}
    for name, model in models.items():  # warm-up
        training_step(model, x, y)
    for _ in range(args.steps):
        for name, model in models.items():
            start = time.perf_counter()
            training_step(model, x, y)
            times[name].append(time.perf_counter() - start)

    print(f"{'':<14}{'peak MiB in step':>18}{'step ms (median)':>18}")
    for name in models:
        print(f"{name:<14}{peaks[name] / 2**20:>18.1f}{statistics.median(times[name]) * 1e3:>18.1f}")
    memory_ratio = peaks["checkpointed"] / peaks["plain"]
    time_ratio = statistics.median(times["checkpointed"]) / statistics.median(times["plain"])
    print(f"checkpointed / plain: memory {memory_ratio:.2f}x, time {time_ratio:.2f}x (loss {losses['plain']:.4f} both)")


if __name__ == "__main__":
    main()

"""int8 weight-only quantization (gpt/quantize.py) on a trained model: loss, bytes, sampling speed.

    python examples/train_shakespeare.py --out-dir /tmp/prec-shakespeare   # a model to measure (about 1-30 min)
    python benchmarks/bench_quantize.py --out-dir /tmp/prec-shakespeare

Validation loss and perplexity are averaged over the same ``--batches`` random batches of the
validation split for the float32 and the int8 model; weight bytes count every parameter and
buffer once; sampling speed is tokens per second of ``generate`` (the modules decoder with its KV
cache, the same seed), float32 and int8 runs interleaved, the median of ``--repeats``.
"""
from __future__ import annotations

import argparse
import math
import statistics

import numpy

import tinygrad_lite as tl
from gpt.data import prepare_data
from gpt.quantize import int8, weight_bytes
from gpt.sample import load_for_sampling, sample_text
from gpt.checkpoint import load_checkpoint


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", required=True, help="a training run's folder (examples/train_shakespeare.py)")
    parser.add_argument("--checkpoint", default="last", choices=("last", "best"))
    parser.add_argument("--batches", type=int, default=200, help="validation batches (default 200)")
    parser.add_argument("--tokens", type=int, default=500, help="tokens sampled per timing (default 500)")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def validation_loss(model, data, batch_size: int, block_size: int, batches: int) -> float:
    rng = numpy.random.default_rng(0)  # the same batches for both models
    total = 0.0
    with tl.no_grad():
        for _ in range(batches):
            x, y = data.get_batch("val", batch_size, block_size, rng)
            total += model(x, y)[1].item()
    return total / batches


def common_prefix_length(a: str, b: str) -> int:
    length = 0
    while length < min(len(a), len(b)) and a[length] == b[length]:
        length += 1
    return length


def main() -> None:
    args = parse_args()
    train_config = load_checkpoint(args.out_dir, args.checkpoint).train_state["train_config"]
    model, tokenizer = load_for_sampling(args.out_dir, args.checkpoint)
    data, _, _ = prepare_data(train_config["data"], train_config["tokenizer"], train_config.get("cache_dir"),
                              train_config.get("gpt2_dir"))
    quantized = int8(model)
    models = {"float32": model, "int8": quantized}
    batch_size, block_size = train_config["batch_size"], train_config["block_size"]
    losses = {name: validation_loss(m, data, batch_size, block_size, args.batches) for name, m in models.items()}
    speeds = {name: [] for name in models}
    texts = {}
    for _ in range(args.repeats):
        for name, m in models.items():
            sample = sample_text(m, tokenizer, "ROMEO:", args.tokens, seed=1337)
            speeds[name].append(sample.tokens_per_s)
            texts[name] = sample.text
    print(f"{args.out_dir} ({args.checkpoint}): val loss over {args.batches} batches of {batch_size} x {block_size}")
    print(f"{'':<10}{'val loss':>10}{'perplexity':>12}{'weight bytes':>14}{'tokens/s':>10}")
    for name, m in models.items():
        print(f"{name:<10}{losses[name]:>10.4f}{math.exp(losses[name]):>12.3f}{weight_bytes(m):>14,}"
              f"{statistics.median(speeds[name]):>10,.0f}")
    print(f"int8 - float32: val loss {losses['int8'] - losses['float32']:+.4f}; "
          f"bytes {weight_bytes(quantized) / weight_bytes(model):.1%} of float32; "
          f"speed {statistics.median(speeds['int8']) / statistics.median(speeds['float32']):.2f}x")
    print(f"the two {args.tokens}-token samples (seed 1337) agree on their first "
          f"{common_prefix_length(texts['float32'], texts['int8'])} characters")
    print("--- int8 sample ---\n" + texts["int8"][:300])


if __name__ == "__main__":
    main()

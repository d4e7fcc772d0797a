"""nanoGPT's CPU Shakespeare run, re-implemented in PyTorch: the peer of bench_shakespeare_recipe.py.

nanoGPT's README trains its "baby GPT" on a CPU with

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

This is that run, written here from nanoGPT's train.py: the same model (tests/torch_style_models.py,
nanoGPT's model.py in PyTorch), data split (first 90% of the characters), batches (torch.randint
starts), AdamW groups and betas, warmup-then-cosine learning rate, clipping, and the loop's own
work: an evaluation of 20 batches per split every 250 iterations, a checkpoint whenever val
improves, the loss printed every iteration. The loop runs iterations 0 to 2000 as nanoGPT's does.

After the loop it prints one JSON line: the wall time from the process start to the end of the
loop (what nanoGPT's run costs), then the final loss over 200 batches per split, measured after
the clock stops (nanoGPT itself does not measure it).

    python benchmarks/nanogpt_torch.py --data tinyshakespeare.txt --seed 1337 --threads 2
"""
from __future__ import annotations

import time

STARTED = time.time()  # before torch is imported: the import is part of the run's cost

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from torch_style_models import GPT, GPTConfig  # noqa: E402

# nanoGPT's config/train_shakespeare_char.py with the README's CPU overrides
N_LAYER, N_HEAD, N_EMBD, BLOCK_SIZE, BATCH_SIZE, DROPOUT = 4, 4, 128, 64, 12, 0.0
MAX_ITERS, LR, MIN_LR, WARMUP_ITERS, LR_DECAY_ITERS = 2000, 1e-3, 1e-4, 100, 2000
WEIGHT_DECAY, BETAS, GRAD_CLIP = 0.1, (0.9, 0.99), 1.0
EVAL_INTERVAL, EVAL_ITERS, FINAL_EVAL_ITERS = 250, 20, 200


def learning_rate(it: int) -> float:
    """nanoGPT's get_lr: linear warmup, then cosine decay to MIN_LR."""
    if it < WARMUP_ITERS:
        return LR * (it + 1) / (WARMUP_ITERS + 1)
    if it > LR_DECAY_ITERS:
        return MIN_LR
    coefficient = 0.5 * (1.0 + math.cos(math.pi * (it - WARMUP_ITERS) / (LR_DECAY_ITERS - WARMUP_ITERS)))
    return MIN_LR + coefficient * (LR - MIN_LR)


def load_splits(path: Path) -> tuple[dict[str, np.ndarray], int]:
    text = path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = np.array([index[c] for c in text], dtype=np.uint16)
    cut = int(0.9 * len(ids))
    return {"train": ids[:cut], "val": ids[cut:]}, len(chars)


def get_batch(splits: dict[str, np.ndarray], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = splits[split]
    starts = torch.randint(len(data) - BLOCK_SIZE, (BATCH_SIZE,))
    x = torch.stack([torch.from_numpy(data[i:i + BLOCK_SIZE].astype(np.int64)) for i in starts])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + BLOCK_SIZE].astype(np.int64)) for i in starts])
    return x, y


@torch.no_grad()
def estimate_loss(model, splits, iters: int) -> dict[str, float]:
    model.eval()
    out = {}
    for split in ("train", "val"):
        out[split] = sum(model(*get_batch(splits, split))[1].item() for _ in range(iters)) / iters
    model.train()
    return out


def train(splits, vocab_size: int, seed: int, out_dir: Path) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=BLOCK_SIZE, vocab_size=vocab_size, n_layer=N_LAYER, n_head=N_HEAD,
                          n_embd=N_EMBD, dropout=DROPOUT, bias=False))
    optimizer = model.configure_optimizers(WEIGHT_DECAY, LR, BETAS, "cpu")
    best_val = 1e9
    x, y = get_batch(splits, "train")
    for it in range(MAX_ITERS + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(it)
        if it % EVAL_INTERVAL == 0:
            losses = estimate_loss(model, splits, EVAL_ITERS)
            print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}", flush=True)
            if losses["val"] < best_val:
                best_val = losses["val"]
                if it > 0:
                    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iter_num": it},
                               out_dir / "ckpt.pt")
        _, loss = model(x, y)
        x, y = get_batch(splits, "train")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        print(f"iter {it}: loss {loss.item():.4f}")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="tinyshakespeare.txt")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits, vocab_size = load_splits(Path(args.data))
    with tempfile.TemporaryDirectory(prefix="nanogpt-torch-") as out_dir:
        model = train(splits, vocab_size, args.seed, Path(out_dir))
    wall_s = time.time() - STARTED
    final = estimate_loss(model, splits, FINAL_EVAL_ITERS)
    print(json.dumps({"wall_s": round(wall_s, 2), "train": final["train"], "val": final["val"],
                      "seed": args.seed, "threads": args.threads, "torch": torch.__version__,
                      "omp_threads": os.environ.get("OMP_NUM_THREADS")}))


if __name__ == "__main__":
    main()

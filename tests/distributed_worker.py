"""What tests/test_distributed.py runs under ``mpiexec -n 2`` (and, for the reference, in its own process).

    mpiexec -n 2 python tests/distributed_worker.py trajectories OUT.json   # DDP and ZeRO-1 losses, per rank
    mpiexec -n 2 python tests/distributed_worker.py dead-rank                # rank 1 leaves; rank 0 must not hang
    mpiexec -n 1 python tests/distributed_worker.py nccl-one-rank            # on a GPU machine

``train_tiny`` trains a tiny GPT on a fixed random token stream: a world of 1 gives the
one-process trajectory, a world of N the data-parallel one (each rank its rows of the
same global batch), with gradient accumulation and clipping as gpt/train.py does them.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tinygrad_lite as tl  # noqa: E402
from tinygrad_lite import distributed as dist  # noqa: E402
from tinygrad_lite.optim import clip_grad_norm_  # noqa: E402
from gpt.model import GPT, GPTConfig  # noqa: E402

TINY = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=True)
BATCH, ACCUMULATE = 8, 2


def train_tiny(dtype: str, zero: int, steps: int = 50) -> dict:
    """Losses and gradient norms of ``steps`` AdamW steps (global batch BATCH, ACCUMULATE micro-steps,
    clip 0.5), and the bytes of optimizer state this rank holds."""
    tl.manual_seed(0)
    model = GPT(TINY)
    if dtype == "float64":
        model.double()
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.004)  # ~1 KB buckets: several per step
    optimizer = model.configure_optimizer(3e-3, weight_decay=0.1)
    if zero:
        optimizer = dist.ZeroRedundancyOptimizer(optimizer)
    # a pattern to learn (counting mod 13), with a tenth of the tokens random: the loss falls fast
    noise = numpy.random.default_rng(0)
    tokens = numpy.where(noise.random(2000) < 0.1, noise.integers(0, TINY.vocab_size, size=2000),
                         numpy.arange(2000) % TINY.vocab_size)
    batches = numpy.random.default_rng(1)
    losses, grad_norms = [], []  # the norm of the averaged gradient: Adam alone would not notice a wrong scale
    for _ in range(steps):
        total = 0.0
        for micro in range(ACCUMULATE):
            starts = batches.integers(0, len(tokens) - TINY.block_size - 1, size=BATCH)
            x = numpy.stack([tokens[s:s + TINY.block_size] for s in starts])
            y = numpy.stack([tokens[s + 1:s + 1 + TINY.block_size] for s in starts])
            x, y = dist.local_rows(x, y)
            sync = micro == ACCUMULATE - 1
            with (contextlib.nullcontext() if sync else ddp.no_sync()):  # reduce on the last micro-step only
                _, loss = ddp(x, y)
                (loss * (1.0 / ACCUMULATE)).backward()
            total += loss.item()
        grad_norms.append(clip_grad_norm_(model.parameters(), 0.5))
        optimizer.step()
        optimizer.zero_grad()
        losses.append(dist.mean_over_ranks(total / ACCUMULATE))
    state_bytes = optimizer.state_bytes() if zero else sum(
        value.nbytes for state in optimizer.state.values() for value in state.values() if hasattr(value, "nbytes"))
    return {"losses": losses, "grad_norms": grad_norms, "state_bytes": state_bytes, "num_params": model.num_params(),
            "weights": float(sum(float(numpy.abs(p.data).sum()) for p in model.parameters()))}


def trajectories(out: str) -> None:
    results = {f"{dtype}-zero{zero}": train_tiny(dtype, zero)
               for dtype, zero in (("float64", 0), ("float64", 1), ("float32", 0))}
    Path(f"{out}.rank{dist.rank()}").write_text(json.dumps(results))


def dead_rank() -> None:
    if dist.rank() == 1:
        sys.exit(3)  # leaves without a word, as a crashed rank would (mpiexec does not end the others)
    dist.all_reduce(numpy.ones(4))
    print("rank 0: the all-reduce returned, which it must not", flush=True)


def nccl_one_rank() -> None:
    """The NCCL world's collectives on one GPU (a world of 1 would never build it: this does)."""
    from tinygrad_lite.distributed.world import NCCLWorld  # noqa: PLC0415
    world = NCCLWorld(timeout=30)
    cupy = world.cupy
    values = cupy.arange(6, dtype=cupy.float32)
    assert world.all_reduce(values, op="mean").get().tolist() == list(range(6))
    assert world.all_reduce(values, async_op=True).wait() is values
    assert world.broadcast(values).get().tolist() == list(range(6))
    assert world.all_gather(values).get().tolist() == list(range(6))
    assert world.reduce_scatter(cupy.ones(4, dtype=cupy.float64)).get().tolist() == [1.0] * 4
    assert world.all_reduce(numpy.ones(2), op="max").tolist() == [1.0, 1.0]  # numpy goes through MPI
    print("nccl: all collectives ok", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "nccl-one-rank":
        nccl_one_rank()
        sys.exit(0)
    dist.init()
    if sys.argv[1] == "trajectories":
        trajectories(sys.argv[2])
    elif sys.argv[1] == "dead-rank":
        dead_rank()

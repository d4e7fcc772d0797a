"""Data parallel on one multi-core CPU: one process with 2 threads vs ``mpiexec -n 2`` with 1 thread each.

Both train the same GPT on the same global batch (bench_train_step.py's configs): forward,
backward, gradient clipping and AdamW. The two ranks each take half of the rows and
average their gradients with bucketed all-reduces (DistributedDataParallel); ``--zero``
adds the ZeRO-1 run (sharded AdamW moments, plus an all-gather of the weights).
Runs alternate (threads, ranks, threads, ...) and the medians are compared.

    python benchmarks/bench_distributed.py                      # baby and small, 2 rounds
    python benchmarks/bench_distributed.py --config baby --steps 40 --rounds 3 --zero

Per step it prints the median time, and for the ranks the time spent in the all-reduces
(waiting included: a rank that finishes its backward first waits there for the other),
their bytes (the buffers handed to MPI: 4 bytes per float32 parameter), and with --zero
the all-gather's bytes and the optimizer state each rank holds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = {  # as in bench_train_step.py: (n_layer, n_head, n_embd, block_size, batch_size, vocab_size)
    "baby": (4, 4, 128, 64, 12, 65),
    "small": (6, 6, 384, 256, 4, 65),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), action="append", help="default: baby and small")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each kind")
    parser.add_argument("--cores", type=int, default=2, help="threads of the single process = ranks")
    parser.add_argument("--zero", action="store_true", help="also time ZeRO-1 on the ranks")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--zero-stage", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


# ------------------------------------------------------------- one run

def worker(args: argparse.Namespace) -> None:
    """Time ``args.steps`` training steps in this world (1 process, or one rank of mpiexec's)."""
    import numpy  # noqa: PLC0415 -- after the thread variables were set by the launcher
    sys.path.insert(0, str(HERE.parent))
    import tinygrad_lite as tl  # noqa: PLC0415
    from tinygrad_lite import distributed as dist  # noqa: PLC0415
    from tinygrad_lite.optim import clip_grad_norm_  # noqa: PLC0415
    from gpt import GPT, GPTConfig  # noqa: PLC0415

    tl.cpu.tune()
    dist.init()
    n_layer, n_head, n_embd, block_size, batch, vocab = CONFIGS[args.config[0]]
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                          bias=True))
    ddp = dist.DistributedDataParallel(model) if dist.world_size() > 1 else model
    optimizer = model.configure_optimizer(1e-3, 0.1)
    if args.zero_stage:
        optimizer = dist.ZeroRedundancyOptimizer(optimizer)
    rng = numpy.random.default_rng(0)
    times = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            dist.communication_stats().reset()
        x = rng.integers(0, vocab, size=(batch, block_size))
        y = rng.integers(0, vocab, size=(batch, block_size))
        x, y = dist.local_rows(x, y)
        start = time.perf_counter()
        _, loss = ddp(x, y)
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    stats = dist.communication_stats()
    per_step = {name: {"bytes": stats.bytes[name] / args.steps, "ms": 1000 * stats.seconds[name] / args.steps}
                for name in stats.calls}
    state_bytes = optimizer.state_bytes() if args.zero_stage else sum(
        v.nbytes for s in optimizer.state.values() for v in s.values() if hasattr(v, "nbytes"))
    if dist.rank() == 0:
        print(json.dumps({"ms": 1000 * float(numpy.median(times[args.warmup:])), "per_step": per_step,
                          "num_params": model.num_params(), "state_bytes": state_bytes,
                          "buckets": len(ddp.buckets) if ddp is not model else 0}))


# ------------------------------------------------------------- the driver

def run(config: str, args: argparse.Namespace, ranks: int, zero: int = 0) -> dict:
    threads = 1 if ranks == -1 else args.cores // ranks
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "TINYGRAD_LITE_CPU_THREADS": str(threads), "OPENBLAS_THREAD_TIMEOUT": "4"}
    command = [sys.executable, str(Path(__file__)), "--worker", "--config", config, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--zero-stage", str(zero)]
    if ranks > 1:
        mpiexec = Path(sys.executable).parent / "mpiexec"
        command = [str(mpiexec) if mpiexec.is_file() else "mpiexec", "-n", str(ranks), *command]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    sys.path.insert(0, str(HERE))
    import numpy  # noqa: PLC0415
    import machine  # noqa: PLC0415  (benchmarks/machine.py)
    print(machine.describe())
    kinds = [("1 process x 2 threads", 1, 0), ("mpiexec -n 2 x 1 thread", args.cores, 0),
             ("1 process x 1 thread", -1, 0)]  # (how many ranks; -1: one process on one thread, for scale)
    if args.zero:
        kinds.append(("mpiexec -n 2, ZeRO-1", args.cores, 1))
    for config in args.config or ["baby", "small"]:
        results = {name: [] for name, _, _ in kinds}
        for _ in range(args.rounds):
            for name, ranks, zero in kinds:
                results[name].append(run(config, args, ranks, zero))
        base = float(numpy.median([r["ms"] for r in results[kinds[0][0]]]))
        print(f"\n{config} {CONFIGS[config]}, {results[kinds[0][0]][0]['num_params']:,} parameters, "
              f"global batch {CONFIGS[config][4]}, median of {args.rounds} runs x {args.steps} steps:")
        for name, _, _ in kinds:
            last = results[name][-1]
            ms = float(numpy.median([r["ms"] for r in results[name]]))
            line = f"  {name:26s} {ms:8.1f} ms/step  ({base / ms:.2f}x the threaded process's speed)"
            for op, numbers in last["per_step"].items():
                line += f"; {op} {numbers['ms']:.1f} ms, {numbers['bytes'] / 1e6:.3f} MB per step"
            line += f"; optimizer state {last['state_bytes'] / 1e6:.3f} MB per rank"
            if last["buckets"]:
                line += f", {last['buckets']} bucket(s)"
            print(line)


if __name__ == "__main__":
    main()

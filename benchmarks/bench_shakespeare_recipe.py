"""The default Shakespeare run against nanoGPT's CPU run: val loss over three seeds, and wall time.

For each seed (1337, 1, 2) it runs, one after the other on the same threads:
  * ours: ``python examples/train_shakespeare.py`` with its defaults (the recipe of docs/recipe.md),
    timed as a whole process: data loading, every evaluation and sample, the final 200-batch
    evaluation and the checkpoints are all inside its time;
  * the peer: nanoGPT's CPU recipe in PyTorch (benchmarks/nanogpt_torch.py), timed from its process
    start to the end of its training loop, which is what nanoGPT's own run costs; its final
    200-batch loss is measured after the clock stops;
  * with --preset-too: ``train_shakespeare.py --preset nanogpt``, the calibration point (seed 1337).

Then it prints the mean and spread of the final val losses and of the wall times, and the
ratio of ours to the peer's time per seed (both ran under the same load, one after the other).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_shakespeare_recipe.py
    python benchmarks/bench_shakespeare_recipe.py --seeds 1337 --preset-too --threads 2
    python benchmarks/bench_shakespeare_recipe.py --nanogpt-dir ~/nanoGPT   # also time nanoGPT itself

--nanogpt-dir runs nanoGPT's own train.py (a checkout of karpathy/nanoGPT, data prepared with its
data/shakespeare_char/prepare.py) with the README's CPU command, and reports its wall time and
its own 20-batch val loss, to check that the re-implementation costs what nanoGPT costs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import machine  # noqa: E402

FINAL_LINE = re.compile(r"final loss \(200 batches per split\): train ([\d.]+), val ([\d.]+)")
SPEED_LINE = re.compile(r"([\d.]+) ms/iter")
NANOGPT_CPU_FLAGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                     "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                     "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]


def run_ours(data: Path, seed: int, threads: int, scratch: Path, preset: str = "default") -> dict:
    command = [sys.executable, str(ROOT / "examples" / "train_shakespeare.py"), "--preset", preset,
               "--data", str(data), "--seed", str(seed), "--out-dir", str(scratch / f"ours-{preset}-{seed}"),
               "--cache-dir", str(scratch / "cache"), "--overwrite", "--no-progress"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=machine.subprocess_env(threads))
    wall_s = time.perf_counter() - started
    final = FINAL_LINE.search(done.stdout)
    if done.returncode != 0 or not final:
        raise RuntimeError(f"train_shakespeare.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    samples = re.findall(r"--- sample at iter \d+ ---\n(.*?)\n---\n", done.stdout, flags=re.S)
    sample = samples[-1].strip("\n") if samples else ""  # the last one is the final model's
    return {"wall_s": wall_s, "train": float(final.group(1)), "val": float(final.group(2)), "sample": sample,
            "ms_per_iter": float(SPEED_LINE.findall(done.stdout)[-1])}


def run_peer(data: Path, seed: int, threads: int) -> dict:
    command = [sys.executable, str(ROOT / "benchmarks" / "nanogpt_torch.py"), "--data", str(data),
               "--seed", str(seed), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=machine.subprocess_env(threads))
    if done.returncode != 0:
        raise RuntimeError(f"nanogpt_torch.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_nanogpt_itself(folder: Path, threads: int) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "train.py", *NANOGPT_CPU_FLAGS], capture_output=True, text=True,
                          cwd=folder, env=machine.subprocess_env(threads))
    wall_s = time.perf_counter() - started
    steps = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", done.stdout)
    if done.returncode != 0 or not steps:
        raise RuntimeError(f"nanoGPT's train.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return {"wall_s": wall_s, "val_20_batches": float(steps[-1][2])}


def spread(values: list[float], digits: int = 3) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} (min {min(values):.{digits}f}, max {max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="tinyshakespeare.txt (default: $TINYGRAD_LITE_DATA or ../shared/data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 1, 2])
    parser.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    parser.add_argument("--preset-too", action="store_true", help="also run --preset nanogpt (seed 1337)")
    parser.add_argument("--no-peer", action="store_true", help="ours only")
    parser.add_argument("--nanogpt-dir", help="a nanoGPT checkout with data/shakespeare_char prepared")
    args = parser.parse_args()
    data = Path(args.data or Path(os.environ.get("TINYGRAD_LITE_DATA", ROOT.parent / "shared" / "data"))
                / "tinyshakespeare.txt")
    if not data.is_file():
        sys.exit(f"{data} is missing (pass --data or set TINYGRAD_LITE_DATA)")
    import numpy  # noqa: F401, PLC0415 -- so that machine.describe() sees NumPy's BLAS
    print(machine.describe(), flush=True)
    ours, peers = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-recipe-") as scratch:
        for seed in args.seeds:
            ours[seed] = run_ours(data, seed, args.threads, Path(scratch))
            line = (f"seed {seed}: ours val {ours[seed]['val']:.4f} in {ours[seed]['wall_s']:.1f} s "
                    f"({ours[seed]['ms_per_iter']:.1f} ms/iter)")
            if not args.no_peer:
                peers[seed] = run_peer(data, seed, args.threads)
                line += (f"; nanoGPT recipe (PyTorch) val {peers[seed]['val']:.4f} in {peers[seed]['wall_s']:.1f} s"
                         f"; time ratio ours/peer {ours[seed]['wall_s'] / peers[seed]['wall_s']:.2f}")
            print(line, flush=True)
        if args.preset_too:
            preset = run_ours(data, 1337, args.threads, Path(scratch), preset="nanogpt")
            print(f"--preset nanogpt, seed 1337: val {preset['val']:.4f} in {preset['wall_s']:.1f} s", flush=True)
        if args.nanogpt_dir:
            itself = run_nanogpt_itself(Path(args.nanogpt_dir), args.threads)
            print(f"nanoGPT's own train.py: {itself['wall_s']:.1f} s, its 20-batch val {itself['val_20_batches']:.4f}")
    print(f"\nours, default recipe: val {spread([r['val'] for r in ours.values()])}; "
          f"wall {spread([r['wall_s'] for r in ours.values()], 1)} s")
    if peers:
        print(f"nanoGPT's recipe (PyTorch): val {spread([r['val'] for r in peers.values()])}; "
              f"wall {spread([r['wall_s'] for r in peers.values()], 1)} s")
        print(f"every run of ours within the peer's time of the same seed: "
              f"{all(ours[s]['wall_s'] <= peers[s]['wall_s'] for s in ours)}")
    print(f"\nthe sample of seed {args.seeds[0]}:\n{ours[args.seeds[0]]['sample']}")


if __name__ == "__main__":
    main()

"""Choose the default Shakespeare recipe on the training split only: the sweep behind docs/recipe.md.

The validation split that the README reports (the last 10% of tiny Shakespeare) is never seen
here. The sweep trains on the first 90% of the training split and scores each recipe on the
last 10% of it (the "held-out slice"): the file it writes holds the training split alone, and
train_shakespeare.py cuts that file 90/10 in turn. One seed (1337) per recipe; the winner is then
run on the real validation split, with three seeds, by bench_shakespeare_recipe.py.

    python benchmarks/sweep_recipe.py                        # every recipe below, two at a time, 1 thread each
    python benchmarks/sweep_recipe.py --only lr4e-3 wide     # some of them
    python benchmarks/sweep_recipe.py --list                 # names and flags only

Each run appends one JSON line to --results (it skips recipes already there), and the script
ends with a table: held-out loss, train loss, ms per iteration and the run's cost relative to
the nanoGPT recipe's (iterations x ms/iter; the two ran under the same load, so the ratio
is fairer than either time). Runs share the machine, so their times are noisy; --seed N reruns
recipes with another seed (rows named NAME@N) to show how far apart two seeds of one recipe land.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from gpt.data import TRAIN_FRACTION  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import machine  # noqa: E402

# (name, flags, what it tests). Flags are train_shakespeare.py's, added to --preset nanogpt.
RECIPES = [
    ("nanogpt", [], "nanoGPT's CPU recipe, the calibration point"),
    ("lr4e-3", ["--lr", "4e-3", "--min-lr", "4e-4"], "the issue's best single flag"),
    ("lr4e-3-min0", ["--lr", "4e-3", "--min-lr", "0"], "decay all the way to zero"),
    ("lr3e-3-min0", ["--lr", "3e-3", "--min-lr", "0"], ""),
    ("lr6e-3-min0", ["--lr", "6e-3", "--min-lr", "0"], ""),
    ("b24-i1000", ["--lr", "4e-3", "--min-lr", "0", "--batch-size", "24", "--max-iters", "1000"],
     "same tokens, half the steps"),
    ("b6-i4000", ["--lr", "3e-3", "--min-lr", "0", "--batch-size", "6", "--max-iters", "4000"],
     "same tokens, twice the steps"),
    ("ctx128", ["--lr", "4e-3", "--min-lr", "0", "--block-size", "128", "--batch-size", "6"],
     "longer context, same tokens per step"),
    ("w192-l3", ["--lr", "4e-3", "--min-lr", "0", "--n-layer", "3", "--n-embd", "192", "--n-head", "6"],
     "wider and shallower"),
    ("w96-l4-i3000", ["--lr", "5e-3", "--min-lr", "0", "--n-embd", "96", "--max-iters", "3000"],
     "smaller model, more steps in about the same time"),
    ("l3-i2600", ["--lr", "4e-3", "--min-lr", "0", "--n-layer", "3", "--max-iters", "2600"],
     "a layer fewer, more steps"),
    ("wd0.2", ["--lr", "4e-3", "--min-lr", "0", "--weight-decay", "0.2"], "more weight decay"),
    ("beta2-0.95", ["--lr", "4e-3", "--min-lr", "0", "--beta2", "0.95"], ""),
    ("warmup50", ["--lr", "4e-3", "--min-lr", "0", "--warmup-iters", "50"], ""),
    ("dropout0.1", ["--lr", "4e-3", "--min-lr", "0", "--dropout", "0.1"], "regularise the 1.5-epoch run"),
    # round 2: smaller models took more steps in the same time and won; how far does that go?
    ("l2-i4000", ["--lr", "4e-3", "--min-lr", "4e-4", "--n-layer", "2", "--max-iters", "4000"], ""),
    ("l3-w96-i3600", ["--lr", "5e-3", "--min-lr", "5e-4", "--n-layer", "3", "--n-embd", "96", "--max-iters", "3600"],
     ""),
    ("l4-w64-i4500", ["--lr", "6e-3", "--min-lr", "6e-4", "--n-embd", "64", "--max-iters", "4500"], ""),
    ("l3-lr5e-3-i2600", ["--lr", "5e-3", "--min-lr", "5e-4", "--n-layer", "3", "--max-iters", "2600"], ""),
    ("l2-w192-i2600", ["--lr", "4e-3", "--min-lr", "4e-4", "--n-layer", "2", "--n-embd", "192", "--n-head", "6",
                       "--max-iters", "2600"], ""),
    ("l3-w96-i3600-b16", ["--lr", "5e-3", "--min-lr", "5e-4", "--n-layer", "3", "--n-embd", "96",
                          "--max-iters", "2700", "--batch-size", "16"], "more tokens per step, fewer steps"),
    # round 3: two layers and more steps won round 2
    ("l2-lr5e-3-i3500", ["--lr", "5e-3", "--min-lr", "5e-4", "--n-layer", "2", "--max-iters", "3500"], ""),
    ("l2-lr6e-3-i3500", ["--lr", "6e-3", "--min-lr", "6e-4", "--n-layer", "2", "--max-iters", "3500"], ""),
    ("l2-w96-i5000", ["--lr", "6e-3", "--min-lr", "6e-4", "--n-layer", "2", "--n-embd", "96", "--max-iters", "5000"],
     ""),
    ("l2-w160-i3000", ["--lr", "5e-3", "--min-lr", "5e-4", "--n-layer", "2", "--n-embd", "160", "--n-head", "5",
                       "--max-iters", "3000"], ""),
    ("l1-i7000", ["--lr", "4e-3", "--min-lr", "4e-4", "--n-layer", "1", "--max-iters", "7000"], "one layer"),
    ("l2-b16-i3000", ["--lr", "5e-3", "--min-lr", "5e-4", "--n-layer", "2", "--batch-size", "16",
                      "--max-iters", "3000"], ""),
    # round 4: one layer won round 3. At 2 threads a 1-layer step costs ~0.3 of nanoGPT's 4-layer one,
    # a 2-layer step ~0.5: about 6,000 and 3,500 steps fit in nanoGPT's time with the evaluations
    ("l1-i6000", ["--lr", "4e-3", "--min-lr", "4e-4", "--n-layer", "1", "--max-iters", "6000"], ""),
    ("l1-lr3e-3-i6000", ["--lr", "3e-3", "--min-lr", "3e-4", "--n-layer", "1", "--max-iters", "6000"], ""),
    ("l1-lr6e-3-i6000", ["--lr", "6e-3", "--min-lr", "6e-4", "--n-layer", "1", "--max-iters", "6000"], ""),
    ("l1-b16-i4500", ["--lr", "4e-3", "--min-lr", "4e-4", "--n-layer", "1", "--batch-size", "16",
                      "--max-iters", "4500"], ""),
    ("l1-w192-i3500", ["--lr", "4e-3", "--min-lr", "4e-4", "--n-layer", "1", "--n-embd", "192", "--n-head", "6",
                       "--max-iters", "3500"], ""),
    ("l1-h8-i6000", ["--lr", "4e-3", "--min-lr", "4e-4", "--n-layer", "1", "--n-head", "8", "--max-iters", "6000"],
     "head size 16"),
    ("l1-h2-i6000", ["--lr", "4e-3", "--min-lr", "4e-4", "--n-layer", "1", "--n-head", "2", "--max-iters", "6000"],
     "head size 64"),
    ("l2-i3500", ["--lr", "4e-3", "--min-lr", "4e-4", "--n-layer", "2", "--max-iters", "3500"], ""),
]

RESULT_LINE = re.compile(r"final loss \(\d+ batches per split\): train ([\d.]+), val ([\d.]+)")
TIME_LINE = re.compile(r"(\d+) iterations, ([\d.]+) s wall time, ([\d.]+) ms/iter")


def find_text(given: str | None) -> Path:
    if given:
        return Path(given)
    shared = Path(os.environ.get("TINYGRAD_LITE_DATA", ROOT.parent / "shared" / "data")) / "tinyshakespeare.txt"
    if shared.is_file():
        return shared
    from gpt.data import download_tiny_shakespeare  # noqa: PLC0415
    return Path(download_tiny_shakespeare())


def write_training_split(text_path: Path, folder: Path) -> Path:
    """The training split alone (characters are tokens for the char tokenizer): the real val never enters."""
    text = text_path.read_text(encoding="utf-8")
    path = folder / "training_split.txt"
    path.write_text(text[: int(TRAIN_FRACTION * len(text))], encoding="utf-8")
    return path


def run_recipe(name: str, flags: list[str], data: Path, folder: Path, threads: int, seed: int) -> dict:
    command = [sys.executable, str(ROOT / "examples" / "train_shakespeare.py"), "--preset", "nanogpt",
               "--data", str(data), "--out-dir", str(folder / name), "--cache-dir", str(folder / "cache"),
               "--overwrite", "--no-progress", "--eval-interval", "100000", "--sample-tokens", "0",
               "--seed", str(seed), *flags]
    done = subprocess.run(command, capture_output=True, text=True, env=machine.subprocess_env(threads))
    result, timing = RESULT_LINE.search(done.stdout), TIME_LINE.search(done.stdout)
    if done.returncode != 0 or not result or not timing:
        raise RuntimeError(f"{name}: train_shakespeare.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return {"name": name if seed == 1337 else f"{name}@{seed}", "flags": flags, "seed": seed,
            "train": float(result.group(1)), "heldout": float(result.group(2)),
            "iters": int(timing.group(1)), "wall_s": float(timing.group(2)), "ms_per_iter": float(timing.group(3)),
            "threads": threads}


def print_table(rows: list[dict], notes: dict[str, str]) -> None:
    base = next((row for row in rows if row["name"] == "nanogpt"), None)
    print("| recipe | flags | held-out loss | train loss | ms/iter | cost vs nanogpt | note |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        cost = row["iters"] * row["ms_per_iter"]
        relative = f"{cost / (base['iters'] * base['ms_per_iter']):.2f}" if base else "?"
        print(f"| {row['name']} | `{' '.join(row['flags']) or '--preset nanogpt'}` | {row['heldout']:.4f} | "
              f"{row['train']:.4f} | {row['ms_per_iter']:.1f} | {relative} | {notes.get(row['name'], '')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="tiny Shakespeare (default: $TINYGRAD_LITE_DATA, ../shared/data, or download)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these recipes only")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "sweep_recipe.jsonl"))
    parser.add_argument("--seed", type=int, default=1337, help="another seed, to see the noise (default 1337)")
    parser.add_argument("--list", action="store_true", help="print the recipes and stop")
    args = parser.parse_args()
    notes = {name: note for name, _, note in RECIPES}
    if args.list:
        for name, flags, note in RECIPES:
            print(f"{name:14} {' '.join(flags) or '(nanoGPT as it is)':70} {note}")
        return
    unknown = set(args.only or ()) - set(notes)
    if unknown:
        parser.error(f"unknown recipe(s) {sorted(unknown)}; --list shows them")
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["name"] for line in results.read_text().splitlines()} if results.is_file() else set()
    suffix = "" if args.seed == 1337 else f"@{args.seed}"
    todo = [(name, flags) for name, flags, _ in RECIPES
            if name + suffix not in done and (not args.only or name in args.only)]
    with tempfile.TemporaryDirectory(prefix="sweep-recipe-") as scratch:
        data = write_training_split(find_text(args.data), Path(scratch))
        runs = [functools.partial(run_recipe, name, flags, data, Path(scratch), args.threads, args.seed)
                for name, flags in todo]
        machine.run_and_append(args.jobs, runs, results, lambda row: (
            f"{row['name']}: held-out {row['heldout']:.4f}, train {row['train']:.4f}, {row['ms_per_iter']:.1f} ms/iter"))
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    order = {name: i for i, (name, _, _) in enumerate(RECIPES)}
    print_table(sorted(rows, key=lambda row: (order.get(row["name"].split("@")[0], len(order)), row["name"])), notes)


if __name__ == "__main__":
    main()

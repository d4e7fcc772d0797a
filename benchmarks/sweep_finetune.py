"""Choose each fine-tuning method's learning rate on the val split: the sweep behind
examples/finetune_classify.py's LEARNING_RATES and docs/finetuning.md.

Every (method, learning rate, seed) is one run of finetune_classify.py with ``--methods M --lr X
--seed S``, from the same base model. The learning rate a method gets by default is the one with the
best mean val accuracy over the seeds; test accuracy is recorded too, but only read afterwards.

    python benchmarks/sweep_finetune.py                             # 4 methods x 4 rates x 2 seeds
    python benchmarks/sweep_finetune.py --methods lora --lrs 1e-3 3e-3 --seeds 0 1 2
    python benchmarks/sweep_finetune.py --baseline                  # also a bag-of-words classifier

Each run appends one JSON line to --results (runs already there are skipped), and the script ends
with a table of the runs from this --init-from and --seeds: per method and learning rate, the mean
val and test accuracy over the seeds and their range. ``--baseline`` adds a word-count naive Bayes
classifier on the same splits, to show what the speeches' vocabulary alone gives away.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import re
import subprocess
import sys
from collections import Counter
from statistics import mean
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from gpt.finetune import BASE_MODEL_DIR, default_data_path, ensure_pretrained  # noqa: E402
from gpt.tasks import speaker_attribution  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import machine  # noqa: E402

METHODS = ("scratch", "full", "frozen", "lora")
LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2)
VAL_LINE = re.compile(r"== (\w+): .*; best val accuracy ([\d.]+) at step (\d+)")
RESULT_LINE = re.compile(r"^result: (.*)$", re.MULTILINE)
WALL_LINE = re.compile(r"steps in ([\d.]+) s")


def run_one(method: str, lr: float, seed: int, init_from: str, data: Path, threads: int) -> dict:
    command = [sys.executable, str(ROOT / "examples" / "finetune_classify.py"), "--methods", method,
               "--lr", str(lr), "--seed", str(seed), "--init-from", init_from, "--data", str(data)]
    done = subprocess.run(command, capture_output=True, text=True, env=machine.subprocess_env(threads))
    val, result, wall = VAL_LINE.search(done.stdout), RESULT_LINE.search(done.stdout), WALL_LINE.search(done.stdout)
    if done.returncode != 0 or not val or not result or not wall:
        raise RuntimeError(f"{method} lr {lr} seed {seed}: finetune_classify.py failed ({done.returncode}):\n"
                           f"{done.stderr[-2000:]}")
    values = dict(item.split("=") for item in result.group(1).split())
    return {"method": method, "lr": lr, "seed": seed, "val_acc": float(val.group(2)), "best_step": int(val.group(3)),
            "test_acc": float(values[f"{method}_acc"]), "wall_s": float(wall.group(1)), "threads": threads,
            "init_from": init_from}


def print_table(rows: list[dict]) -> None:
    """Mean (min-max) over seeds, per method and learning rate; * marks each method's best val."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["lr"]), []).append(row)
    best = {}
    for (method, lr), group in groups.items():
        score = mean([row["val_acc"] for row in group])
        if score > best.get(method, (None, -1.0))[1]:
            best[method] = (lr, score)
    print("| method | lr | seeds | val acc | test acc | s per run |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (method, lr), group in sorted(groups.items(), key=lambda item: (METHODS.index(item[0][0]), item[0][1])):
        val, test = [row["val_acc"] for row in group], [row["test_acc"] for row in group]
        mark = " *" if best[method][0] == lr else ""
        print(f"| {method} | {lr:g}{mark} | {len(group)} | {mean(val):.3f} ({min(val):.3f}-{max(val):.3f}) | "
              f"{mean(test):.3f} ({min(test):.3f}-{max(test):.3f}) | {mean([row['wall_s'] for row in group]):.0f} |")


def word_counts(text: str) -> Counter:
    return Counter(re.findall(r"[a-z']+", text.lower()))


def naive_bayes_baseline(data_path: Path) -> dict[str, float]:
    """A multinomial naive Bayes classifier on word counts (add-one smoothing), trained on the train
    split: the accuracy on val and test that vocabulary alone gives, without any network."""
    data = speaker_attribution(data_path.read_text(encoding="utf-8"))
    num_classes = len(data.labels)
    class_words = [Counter() for _ in range(num_classes)]
    class_speeches = Counter()
    for text, label in data.splits["train"]:
        class_words[label].update(word_counts(text))
        class_speeches[label] += 1
    vocabulary = set().union(*class_words)
    totals = [sum(counts.values()) for counts in class_words]
    prior = [math.log(class_speeches[c] / len(data.splits["train"])) for c in range(num_classes)]

    def predict(text: str) -> int:
        counts = word_counts(text)
        scores = [prior[c] + sum(n * math.log((class_words[c][word] + 1) / (totals[c] + len(vocabulary)))
                                 for word, n in counts.items()) for c in range(num_classes)]
        return max(range(num_classes), key=scores.__getitem__)

    return {name: sum(predict(text) == label for text, label in data.splits[name]) / len(data.splits[name])
            for name in ("val", "test")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init-from", default=BASE_MODEL_DIR, help=f"the base model (default {BASE_MODEL_DIR}; "
                                                                    "trained first if missing)")
    parser.add_argument("--data", help="tiny Shakespeare (default: $TINYGRAD_LITE_DATA, ../shared/data, or download)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--lrs", nargs="+", type=float, default=list(LEARNING_RATES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "sweep_finetune.jsonl"))
    parser.add_argument("--baseline", action="store_true", help="also print the word-count naive Bayes baseline")
    args = parser.parse_args()
    data = Path(args.data) if args.data else default_data_path()
    if args.baseline:
        scores = naive_bayes_baseline(data)
        print(f"word-count naive Bayes: val accuracy {scores['val']:.3f}, test accuracy {scores['test']:.3f}")
    ensure_pretrained(args.init_from, data)  # once, before the runs start in parallel
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    rows = [row for row in rows if row["init_from"] == args.init_from]  # one base model per table
    done = {(row["method"], row["lr"], row["seed"]) for row in rows}
    todo = [(method, lr, seed) for method in args.methods for lr in args.lrs for seed in args.seeds
            if (method, lr, seed) not in done]
    runs = [functools.partial(run_one, method, lr, seed, args.init_from, data, args.threads)
            for method, lr, seed in todo]
    rows += machine.run_and_append(args.jobs, runs, results, lambda row: (
        f"{row['method']} lr {row['lr']:g} seed {row['seed']}: val {row['val_acc']:.3f}, "
        f"test {row['test_acc']:.3f} ({row['wall_s']:.0f} s)"))
    print_table([row for row in rows if row["seed"] in args.seeds])  # every rate over the same seeds


if __name__ == "__main__":
    main()

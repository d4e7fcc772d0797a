"""Who is speaking? Fine-tune a GPT pretrained on tiny Shakespeare to name the speaker of a speech.

    python examples/finetune_classify.py                  # four ways to train the classifier, same budget
    python examples/finetune_classify.py --init-from path/to/gpt2   # real GPT-2 (a Hugging Face folder)

The task (gpt/tasks.py): the 8 speakers with the most speeches; the input is the speech without
its name line, the label the speaker; each speaker's later speeches are the val and test sets.
It starts from the base model in out-shakespeare-bpe (gpt/finetune.py trains it there first if it is
missing: nanoGPT's 4-block network on 2,048 BPE tokens, about 5 minutes; docs/finetuning.md says why
not the character-level model). The model reads the whole speech: it is cut into windows of
block_size tokens (``gpt.collate.split_into_windows``; 64 BPE tokens, about 1.4 windows a speech),
training samples windows (each labelled with its speech's speaker), and a speech's prediction is
the argmax of the mean of its windows' logits (``average_by_group``). ``GPTForSequenceClassification``
(gpt/heads.py) reads the mean of a window's hidden states through a linear ``score`` head
(``--pooling mean``, chosen on val: docs/finetuning.md), or its last real token's (``--pooling last``,
Hugging Face's rule and the class's default).
Four runs, each with the same steps and batch size:

    scratch   the same network, randomly initialised, every parameter trained
    full      from the pretrained checkpoint, every parameter trained
    frozen    from the pretrained checkpoint, only the last block, ln_f and the head trained
    lora      from the pretrained checkpoint, LoRA on c_attn / c_proj / c_fc, plus the head

Each keeps the weights of its best val accuracy; test accuracy and macro-F1 are reported beside
chance (1 / 8) and the majority class, and the last line is

    result: scratch_acc=... full_acc=... frozen_acc=... lora_acc=... lora_trainable_frac=... chance=... majority=...
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see train_shakespeare.py

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
try:
    import gpt  # noqa: F401 -- only to see whether it is installed
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import numpy  # noqa: E402

from gpt.cli_types import number, whole_number  # noqa: E402
from gpt.collate import average_by_group, collate_classification, split_into_windows  # noqa: E402
from gpt.finetune import FineTuneConfig, add_common_arguments, fine_tune, prepare  # noqa: E402
from gpt.freezing import trainable_counts  # noqa: E402
from gpt.heads import GPTForSequenceClassification  # noqa: E402
from gpt.lora import apply_lora, lora_parameter_counts  # noqa: E402
from gpt.metrics import accuracy, classification_report, macro_f1  # noqa: E402
from gpt.model import GPTConfig, evaluating  # noqa: E402
from gpt.tasks import speaker_attribution  # noqa: E402

METHODS = ("scratch", "full", "frozen", "lora")
# Each method's peak learning rate, the best val accuracy of 3e-4 ... 1e-2 (benchmarks/sweep_finetune.py)
LEARNING_RATES = {"scratch": 1e-3, "full": 1e-3, "frozen": 3e-3, "lora": 3e-3}
LORA_TARGETS = ("c_attn", "c_proj", "c_fc")
GPT2_SMALL = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, bias=True)

POSITIVE, POSITIVE_NUMBER = whole_number(at_least=1), number(above=0)  # refused at parse time: exit 2


def build_parser() -> argparse.ArgumentParser:
    counts = lora_parameter_counts(GPT2_SMALL, r=16, targets=LORA_TARGETS, num_labels=2)
    epilog = (f"For GPT-2 124M (--init-from a Hugging Face gpt2 folder), LoRA rank 16 on c_attn, c_proj and c_fc "
              f"plus a 2-class head trains {counts['trainable']:,} of {counts['total']:,} parameters "
              f"({counts['trainable_fraction']:.2%}).")
    parser = argparse.ArgumentParser(description=__doc__, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--num-speakers", type=whole_number(at_least=2), default=8,
                        help="K, the number of classes (default 8)")
    parser.add_argument("--steps", type=POSITIVE, default=300, help="optimizer steps per method (default 300)")
    parser.add_argument("--batch-size", type=POSITIVE, default=32)
    parser.add_argument("--eval-interval", type=POSITIVE, default=50, help="steps between val evaluations (default 50)")
    parser.add_argument("--lr", type=POSITIVE_NUMBER, default=None,
                        help="one peak learning rate for every method (default: each method's own: "
                             + ", ".join(f"{name} {lr:g}" for name, lr in LEARNING_RATES.items()) + ")")
    parser.add_argument("--lora-r", type=POSITIVE, default=4,
                        help="LoRA rank (default 4: under 5%% of this small model)")
    parser.add_argument("--lora-alpha", type=POSITIVE_NUMBER, default=8.0, help="LoRA scaling = alpha / r (default 8)")
    parser.add_argument("--max-windows", type=POSITIVE, default=None,
                        help="read at most this many block_size windows of each speech (default: all of it)")
    parser.add_argument("--pooling", choices=GPTForSequenceClassification.POOLINGS, default="mean",
                        help="what the head reads of each window: the mean of its positions (default; better on "
                             "val) or the last real token (Hugging Face's rule)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"a comma-separated subset of {','.join(METHODS)}")
    return parser


def encode_split(rows, tokenizer, block_size: int, max_windows: int) -> dict:
    """Every speech as its windows of ``block_size`` tokens: the windows, their labels, and which speech each is."""
    windows, window_labels, speech_of_window = [], [], []
    for speech_id, (text, label) in enumerate(rows):
        for window in split_into_windows(tokenizer.encode(text), block_size, max_windows):
            windows.append(window)
            window_labels.append(label)
            speech_of_window.append(speech_id)
    return {"windows": windows, "window_labels": numpy.array(window_labels), "speech": numpy.array(speech_of_window),
            "labels": numpy.array([label for _, label in rows])}


def predict(model, split: dict, pad_id: int, block_size: int, batch_size: int = 64) -> numpy.ndarray:
    """One class per speech: the argmax of its windows' mean logits."""
    logits = []
    windows = split["windows"]
    with evaluating(model):
        for start in range(0, len(windows), batch_size):
            chunk = windows[start:start + batch_size]
            ids, _ = collate_classification(chunk, [0] * len(chunk), pad_id, block_size)
            logits.append(model(ids)[0].numpy())
    per_speech = average_by_group(numpy.concatenate(logits), split["speech"], len(split["labels"]))
    return per_speech.argmax(axis=1)


def build_model(method: str, config: GPTConfig, args, num_labels: int, pad_id: int):
    if method == "scratch":
        return GPTForSequenceClassification(config, num_labels, pad_token_id=pad_id, pooling=args.pooling)
    model = GPTForSequenceClassification.from_pretrained(args.init_from, num_labels=num_labels, pad_token_id=pad_id,
                                                         pooling=args.pooling)
    if method == "frozen":
        model.freeze(except_=(f"transformer.h.{config.n_layer - 1}", "transformer.ln_f", "score"))
    elif method == "lora":
        apply_lora(model, args.lora_r, args.lora_alpha, targets=LORA_TARGETS, modules_to_save=("score",))
    return model


def run_method(method: str, config: GPTConfig, args, data, encoded, pad_id: int) -> dict:
    import tinygrad_lite as tl  # noqa: PLC0415

    tl.manual_seed(args.seed)  # the scratch model's init and every head's start from the same seed
    model = build_model(method, config, args, len(data.labels), pad_id)
    train_ids, train_labels = encoded["train"]["windows"], encoded["train"]["window_labels"]

    def next_batch(rng):
        rows = rng.integers(0, len(train_ids), args.batch_size)
        ids, labels = collate_classification([train_ids[i] for i in rows], train_labels[rows], pad_id,
                                             config.block_size)
        return {"input_ids": ids, "labels": labels}

    def val_accuracy() -> float:
        return accuracy(encoded["val"]["labels"], predict(model, encoded["val"], pad_id, config.block_size))

    trainable, total = trainable_counts(model)
    lr = LEARNING_RATES[method] if args.lr is None else args.lr
    settings = FineTuneConfig(steps=args.steps, lr=lr, eval_interval=args.eval_interval,
                              warmup_steps=min(20, args.steps // 10), seed=args.seed)
    result = fine_tune(model, next_batch, val_accuracy, settings)
    predictions = predict(model, encoded["test"], pad_id, config.block_size)
    test_labels = encoded["test"]["labels"]
    print(f"\n== {method}: {trainable:,} of {total:,} parameters trained ({trainable / total:.2%}), "
          f"lr {settings.lr:g}, {result.steps} steps in {result.wall_time_s:.1f} s; best val accuracy "
          f"{result.best_score:.3f} at step {result.best_step}")
    print(classification_report(test_labels, predictions, class_names=data.labels, num_classes=len(data.labels)))
    return {"acc": accuracy(test_labels, predictions),
            "macro_f1": macro_f1(test_labels, predictions, num_classes=len(data.labels)),
            "trainable": trainable, "total": total, "wall_s": result.wall_time_s}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    methods = [name.strip() for name in args.methods.split(",")]
    if any(name not in METHODS for name in methods):
        print(f"error: --methods: choose from {','.join(METHODS)}", file=sys.stderr)
        return 2
    if args.quick:
        args.steps, args.batch_size, args.eval_interval = 4, 8, 2
    start = time.perf_counter()
    text, tokenizer, pad_id = prepare(args)
    config = GPTForSequenceClassification.from_pretrained(args.init_from, num_labels=2).config
    data = speaker_attribution(text, args.num_speakers)
    if args.quick:
        data.splits = {name: rows[::20] for name, rows in data.splits.items()}
    encoded = {name: encode_split(rows, tokenizer, config.block_size, args.max_windows)
               for name, rows in data.splits.items()}
    print(f"speakers: {', '.join(data.labels)}; train / val / test speeches: "
          f"{' / '.join(str(len(rows)) for rows in data.splits.values())}, windows of {config.block_size} tokens: "
          f"{' / '.join(str(len(split['windows'])) for split in encoded.values())}; pad token {pad_id}")

    results = {method: run_method(method, config, args, data, encoded, pad_id) for method in methods}
    test_labels = encoded["test"]["labels"]
    chance = 1 / len(data.labels)
    majority = accuracy(test_labels, numpy.full(len(test_labels), data.majority_class()))
    print(f"\n{'method':<10}{'test acc':>10}{'macro-F1':>10}{'trained params':>16}{'share':>8}{'time':>8}")
    for method, row in results.items():
        print(f"{method:<10}{row['acc']:>10.3f}{row['macro_f1']:>10.3f}{row['trainable']:>16,}"
              f"{row['trainable'] / row['total']:>8.2%}{row['wall_s']:>7.0f}s")
    print(f"chance {chance:.3f}, majority class ({data.labels[data.majority_class()]}) {majority:.3f}; "
          f"total wall time {time.perf_counter() - start:.0f} s")
    values = {f"{method}_acc": f"{results[method]['acc']:.3f}" for method in methods}
    if "lora" in results:
        values["lora_trainable_frac"] = f"{results['lora']['trainable'] / results['lora']['total']:.4f}"
    values.update(chance=f"{chance:.3f}", majority=f"{majority:.3f}")
    print("result: " + " ".join(f"{key}={value}" for key, value in values.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

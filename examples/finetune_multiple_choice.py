"""Which line comes next? Multiple choice in the Kaggle exam format, zero-shot and fine-tuned.

    python examples/finetune_multiple_choice.py                    # from out-shakespeare-bpe (trained first if missing)
    python examples/finetune_multiple_choice.py --init-from path/to/gpt2

Each question (gpt/tasks.py: next_line_choice) is a speech's name line and opening line, and five
options: the line that really comes next and four lines of other speeches of the same split.

1. Zero-shot, the way HellaSwag is scored: the pretrained language model gives each option its
   log-likelihood after the context, log p(option | context) = sum over the option's tokens of
   log p(token | everything before it); the most likely option is the answer. Summed, long options
   lose (every token costs probability); divided by the option's length in characters (lm-eval's
   "acc_norm"), they do not. Both still favour lines that are likely anywhere, whatever the context;
   PMI scores only what the context adds: log p(option | context) - log p(option | a line break
   alone). No training at all.
2. Fine-tuned: ``GPTForMultipleChoice`` (gpt/heads.py) from the same checkpoint reads the hidden
   state of each choice's last token, scores it with a Linear, and is trained with cross-entropy over
   the five choices; the val accuracy picks the best weights.

Last line: ``result: zero_shot_acc=... zero_shot_norm_acc=... finetuned_acc=... chance=0.2``.
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

import tinygrad_lite as tl  # noqa: E402
from gpt.cli_types import number, whole_number  # noqa: E402
from gpt.collate import collate_multiple_choice  # noqa: E402
from gpt.finetune import (FineTuneConfig, add_common_arguments, fine_tune, load_language_model,  # noqa: E402
                          option_log_likelihoods, prepare)
from gpt.freezing import trainable_counts  # noqa: E402
from gpt.heads import GPTForMultipleChoice  # noqa: E402
from gpt.metrics import accuracy  # noqa: E402
from gpt.model import evaluating  # noqa: E402
from gpt.tasks import next_line_choice  # noqa: E402

POSITIVE, POSITIVE_NUMBER = whole_number(at_least=1), number(above=0)  # refused at parse time: exit 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--steps", type=POSITIVE, default=400, help="fine-tuning steps (default 400)")
    parser.add_argument("--batch-size", type=POSITIVE, default=8,
                        help="questions per step, 5 sequences each (default 8)")
    parser.add_argument("--lr", type=POSITIVE_NUMBER, default=3e-4)
    parser.add_argument("--eval-interval", type=POSITIVE, default=50)
    return parser


def encode(questions, tokenizer) -> list[tuple[list[int], list[list[int]]]]:
    return [(tokenizer.encode(q.context), [tokenizer.encode(option) for option in q.options]) for q in questions]


def zero_shot(model, questions, encoded, pad_id: int, block_size: int, no_context: list[int],
              batch: int = 16) -> tuple[float, float, float]:
    """Accuracy by summed log-likelihood, by log-likelihood per character of the option, and by
    pointwise mutual information: log p(option | context) - log p(option | ``no_context``)."""
    summed, per_char, pmi = [], [], []
    for start in range(0, len(encoded), batch):
        chunk = encoded[start:start + batch]
        pairs = [(context, option) for context, options in chunk for option in options]
        scores = option_log_likelihoods(model, pairs, pad_id, block_size).reshape(len(chunk), -1)
        alone = option_log_likelihoods(model, [(no_context, option) for _, option in pairs], pad_id,
                                       block_size).reshape(len(chunk), -1)
        lengths = numpy.array([[len(option) for option in q.options] for q in questions[start:start + batch]])
        summed.append(scores.argmax(axis=1))
        per_char.append((scores / lengths).argmax(axis=1))
        pmi.append((scores - alone).argmax(axis=1))
    labels = [q.label for q in questions]
    return tuple(accuracy(labels, numpy.concatenate(chosen)) for chosen in (summed, per_char, pmi))


def predict(model, encoded, pad_id: int, block_size: int, batch: int = 16) -> numpy.ndarray:
    predictions = []
    with evaluating(model):
        for start in range(0, len(encoded), batch):
            ids, last = collate_multiple_choice(encoded[start:start + batch], pad_id, block_size)
            predictions.append(model(ids, mc_token_ids=last)[0].numpy().argmax(axis=1))
    return numpy.concatenate(predictions)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.steps, args.batch_size, args.eval_interval = 4, 4, 2
    start = time.perf_counter()
    text, tokenizer, pad_id = prepare(args)
    questions = next_line_choice(text, seed=args.seed)
    if args.quick:
        questions = {name: rows[:12] for name, rows in questions.items()}
    encoded = {name: encode(rows, tokenizer) for name, rows in questions.items()}
    labels = {name: numpy.array([q.label for q in rows]) for name, rows in questions.items()}
    print(f"questions train / val / test: {' / '.join(str(len(rows)) for rows in questions.values())}; "
          f"e.g.\n{questions['test'][0].context}" + "".join(
              f"  {'*' if i == questions['test'][0].label else ' '} {option}" for i, option in
              enumerate(questions["test"][0].options)))

    language_model = load_language_model(args.init_from)
    block_size = language_model.config.block_size
    tick = time.perf_counter()
    zero_acc, zero_norm_acc, zero_pmi_acc = zero_shot(language_model, questions["test"], encoded["test"], pad_id,
                                                      block_size, no_context=tokenizer.encode("\n"))
    print(f"zero-shot (test): summed log-likelihood {zero_acc:.3f}, per character {zero_norm_acc:.3f}, "
          f"PMI {zero_pmi_acc:.3f} ({time.perf_counter() - tick:.0f} s)")
    del language_model

    tl.manual_seed(args.seed)
    model = GPTForMultipleChoice.from_pretrained(args.init_from, pad_token_id=pad_id)
    trainable, total = trainable_counts(model)

    def next_batch(rng):
        rows = rng.integers(0, len(encoded["train"]), args.batch_size)
        ids, last = collate_multiple_choice([encoded["train"][i] for i in rows], pad_id, block_size)
        return {"input_ids": ids, "labels": labels["train"][rows], "mc_token_ids": last}

    def val_accuracy() -> float:
        return accuracy(labels["val"], predict(model, encoded["val"], pad_id, block_size))

    settings = FineTuneConfig(steps=args.steps, lr=args.lr, eval_interval=args.eval_interval,
                              warmup_steps=min(20, args.steps // 10), seed=args.seed)
    result = fine_tune(model, next_batch, val_accuracy, settings)
    finetuned_acc = accuracy(labels["test"], predict(model, encoded["test"], pad_id, block_size))
    print(f"fine-tuned GPTForMultipleChoice ({trainable:,} parameters): {result.steps} steps in "
          f"{result.wall_time_s:.0f} s, best val accuracy {result.best_score:.3f} at step {result.best_step}; "
          f"test accuracy {finetuned_acc:.3f}")
    print(f"chance 0.200; total wall time {time.perf_counter() - start:.0f} s")
    print(f"result: zero_shot_acc={zero_acc:.3f} zero_shot_norm_acc={zero_norm_acc:.3f} "
          f"finetuned_acc={finetuned_acc:.3f} chance=0.2")
    return 0


if __name__ == "__main__":
    sys.exit(main())

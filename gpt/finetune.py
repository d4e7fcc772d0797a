"""The pieces the fine-tuning examples share: where the pretrained model comes from, its tokenizer,
and a small training loop for a task head that keeps the weights of its best validation score.

    path = ensure_pretrained(BASE_MODEL_DIR, data_path)         # trains the base model there first if missing
    tokenizer = tokenizer_for(path, spec=None, data_dir=...)    # the checkpoint's own, or GPT-2's for an HF folder
    result = fine_tune(model, next_batch, evaluate, FineTuneConfig(steps=300, lr=1e-3))

``fine_tune`` is ``gpt/train.py``'s loop cut down to what a task head needs: AdamW on the
parameters that are not frozen (weight decay on 2-D weights only), linear warmup then cosine
decay, gradient clipping, an evaluation every ``eval_interval`` steps, early stopping after
``patience`` evaluations without a better score, and the best weights restored at the end.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy

import tinygrad_lite as tl
from tinygrad_lite import functional as F
from tinygrad_lite.optim import AdamW, WarmupCosineSchedule, clip_grad_norm_

from .checkpoint import checkpoint_path, load_checkpoint, load_model, read_checkpoint_json
from .collate import collate_causal_lm, pad_token_for
from .data import build_tokenizer, download_tiny_shakespeare, tokenizer_from_dict
from .heads import is_hf_folder
from .model import GPT, evaluating


# The base model the fine-tuning examples start from: nanoGPT's CPU network (4 blocks, so that "train
# the last block and the head" leaves most of it frozen) on 2,048 BPE tokens, for 5,000 steps. Not the
# character-level model: reading a speech one character at a time, 64 characters per window, it knew
# too little about who talks how (a linear probe on its features did no better than on a random
# network's), so no fine-tuning method could beat training from scratch. docs/finetuning.md has the
# measurements.
BASE_MODEL_DIR = "out-shakespeare-bpe"
BASE_MODEL_FLAGS = {"tokenizer": "bpe:2048", "max_iters": 5000, "eval_interval": 500}


def ensure_pretrained(init_from: str | Path, data_path: str | Path, progress: bool = False) -> Path:
    """``init_from`` if it holds a model (ours or Hugging Face's); else train the base model there first
    (``BASE_MODEL_FLAGS`` over ``train_shakespeare.py --preset nanogpt``: about 5 minutes on 2 CPU cores)."""
    path = Path(init_from)
    if is_hf_folder(path) or checkpoint_path(path, "best").is_file():
        return path
    from .train import TrainConfig, defaults_for_device, train  # noqa: PLC0415 -- only when pretraining

    flags = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in BASE_MODEL_FLAGS.items())
    print(f"no pretrained model in {path}: training one first, as "
          f"python examples/train_shakespeare.py --preset nanogpt {flags} --out-dir {path}")
    train(TrainConfig(**{**defaults_for_device("cpu", "nanogpt"), **BASE_MODEL_FLAGS, "data": str(data_path),
                         "out_dir": str(path), "progress": progress}))
    return path


def load_language_model(init_from: str | Path) -> GPT:
    """The pretrained GPT itself (lm_head included), from our checkpoint folder or a Hugging Face one."""
    if is_hf_folder(init_from):
        return GPT.from_pretrained(init_from)
    return load_model(load_checkpoint(init_from, "best")).eval()


def tokenizer_for(init_from: str | Path, spec: str | None, data_dir: str | Path | None = None):
    """Our checkpoint's own tokenizer (``spec`` must be None or name the same kind), or for a Hugging
    Face folder ``spec`` (default ``gpt2``: GPT-2's files from ``data_dir``/gpt2 or the folder itself)."""
    path = Path(init_from)
    if is_hf_folder(path):
        spec = spec or "gpt2"
        gpt2_dir = path if (path / "vocab.bpe").is_file() else (Path(data_dir) / "gpt2" if data_dir else None)
        return build_tokenizer(spec, "", "", Path("."), gpt2_dir)
    saved = tokenizer_from_dict(read_checkpoint_json(path, "best")["tokenizer"])
    if spec is not None and spec != getattr(saved, "spec", saved.kind):
        raise ValueError(f"--tokenizer {spec}: the checkpoint in {path} was trained with the "
                         f"{getattr(saved, 'spec', saved.kind)!r} tokenizer, and a model only understands its own")
    return saved


def option_log_likelihoods(model: GPT, pairs, pad_token_id: int, block_size: int) -> numpy.ndarray:
    """log p(response | prompt) under the language model ``model``, summed over the response's tokens,
    for each (prompt, response) pair of token lists: how zero-shot multiple choice scores an option
    (the most likely option wins; HellaSwag's "acc"). A prompt too long for ``block_size`` loses its
    beginning (see `collate_causal_lm`)."""
    input_ids, targets = collate_causal_lm(pairs, pad_token_id, block_size)
    N, T = input_ids.shape
    with evaluating(model):
        logits, _ = model(input_ids)
        losses = F.cross_entropy(logits.reshape(N * T, logits.shape[-1]), targets.reshape(N * T), reduction="none")
    return -losses.numpy().reshape(N, T).sum(axis=1)  # ignored targets have loss 0


@dataclass
class FineTuneConfig:
    steps: int = 300
    lr: float = 1e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1         # the cosine decay ends at lr * this
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_interval: int = 50
    patience: int = 0                 # stop after this many evaluations without a better score (0: never)
    seed: int = 0


@dataclass
class FineTuneResult:
    best_score: float
    best_step: int
    steps: int                        # steps taken (fewer than configured if stopped early)
    wall_time_s: float
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (step, train loss, val score)


def fine_tune(model: tl.nn.Module, next_batch: Callable[[numpy.random.Generator], dict],
              evaluate: Callable[[], float], config: FineTuneConfig, log: Callable[[str], None] | None = print
              ) -> FineTuneResult:
    """Train ``model`` on ``next_batch(rng)`` (the keyword arguments of one forward, labels included);
    ``evaluate()`` scores it on validation data (higher is better); ``log`` gets a line per evaluation.
    The best-scoring weights are put back at the end."""
    trained = [p for p in model.parameters() if p.requires_grad]
    if not trained:
        raise ValueError("fine_tune: every parameter is frozen")
    groups = [{"params": [p for p in trained if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in trained if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = AdamW([group for group in groups if group["params"]], lr=config.lr, betas=(0.9, 0.99))
    schedule = WarmupCosineSchedule(optimizer, config.warmup_steps, config.steps, min_lr=config.lr * config.min_lr_ratio)
    rng = numpy.random.default_rng(config.seed)
    best_score, best_step, best_state, losses, misses = -math.inf, 0, None, [], 0
    result = FineTuneResult(best_score, 0, 0, 0.0)
    start = time.perf_counter()
    model.train()
    for step in range(1, config.steps + 1):
        _, loss = model(**next_batch(rng))
        optimizer.zero_grad()
        loss.backward()
        if config.grad_clip > 0:
            clip_grad_norm_(trained, config.grad_clip)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        result.steps = step
        if step % config.eval_interval == 0 or step == config.steps:
            with evaluating(model):
                score = evaluate()
            result.history.append((step, float(numpy.mean(losses[-config.eval_interval:])), score))
            if log is not None:
                log(f"  step {step:>5}: train loss {result.history[-1][1]:.4f}, val score {score:.3f} "
                    f"({time.perf_counter() - start:.0f} s)")
            if score > best_score:
                best_score, best_step, misses = score, step, 0
                best_state = {name: value.numpy().copy() for name, value in model.state_dict().items()}
            else:
                misses += 1
                if config.patience and misses >= config.patience:
                    break
    model.load_state_dict(best_state)
    model.eval()
    result.best_score, result.best_step, result.wall_time_s = best_score, best_step, time.perf_counter() - start
    return result


# ------------------------------------------------------------ the examples' command lines

def default_data_path() -> Path:
    """Tiny Shakespeare: the copy in $TINYGRAD_LITE_DATA (else ../shared/data beside the project) if
    there is one, else the cached download that train_shakespeare.py uses (fetched the first time)."""
    folder = os.environ.get("TINYGRAD_LITE_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    shared = Path(folder) / "tinyshakespeare.txt"
    return shared if shared.is_file() else download_tiny_shakespeare()


def add_common_arguments(parser) -> None:
    """The flags both fine-tuning examples take."""
    parser.add_argument("--init-from", default=BASE_MODEL_DIR,
                        help=f"our checkpoint folder (the base model is trained there first if missing) "
                             f"or a Hugging Face GPT-2 folder (default {BASE_MODEL_DIR})")
    parser.add_argument("--tokenizer", help="default: the checkpoint's own; gpt2 for a Hugging Face folder")
    parser.add_argument("--data", default=None,
                        help="tiny Shakespeare (default: $TINYGRAD_LITE_DATA/tinyshakespeare.txt, else a cached download)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few steps on a few examples (for CI)")


def prepare(args) -> tuple[str, object, int]:
    """What both examples do first: find the text, make sure the pretrained model exists (training it
    if not), and get its tokenizer. Returns (the text, the tokenizer, the pad token id)."""
    data_path = Path(args.data) if args.data else default_data_path()
    ensure_pretrained(args.init_from, data_path)
    tokenizer = tokenizer_for(args.init_from, args.tokenizer, data_path.parent)
    return data_path.read_text(encoding="utf-8"), tokenizer, pad_token_for(tokenizer)

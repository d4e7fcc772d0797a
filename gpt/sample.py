"""Text from a trained checkpoint: load the model and its tokenizer, encode a prompt, generate, decode."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy

import tinygrad_lite as tl

from .checkpoint import CheckpointError, load_checkpoint, load_model
from .data import tokenizer_from_dict


@dataclass
class Sample:
    text: str                 # the prompt followed by the generated text
    new_tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("inf")


def load_for_sampling(out_dir: str | Path, checkpoint: str = "last", device: str = "cpu"):
    """(model in eval mode on ``device``, tokenizer) from checkpoint ``checkpoint`` in ``out_dir``."""
    saved = load_checkpoint(out_dir, checkpoint)
    try:
        tokenizer = tokenizer_from_dict(saved.tokenizer)
    except ValueError as error:
        raise CheckpointError(f"checkpoint {saved.path}: {error}") from error
    model = load_model(saved)
    model.to(device)
    model.eval()
    return model, tokenizer


def encode_prompt(tokenizer, prompt: str) -> numpy.ndarray:
    """The prompt as a (1, T) id array; an empty prompt starts from a newline, as nanoGPT's sample.py does."""
    try:
        ids = tokenizer.encode(prompt if prompt else "\n")
    except ValueError as error:
        raise ValueError(f"prompt {prompt!r} cannot be encoded: {error}") from None
    if not ids:
        raise ValueError(f"prompt {prompt!r} encodes to no tokens")
    return numpy.asarray([ids], dtype=numpy.int64)


def sample_text(model, tokenizer, prompt: str, max_new_tokens: int = 500, temperature: float = 0.8,
                top_k: int | None = 200, top_p: float | None = None, seed: int = 1337,
                use_cache: bool = True, decoder: str = "modules") -> Sample:
    """Generate ``max_new_tokens`` after ``prompt`` (seeded, so the same call gives the same text).

    ``decoder``: "modules" (the model's own forward, with a KV cache) or "folded" (the fast path);
    see ``gpt.generation``.
    """
    idx = encode_prompt(tokenizer, prompt)
    generator = numpy.random.default_rng(seed)
    started = time.perf_counter()
    ids = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         use_cache=use_cache, decoder=decoder, generator=generator)
    tl.backend.synchronize(model.wte.weight.device)
    seconds = time.perf_counter() - started
    return Sample(text=tokenizer.decode(ids[0].tolist()), new_tokens=ids.shape[1] - idx.shape[1], seconds=seconds)

"""OpenAI's GPT-2 and GPT-4 (cl100k_base) vocabularies, from files on this machine.

Nothing is downloaded. Get the files once (URLs below) and point these functions at them, or set
the TINYGRAD_LITE_DATA environment variable to the folder that holds them:

    gpt2/vocab.bpe          https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe
    gpt2/encoder.json       https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json
    cl100k_base.tiktoken    https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken

Each file's SHA-256 is checked against the published one, so a damaged or different file is an
error rather than a tokenizer that disagrees with tiktoken.
"""
from __future__ import annotations

import os
from pathlib import Path

from .io import TokenizerFileError, sha256_of
from .patterns import GPT4_PATTERN
from .tokenizer import Tokenizer

# The hashes tiktoken checks its downloads against (tiktoken_ext/openai_public.py).
SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "cl100k_base.tiktoken": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}

CL100K_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


def default_data_dir() -> Path:
    return Path(os.environ.get("TINYGRAD_LITE_DATA", "data"))


def gpt2(data_dir: str | Path | None = None) -> Tokenizer:
    """GPT-2's tokenizer from `vocab.bpe` and `encoder.json` in `data_dir` or `data_dir/gpt2`."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = data_dir if (data_dir / "vocab.bpe").is_file() else data_dir / "gpt2"
    paths = [folder / "vocab.bpe", folder / "encoder.json"]
    for path in paths:
        _check(path)
    return Tokenizer.from_gpt2_files(*paths)


def cl100k(path: str | Path | None = None) -> Tokenizer:
    """GPT-4's tokenizer from `cl100k_base.tiktoken` (`path` is the file or its folder)."""
    path = Path(path) if path is not None else default_data_dir()
    if path.is_dir() or path.suffix != ".tiktoken":
        path = path / "cl100k_base.tiktoken"
    _check(path)
    return Tokenizer.from_tiktoken_file(path, GPT4_PATTERN, CL100K_SPECIAL_TOKENS)


def _check(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: download it from the URL in bpe/pretrained.py, "
                                "or pass the folder that holds it (or set TINYGRAD_LITE_DATA)")
    if sha256_of(path) != SHA256[path.name]:
        raise TokenizerFileError(path, f"SHA-256 differs from OpenAI's published {path.name} "
                                       "(a damaged download, or a different file)")

"""The training text: download, tokenize, split, cache, and cut into random batches.

    text  --tokenizer-->  token ids  --90/10-->  train / val (uint16 arrays, cached on disk)
                                                   --get_batch-->  x, y of shape (B, T), y = x shifted by one

Tokenizers: ``char`` (one token per character, the default, as in nanoGPT's
shakespeare_char), ``gpt2`` (GPT-2's byte-level BPE, from its vocab.bpe and
encoder.json) and ``bpe:N`` (our own BPE trained with N tokens on the
training split). The two BPE ones need the ``bpe`` package, imported only then.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TRAIN_FRACTION = 0.9


class DataError(RuntimeError):
    """The training data cannot be found, downloaded, read or used."""


# ------------------------------------------------------------------ files

def default_cache_dir() -> Path:
    """Where downloads and encoded tokens are kept: $TINYGRAD_LITE_CACHE, else ~/.cache/tinygrad_lite."""
    return Path(os.environ.get("TINYGRAD_LITE_CACHE", Path.home() / ".cache" / "tinygrad_lite"))


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o644)  # mkstemp makes it private (0600); a data file or checkpoint need not be
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def sha256_of_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: str | Path) -> dict:
    """What a checkpoint records of its data file: the path, the size and the SHA-256 of the bytes."""
    return {"path": str(path), "bytes": Path(path).stat().st_size, "sha256": sha256_of_file(path)}


def download_tiny_shakespeare(cache_dir: str | Path | None = None, url: str = TINY_SHAKESPEARE_URL,
                              opener: Callable = urllib.request.urlopen, timeout: float = 30.0) -> Path:
    """The path of tiny Shakespeare in ``cache_dir``, downloaded from ``url`` the first time.

    ``opener(url, timeout=...)`` returns a file-like response (tests pass a fake
    one, or use a file:// URL).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / "tinyshakespeare.txt"
    if target.is_file() and target.stat().st_size > 0:
        return target
    try:
        with opener(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise DataError(f"could not download tiny Shakespeare from {url} ({error}), and there is no cached "
                        f"copy at {target}. If this machine is offline, get the file elsewhere and pass "
                        f"--data PATH (a local copy of the text) instead.") from error
    if not data:
        raise DataError(f"downloading {url} gave an empty file; pass --data PATH to use a local copy instead")
    write_atomically(target, data)
    return target


def load_text(path: str | Path) -> str:
    """The contents of a UTF-8 text file, with an error naming the file if it is missing or empty."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist (pass --data with the path of a text file, "
                        "or leave --data out to download tiny Shakespeare)")
    if not path.is_file():
        raise DataError(f"data path {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"data file {path} is not UTF-8 text ({error})") from error
    if not text:
        raise DataError(f"data file {path} is empty; the model needs text to learn from")
    return text


# ------------------------------------------------------------- tokenizers

class CharTokenizer:
    """One token per character: the vocabulary is the sorted set of characters of the text."""

    kind = "char"

    def __init__(self, chars: str):
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: the vocabulary has repeated characters")
        self.chars = chars
        self.index_of = {char: index for index, char in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index_of[char] for char in text]
        except KeyError:
            position = next(i for i, char in enumerate(text) if char not in self.index_of)
            char = text[position]
            raise ValueError(f"character {char!r} (U+{ord(char):04X}) at position {position} is not in the "
                             f"vocabulary: this model knows only the {self.vocab_size} characters of its "
                             f"training text") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_dict(self) -> dict:
        return {"kind": "char", "chars": self.chars}


class BPETokenizer:
    """Adapter around ``bpe.Tokenizer`` (GPT-2's or one we trained), storable in a checkpoint."""

    def __init__(self, tokenizer, kind: str, spec: str):
        self.tokenizer, self.kind, self.spec = tokenizer, kind, spec
        self._as_dict = None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.n_vocab

    def encode(self, text: str) -> list[int]:
        # "ordinary": text such as "<|endoftext|>" inside the data is just text, not a control token
        return self.tokenizer.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def to_dict(self) -> dict:
        # The whole tokenizer goes into the checkpoint, so sampling needs no other file.
        if self._as_dict is None:
            with tempfile.TemporaryDirectory() as directory:
                self.tokenizer.save(str(Path(directory) / "tokenizer"))
                saved = {p.name: p.read_bytes().decode("utf-8") for p in sorted(Path(directory).iterdir())}
            self._as_dict = {"kind": self.kind, "spec": self.spec, "files": saved}
        return self._as_dict


def tokenizer_from_dict(values: dict):
    """Rebuild a tokenizer saved with ``to_dict`` (from a checkpoint)."""
    kind = values.get("kind") if isinstance(values, dict) else None
    try:
        if kind == "char":
            return CharTokenizer(values["chars"])
        if kind in ("gpt2", "bpe"):
            import bpe  # noqa: PLC0415 -- only BPE checkpoints need it

            with tempfile.TemporaryDirectory() as directory:
                for name, content in values["files"].items():
                    (Path(directory) / Path(name).name).write_bytes(content.encode("utf-8"))
                tokenizer = bpe.Tokenizer.load(str(Path(directory) / "tokenizer"))
            return BPETokenizer(tokenizer, kind, values["spec"])
    except (KeyError, TypeError, AttributeError, OSError, ValueError) as error:
        raise ValueError(f"the saved {kind} tokenizer is malformed ({error})") from error
    raise ValueError(f"unknown tokenizer kind {kind!r} (expected 'char', 'gpt2' or 'bpe')")


def build_tokenizer(spec: str, text: str, train_text: str, cache_dir: Path, gpt2_dir: str | Path | None = None):
    """The tokenizer named by ``spec``: 'char', 'gpt2' or 'bpe:N'.

    The char vocabulary comes from the whole text (so no validation character
    is unknown); our BPE is trained on the training split only, and cached.
    """
    if spec == "char":
        return CharTokenizer.from_text(text)
    if spec == "gpt2":
        import bpe  # noqa: PLC0415

        try:
            tokenizer = bpe.gpt2(gpt2_dir)  # checks the files' SHA-256 against OpenAI's
        except (OSError, ValueError) as error:
            raise DataError(f"--tokenizer gpt2 needs GPT-2's vocab.bpe and encoder.json: {error} "
                            "(pass --gpt2-dir, the folder holding them)") from error
        return BPETokenizer(tokenizer, "gpt2", spec)
    if spec.startswith("bpe:"):
        import bpe  # noqa: PLC0415

        try:
            vocab_size = int(spec[4:])
        except ValueError:
            raise DataError(f"--tokenizer {spec!r}: expected bpe:N with N an integer, e.g. bpe:512") from None
        if not 256 < vocab_size <= 65536:
            raise DataError(f"--tokenizer {spec!r}: N must be in (256, 65536] (256 byte tokens plus merges, "
                            "stored as uint16)")
        key = hashlib.sha256(train_text.encode("utf-8")).hexdigest()[:16]
        saved = cache_dir / f"bpe-{vocab_size}-{key}"
        if saved.with_suffix(".json").is_file():
            return tokenizer_from_dict(json.loads(saved.with_suffix(".json").read_text(encoding="utf-8")))
        try:
            tokenizer = bpe.Tokenizer.train(train_text, vocab_size)
        except ValueError as error:
            raise DataError(f"--tokenizer {spec}: {error}") from error
        wrapped = BPETokenizer(tokenizer, "bpe", spec)
        write_atomically(saved.with_suffix(".json"), json.dumps(wrapped.to_dict()).encode("utf-8"))
        return wrapped
    raise DataError(f"unknown --tokenizer {spec!r}: expected 'char', 'gpt2' or 'bpe:N'")


# ------------------------------------------------------------- token data

def encode_cached(text: str, tokenizer, cache_dir: Path) -> numpy.ndarray:
    """``tokenizer.encode(text)`` as a uint16 array, stored in ``cache_dir`` so it is computed once.

    The cache file is named by a hash of the text and the tokenizer, so a
    different text or vocabulary never reuses a stale file. (.npy, no pickle.)
    """
    if tokenizer.vocab_size > 65536:
        raise DataError(f"a vocabulary of {tokenizer.vocab_size} tokens does not fit in uint16")
    digest = hashlib.sha256(text.encode("utf-8"))
    digest.update(json.dumps(tokenizer.to_dict(), sort_keys=True).encode("utf-8"))
    path = cache_dir / f"tokens-{digest.hexdigest()[:24]}.npy"
    if path.is_file():
        try:
            return numpy.load(path, allow_pickle=False)
        except (OSError, ValueError):
            pass  # a damaged cache file: encode again and overwrite it
    ids = numpy.asarray(tokenizer.encode(text), dtype=numpy.int64)
    tokens = ids.astype(numpy.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as buffer:  # np.save into memory, then an atomic write
        numpy.save(buffer, tokens, allow_pickle=False)
        buffer.seek(0)
        write_atomically(path, buffer.read())
    return tokens


@dataclass
class TokenData:
    """The train and val token arrays, and random batches cut from them."""

    train: numpy.ndarray
    val: numpy.ndarray

    def split(self, name: str) -> numpy.ndarray:
        if name not in ("train", "val"):
            raise ValueError(f"unknown split {name!r} (expected 'train' or 'val')")
        return self.train if name == "train" else self.val

    def check_block_size(self, block_size: int) -> None:
        for name in ("train", "val"):
            size = len(self.split(name))
            if size < block_size + 1:
                raise DataError(f"the {name} split has {size} tokens, but a training example needs "
                                f"block_size + 1 = {block_size + 1}; use more text or a smaller --block-size")

    def get_batch(self, name: str, batch_size: int, block_size: int, rng) -> tuple[numpy.ndarray, numpy.ndarray]:
        """``batch_size`` random windows: inputs x (B, T) and targets y = the next token of each position."""
        data = self.split(name)
        starts = rng.integers(0, len(data) - block_size, size=batch_size)
        x = numpy.stack([data[s:s + block_size] for s in starts]).astype(numpy.int64)
        y = numpy.stack([data[s + 1:s + 1 + block_size] for s in starts]).astype(numpy.int64)
        return x, y


def prepare_data(data_path: str | Path | None, tokenizer_spec: str = "char", cache_dir: str | Path | None = None,
                 gpt2_dir: str | Path | None = None, opener: Callable = urllib.request.urlopen):
    """(TokenData, tokenizer, text path): read or download the text, tokenize it, split it 90/10.

    The split is by characters (the last 10% of the text is validation), as in
    nanoGPT, so every tokenizer sees the same validation text.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = Path(data_path) if data_path is not None else download_tiny_shakespeare(cache_dir, opener=opener)
    text = load_text(path)
    cut = int(len(text) * TRAIN_FRACTION)
    train_text, val_text = text[:cut], text[cut:]
    if gpt2_dir is None and data_path is not None and any(
            (path.parent / sub / "vocab.bpe").is_file() for sub in (".", "gpt2")):
        gpt2_dir = path.parent  # GPT-2's files beside the text (as in the shared data folder)
    tokenizer = build_tokenizer(tokenizer_spec, text, train_text, cache_dir, gpt2_dir)
    data = TokenData(encode_cached(train_text, tokenizer, cache_dir), encode_cached(val_text, tokenizer, cache_dir))
    return data, tokenizer, path

"""The byte-level BPE tokenizer: ranks in, token ids out (and back).

A vocabulary is a table `ranks: dict[bytes, int]` from each token's bytes to its id. Ids double as
merge priorities ("ranks"): the lower the id, the earlier the token was learned. Text is encoded in
three steps:

  1. special tokens such as "<|endoftext|>" are cut out first (only those you allow),
  2. the split pattern cuts the rest into chunks (words, numbers, punctuation runs, whitespace),
  3. each chunk's UTF-8 bytes are merged, lowest rank first, into tokens (see `bpe/merge.py`).

Every byte is a token of its own, so any string can be encoded and decoding is just a lookup
from id to bytes and a join. Chunks repeat a lot in real text ("the" appears thousands of times),
so step 3 is cached per chunk; that cache is where most of the speed comes from.
"""
from __future__ import annotations

import re
from itertools import chain
from pathlib import Path
from typing import AbstractSet, Collection, Iterable, Literal, Mapping, Sequence

import numpy as np

from . import io
from .merge import merge_chunk
from .patterns import GPT2_PATTERN, GPT4_PATTERN, compile_splitter, special_token_regex
from .train import train_bpe

ENDOFTEXT = "<|endoftext|>"


class Tokenizer:
    """Byte-level BPE with tiktoken's encoding rules.

    Build one with `Tokenizer.train(text, vocab_size)`, `Tokenizer.load(path)`,
    `Tokenizer.from_gpt2_files(...)`, `Tokenizer.from_tiktoken_file(...)`, or directly from
    `ranks` (token bytes -> id), the split `pattern`, and `special_tokens` (text -> id).
    """

    # Encoded chunks to keep (a chunk and its ids take ~200 bytes, so ~100 MB at most), and the
    # longest chunk worth caching (long ones rarely repeat).
    max_cached_chunks = 500_000
    max_cached_chunk_length = 1_000

    def __init__(self, ranks: Mapping[bytes, int], pattern: str = GPT4_PATTERN,
                 special_tokens: Mapping[str, int] | None = None, *, name: str = "bpe"):
        self.ranks: dict[bytes, int] = dict(ranks)
        self.pattern = pattern
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        self.name = name
        self.merges: list[tuple[int, int]] | None = None  # set by `train`: the merges in order
        self._check_vocabulary()
        # One more than the largest id (ids may have gaps: cl100k has no 100256).
        self.n_vocab = max(chain(self.ranks.values(), self.special_tokens.values())) + 1
        self._split = compile_splitter(pattern)
        self._decoder = {rank: token for token, rank in self.ranks.items()}
        self._decoder.update((i, text.encode("utf-8")) for text, i in self.special_tokens.items())
        self._cache = _ChunkCache(self)
        self._special_regexes: dict[frozenset[str], re.Pattern] = {}

    def _check_vocabulary(self) -> None:
        for token, rank in self.ranks.items():
            if not isinstance(token, bytes) or not token:
                raise ValueError(f"{self.name}: token {token!r} is not a non-empty bytes object")
            if not isinstance(rank, int) or rank < 0:
                raise ValueError(f"{self.name}: token {token!r} has id {rank!r}, "
                                 "not a non-negative int")
        missing = [b for b in range(256) if bytes((b,)) not in self.ranks]
        if missing:
            raise ValueError(f"{self.name}: a byte-level vocabulary needs all 256 single bytes as "
                             f"tokens; missing {[bytes((b,)) for b in missing[:8]]}"
                             f"{' ...' if len(missing) > 8 else ''}")
        if len(set(self.ranks.values())) != len(self.ranks):
            raise ValueError(f"{self.name}: two tokens share an id")
        for text, i in self.special_tokens.items():
            if not isinstance(text, str) or not text:
                raise ValueError(f"{self.name}: special token {text!r} is not a non-empty string")
            if not isinstance(i, int) or i < 0:
                raise ValueError(f"{self.name}: special token {text!r} has bad id {i!r}")
        used = set(self.ranks.values())
        for text, i in self.special_tokens.items():
            if i in used:
                raise ValueError(f"{self.name}: special token {text!r} has id {i}, which clashes "
                                 "with another token")
            used.add(i)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def train(cls, text: str, vocab_size: int, pattern: str = GPT4_PATTERN,
              special_tokens: Iterable[str] | None = None, verbose: bool = False) -> "Tokenizer":
        """Learn a vocabulary of exactly `vocab_size` tokens from `text` (see `bpe/train.py`).

        The 256 single bytes get ids 0-255, learned tokens 256 and up in the order they were
        learned, and the special tokens the last ids. Raises ValueError if the text runs out of
        pairs to merge before the vocabulary is full. `verbose` shows a progress bar and each merge.
        """
        ranks, merges, specials = train_bpe(text, vocab_size, pattern, special_tokens, verbose)
        tokenizer = cls(ranks, pattern, specials, name=f"trained-{vocab_size}")
        tokenizer.merges = merges
        return tokenizer

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """Read a file written by `save` (format described in `bpe/io.py`)."""
        ranks, pattern, special_tokens = io.read_tokenizer(path)
        try:
            return cls(ranks, pattern, special_tokens, name=Path(path).name)
        except ValueError as error:
            raise io.TokenizerFileError(path, str(error)) from None

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as readable text: one `id "token"` line per token."""
        io.write_tokenizer(path, self.ranks, self.pattern, self.special_tokens)

    @classmethod
    def from_gpt2_files(cls, vocab_bpe_path: str | Path,
                        encoder_json_path: str | Path) -> "Tokenizer":
        """GPT-2's tokenizer from OpenAI's released `vocab.bpe` and `encoder.json`."""
        ranks, special_tokens = io.read_gpt2_files(vocab_bpe_path, encoder_json_path)
        return cls(ranks, GPT2_PATTERN, special_tokens, name="gpt2")

    @classmethod
    def from_tiktoken_file(cls, path: str | Path, pattern: str,
                           special_tokens: Mapping[str, int] | None = None) -> "Tokenizer":
        """A tokenizer from a `.tiktoken` rank file (e.g. cl100k_base.tiktoken)."""
        try:
            return cls(io.read_tiktoken_file(path), pattern, special_tokens,
                       name=Path(path).name.removesuffix(".tiktoken"))
        except io.TokenizerFileError:
            raise
        except ValueError as error:
            raise io.TokenizerFileError(path, str(error)) from None

    # ------------------------------------------------------------------ properties

    @property
    def eot_token(self) -> int | None:
        """The id of <|endoftext|>, or None if this vocabulary has no such special token."""
        return self.special_tokens.get(ENDOFTEXT)

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self.special_tokens)

    def __repr__(self) -> str:
        return (f"Tokenizer(name={self.name!r}, n_vocab={self.n_vocab}, "
                f"special_tokens={len(self.special_tokens)})")

    # ------------------------------------------------------------------ encoding

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode `text`, treating special-token text like any other text."""
        try:
            return list(chain.from_iterable(map(self._cache.__getitem__, self._split(text))))
        except UnicodeEncodeError:
            # A str can hold lone surrogates (e.g. half an emoji from a bad decode), which have no
            # UTF-8 form. Replace them with U+FFFD, as tiktoken does, and try again.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return list(chain.from_iterable(map(self._cache.__getitem__, self._split(text))))

    def encode(self, text: str, *,
               allowed_special: Literal["all"] | AbstractSet[str] = frozenset(),
               disallowed_special: Literal["all"] | Collection[str] = "all") -> list[int]:
        """Encode `text` with tiktoken's special-token rules.

        Special-token text (like "<|endoftext|>") in `text` is
          * an error by default (`disallowed_special="all"`): it is usually untrusted input that
            should not be able to inject control tokens; the ValueError names the token;
          * encoded as the special id if listed in `allowed_special` (or `allowed_special="all"`);
          * encoded as ordinary text if not allowed and not in `disallowed_special` (pass
            `disallowed_special=()` to turn the check off).
        Naming a string that is not one of this tokenizer's special tokens raises ValueError
        (tiktoken ignores it; here a typo should not pass silently).
        """
        allowed = self._special_set(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = set(self.special_tokens) - allowed
        else:
            disallowed = self._special_set(disallowed_special, "disallowed_special")
        if disallowed:
            found = self._special_regex(disallowed).search(text)
            if found:
                token = found.group()
                raise ValueError(
                    f"Encountered text corresponding to disallowed special token {token!r}.\n"
                    f"To encode it as the special token, pass allowed_special={{{token!r}}} (or "
                    f"allowed_special='all'); to encode it as plain text, pass "
                    f"disallowed_special=() (or leave {token!r} out of disallowed_special).")
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        # split() with a capturing group alternates: text, special, text, special, ..., text.
        for i, piece in enumerate(self._special_regex(allowed).split(text)):
            if i % 2:
                ids.append(self.special_tokens[piece])
            elif piece:
                ids.extend(self.encode_ordinary(piece))
        return ids

    def encode_batch(self, texts: Sequence[str], *,
                     allowed_special: Literal["all"] | AbstractSet[str] = frozenset(),
                     disallowed_special: Literal["all"] | Collection[str] = "all") -> list[list[int]]:
        """`encode` each of `texts` (one after another; the chunk cache is shared)."""
        return [self.encode(text, allowed_special=allowed_special,
                            disallowed_special=disallowed_special) for text in texts]

    def encode_single_token(self, token: str | bytes) -> int:
        """The id of a text that is exactly one token (a regular or a special one)."""
        as_bytes = token.encode("utf-8") if isinstance(token, str) else token
        if as_bytes in self.ranks:
            return self.ranks[as_bytes]
        if isinstance(token, str) and token in self.special_tokens:
            return self.special_tokens[token]
        raise ValueError(f"{token!r} is not a single token of {self.name}")

    def encode_to_numpy(self, text: str, dtype: np.dtype | type | None = None, *,
                        allowed_special: Literal["all"] | AbstractSet[str] = frozenset(),
                        disallowed_special: Literal["all"] | Collection[str] = "all") -> np.ndarray:
        """`encode`, returned as a 1-D numpy array for datasets.

        The default dtype is the smallest that holds every id: uint16 for vocabularies of up to
        65,536 tokens (GPT-2), else uint32 (cl100k). A dtype too small for the vocabulary raises.
        """
        dtype = np.dtype(dtype) if dtype is not None else self.numpy_dtype
        if dtype.kind not in "ui" or np.iinfo(dtype).max < self.n_vocab - 1:
            raise ValueError(f"dtype {dtype} cannot hold token ids up to {self.n_vocab - 1}")
        ids = self.encode(text, allowed_special=allowed_special,
                          disallowed_special=disallowed_special)
        return np.array(ids, dtype=dtype)

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(np.uint16 if self.n_vocab <= 2 ** 16 else np.uint32)

    def _special_set(self, tokens, argument: str) -> set[str]:
        if tokens == "all":
            return set(self.special_tokens)
        if isinstance(tokens, str):
            raise TypeError(f"{argument} must be 'all' or a collection of special tokens, "
                            f"got the string {tokens!r}")
        tokens = set(tokens)
        unknown = tokens - self.special_tokens.keys()
        if unknown:
            raise ValueError(f"{argument} names {sorted(unknown)}, which are not special tokens "
                             f"of {self.name} (those are {sorted(self.special_tokens)})")
        return tokens

    def _special_regex(self, tokens: set[str]) -> re.Pattern:
        key = frozenset(tokens)
        if key not in self._special_regexes:
            self._special_regexes[key] = special_token_regex(tokens)
        return self._special_regexes[key]

    # ------------------------------------------------------------------ decoding

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes the ids stand for, joined. Unknown ids raise ValueError."""
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        elif not isinstance(ids, (list, tuple)):
            ids = list(ids)  # we may need a second pass to name a bad id
        try:
            return b"".join(map(self._decoder.__getitem__, ids))
        except (KeyError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or i not in self._decoder)
            raise ValueError(f"token id {bad!r} is not in the vocabulary of {self.name} "
                             f"(n_vocab={self.n_vocab})") from None

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Decode ids to text. Token boundaries can split a UTF-8 character (a lone id may be half
        of an emoji), so invalid UTF-8 becomes U+FFFD by default, as in tiktoken; pass
        errors="strict" to raise instead."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def decode_single_token_bytes(self, token_id: int) -> bytes:
        try:
            return self._decoder[token_id]
        except (KeyError, TypeError):
            raise ValueError(f"token id {token_id!r} is not in the vocabulary of {self.name} "
                             f"(n_vocab={self.n_vocab})") from None

    def clear_cache(self) -> None:
        """Forget encoded chunks (for timing cold encodes, or to free memory)."""
        self._cache.clear()


class _ChunkCache(dict):
    """chunk text -> token ids. Looking up a chunk that is not there runs BPE on its bytes."""

    def __init__(self, tokenizer: Tokenizer):
        super().__init__()
        self.tokenizer = tokenizer
        self.ranks = tokenizer.ranks

    def __missing__(self, chunk: str) -> list[int]:
        ids = merge_chunk(chunk.encode("utf-8"), self.ranks)
        if len(chunk) <= self.tokenizer.max_cached_chunk_length:
            if len(self) >= self.tokenizer.max_cached_chunks:
                self.clear()
            self[chunk] = ids
        return ids

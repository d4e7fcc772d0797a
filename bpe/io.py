"""Reading and writing vocabularies: our own text format, OpenAI's GPT-2 files, `.tiktoken` files.

Every reader checks what it reads and raises `TokenizerFileError` (a ValueError) naming the file
and line, so a damaged file never becomes a tokenizer that quietly encodes text wrongly.

Our format (`Tokenizer.save`), UTF-8 text, one item per line:

    tinygrad_lite-bpe 1                     <- magic and format version
    pattern "'(?i:[sdmt]|ll|ve|re)|..."     <- the split regex, as a JSON string
    special_tokens 1                        <- how many special-token lines follow
    4095 "<|endoftext|>"                    <- id, then the special token's text as JSON
    tokens 4095                             <- how many token lines follow, in id order
    0 "\\u0000"                              <- id (= rank), then the token's bytes as a JSON string
    ...
    256 " t"
    ...
    end sha256 5f0c...                      <- checksum of every byte above this line

A token's bytes are shown as the text they decode to in UTF-8, so most lines are readable. Bytes
that are not valid UTF-8 on their own (half of a multi-byte character) are written the way Python's
"surrogateescape" error handler represents them: byte 0xNN as the escape \\udcNN. The counts and the
closing checksum make a truncated or edited file fail to load instead of loading half a vocabulary.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from pathlib import Path
from typing import Union

PathLike = Union[str, Path]
MAGIC = "tinygrad_lite-bpe 1"

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class TokenizerFileError(ValueError):
    """A vocabulary file is missing pieces, malformed, or inconsistent."""

    def __init__(self, path: PathLike, problem: str, line: int | None = None):
        where = f"{path}, line {line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")


# ----------------------------------------------------------------------------- our format

def token_to_json(token: bytes) -> str:
    """`token` as a JSON string literal that `json_to_token` turns back into the same bytes."""
    text = json.dumps(token.decode("utf-8", "surrogateescape"), ensure_ascii=False)
    # Lone surrogates cannot be written as UTF-8, so spell them as JSON \\u escapes.
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def json_to_token(literal: str) -> bytes:
    text = json.loads(literal)
    if not isinstance(text, str):
        raise ValueError(f"expected a JSON string, got {literal!r}")
    return text.encode("utf-8", "surrogateescape")


def write_tokenizer(path: PathLike, ranks: dict[bytes, int], pattern: str,
                    special_tokens: dict[str, int]) -> None:
    lines = [MAGIC, f"pattern {json.dumps(pattern)}", f"special_tokens {len(special_tokens)}"]
    lines += [f"{i} {json.dumps(s, ensure_ascii=False)}"
              for s, i in sorted(special_tokens.items(), key=lambda item: item[1])]
    lines.append(f"tokens {len(ranks)}")
    lines += [f"{i} {token_to_json(t)}" for t, i in sorted(ranks.items(), key=lambda item: item[1])]
    body = ("\n".join(lines) + "\n").encode("utf-8")
    Path(path).write_bytes(body + f"end sha256 {hashlib.sha256(body).hexdigest()}\n".encode())


def read_tokenizer(path: PathLike) -> tuple[dict[bytes, int], str, dict[str, int]]:
    """Parse a file written by `write_tokenizer`: (ranks, pattern, special_tokens)."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC.encode() + b"\n"):
        raise TokenizerFileError(path, f"not a tinygrad_lite BPE file (it must start with {MAGIC!r})")
    body_end = data.rfind(b"\nend sha256 ") + 1
    closing = re.fullmatch(rb"end sha256 ([0-9a-f]{64})\n", data[body_end:]) if body_end else None
    if closing is None:
        raise TokenizerFileError(path, "the file is truncated: it does not finish with the "
                                       "'end sha256 <checksum>' line")
    if hashlib.sha256(data[:body_end]).hexdigest() != closing.group(1).decode():
        raise TokenizerFileError(path, "checksum mismatch: the file was modified or corrupted "
                                       "after it was saved")
    try:
        lines = data[:body_end].decode("utf-8").split("\n")[:-1]
    except UnicodeDecodeError as error:
        raise TokenizerFileError(path, f"not valid UTF-8 ({error})") from None
    reader = _LineReader(path, lines)
    reader.next_line()  # the magic line, already checked
    pattern = reader.keyed("pattern", json.loads)
    if not isinstance(pattern, str):
        reader.fail("the pattern must be a JSON string")
    special_tokens = {}
    for _ in range(reader.keyed("special_tokens", int)):
        token_id, text = reader.id_and_value(json.loads)
        if not isinstance(text, str) or text in special_tokens:
            reader.fail(f"bad or repeated special token {text!r}")
        special_tokens[text] = token_id
    ranks = {}
    for _ in range(reader.keyed("tokens", int)):
        rank, token = reader.id_and_value(json_to_token)
        if token in ranks:
            reader.fail(f"token {token!r} appears twice (ids {ranks[token]} and {rank})")
        ranks[token] = rank
    if reader.position != len(lines):
        reader.fail("more lines than the counts in the header announce")
    return ranks, pattern, special_tokens


class _LineReader:
    """Walks the lines of a file, turning any parse problem into a TokenizerFileError."""

    def __init__(self, path: PathLike, lines: list[str]):
        self.path, self.lines, self.position = path, lines, 0

    def fail(self, problem: str):
        raise TokenizerFileError(self.path, problem, line=self.position)

    def next_line(self) -> str:
        if self.position >= len(self.lines):
            raise TokenizerFileError(self.path, "fewer lines than the counts in the header announce")
        self.position += 1
        return self.lines[self.position - 1]

    def keyed(self, key: str, parse):
        line = self.next_line()
        name, _, value = line.partition(" ")
        if name != key:
            self.fail(f"expected a '{key} ...' line, found {line[:80]!r}")
        return self._parse(parse, value, line)

    def id_and_value(self, parse):
        line = self.next_line()
        number, _, value = line.partition(" ")
        token_id = self._parse(int, number, line)
        if token_id < 0:
            self.fail(f"negative token id in {line[:80]!r}")
        return token_id, self._parse(parse, value, line)

    def _parse(self, parse, value: str, line: str):
        try:
            return parse(value)
        except (ValueError, UnicodeError) as error:  # json.JSONDecodeError is a ValueError
            self.fail(f"cannot parse {line[:80]!r} ({error})")


# ----------------------------------------------------------------------------- OpenAI's formats

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte to a printable character, used to store tokens as text.

    Printable Latin-1 bytes stand for themselves; the other 68 (control codes, space, ...) are
    shifted to U+0100 and up, in byte order. So the space byte 0x20 is written "Ġ" (U+0120):
    "Ġthe" in encoder.json is the token b" the".
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in table)
    table.update((b, chr(256 + n)) for n, b in enumerate(shifted))
    return table


_BYTE_OF_GPT2_CHARACTER = {char: b for b, char in bytes_to_unicode().items()}  # in bytes_to_unicode order


def read_gpt2_files(vocab_bpe_path: PathLike,
                    encoder_json_path: PathLike) -> tuple[dict[bytes, int], dict[str, int]]:
    """Ranks and special tokens from OpenAI's released GPT-2 `vocab.bpe` and `encoder.json`.

    vocab.bpe lists the 50,000 merges in the order they were learned; encoder.json maps each token
    (written with `bytes_to_unicode`) to its id. The ranks come from the merge order (single bytes
    first, in `bytes_to_unicode` order, then one rank per merge) and must agree with encoder.json;
    the entries that no merge produces must be special tokens, named <|...|> (GPT-2 has one,
    <|endoftext|> = 50256).
    """
    ranks = _ranks_from_vocab_bpe(vocab_bpe_path)
    return ranks, _special_tokens_from_encoder_json(encoder_json_path, ranks, vocab_bpe_path)


def _gpt2_text_to_bytes(text: str, path: PathLike, line: int | None) -> bytes:
    """A token as GPT-2's files write it (one `bytes_to_unicode` character per byte) -> its bytes."""
    byte_of = _BYTE_OF_GPT2_CHARACTER
    try:
        return bytes(byte_of[char] for char in text)
    except KeyError as error:
        raise TokenizerFileError(path, f"{text!r} holds {error.args[0]!r}, which is not in "
                                       "GPT-2's byte table", line) from None


def _ranks_from_vocab_bpe(path: PathLike) -> dict[bytes, int]:
    """The 256 single bytes in `bytes_to_unicode` order, then one rank per merge line of vocab.bpe."""
    ranks = {bytes((b,)): rank for rank, b in enumerate(_BYTE_OF_GPT2_CHARACTER.values())}
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise TokenizerFileError(path, f"not valid UTF-8 ({error})") from None
    if not lines[0].startswith("#version"):
        raise TokenizerFileError(path, "the first line must be '#version: ...'", 1)
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise TokenizerFileError(path, f"expected two tokens, got {line!r}", number)
        merged = _gpt2_text_to_bytes(parts[0], path, number) + _gpt2_text_to_bytes(parts[1], path, number)
        if merged in ranks:
            raise TokenizerFileError(path, f"merge {line!r} repeats an earlier token", number)
        ranks[merged] = len(ranks)
    return ranks


def _special_tokens_from_encoder_json(path: PathLike, ranks: dict[bytes, int],
                                      vocab_bpe_path: PathLike) -> dict[str, int]:
    """Check encoder.json's ids against the ranks; return the entries no merge makes (<|...|>)."""
    try:
        encoder = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise TokenizerFileError(path, f"not valid JSON ({error})") from None
    if not isinstance(encoder, dict):
        raise TokenizerFileError(path, "expected a JSON object of token -> id")
    special_tokens = {}
    found = 0
    for text, token_id in encoder.items():
        if not isinstance(token_id, int):
            raise TokenizerFileError(path, f"the id of {text!r} is not an integer")
        token = _gpt2_text_to_bytes(text, path, None)
        if token in ranks and ranks[token] == token_id:
            found += 1
        elif token in ranks:
            raise TokenizerFileError(path, f"{text!r} has id {token_id}, but "
                                     f"{vocab_bpe_path} gives it rank {ranks[token]}")
        elif text.startswith("<|") and text.endswith("|>"):
            special_tokens[text] = token_id
        else:
            raise TokenizerFileError(path, f"{text!r} has id {token_id}, but no merge "
                                     f"in {vocab_bpe_path} makes it (is that file truncated?)")
    if found != len(ranks):
        raise TokenizerFileError(path, f"has {found} of the {len(ranks)} tokens "
                                 f"that {vocab_bpe_path} defines (is one of them truncated?)")
    return special_tokens


def read_tiktoken_file(path: PathLike) -> dict[bytes, int]:
    """Ranks from a `.tiktoken` file: one `base64(token) rank` pair per line (e.g. cl100k_base)."""
    ranks = {}
    try:
        lines = Path(path).read_text(encoding="ascii").split("\n")
    except UnicodeDecodeError as error:
        raise TokenizerFileError(path, f"not an ASCII .tiktoken file ({error})") from None
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        try:
            encoded, rank_text = line.split(" ")
            token, rank = base64.b64decode(encoded, validate=True), int(rank_text)
        except (ValueError, binascii.Error):
            raise TokenizerFileError(path, f"expected 'base64-token rank', got {line[:80]!r}",
                                     number) from None
        if token in ranks:
            raise TokenizerFileError(path, f"token {token!r} appears twice", number)
        ranks[token] = rank
    if not ranks:
        raise TokenizerFileError(path, "the file holds no tokens")
    return ranks


def sha256_of(path: PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

r"""Every code point, split by our pre-split and by tiktoken's, for GPT-2's and GPT-4's patterns.

The split patterns sort each character into \p{L}, \p{N}, \s or none of them, and tiktoken's
Unicode tables may differ from the installed `regex` module's (bpe/patterns.py). Each code point c
goes into a probe whose chunks differ for each class:

    " abc{c}---'{c}159"    a letter joins "abc", a symbol joins "---'", a number joins "159",
                           whitespace joins none; "'" + c checks contractions such as "'ſ"

and the probes of 65,536 code points at a time are split by us and by tiktoken.

How we read tiktoken's chunks: tiktoken looks each piece up whole in its vocabulary before it
runs BPE on it. We give it a vocabulary of the 256 single bytes plus each of our chunks of three
or more bytes as one token. That vocabulary holds no two-byte token, so BPE can merge nothing:
a piece that is not one of our long chunks comes out as its single bytes. If tiktoken cuts where
we do, it returns exactly the tokens we predict for our chunks; if it cuts anywhere else, a long
chunk's token goes missing or appears where we have bytes. (A difference would hide only inside
runs of single-byte tokens: two short chunks side by side, or a two-letter ASCII chunk split in
two; `assert_probe_is_sharp` checks that our chunks hold neither.)
"""
from __future__ import annotations

import unicodedata
from importlib import metadata

import pytest
import regex
import tiktoken

import bpe
from bpe import unicode_tables
from bpe.patterns import compile_splitter

PROBE = " abc{c}---'{c}159"
BATCH = 1 << 16  # code points per tiktoken call: about 1 MB of text
EVERY_CODE_POINT = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]  # UTF-8 can't hold surrogates


def probe_text(code_points: list[int]) -> str:
    return "".join(PROBE.format(c=chr(c)) for c in code_points)


def long_chunk_vocabulary(chunks: list[bytes]) -> dict[bytes, int]:
    ranks = {bytes([b]): b for b in range(256)}
    for chunk in chunks:
        if len(chunk) >= 3:
            ranks.setdefault(chunk, len(ranks))
    return ranks


def assert_probe_is_sharp(chunks: list[bytes]) -> None:
    for before, after in zip(chunks, chunks[1:]):
        assert len(before) > 2 or len(after) > 2, f"short chunks side by side: {before!r} {after!r}"
    for chunk in chunks:
        assert not (len(chunk) == 2 and chunk.isascii()), f"two-letter ASCII chunk {chunk!r}"


def splits_alike(pattern: str, split, code_points: list[int]) -> tuple[bool, list[str], list[str]]:
    """(do we and tiktoken cut the probes alike?, our chunks, tiktoken's tokens as text)."""
    text = probe_text(code_points)
    ours = split(text)
    assert "".join(ours) == text, "our split lost or added characters"
    chunks = [chunk.encode() for chunk in ours]
    assert_probe_is_sharp(chunks)
    ranks = long_chunk_vocabulary(chunks)
    probe = tiktoken.Encoding(name="chunk-probe", pat_str=pattern, mergeable_ranks=ranks,
                              special_tokens={})
    theirs = probe.encode_ordinary(text)
    expected = [t for chunk in chunks for t in ([ranks[chunk]] if len(chunk) >= 3 else chunk)]
    if theirs == expected:
        return True, ours, []
    return False, ours, [probe.decode_single_token_bytes(t).decode("utf-8", "backslashreplace")
                         for t in theirs]


def first_different(pattern: str, split, code_points: list[int]) -> int | None:
    """The first code point whose probe tiktoken cuts differently (by halving), or None."""
    if splits_alike(pattern, split, code_points)[0]:
        return None
    while len(code_points) > 1:
        half = code_points[:len(code_points) // 2]
        code_points = code_points[len(half):] if splits_alike(pattern, split, half)[0] else half
    return code_points[0]


def describe(code_point: int) -> str:
    name = unicodedata.name(chr(code_point), f"unnamed in Python's Unicode {unicodedata.unidata_version}")
    return f"U+{code_point:04X} {chr(code_point)!r} ({name})"


@pytest.mark.timeout(90)  # ~9 s alone, ~15 s beside another worker on two cores
@pytest.mark.parametrize("name, pattern", [("gpt2", bpe.GPT2_PATTERN), ("cl100k", bpe.GPT4_PATTERN)],
                         ids=["gpt2", "cl100k"])
def test_every_code_point_splits_like_tiktoken(name, pattern):
    split = compile_splitter(pattern)
    batches = [EVERY_CODE_POINT[start:start + BATCH] for start in range(0, len(EVERY_CODE_POINT), BATCH)]
    batches.insert(0, list(range(128)))  # alone, ASCII takes the splitter's ASCII-only path
    for batch in batches:
        code_point = first_different(pattern, split, batch)
        if code_point is None:
            continue
        _, ours, theirs = splits_alike(pattern, split, [code_point])
        pytest.fail(f"{name}: our pre-split and tiktoken's differ first at {describe(code_point)}\n"
                    f"  probe    {PROBE.format(c=chr(code_point))!r}\n  ours     {ours}\n"
                    f"  tiktoken {theirs}   (single bytes where it cut elsewhere)\n"
                    f"  bpe/unicode_tables.py follows tiktoken {unicode_tables.TIKTOKEN_VERSION} "
                    f"(Unicode {unicode_tables.UNICODE_VERSION}); tiktoken {metadata.version('tiktoken')} is "
                    "installed. If they differ, run scripts/make_unicode_tables.py.", pytrace=False)


# The installed `regex` may agree with tiktoken everywhere, or disagree in either direction; the
# rewrite in bpe/patterns.py must handle each. Pretend tiktoken's table differs from `regex` on
# four characters, and compare with the same text where each stands in for a character that
# `regex` already classes as the table says.
PRETEND = {"€": ("letter", "x"), "é": ("other", "-"), "٣": ("whitespace", "\u2003"), "\u3000": ("number", "7")}


def pretend_disagreements():
    classes = {"letter": r"\p{L}", "number": r"\p{N}", "whitespace": r"\s"}
    tiktokens = {item: set() for item in classes.values()}
    for char, (kind, _) in PRETEND.items():
        if kind in classes:
            tiktokens[classes[kind]].add(ord(char))
    return frozenset(map(ord, PRETEND)), {item: frozenset(s) for item, s in tiktokens.items()}


@pytest.mark.parametrize("pattern", [bpe.GPT2_PATTERN, bpe.GPT4_PATTERN], ids=["gpt2", "cl100k"])
def test_the_table_overrides_the_installed_regex(monkeypatch, pattern):
    from bpe import patterns
    monkeypatch.setattr(patterns, "_disagreements", pretend_disagreements)
    patterns._as_tiktoken_splits.cache_clear()
    try:
        split = compile_splitter(pattern)
        texts = ["ab€cd 1€2 €€ ", "café's é1 -é- ", "a٣b 1٣2 ٣٣\n٣x", "x\u30001 2\u30003\u3000 \u3000\n",
                 " €é٣\u3000 '€ 'é\r\n" * 3, "٣", "\u3000"]
        for text in texts:
            stand_ins = text.translate({ord(c): s for c, (_, s) in PRETEND.items()})
            expected = regex.findall(pattern, stand_ins)
            chunks = split(text)
            assert [len(c) for c in chunks] == [len(c) for c in expected], (text, chunks, expected)
    finally:
        patterns._as_tiktoken_splits.cache_clear()

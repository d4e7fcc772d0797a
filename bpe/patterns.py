r"""Pre-tokenization: the regex that cuts text into chunks before BPE sees it.

BPE never merges across chunk boundaries, so the split pattern decides what a token *can* be:
with these patterns a token never runs from one word into the next (the space before a word
belongs to that word: " world"), letters are never glued to digits, and (for GPT-4) numbers are
cut into groups of at most three digits.

Both constants are copied character for character from OpenAI's tiktoken (`tiktoken_ext/
openai_public.py`). We run them with the third-party `regex` module (Python's `re` has no \p{L}
"any letter" or \p{N} "any digit"), which gives the same chunks as tiktoken's Rust engine; the
comments below cover the places where that needs care: speed on ASCII text, and Unicode versions.
We follow tiktoken's Unicode (16.0 for tiktoken 0.14: `unicode_tables.py`), not the installed
`regex`'s; `python scripts/make_unicode_tables.py` regenerates the table when tiktoken moves.
(One place that needs no care: Python's `$` also matches before a final newline, but in `\s++$`
the possessive `\s++` has already taken that newline, so `$` can only match at the very end, as
in Rust.)
"""
from __future__ import annotations

import functools
import re
from typing import Callable, Iterable

import regex

from . import unicode_tables

# GPT-2 (also r50k/p50k). tiktoken's faster but equivalent form of the pattern OpenAI released:
# 's 't 're 've 'm 'll 'd | optional space + letters | optional space + digits |
# optional space + other symbols | trailing whitespace | whitespace not followed by text | a space.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

# GPT-4 (cl100k_base), the pattern tiktoken uses today. Differences from GPT-2: contractions are
# case-insensitive, a word may start with any one non-letter (e.g. "(hello" or "_init"), digits
# come in groups of 1-3, and newlines are kept apart from other whitespace.
GPT4_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
                r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")

# Speed: Python's built-in `re` runs these patterns about twice as fast as `regex`, but it has no
# \p{L} / \p{N}. On pure-ASCII text it does not need them: the only letters are A-Z a-z, the only
# numbers 0-9, and the only Unicode whitespace characters are \t \n \v \f \r and space. (Written
# out, because `re`'s own \s also matches \x1c-\x1f, which Unicode does not call whitespace.)
# `$` becomes `\Z` because `re`'s `$` also matches before a final newline and tiktoken's does not.
_S, _NOT_S = r"[\t\n\x0b\x0c\r ]", r"[^\t\n\x0b\x0c\r ]"
_ASCII_EQUIVALENTS = {
    GPT2_PATTERN: (rf"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]++| ?[0-9]++| ?[^\t\n\x0b\x0c\r A-Za-z0-9]++"""
                   rf"""|{_S}++\Z|{_S}+(?!{_NOT_S})|{_S}"""),
    GPT4_PATTERN: (rf"""'(?i:[sdmt]|ll|ve|re)|[^\r\nA-Za-z0-9]?+[A-Za-z]++|[0-9]{{1,3}}+"""
                   rf"""| ?[^\t\n\x0b\x0c\r A-Za-z0-9]++[\r\n]*+|{_S}++\Z|{_S}*[\r\n]"""
                   rf"""|{_S}+(?!{_NOT_S})|{_S}"""),
}

# Unicode versions. Which characters are letters (\p{L}), numbers (\p{N}) or whitespace (\s)
# depends on the Unicode tables an engine was built with. tiktoken's are compiled into its Rust
# regex crate (Unicode 16.0 for tiktoken 0.14); the `regex` module installed here may know an
# older or newer Unicode (2026.11 knows ~17,000 letters that tiktoken 0.14 calls "other"). So we
# do not trust `regex`'s tables: `unicode_tables.py` holds tiktoken's own classes, read off
# tiktoken by `scripts/make_unicode_tables.py` (run it again when tiktoken moves; the code-point
# sweep in tests/test_bpe_tiktoken_parity.py fails until then). The first time non-ASCII text
# is split, we list the code points where the installed `regex` disagrees with that table. Text
# holding none of them (nearly all text) is split with the pattern as written; text holding one
# is split again with every character class rewritten to decide those code points by the table.
# (Writing all of tiktoken's 677 letter ranges into every class instead is exact too, but 10x
# slower in `regex`.)

def _code_points(runs: str) -> set[int]:
    """The code points of a table in unicode_tables.py ("41-5a 61-7a aa ..." -> {0x41, ...})."""
    points: set[int] = set()
    for run in runs.split():
        first, _, last = run.partition("-")
        points.update(range(int(first, 16), int(last or first, 16) + 1))
    return points


def _class_body(points: Iterable[int]) -> str:
    """The inside of a [...] character class holding exactly `points`, as \\u/\\U escapes."""
    def escape(point: int) -> str:
        return f"\\u{point:04x}" if point < 0x10000 else f"\\U{point:08x}"
    runs: list[list[int]] = []
    for point in sorted(points):
        if runs and point == runs[-1][1] + 1:
            runs[-1][1] = point
        else:
            runs.append([point, point])
    return "".join(escape(a) if a == b else f"{escape(a)}-{escape(b)}" for a, b in runs)


@functools.cache
def _disagreements() -> tuple[frozenset[int], dict[str, frozenset[int]]]:
    """The code points that the installed `regex` classes differently from tiktoken, and, of
    those, tiktoken's letters, numbers and whitespace."""
    everything = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))
    disagree: set[int] = set()
    tiktokens: dict[str, frozenset[int]] = {}
    for item, table in ((r"\p{L}", unicode_tables.LETTERS), (r"\p{N}", unicode_tables.NUMBERS),
                        (r"\s", unicode_tables.WHITESPACE)):
        theirs = _code_points(table)
        disagree |= theirs.symmetric_difference(map(ord, regex.findall(item, everything)))
        tiktokens[item] = frozenset(theirs)
    return frozenset(disagree), {item: tiktokens[item] & disagree for item in tiktokens}


# Every character class in the two built-in patterns: (negated?, the class items it tests).
_CLASSES = {
    r"[^\s\p{L}\p{N}]": (True, (r"\s", r"\p{L}", r"\p{N}")),
    r"[^\r\n\p{L}\p{N}]": (True, (r"\r", r"\n", r"\p{L}", r"\p{N}")),
    r"\p{L}": (False, (r"\p{L}",)),
    r"\p{N}": (False, (r"\p{N}",)),
    r"\s": (False, (r"\s",)),
    r"\S": (True, (r"\s",)),
}
_OPPOSITE = {r"\p{L}": r"\P{L}", r"\p{N}": r"\P{N}", r"\s": r"\S"}


def _with_tiktokens_classes(pattern: str) -> str:
    """`pattern` with each character class C rewritten as (?:[C but not a disagreeing code point]
    |[the disagreeing code points that C holds by tiktoken's table]): exact under any `regex`."""
    disagree, tiktokens = _disagreements()
    not_disagree = _class_body(disagree)
    out, i = [], 0
    while i < len(pattern):
        written = next((c for c in _CLASSES if pattern.startswith(c, i)), None)
        if written is None:  # copy one character, or an escape pair whole
            step = 2 if pattern[i] == "\\" else 1
            out.append(pattern[i:i + step])
            i += step
            continue
        negated, items = _CLASSES[written]
        members = frozenset().union(*(tiktokens.get(x, ()) for x in items))  # \r, \n agree
        holds = (disagree - members) if negated else members
        if negated:
            kept = f"[^{''.join(items)}{not_disagree}]"
        else:
            kept = f"[^{_OPPOSITE[items[0]]}{not_disagree}]"
        out.append(f"(?:{kept}|[{_class_body(holds)}])" if holds else kept)
        i += len(written)
    return "".join(out)


Splitter = Callable[[str], list[str]]


@functools.cache
def _as_tiktoken_splits(pattern: str) -> tuple[Callable | None, Splitter]:
    """(a search for a code point where `regex` and tiktoken disagree, or None if there is none;
    the findall of `pattern` with tiktoken's classes), built the first time they are needed."""
    disagree, _ = _disagreements()
    if not disagree:
        return None, regex.compile(pattern).findall
    find = re.compile(f"[{_class_body(disagree)}]").search
    return find, regex.compile(_with_tiktokens_classes(pattern)).findall


def compile_splitter(pattern: str) -> Splitter:
    r"""Return a function `text -> list of chunks`, the matches of `pattern` in order.

    For the two built-in patterns it picks the fastest exact way to split each text (see the
    comments above). A custom pattern is used as given, but it might not match every character
    (say r"\w+"), and the characters it skips would vanish from the encoding, so its splitter
    checks coverage and raises ValueError naming the first skipped character.
    Raises ValueError if `pattern` is not a valid regular expression.
    """
    try:
        findall = regex.compile(pattern).findall
    except regex.error as error:
        raise ValueError(f"invalid split pattern {pattern!r}: {error}") from None
    if pattern not in _ASCII_EQUIVALENTS:
        return _checked(findall, pattern)
    ascii_findall = re.compile(_ASCII_EQUIVALENTS[pattern], re.ASCII).findall

    def split_unicode(text: str) -> list[str]:
        chunks = findall(text)
        find_disagreement, exact_findall = _as_tiktoken_splits(pattern)
        # Checking the distinct chunks is ~4x cheaper than searching the whole text.
        if find_disagreement is not None and find_disagreement("".join(set(chunks))):
            return exact_findall(text)
        return chunks

    def split(text: str) -> list[str]:
        if text.isascii():
            return ascii_findall(text)
        if len(text) <= BLOCK_SIZE:
            return split_unicode(text)
        # Mostly-English text with a few curly quotes should not lose the ASCII speed-up.
        chunks: list[str] = []
        for block in _blocks(text):
            chunks += ascii_findall(block) if block.isascii() else split_unicode(block)
        return chunks

    return split


# Long texts are split in blocks of about this many characters (see `_blocks`).
BLOCK_SIZE = 1 << 16


def _blocks(text: str):
    r"""Cut `text` into blocks of about BLOCK_SIZE characters that split exactly like the whole.

    Each cut goes just before a space that follows a non-space character. With either built-in
    pattern a chunk that holds a non-space character holds at most one space, at its start, so
    no chunk spans a cut; and the last chunk before a cut ends the same whether the block goes on
    with that space or stops there (no pattern extends a non-space run with a space, and `$` and
    `(?!\S)` only follow whitespace). str.isspace is True for every Unicode whitespace character
    and a few more, which only makes us skip some places that would have been safe.
    """
    start, n = 0, len(text)
    while start < n:
        cut = start + BLOCK_SIZE
        while cut < n:
            cut = text.find(" ", cut)
            if cut == -1:
                cut = n
            elif text[cut - 1].isspace():
                cut += 1
                continue
            break
        yield text[start:cut]
        start = cut


def _checked(findall: Splitter, pattern: str) -> Splitter:
    def split(text: str) -> list[str]:
        chunks = findall(text)
        if sum(map(len, chunks)) != len(text):
            position = 0
            for chunk in chunks:  # find the first gap: the chunks tile the text up to there
                if not text.startswith(chunk, position):
                    break
                position += len(chunk)
            raise ValueError(f"split pattern {pattern!r} does not match character "
                             f"{text[position]!r} at position {position}; it would be dropped")
        return chunks

    return split


def special_token_regex(tokens: Iterable[str]) -> re.Pattern:
    """A regex matching any of `tokens` (literally), with one capturing group, so that
    `.split(text)` alternates text, token, text, token, ..., text."""
    # Longest first, so a special token that is a prefix of another cannot hide it.
    alternatives = "|".join(map(re.escape, sorted(tokens, key=lambda t: (-len(t), t))))
    return re.compile(f"({alternatives})")

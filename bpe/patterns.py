r"""Pre-tokenization: the regex that cuts text into chunks before BPE sees it.

BPE never merges across chunk boundaries, so the split pattern decides what a token *can* be:
with these patterns a token never runs from one word into the next (the space before a word
belongs to that word: " world"), letters are never glued to digits, and (for GPT-4) numbers are
cut into groups of at most three digits.

Both constants are copied character for character from OpenAI's tiktoken (`tiktoken_ext/
openai_public.py`). We run them with the third-party `regex` module (Python's `re` has no \p{L}
"any letter" or \p{N} "any digit"), which gives the same chunks as tiktoken's Rust engine; the
comments below cover the two places where that needs care. (One that does not: Python's `$` also
matches before a final newline, but in `\s++$` the possessive `\s++` has already taken that
newline, so `$` can only match at the very end, as in Rust.)
"""
from __future__ import annotations

import re
from typing import Callable, Iterable

import regex

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

# Unicode versions. The `regex` module knows Unicode 17.0 (2025); the Rust regex tables inside
# tiktoken 0.14 are Unicode 16.0. The 4,657 letters and digits that Unicode 17 added (new scripts
# such as Sidetic, CJK extension J, ...) are \p{L}/\p{N} to `regex` but unassigned, so "other",
# to tiktoken. Text that contains one is split again with the patterns rewritten to see them as
# tiktoken does: \p{L} -> [^\P{L}<new>] (a letter, but not a new one) and the "other" classes
# [^...\p{L}\p{N}] -> (?:[^...\p{L}\p{N}]|[<new>]). That rewrite is ~40% slower, hence only then.
_UNICODE_17_LETTERS_AND_DIGITS = (
    "\u088f\u0c5c\u0cdc\ua7ce-\ua7cf\ua7d2\ua7d4\ua7f1\U00010940-\U00010959\U00010ec5-\U00010ec7"
    "\U00011db0-\U00011ddb\U00011de0-\U00011de9\U00016ea0-\U00016eb8\U00016ebb-\U00016ed3"
    "\U00016ff2-\U00016ff6\U000187f8-\U000187ff\U00018d09-\U00018d1e\U00018d80-\U00018df2"
    "\U0001e6c0-\U0001e6de\U0001e6e0-\U0001e6e2\U0001e6e4-\U0001e6e5\U0001e6e7-\U0001e6ed"
    "\U0001e6f0-\U0001e6f4\U0001e6fe-\U0001e6ff\U0002b73a-\U0002b73f\U0002cea2-\U0002cead"
    "\U000323b0-\U00033479"
)
_find_unicode_17 = re.compile(f"[{_UNICODE_17_LETTERS_AND_DIGITS}]").search


def _as_unicode_16(pattern: str) -> str:
    new = _UNICODE_17_LETTERS_AND_DIGITS
    others = [r"[^\s\p{L}\p{N}]", r"[^\r\n\p{L}\p{N}]"]
    for i, other in enumerate(others):  # park the "other" classes while \p{L} is replaced
        pattern = pattern.replace(other, f"\0{i}\0")
    pattern = pattern.replace(r"\p{L}", rf"[^\P{{L}}{new}]").replace(r"\p{N}", rf"[^\P{{N}}{new}]")
    for i, other in enumerate(others):
        pattern = pattern.replace(f"\0{i}\0", f"(?:{other}|[{new}])")
    return pattern


Splitter = Callable[[str], list[str]]


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
    unicode_16_findall = regex.compile(_as_unicode_16(pattern)).findall

    def split_unicode(text: str) -> list[str]:
        chunks = findall(text)
        # Checking the distinct chunks is ~4x cheaper than searching the whole text.
        if _find_unicode_17("".join(set(chunks))):
            return unicode_16_findall(text)
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

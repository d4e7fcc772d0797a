"""Training: the fast incremental trainer against a plain reference, and its promises."""
from __future__ import annotations

from collections import Counter

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

import bpe
from bpe.train import learn_tokens, train_bpe


def reference_train(text: str, vocab_size: int, pattern: str) -> tuple[list[bytes], list[tuple]]:
    """The naive algorithm, written plainly: recount every pair after every merge.

    Same rule as bpe/train.py: the most frequent pair wins, ties go to the smallest
    (left id, right id).
    """
    chunks = [list(chunk.encode("utf-8")) for chunk in regex.findall(pattern, text)]
    tokens = [bytes([b]) for b in range(256)]
    merges = []
    while len(tokens) < vocab_size:
        counts = Counter()
        for ids in chunks:
            for pair in zip(ids, ids[1:]):
                counts[pair] += 1
        if not counts:
            raise ValueError("out of pairs")
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        new_id = len(tokens)
        tokens.append(tokens[best[0]] + tokens[best[1]])
        merges.append(best)
        new_chunks = []
        for ids in chunks:
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            new_chunks.append(out)
        chunks = new_chunks
    return tokens, merges


# Small alphabets make long repeats, many ties and "aaaa" runs (overlapping pairs).
corpora = st.text(alphabet=st.sampled_from("ab c\n'é1"), min_size=0, max_size=300)


@settings(max_examples=60)
@given(corpora, st.integers(257, 300), st.sampled_from([bpe.GPT4_PATTERN, bpe.GPT2_PATTERN]))
def test_fast_trainer_matches_reference(text, vocab_size, pattern):
    try:
        expected = reference_train(text, vocab_size, pattern)
    except ValueError:
        with pytest.raises(ValueError, match="supports only"):
            train_bpe(text, vocab_size, pattern)
        return
    ranks, merges, _ = train_bpe(text, vocab_size, pattern)
    assert merges == expected[1]
    assert list(ranks) == expected[0] and list(ranks.values()) == list(range(vocab_size))
    assert len(set(expected[0])) == vocab_size  # no two merges ever spell the same token


def test_fast_trainer_matches_reference_on_prose():
    text = ("The quick brown fox jumps over the lazy dog. It's 1234 o'clock; don't panic!\n" * 3
            + "Thy thee thou thine, thirty-three thousand thistles.\n")
    expected_tokens, expected_merges = reference_train(text, 330, bpe.GPT4_PATTERN)
    tokenizer = bpe.Tokenizer.train(text, 330)
    assert tokenizer.merges == expected_merges
    assert [tokenizer.decode_single_token_bytes(i) for i in range(330)] == expected_tokens


def test_ties_go_to_the_smallest_pair():
    # Every pair occurs once: ("a", "b") = (97, 98) is the smallest, so "ab" is learned first;
    # then ("ab", "c") = (256, 99) and ("c", "d") = (99, 100) tie, and 99 < 256.
    tokens, merges = learn_tokens({b"abcd": 1}, 259)
    assert merges == [(97, 98), (99, 100), (256, 257)]
    assert tokens[256:] == [b"ab", b"cd", b"abcd"]
    # A more frequent pair beats a smaller one.
    tokens, merges = learn_tokens({b"ab": 1, b"yz": 2}, 257)
    assert tokens[256:] == [b"yz"]


def test_training_is_deterministic_and_exact_size(shakespeare_path):
    text = shakespeare_path.read_text(encoding="utf-8")[:200_000]
    first = bpe.Tokenizer.train(text, 600, special_tokens=["<|endoftext|>"])
    second = bpe.Tokenizer.train(text, 600, special_tokens=["<|endoftext|>"])
    assert first.ranks == second.ranks and first.merges == second.merges
    assert first.n_vocab == 600 and len(first.ranks) == 599
    assert first.special_tokens == {"<|endoftext|>": 599} and first.eot_token == 599
    # GPT-4's pattern on English: the first merges are the obvious ones.
    assert [first.decode_single_token_bytes(i) for i in range(256, 265)] == [
        b" t", b"he", b"ou", b" a", b" s", b" w", b"re", b"ha", b" the"]
    assert b"CORIOLANUS" in first.ranks  # the first 200 KB are from Coriolanus


@settings(max_examples=40)
@given(corpora, st.integers(256, 290))
def test_every_merge_is_a_pair_of_existing_tokens(text, vocab_size):
    try:
        tokenizer = bpe.Tokenizer.train(text, vocab_size, pattern=bpe.GPT2_PATTERN)
    except ValueError:
        return
    assert tokenizer.n_vocab == vocab_size == len(tokenizer.ranks)
    assert len(tokenizer.merges) == vocab_size - 256
    seen = set(range(256))
    for left, right in tokenizer.merges:
        assert left in seen and right in seen  # both existed before this merge
        merged = tokenizer.decode_single_token_bytes(left) + tokenizer.decode_single_token_bytes(right)
        seen.add(tokenizer.ranks[merged])
    assert seen == set(range(vocab_size))


def test_special_token_text_is_not_learned_from():
    text = "<|endoftext|>" * 50 + "ab ab ab"
    tokenizer = bpe.Tokenizer.train(text, 258, special_tokens=["<|endoftext|>"])
    assert tokenizer.merges == [(97, 98)]  # only "ab": nothing from the special token's text
    assert tokenizer.encode(text, allowed_special="all")[:2] == [257, 257]


def test_text_too_small_for_the_vocabulary_is_a_clear_error():
    with pytest.raises(ValueError, match="supports only 259 tokens"):
        bpe.Tokenizer.train("abc abc", 300)
    with pytest.raises(ValueError, match="too small"):
        bpe.Tokenizer.train("abc", 255)
    with pytest.raises(ValueError, match="too small"):
        bpe.Tokenizer.train("abc", 257, special_tokens=["<a>", "<b>"])


def test_verbose_shows_each_merge(capsys):
    bpe.Tokenizer.train("hello hello hello", 258, verbose=True)
    output = capsys.readouterr()
    everything = output.out + output.err
    assert "merge 1: b'e' + b'l' -> b'el' (id 256, 3 occurrences)" in everything
    assert "merge 2:" in everything and "learning tokens" in everything

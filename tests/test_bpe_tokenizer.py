"""The Tokenizer API: round trips, special tokens, numpy output, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import require_data_file
from hypothesis import given, settings
from hypothesis import strategies as st

import bpe
from bpe.merge import merge_long, merge_short

any_text = st.text(st.characters(codec="utf-8"), max_size=200)


@pytest.fixture(scope="module")
def trained() -> bpe.Tokenizer:
    text = require_data_file("tinyshakespeare.txt").read_text(encoding="utf-8")[:100_000]
    return bpe.Tokenizer.train(text, 512, special_tokens=["<|endoftext|>", "<|pad|>"])


@pytest.fixture(scope="module")
def gpt2() -> bpe.Tokenizer:
    return bpe.Tokenizer.from_gpt2_files(require_data_file("gpt2/vocab.bpe"),
                                         require_data_file("gpt2/encoder.json"))


@settings(max_examples=300)
@given(text=any_text)
def test_decode_encode_round_trip(trained, gpt2, text):
    for tokenizer in (trained, gpt2):
        ids = tokenizer.encode_ordinary(text)
        assert tokenizer.decode(ids) == text
        assert tokenizer.decode_bytes(ids) == text.encode("utf-8")


@settings(max_examples=100)
@given(text=st.lists(st.sampled_from(["<|endoftext|>", "<|pad|>", "x", " y", "é"]),
                     max_size=10).map("".join))
def test_round_trip_with_special_tokens(trained, text):
    assert trained.decode(trained.encode(text, allowed_special="all")) == text
    assert trained.decode(trained.encode(text, disallowed_special=())) == text


def replay_merges(tokenizer: bpe.Tokenizer, chunk: bytes) -> list[int]:
    """Encode one chunk the way training segmented it: apply the merges in the order learned."""
    ids = list(chunk)
    for k, (left, right) in enumerate(tokenizer.merges):
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and ids[i] == left and ids[i + 1] == right:
                out.append(256 + k)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out
    return ids


@settings(max_examples=40)
@given(corpus=st.text(alphabet=st.sampled_from("abc d\n"), max_size=200),
       probe=st.text(alphabet=st.sampled_from("abc d\n"), max_size=40))
def test_encoding_by_rank_replays_training(corpus, probe):
    # Encoding merges the lowest-rank pair first (tiktoken's rule); training applied merges in
    # order. For a trained vocabulary the two agree, on the training text and on new text.
    try:
        tokenizer = bpe.Tokenizer.train(corpus, 270, pattern=bpe.GPT2_PATTERN)
    except ValueError:
        return
    import regex
    for chunk in regex.findall(bpe.GPT2_PATTERN, corpus + probe):
        assert tokenizer.encode_ordinary(chunk) == replay_merges(tokenizer, chunk.encode())


@settings(max_examples=200)
@given(piece=st.one_of(st.binary(min_size=1, max_size=400),
                       st.text(alphabet="ab ", min_size=1, max_size=400).map(str.encode),
                       st.text(min_size=1, max_size=100).map(str.encode)))
def test_heap_merge_equals_simple_merge(trained, gpt2, piece):
    for tokenizer in (trained, gpt2):
        assert merge_long(piece, tokenizer.ranks) == merge_short(piece, tokenizer.ranks)


def test_special_token_rules(trained):
    eot, pad = trained.special_tokens["<|endoftext|>"], trained.special_tokens["<|pad|>"]
    assert (eot, pad) == (510, 511) and trained.eot_token == 510 and trained.n_vocab == 512
    text = "To be<|endoftext|>or not<|pad|>"
    with pytest.raises(ValueError, match=r"disallowed special token '<\|endoftext\|>'"):
        trained.encode(text)
    with pytest.raises(ValueError, match=r"disallowed special token '<\|pad\|>'"):
        trained.encode(text, allowed_special={"<|endoftext|>"})
    ids = trained.encode(text, allowed_special="all")
    assert ids.count(eot) == 1 and ids[-1] == pad
    assert ids == (trained.encode_ordinary("To be") + [eot] + trained.encode_ordinary("or not")
                   + [pad])
    plain = trained.encode(text, disallowed_special=())
    assert plain == trained.encode_ordinary(text) and eot not in plain
    mixed = trained.encode(text, allowed_special={"<|pad|>"}, disallowed_special=())
    assert mixed == trained.encode_ordinary("To be<|endoftext|>or not") + [pad]
    with pytest.raises(ValueError, match="<|nope|>"):
        trained.encode(text, allowed_special={"<|nope|>"})
    with pytest.raises(TypeError, match="'<|pad|>'"):
        trained.encode(text, allowed_special="<|pad|>")
    assert trained.encode_batch(["a<|pad|>", "b"], allowed_special="all") == [
        trained.encode("a<|pad|>", allowed_special="all"), trained.encode("b")]


def test_numpy_output(trained, gpt2):
    text = "Hello there, Romeo."
    array = trained.encode_to_numpy(text)
    assert array.dtype == np.uint16 and array.tolist() == trained.encode(text)
    assert gpt2.encode_to_numpy(text).dtype == np.uint16  # 50,257 ids fit in 16 bits
    assert trained.encode_to_numpy(text, dtype=np.int64).dtype == np.int64
    with pytest.raises(ValueError, match="uint8 cannot hold token ids up to 511"):
        trained.encode_to_numpy(text, dtype=np.uint8)
    assert trained.decode(array) == text
    big = bpe.Tokenizer(gpt2.ranks, bpe.GPT2_PATTERN, {"<|big|>": 70_000})
    assert big.encode_to_numpy("hi <|big|>", allowed_special="all").dtype == np.uint32


def test_decoding(gpt2):
    assert gpt2.decode_single_token_bytes(1) == b'"'
    assert gpt2.decode_single_token_bytes(50256) == b"<|endoftext|>"
    emoji = gpt2.encode("🤯")  # four bytes in three tokens; the first holds two of them
    assert emoji == [8582, 97, 107] and gpt2.decode(emoji[:1]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        gpt2.decode(emoji[:1], errors="strict")
    for bad in (50257, -1, "7"):
        with pytest.raises(ValueError, match=f"token id {bad!r} is not in the vocabulary"):
            gpt2.decode([1, 2, bad])
        with pytest.raises(ValueError, match="is not in the vocabulary"):
            gpt2.decode_single_token_bytes(bad)
    assert gpt2.decode(iter([15496, 995])) == "Hello world"
    assert gpt2.encode_single_token(" world") == 995 and gpt2.encode_single_token(b"Hello") == 15496
    assert gpt2.encode_single_token("<|endoftext|>") == 50256
    with pytest.raises(ValueError, match="not a single token"):
        gpt2.encode_single_token("Hello world")


def test_tokenizer_without_special_tokens():
    tokenizer = bpe.Tokenizer({bytes([b]): b for b in range(256)})
    assert tokenizer.eot_token is None and tokenizer.n_vocab == 256
    assert tokenizer.encode("<|endoftext|>") == list(b"<|endoftext|>")  # nothing is special
    assert tokenizer.encode("héllo") == list("héllo".encode())


def test_bad_vocabularies_are_rejected():
    bytes_only = {bytes([b]): b for b in range(256)}
    with pytest.raises(ValueError, match=r"missing \[b'A'\]"):
        bpe.Tokenizer({t: i for t, i in bytes_only.items() if t != b"A"})
    with pytest.raises(ValueError, match="share an id"):
        bpe.Tokenizer({**bytes_only, b"ab": 5})
    with pytest.raises(ValueError, match="clash"):
        bpe.Tokenizer(bytes_only, special_tokens={"<|x|>": 7})
    with pytest.raises(ValueError, match="not a non-empty bytes"):
        bpe.Tokenizer({**bytes_only, "ab": 300})
    with pytest.raises(ValueError, match="invalid split pattern"):
        bpe.Tokenizer(bytes_only, pattern="(unclosed")
    words_only = bpe.Tokenizer(bytes_only, pattern=r"\w+")
    with pytest.raises(ValueError, match="does not match character ',' at position 5"):
        words_only.encode("hello, world")
    assert words_only.encode("hello") == list(b"hello")


def test_chunk_cache_is_bounded(gpt2):
    tokenizer = bpe.Tokenizer(gpt2.ranks, bpe.GPT2_PATTERN)
    tokenizer.max_cached_chunks = 10
    text = " ".join(f"word{i}" for i in range(100))
    assert tokenizer.encode(text) == gpt2.encode(text)
    assert len(tokenizer._cache) <= 10
    assert tokenizer.encode("x" * 5_000) == gpt2.encode("x" * 5_000)  # too long to cache
    assert "x" * 5_000 not in tokenizer._cache

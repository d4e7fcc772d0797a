"""Saving, loading and reading OpenAI's files: exact round trips, and loud failures."""
from __future__ import annotations

import hashlib
import shutil

import pytest
from conftest import require_data_file
from hypothesis import given, settings
from hypothesis import strategies as st

import bpe
from bpe.io import TokenizerFileError, json_to_token, token_to_json

SAMPLES = ["Hello world", "To be, or not to be: that is the question.\n", "日本語 🤯 e\u0301",
           "  spaces\t\ttabs\n\n", "<|endoftext|> inside", "1234567 numbers"]


@pytest.fixture(scope="module")
def small() -> bpe.Tokenizer:
    text = "the cat sat on the mat; the dog sat on the log. " * 5 + "日本語 🤯 ÿ\x80"
    return bpe.Tokenizer.train(text, 280, special_tokens=["<|endoftext|>"])


@pytest.fixture(scope="module")
def gpt2() -> bpe.Tokenizer:
    return bpe.Tokenizer.from_gpt2_files(require_data_file("gpt2/vocab.bpe"),
                                         require_data_file("gpt2/encoder.json"))


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=12))
def test_token_text_form_round_trips(token):
    line = token_to_json(token)
    assert "\n" not in line and json_to_token(line) == token
    line.encode("utf-8")  # always writable as UTF-8


@settings(max_examples=30)
@given(corpus=st.text(st.characters(codec="utf-8"), min_size=20, max_size=300),
       extra=st.integers(0, 30), pattern=st.sampled_from([bpe.GPT4_PATTERN, bpe.GPT2_PATTERN]))
def test_trained_tokenizer_round_trips_through_a_file(tmp_path_factory, corpus, extra, pattern):
    try:
        tokenizer = bpe.Tokenizer.train(corpus, 257 + extra, pattern=pattern,
                                        special_tokens=["<|endoftext|>"])
    except ValueError:
        return  # too little text for that many tokens
    path = tmp_path_factory.mktemp("tok") / "trained.bpe"
    tokenizer.save(path)
    loaded = bpe.Tokenizer.load(path)
    assert loaded.ranks == tokenizer.ranks and loaded.pattern == tokenizer.pattern
    assert loaded.special_tokens == tokenizer.special_tokens
    for text in SAMPLES + [corpus]:
        expected = tokenizer.encode(text, allowed_special="all")
        assert loaded.encode(text, allowed_special="all") == expected


def test_gpt2_round_trips_and_the_file_is_readable(gpt2, tmp_path):
    path = tmp_path / "gpt2.bpe"
    gpt2.save(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "tinygrad_lite-bpe 1"
    assert lines[2:5] == ["special_tokens 1", '50256 "<|endoftext|>"', "tokens 50256"]
    assert '256 " t"' in lines and '262 " the"' in lines and '0 "!"' in lines
    assert '188 "\\u0000"' in lines and '222 "\\udc80"' in lines  # byte 0x80: half a character
    loaded = bpe.Tokenizer.load(path)
    assert loaded.ranks == gpt2.ranks and loaded.special_tokens == gpt2.special_tokens
    text = require_data_file("tinyshakespeare.txt").read_text(encoding="utf-8")[:50_000]
    assert loaded.encode(text) == gpt2.encode(text)


def test_every_truncation_fails_to_load(small, tmp_path):
    path = tmp_path / "small.bpe"
    small.save(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.bpe"
    for length in sorted(set(range(0, len(data), 7)) | {len(data) - 1, len(data) - 2}):
        cut.write_bytes(data[:length])
        with pytest.raises(TokenizerFileError, match="cut.bpe"):
            bpe.Tokenizer.load(cut)


def test_corruption_fails_to_load(small, tmp_path):
    path = tmp_path / "small.bpe"
    small.save(path)
    data = path.read_bytes()
    bad = tmp_path / "bad.bpe"
    for position in range(0, len(data) - 1, len(data) // 40):
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        bad.write_bytes(bytes(flipped))
        with pytest.raises(TokenizerFileError):
            bpe.Tokenizer.load(bad)
    edited = data.replace(b' " the"', b' " thx"')
    assert edited != data
    bad.write_bytes(edited)
    with pytest.raises(TokenizerFileError, match="checksum mismatch"):
        bpe.Tokenizer.load(bad)
    bad.write_bytes(b"")
    with pytest.raises(TokenizerFileError, match="not a tinygrad_lite BPE file"):
        bpe.Tokenizer.load(bad)


def resign(body: bytes) -> bytes:
    """A file with a valid checksum, to reach the checks behind it."""
    return body + f"end sha256 {hashlib.sha256(body).hexdigest()}\n".encode()


def test_consistent_checksum_but_bad_content(small, tmp_path):
    path = tmp_path / "small.bpe"
    small.save(path)
    body = path.read_bytes().rsplit(b"end sha256", 1)[0]
    bad = tmp_path / "bad.bpe"
    cases = {
        b"tokens 279\n": (b"tokens 278\n", "more lines than the counts"),
        b'65 "A"\n': (b'65 "B"\n', "appears twice"),
        b'66 "B"\n': (b'66 B\n', "cannot parse"),
        b"special_tokens 1\n": (b"special_tokens 2\n", "line 5: cannot parse 'tokens 279'"),
        b"pattern ": (b"patter ", "line 2: expected a 'pattern ...' line"),
        b'279 "<|endoftext|>"': (b'97 "<|endoftext|>"', "clash"),
    }
    for old, (new, message) in cases.items():
        assert old in body, old
        bad.write_bytes(resign(body.replace(old, new, 1)))
        with pytest.raises(TokenizerFileError, match=message):
            bpe.Tokenizer.load(bad)
    without_a = b"".join(line for line in body.splitlines(keepends=True) if line != b'65 "A"\n')
    bad.write_bytes(resign(without_a.replace(b"tokens 279", b"tokens 278")))
    with pytest.raises(TokenizerFileError, match="needs all 256 single bytes"):
        bpe.Tokenizer.load(bad)


def test_damaged_gpt2_files(tmp_path):
    vocab_bpe = require_data_file("gpt2/vocab.bpe")
    encoder_json = require_data_file("gpt2/encoder.json")
    lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
    broken = tmp_path / "vocab.bpe"
    broken.write_text("\n".join(lines[:100] + ["Ġt"] + lines[101:]), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="line 101: expected two tokens"):
        bpe.Tokenizer.from_gpt2_files(broken, encoder_json)
    broken.write_text("\n".join(lines[:1000]), encoding="utf-8")  # truncated merges
    with pytest.raises(TokenizerFileError, match="encoder.json: .* has id 1255, but no merge"):
        bpe.Tokenizer.from_gpt2_files(broken, encoder_json)
    shutil.copy(vocab_bpe, broken)
    truncated_json = tmp_path / "encoder.json"
    truncated_json.write_bytes(encoder_json.read_bytes()[:100_000])
    with pytest.raises(TokenizerFileError, match="not valid JSON"):
        bpe.Tokenizer.from_gpt2_files(broken, truncated_json)


def test_damaged_tiktoken_files(tmp_path):
    good = require_data_file("cl100k_base.tiktoken").read_bytes()
    path = tmp_path / "cl100k_base.tiktoken"
    path.write_bytes(good[: len(good) // 2 - 3])  # cut inside a line
    with pytest.raises(TokenizerFileError, match=r"line \d+: expected 'base64-token rank'"):
        bpe.Tokenizer.from_tiktoken_file(path, bpe.GPT4_PATTERN)
    path.write_bytes(b"IQ== 0\nIg== 1\n")  # valid lines, but not a byte-level vocabulary
    with pytest.raises(TokenizerFileError, match="needs all 256 single bytes"):
        bpe.Tokenizer.from_tiktoken_file(path, bpe.GPT4_PATTERN)
    path.write_bytes(good.replace(b"IQ== 0\n", b"I?== 0\n", 1))
    with pytest.raises(TokenizerFileError, match="line 1:"):
        bpe.Tokenizer.from_tiktoken_file(path, bpe.GPT4_PATTERN)


def test_convenience_constructors(tmp_path):
    data = require_data_file("tinyshakespeare.txt").parent
    require_data_file("gpt2/vocab.bpe")
    require_data_file("cl100k_base.tiktoken")
    assert bpe.gpt2(data).encode("Hello world") == [15496, 995]
    assert bpe.gpt2(data / "gpt2").n_vocab == 50257  # the folder holding the files also works
    cl100k = bpe.cl100k(data)
    assert cl100k.encode("Hello world") == [9906, 1917] and cl100k.eot_token == 100257
    assert bpe.cl100k(data / "cl100k_base.tiktoken").n_vocab == 100277
    with pytest.raises(FileNotFoundError, match=r"nowhere[/\\]gpt2[/\\]vocab.bpe is missing"):
        bpe.gpt2(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="cl100k_base.tiktoken is missing"):
        bpe.cl100k(tmp_path)
    (tmp_path / "cl100k_base.tiktoken").write_bytes(b"IQ== 0\n")
    with pytest.raises(TokenizerFileError, match="SHA-256 differs"):
        bpe.cl100k(tmp_path)

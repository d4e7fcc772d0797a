"""Token-for-token parity with tiktoken for GPT-2 and GPT-4 (cl100k_base).

tiktoken is built offline from the same local files through its public constructor, so both
sides use identical vocabularies; any difference is a difference in the encoding algorithm.
"""
from __future__ import annotations

import functools
import json

import pytest
import tiktoken
from conftest import require_data_file
from hypothesis import given, settings
from hypothesis import strategies as st
from tiktoken.load import load_tiktoken_bpe

import bpe
from bpe.pretrained import CL100K_SPECIAL_TOKENS


def openai_bytes_to_unicode() -> dict[int, str]:
    """As in OpenAI's gpt-2/src/encoder.py."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def test_byte_table_is_openais():
    assert bpe.bytes_to_unicode() == openai_bytes_to_unicode()


@functools.lru_cache(maxsize=None)
def load(name: str) -> tuple[bpe.Tokenizer, tiktoken.Encoding]:
    if name == "gpt2":
        vocab_bpe = require_data_file("gpt2/vocab.bpe")
        encoder_json = require_data_file("gpt2/encoder.json")
        ours = bpe.Tokenizer.from_gpt2_files(vocab_bpe, encoder_json)
        # The ranks for tiktoken, built here independently of bpe/io.py: encoder.json's ids,
        # with each token's characters mapped back to bytes by OpenAI's table.
        byte_of = {char: b for b, char in openai_bytes_to_unicode().items()}
        encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
        ranks = {bytes(byte_of[c] for c in token): i for token, i in encoder.items()
                 if token != "<|endoftext|>"}
        theirs = tiktoken.Encoding(name="gpt2", pat_str=bpe.GPT2_PATTERN, mergeable_ranks=ranks,
                                   special_tokens={"<|endoftext|>": 50256})
    else:
        path = require_data_file("cl100k_base.tiktoken")
        ours = bpe.Tokenizer.from_tiktoken_file(path, bpe.GPT4_PATTERN, CL100K_SPECIAL_TOKENS)
        theirs = tiktoken.Encoding(name="cl100k_base", pat_str=bpe.GPT4_PATTERN,
                                   mergeable_ranks=load_tiktoken_bpe(str(path)),
                                   special_tokens=CL100K_SPECIAL_TOKENS)
    return ours, theirs


@pytest.fixture(scope="module", params=["gpt2", "cl100k"])
def both(request) -> tuple[bpe.Tokenizer, tiktoken.Encoding]:
    return load(request.param)


def test_patterns_are_tiktokens():
    import inspect

    import tiktoken_ext.openai_public as openai_public

    assert bpe.GPT2_PATTERN == openai_public.r50k_pat_str
    # cl100k's pattern is only inside a function that downloads the ranks; read the source.
    assert f'"pat_str": r"""{bpe.GPT4_PATTERN}"""' in inspect.getsource(openai_public.cl100k_base)


def test_vocabulary_facts(both):
    ours, theirs = both
    assert ours.n_vocab == theirs.n_vocab
    assert ours.eot_token == theirs.eot_token
    assert ours.special_tokens_set == theirs.special_tokens_set
    for token_id in (0, 255, 256, 1000, ours.n_vocab - 1 if ours.name == "gpt2" else 100255):
        assert ours.decode_single_token_bytes(token_id) == theirs.decode_single_token_bytes(token_id)


def test_all_of_tiny_shakespeare(both, shakespeare_path):
    ours, theirs = both
    text = shakespeare_path.read_text(encoding="utf-8")
    ours.clear_cache()
    ids = ours.encode(text)
    assert_same_ids(both, text, ids, theirs.encode(text))
    assert len(ids) == (338_025 if ours.name == "gpt2" else 301_829)
    assert ours.decode(ids) == text
    # the same text with the non-ASCII path of the splitter (one curly quote makes it non-ASCII)
    check(both, text[:50_000] + "\u2019")


def short(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text):,} characters)"


def first_difference(ours: bpe.Tokenizer, theirs: tiktoken.Encoding, text: str, our_ids: list[int],
                     their_ids: list[int]) -> str:
    """One screen on where two encodings of `text` part: the first chunk (of our split) whose
    tokens differ, its position and text, our ids and tiktoken's there."""
    token = next((i for i, (a, b) in enumerate(zip(our_ids, their_ids)) if a != b),
                 min(len(our_ids), len(their_ids)))
    position = tokens_before = 0
    for chunk in ours._split(text):
        chunk_ids = ours.encode_ordinary(chunk)
        if tokens_before + len(chunk_ids) > token:
            break
        position, tokens_before = position + len(chunk), tokens_before + len(chunk_ids)
    else:
        chunk, chunk_ids = "", []
    window = their_ids[tokens_before:tokens_before + len(chunk_ids) + 2]
    return (f"{ours.name}: ids part at token {token:,} of {len(our_ids):,} (ours) / "
            f"{len(their_ids):,} (tiktoken), in text {short(text)}\n"
            f"  first differing chunk at character {position:,}: {short(chunk)}\n"
            f"  our ids      {chunk_ids}\n  tiktoken ids {window} = "
            f"{[theirs.decode_single_token_bytes(t) for t in window]}")


def assert_same_ids(both, text: str, our_ids: list[int] | None = None,
                    their_ids: list[int] | None = None) -> None:
    """Our ids for `text` are tiktoken's (encode_ordinary unless both lists are given); on a
    difference, fail with a short report instead of letting pytest diff two long lists."""
    ours, theirs = both
    our_ids = ours.encode_ordinary(text) if our_ids is None else our_ids
    their_ids = theirs.encode_ordinary(text) if their_ids is None else their_ids
    if our_ids != their_ids:
        pytest.fail(first_difference(ours, theirs, text, our_ids, their_ids), pytrace=False)


def check(both, text: str) -> None:
    assert_same_ids(both, text)


any_character = st.characters(codec="utf-8")  # every code point except lone surrogates
fragments = st.sampled_from([
    "👨\u200d👩\u200d👧\u200d👦", "👍🏽", "🏳️\u200d🌈", "e\u0301", "a\u0308\u0323", "日本語のテキスト", "한국어",
    "שָׁלוֹם", "مرحبا بالعالم", "\u200f", "\u202e", "\x00", "\x1c", "\x7f", "\x85", "\xa0", "\u2028",
    "\u3000", "\t", "\r\n", "\n\n\n", " " * 7, "\t \n ", "123456789", "3.14159", "٣٤٥", "Ⅻ",
    "'s", "'S", "'ll", "'LL", "'ve", "'re", "'d", "'m", "'t", "don't", "I'M", "’s", "ſ",
    "hello", " world", "Hello,", "(foo)", "_init_", "__", "...", "!!!", "$100", "#", "<|", "|>",
])
whitespace_runs = st.text(alphabet=st.sampled_from(" \t\n\r\x0b\x0c\xa0\u3000\u2029"), max_size=40)
mixed_text = st.lists(st.one_of(fragments, whitespace_runs, st.text(any_character, max_size=6),
                                st.text(alphabet="0123456789", min_size=1, max_size=12)),
                      max_size=25).map("".join)


@settings(max_examples=300)
@given(text=mixed_text)
def test_mixed_unicode_text(both, text):
    check(both, text)


@settings(max_examples=150)
@given(text=mixed_text)
def test_long_texts_split_in_blocks(text):
    # Long non-ASCII texts are split in blocks (bpe/patterns.py); tiny blocks test the cuts.
    assert "".join(bpe.patterns._blocks(text)) == text
    saved, bpe.patterns.BLOCK_SIZE = bpe.patterns.BLOCK_SIZE, 3
    try:
        for name in ("gpt2", "cl100k"):
            check(load(name), text + " ok \u2019 " + text)
    finally:
        bpe.patterns.BLOCK_SIZE = saved


@settings(max_examples=300)
@given(text=st.text(any_character, max_size=80))
def test_arbitrary_unicode(both, text):
    check(both, text)


@settings(max_examples=200)
@given(text=st.text(st.characters(max_codepoint=127), max_size=200))
def test_arbitrary_ascii(both, text):
    check(both, text)  # the fast ASCII splitter (bpe/patterns.py) must agree too


def test_code_points_where_regex_and_tiktoken_disagree(both):
    # The installed `regex` may know another Unicode than tiktoken (bpe/patterns.py); with the
    # real vocabularies, every such code point in several contexts. (Empty when they agree.)
    disagree, _ = bpe.patterns._disagreements()
    check(both, "".join(f"a{c}'s{c}1 {c}{c}x " for c in map(chr, sorted(disagree))))
    check(both, "plain text, then one Unicode 17 letter \U00010940 at the end")


def test_long_runs_are_exact(both):
    for text in ["a" * 20_000, " " * 20_000 + "x", "1" * 10_000, "ab" * 10_000, "😀" * 5_000,
                 "\n" * 10_000 + " x", "x" + "\u0301" * 5_000]:
        check(both, text)


def test_a_100kb_run_of_one_character():
    both = load("gpt2")
    check(both, "z" * 100_000)  # one chunk: the heap merge keeps this well under a second


specials = st.sampled_from(["<|endoftext|>", "<|fim_prefix|>", "<|endofprompt|>"])
text_with_specials = st.lists(st.one_of(specials, fragments, st.text(any_character, max_size=4)),
                              max_size=12).map("".join)
SPECIAL_ARGUMENTS = [
    ({}, "default: special text is an error"),
    ({"allowed_special": "all"}, "all allowed"),
    ({"allowed_special": {"<|endoftext|>"}}, "one allowed, others an error"),
    ({"disallowed_special": ()}, "all encoded as text"),
    ({"allowed_special": {"<|endoftext|>"}, "disallowed_special": ()}, "one allowed, others text"),
    ({"disallowed_special": {"<|endoftext|>"}}, "only one is an error"),
    ({"allowed_special": "all", "disallowed_special": ()}, "all allowed, no check"),
]


@pytest.mark.parametrize("name", ["gpt2", "cl100k"])
@pytest.mark.parametrize("arguments", [a for a, _ in SPECIAL_ARGUMENTS],
                         ids=[name for _, name in SPECIAL_ARGUMENTS])
@settings(max_examples=50)
@given(text=text_with_specials)
def test_special_tokens(name, arguments, text):
    ours, theirs = load(name)
    if "<|endoftext|>" not in text:
        text += "<|endoftext|>"
    try:
        expected = theirs.encode(text, **arguments)
    except ValueError as error:
        token = str(error).split("'")[1]
        with pytest.raises(ValueError, match=f"disallowed special token '{token}'"):
            ours.encode(text, **arguments)
    else:
        assert ours.encode(text, **arguments) == expected


def test_gpt2_special_token():
    ours, theirs = load("gpt2")
    text = "Hi<|endoftext|>there<|endoftext|>"
    assert ours.encode(text, allowed_special="all") == theirs.encode(text, allowed_special="all")
    assert ours.encode(text, allowed_special="all")[1] == 50256 == ours.eot_token
    assert ours.encode(text, disallowed_special=()) == theirs.encode(text, disallowed_special=())
    with pytest.raises(ValueError, match="'<|endoftext|>'"):
        ours.encode(text)


@settings(max_examples=200)
@given(ids=st.lists(st.integers(0, 50255), max_size=30))
def test_decode_matches_including_broken_utf8(ids):
    ours, theirs = load("gpt2")
    assert ours.decode(ids) == theirs.decode(ids)
    assert ours.decode_bytes(ids) == theirs.decode_bytes(ids)


def test_batch_and_lone_surrogates(both):
    ours, theirs = both
    texts = ["hello world", "", "日本", "x" * 50, "a\ud83dz"]  # the last holds a lone surrogate
    assert ours.encode_batch(texts) == theirs.encode_batch(texts)

# %% [markdown]
# # Lesson 7: let's build the GPT tokenizer
#
# A language model reads integers, not text. The *tokenizer* turns a string into a list of token
# ids and back. GPT-2 and GPT-4 use byte-level *byte-pair encoding* (BPE): start from the 256
# byte values and keep gluing the most common neighbouring pair into a new token. This lesson
# writes BPE plainly on a small text, then uses the project's `bpe` package (the same algorithm,
# incrementally, token-for-token equal to OpenAI's tiktoken) on tiny Shakespeare, looks at
# GPT-2's and GPT-4's vocabularies and their oddities, and ends with the dataloader that cuts the
# token stream into (input, target) windows for training.
#
# Data: `--data PATH` is the text (default: tiny Shakespeare in the shared data folder);
# GPT-2's `gpt2/vocab.bpe`, `gpt2/encoder.json` and `cl100k_base.tiktoken` are read from beside
# it, else from the shared data folder ($TINYGRAD_LITE_DATA).

# %%
import time
from collections import Counter

import numpy as np
import regex

from _common import data_dir, lesson_args, pyplot, report, save_figure, shakespeare_path

import bpe
import tinygrad_lite as torch
import tinygrad_lite.nn as nn

args = lesson_args("lesson 7: the GPT tokenizer")
plt = pyplot()
text_path = shakespeare_path(args)
text = text_path.read_text(encoding="utf-8")
if args.quick:
    text = text[:100_000]  # a slice: quick mode trains a small vocabulary on it
cut = int(0.9 * len(text))
train_text, val_text = text[:cut], text[cut:]  # nanoGPT's split: the last 10% is held out
vocab_folder = text_path.parent if (text_path.parent / "gpt2" / "vocab.bpe").is_file() else data_dir()
print(f"{text_path}: {len(text):,} characters; OpenAI's vocabularies from {vocab_folder}")

# %% [markdown]
# ## Code points and UTF-8 bytes
#
# A Python `str` is a sequence of Unicode *code points*: `ord("h")` is 104, `ord("안")` 50,504.
# There are about 150,000 of them, too many (and too rare, most of them) to give each its own
# embedding. UTF-8 writes each code point as 1 to 4 bytes: ASCII as one byte, most European
# accents as two, Korean and Chinese as three, emoji as four. Bytes are a fixed alphabet of 256
# that can spell anything, but they make sequences long, and attention costs grow with length.
# BPE starts from bytes and shortens the sequence by learning tokens for common byte runs.

# %%
for ch in ["h", "é", "안", "👋"]:
    print(f"{ch!r}: code point {ord(ch):>6}, UTF-8 bytes {list(ch.encode('utf-8'))}")
sample = "안녕하세요 👋 hello"
print(f"{sample!r}: {len(sample)} code points, {len(sample.encode('utf-8'))} bytes")

# %% [markdown]
# ## Byte-pair encoding, step by step
#
# Write the text as its list of byte values. Count every pair of neighbours (`get_stats`), take
# the most common pair, give it the next free id (256, 257, ...) and replace each occurrence
# (`merge`). Repeat. Each merge shortens the sequence by the pair's count. Ties go to the
# smallest pair, as in `bpe/train.py`, so the result is the same on every run.

# %%
def get_stats(ids: list[int]) -> Counter:
    """How often each pair of neighbouring ids occurs."""
    return Counter(zip(ids, ids[1:]))


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` (left to right) by ``new_id``."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_plainly(text: str, n_merges: int) -> tuple[dict, dict]:
    """The merges ((left, right) -> new id) and the vocabulary (id -> bytes), by the plain loop."""
    ids = list(text.encode("utf-8"))
    merges, vocab = {}, {i: bytes([i]) for i in range(256)}
    for k in range(n_merges):
        stats = get_stats(ids)
        pair = min(stats, key=lambda p: (-stats[p], p))  # the most common; ties: the smallest pair
        ids = merge(ids, pair, 256 + k)
        merges[pair] = 256 + k
        vocab[256 + k] = vocab[pair[0]] + vocab[pair[1]]
    return merges, vocab


small_text = text[:5_000]
n_small_merges = 40
started = time.perf_counter()
merges, vocab = train_plainly(small_text, n_small_merges)
plain_seconds_per_merge = (time.perf_counter() - started) / n_small_merges
for (left, right), new_id in list(merges.items())[:10]:
    print(f"merge {new_id - 255:2d}: {vocab[left]!r} + {vocab[right]!r} -> {vocab[new_id]!r} (id {new_id})")

# %% [markdown]
# Encoding new text replays the merges in the order they were learned: as long as some
# neighbouring pair has been merged in training, merge the one learned first. Decoding is a
# lookup of each id's bytes and a join. Every byte is a token, so any string round-trips.

# %%
def encode_plainly(text: str, merges: dict) -> list[int]:
    ids = list(text.encode("utf-8"))
    while len(ids) >= 2:
        stats = get_stats(ids)
        pair = min(stats, key=lambda p: merges.get(p, float("inf")))  # the earliest-learned merge
        if pair not in merges:
            break  # nothing left to merge
        ids = merge(ids, pair, merges[pair])
    return ids


def decode_plainly(ids: list[int], vocab: dict) -> str:
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


small_ids = encode_plainly(small_text, merges)
roundtrip = decode_plainly(encode_plainly(sample, merges), vocab) == sample
print(f"{len(small_text.encode('utf-8')):,} bytes -> {len(small_ids):,} tokens after {n_small_merges} merges; "
      f"round trip of {sample!r}: {roundtrip}")

# %% [markdown]
# The `bpe` package does the same, faster (it updates the pair counts around each merge instead
# of recounting the whole text; `bpe/train.py` explains how). With a split pattern that keeps the
# whole text as one chunk it must learn exactly our merges:

# %%
whole_text_pattern = r"[\s\S]+"  # one chunk: no pre-splitting
library = bpe.Tokenizer.train(small_text, 256 + n_small_merges, pattern=whole_text_pattern)
plain_matches_library = int(library.merges == list(merges) and library.encode(small_text) == small_ids)
print(f"the library learns the same merges and encoding: {bool(plain_matches_library)}")

# %% [markdown]
# ## Splitting before merging: GPT-2's and GPT-4's patterns
#
# Without a split, BPE learns tokens like `"e t"` or `"dog."` that glue words to spaces and
# punctuation, in every combination. GPT-2 first cuts the text into chunks with a regular
# expression, and merges never cross a chunk boundary: contractions (`'s`, `'ll`), a word with the
# space before it, a run of digits, a run of punctuation, whitespace. GPT-4's pattern (cl100k)
# also matches contractions in any case, lets a word start with one punctuation character, cuts
# numbers into groups of at most 3 digits, and keeps newlines apart from other whitespace.

# %%
example = "Hello world's END'S 1234567 + 89.   \n\n    indent(x)"
gpt2_chunks = regex.findall(bpe.GPT2_PATTERN, example)
gpt4_chunks = regex.findall(bpe.GPT4_PATTERN, example)
print("GPT-2:", gpt2_chunks)
print("GPT-4:", gpt4_chunks)

# %% [markdown]
# ## Training on tiny Shakespeare
#
# Now the real thing: a 4,096-token vocabulary (GPT-4's pattern) on the training 90% of tiny
# Shakespeare. *Compression* is bytes per token on the held-out 10%: how many bytes of text one
# token carries on average. The plain loop above recounts the whole text for every merge; we time
# one of its steps on the same text to see what 3,840 merges would cost it.

# %%
vocab_size = 512 if args.quick else 4096
started = time.perf_counter()
tokenizer = bpe.Tokenizer.train(train_text, vocab_size)
train_seconds = time.perf_counter() - started
ids = list(train_text.encode("utf-8"))
started = time.perf_counter()
stats = get_stats(ids)                      # one step of the plain loop, on the whole text
merge(ids, min(stats, key=lambda p: (-stats[p], p)), 256)
# times the number of merges: a rough upper bound, since the sequence shrinks as it merges
plain_estimate_seconds = (time.perf_counter() - started) * (vocab_size - 256)


def compression_of(tokenizer: bpe.Tokenizer, text: str) -> float:
    return len(text.encode("utf-8")) / len(tokenizer.encode_ordinary(text))


compression = compression_of(tokenizer, val_text)
train_compression = compression_of(tokenizer, train_text)
print(f"trained {vocab_size} tokens in {train_seconds:.2f} s "
      f"(the plain loop: up to {plain_estimate_seconds:.0f} s); "
      f"{compression:.3f} bytes/token held out, {train_compression:.3f} on the training text")
print("first merges:", [tokenizer.decode_single_token_bytes(256 + k) for k in range(12)])
longest = sorted(tokenizer.ranks, key=len)[-8:]
print("longest tokens:", longest)

# %% [markdown]
# The vocabulary compresses its own training text best: whole names such as ` Bolingbroke` are
# single tokens, and the held-out tenth (other plays, other names) uses fewer of them.
# A bigger vocabulary compresses better (shorter sequences, so more text fits in the model's
# context) but every token is rarer and the embedding table and output layer grow.

# %%
sizes = [300, 512] if args.quick else [512, 1024, 2048, 4096, 8192]
size_compression = [compression_of(bpe.Tokenizer.train(train_text, n), val_text) for n in sizes]
if plt is not None:
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(sizes, size_compression, "o-")
    axes.set(xscale="log", xlabel="vocabulary size", ylabel="bytes per token (held out)",
             title="BPE on tiny Shakespeare")
    axes.set_xticks(sizes, [f"{n:,}" for n in sizes])
    axes.minorticks_off()
    save_figure(figure, "tokenizer_compression.png", args)

# %% [markdown]
# ## GPT-2's and GPT-4's vocabularies
#
# `bpe.gpt2` reads OpenAI's released GPT-2 files (50,257 tokens); `bpe.cl100k` GPT-4's
# (100,277). Our encoding must be OpenAI's token for token. tiktoken is OpenAI's encoder; where it
# is installed we compare with it (built offline from the same ranks and tiktoken's own pattern);
# without it, with ids that tiktoken 0.14 gave for this paragraph once (`encode_ordinary` with
# the gpt2 encoding), written down here.

# %%
gpt2 = bpe.gpt2(vocab_folder)
cl100k = bpe.cl100k(vocab_folder)
paragraph = ("Hello world! It's 2024, and GPT-2's tokenizer splits 127 + 677 = 804 oddly.    Spaces,\n"
             "tabs\tand newlines\n\nmatter; so does ünïcödé: 안녕하세요 👋 (and <|endoftext|> is only text here).")
TIKTOKEN_GPT2_IDS = [
    15496, 995, 0, 632, 338, 48609, 11, 290, 402, 11571, 12, 17, 338, 11241, 7509, 30778, 18112, 1343,
    718, 3324, 796, 807, 3023, 31414, 13, 220, 220, 220, 48086, 11, 198, 8658, 82, 197, 392, 649, 6615,
    198, 198, 47635, 26, 523, 857, 6184, 120, 77, 26884, 66, 9101, 67, 2634, 25, 23821, 243, 230, 167,
    227, 243, 47991, 246, 168, 226, 116, 168, 248, 242, 50169, 233, 357, 392, 1279, 91, 437, 1659, 5239,
    91, 29, 318, 691, 2420, 994, 737]


def tiktoken_gpt2_ids(text: str) -> list[int] | None:
    """tiktoken's GPT-2 encoding of ``text``, or None if tiktoken is not installed (a check only)."""
    try:
        import tiktoken
        from tiktoken_ext.openai_public import r50k_pat_str
    except ImportError:
        return None
    encoding = tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=gpt2.ranks,
                                 special_tokens=gpt2.special_tokens)
    return encoding.encode_ordinary(text)


ours = gpt2.encode_ordinary(paragraph)
theirs = tiktoken_gpt2_ids(paragraph)
gpt2_parity = int(ours == TIKTOKEN_GPT2_IDS and (theirs is None or ours == theirs))
tiktoken_checked = int(theirs is not None)
print(f"{len(ours)} tokens; equal to the written-down ids: {ours == TIKTOKEN_GPT2_IDS}; "
      f"to tiktoken: {'not installed' if theirs is None else ours == theirs}")
print([gpt2.decode_single_token_bytes(i) for i in ours[:16]])

# %% [markdown]
# ## Special tokens
#
# `<|endoftext|>` (GPT-2 id 50,256) separates documents in the training stream. It is not made of
# merges: the tokenizer cuts it out before splitting, but only when you allow it. By default its
# text is an error, because text from a user should not be able to inject control tokens;
# `encode_ordinary` treats it as plain text. A vocabulary we train can have its own.

# %%
document = "The end.<|endoftext|>A new story"
try:
    gpt2.encode(document)
except ValueError as error:
    print("encode():", str(error).splitlines()[0])
print("allowed:  ", gpt2.encode(document, allowed_special={"<|endoftext|>"}))
print("ordinary: ", gpt2.encode_ordinary(document))
with_special = bpe.Tokenizer.train(train_text, 300, special_tokens=["<|endoftext|>"])
print(f"our own: <|endoftext|> is id {with_special.eot_token} of {with_special.n_vocab}")

# %% [markdown]
# ## The well-known oddities
#
# Much of what looks like a model's stupidity is the tokenizer's. Numbers are cut into arbitrary
# pieces in GPT-2 (so arithmetic digit by digit is hard), and in groups of three in GPT-4. A
# trailing space becomes a token of its own (`" "`, id 220), which the model rarely saw before a
# word, since the space normally belongs to the word that follows. The same word is a different
# token with and without its space or in capitals.

# %%
def pieces(tokenizer: bpe.Tokenizer, text: str) -> list[str]:
    return [tokenizer.decode([i]) for i in tokenizer.encode_ordinary(text)]


for line in ["127 + 677 = 804", "1234567890", "Hello world", "Hello world ", "egg Egg EGG"]:
    print(f"{line!r:22} GPT-2 {pieces(gpt2, line)}\n{'':22} GPT-4 {pieces(cl100k, line)}")
digits_gpt2 = len(gpt2.encode_ordinary("1234567890"))
digits_gpt4 = len(cl100k.encode_ordinary("1234567890"))

# %% [markdown]
# Non-English text costs more tokens. The vocabularies were learned mostly on English, so other
# scripts get few merges and fall back towards bytes: three bytes per Korean syllable. The same
# sentence takes several times the tokens, so a model sees less of it per context window and
# pays more for it. GPT-4's larger vocabulary narrows the gap. (A vocabulary trained on
# Shakespeare knows no Korean at all: one token per byte.)

# %%
sentences = {
    "English": "Hello, how are you today? The weather is nice.",
    "Spanish": "Hola, ¿cómo estás hoy? Hace buen tiempo.",
    "Russian": "Привет, как ты сегодня? Погода хорошая.",
    "Hindi": "नमस्ते, आज आप कैसे हैं? मौसम अच्छा है।",
    "Korean": "안녕하세요, 오늘 어떻게 지내세요? 날씨가 좋네요.",
    "Chinese": "你好，你今天怎么样？天气很好。",
}
token_counts = {name: {language: len(t.encode_ordinary(s)) for language, s in sentences.items()}
                for name, t in [("GPT-2", gpt2), ("GPT-4", cl100k), (f"ours ({vocab_size:,}, Shakespeare)", tokenizer)]}
for name, counts in token_counts.items():
    print(f"{name:26}", "  ".join(f"{language} {n}" for language, n in counts.items()))
korean_vs_english_gpt2 = token_counts["GPT-2"]["Korean"] / token_counts["GPT-2"]["English"]
korean_vs_english_gpt4 = token_counts["GPT-4"]["Korean"] / token_counts["GPT-4"]["English"]
if plt is not None:
    figure, axes = plt.subplots(figsize=(8, 4))
    positions = np.arange(len(sentences))
    for k, (name, counts) in enumerate(token_counts.items()):
        axes.bar(positions + 0.27 * (k - 1), list(counts.values()), width=0.27, label=name)
    axes.set_xticks(positions, list(sentences))
    axes.set(ylabel="tokens", title="the same two sentences in six languages")
    axes.legend()
    save_figure(figure, "tokenizer_languages.png", args)

# %% [markdown]
# ## From tokens to training examples
#
# A GPT learns to predict the next token. From one long stream of ids we cut windows of
# `max_length` tokens; the input is a window and the target the same window shifted by one, so
# position t of the target is the token after position t of the input (every window gives
# `max_length` predictions at once). `stride` is how far the next window starts: `stride =
# max_length` gives windows side by side, a smaller one overlapping windows (more examples, but
# the same text seen several times).

# %%
class TokenWindows:
    """(input, target) windows over a 1-D array of token ids; target = input shifted by one."""

    def __init__(self, ids: np.ndarray, max_length: int, stride: int):
        if len(ids) < max_length + 1:
            raise ValueError(f"TokenWindows: {len(ids)} tokens cannot fill one window of {max_length} + 1")
        self.ids, self.max_length, self.stride = ids, max_length, stride

    def __len__(self) -> int:
        return (len(self.ids) - self.max_length - 1) // self.stride + 1

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        start = i * self.stride
        return self.ids[start:start + self.max_length], self.ids[start + 1:start + self.max_length + 1]


def batches(windows: TokenWindows, batch_size: int, shuffle: bool, generator: np.random.Generator):
    """Tensors (batch_size, max_length) of inputs and targets, one pass over the windows."""
    order = generator.permutation(len(windows)) if shuffle else np.arange(len(windows))
    for first in range(0, len(order) - batch_size + 1, batch_size):  # drop the last, short batch
        xs, ys = zip(*(windows[i] for i in order[first:first + batch_size]))
        yield torch.tensor(np.stack(xs).astype(np.int64)), torch.tensor(np.stack(ys).astype(np.int64))


train_ids = np.array(tokenizer.encode_ordinary(train_text), dtype=np.int64)
x, y = TokenWindows(train_ids, max_length=4, stride=1)[0]
print("input ", x, [tokenizer.decode([i]) for i in x])
print("target", y, [tokenizer.decode([i]) for i in y])
for stride in (1, 4):
    print(f"max_length 4, stride {stride}: {len(TokenWindows(train_ids, 4, stride)):,} windows")
windows = TokenWindows(train_ids, max_length=256, stride=256)
inputs, targets = next(batches(windows, batch_size=8, shuffle=True, generator=np.random.default_rng(123)))
print(f"{len(windows):,} windows of 256; one batch: inputs {tuple(inputs.shape)}, targets {tuple(targets.shape)}")

# %% [markdown]
# The model's first step turns each id into a learned vector and adds a learned vector for each
# position (the model has no other way to know where a token sits): (8, 256) ids become
# (8, 256, 64) numbers, what lesson 8's attention works on.

# %%
token_embedding = nn.Embedding(tokenizer.n_vocab, 64)
position_embedding = nn.Embedding(256, 64)
embedded = token_embedding(inputs) + position_embedding(torch.arange(256))
print(f"embedded batch: {tuple(embedded.shape)}")

# %%
report(gpt2_parity=gpt2_parity, tiktoken_checked=tiktoken_checked, compression=compression,
       train_compression=train_compression, vocab_size=vocab_size, train_seconds=train_seconds,
       plain_estimate_seconds=plain_estimate_seconds, plain_matches_library=plain_matches_library,
       digits_gpt2=digits_gpt2, digits_gpt4=digits_gpt4, korean_vs_english_gpt2=korean_vs_english_gpt2,
       korean_vs_english_gpt4=korean_vs_english_gpt4, windows=len(windows), batch_tokens=int(inputs.numel()))

"""Learning a BPE vocabulary from text.

The algorithm in one sentence: start with the 256 byte values as tokens, then repeatedly find the
pair of neighbouring tokens that occurs most often in the training text, make it a new token, and
replace its occurrences, until the vocabulary has the size you asked for.

Done literally (recount every pair of the whole text after each merge; see `naive_train` in
benchmarks/bench_bpe.py) that costs O(text length) per merge: minutes for a 4k vocabulary on 1 MB.
Real trainers (Hugging Face tokenizers, sentencepiece) do the same thing incrementally:

  1. Split the text into chunks with the pattern and count each *distinct* chunk once.
     Tiny Shakespeare has 263k chunks but only 15k distinct ones (" the" is one chunk seen 5,370
     times). Merges never cross chunk boundaries, so a chunk and its count is all we need.
  2. Count every pair once, weighted by chunk counts, and remember which chunks hold each pair.
  3. Keep the counts in a max-heap. It is "lazy": when a count goes down we do not fix the heap;
     when we pop an entry whose count is out of date, we push it back with the right count.
  4. To merge a pair, visit only the chunks that hold it, replace each occurrence, and adjust
     the counts of the pairs around it (x a b y loses x-a, a-b, b-y and gains x-new, new-y).
     The pairs with the new token are new, so they get heap entries.

Ties: the most frequent pair wins; among pairs with the same count, the one with the smallest
(left id, right id) wins. So training is deterministic, and the tests check it against a plain
reimplementation of the naive algorithm.

Every merge adds a new token: two merges never spell the same bytes. (Once the ends of a
stretch of a chunk are token boundaries, merges inside it depend only on its own bytes; so if
"ab"+"c" was merged at step k, any "abc" whose ends are boundaries was "ab","c" at step k too,
and became "abc" then.) The tests check this on random corpora.
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Iterable

from .patterns import compile_splitter, special_token_regex

Pair = tuple[int, int]


def train_bpe(text: str, vocab_size: int, pattern: str,
              special_tokens: Iterable[str] | None = None,
              verbose: bool = False) -> tuple[dict[bytes, int], list[Pair], dict[str, int]]:
    """Learn ranks for `Tokenizer`: (ranks, merges as (left id, right id) in order, special tokens).

    Special tokens count towards `vocab_size` and take the last ids. Their text is cut out of
    the training text, so nothing is learned from it.
    """
    specials = list(dict.fromkeys(special_tokens or ()))  # drop repeats, keep order
    if any(not isinstance(s, str) or not s for s in specials):
        raise ValueError(f"special tokens must be non-empty strings, got {specials!r}")
    n_tokens = vocab_size - len(specials)
    if n_tokens < 256:
        raise ValueError(f"vocab_size={vocab_size} is too small: a byte-level vocabulary needs "
                         f"256 byte tokens plus {len(specials)} special tokens")
    tokens, merges = learn_tokens(count_chunks(text, pattern, specials), n_tokens, verbose)
    ranks = {token: i for i, token in enumerate(tokens)}
    return ranks, merges, {s: n_tokens + i for i, s in enumerate(specials)}


def count_chunks(text: str, pattern: str, special_tokens: Iterable[str] = ()) -> Counter[bytes]:
    """How often each distinct chunk occurs, as UTF-8 bytes; special-token text is skipped."""
    split = compile_splitter(pattern)
    special_tokens = list(special_tokens)
    pieces = special_token_regex(special_tokens).split(text)[::2] if special_tokens else [text]
    counts: Counter[str] = Counter()
    for piece in pieces:
        counts.update(split(piece))
    return Counter({chunk.encode("utf-8"): n for chunk, n in counts.items()})


def learn_tokens(chunk_counts: dict[bytes, int], n_tokens: int,
                 verbose: bool = False) -> tuple[list[bytes], list[Pair]]:
    """Grow the vocabulary from the 256 bytes to `n_tokens` tokens by merging the commonest pairs.

    Returns the tokens (index = id) and the merges (left id, right id): merge k made token 256 + k.
    """
    tokens = [bytes((b,)) for b in range(256)]
    chunks = [list(chunk) for chunk in chunk_counts]  # each chunk as a list of token ids
    weights = list(chunk_counts.values())             # how often each chunk occurs

    pair_counts: dict[Pair, int] = defaultdict(int)
    chunks_with: dict[Pair, set[int]] = defaultdict(set)  # may list chunks that lost the pair
    for i, ids in enumerate(chunks):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += weights[i]
            chunks_with[pair].add(i)
    # A max-heap of (count, pair). heapq is a min-heap, so it holds (-count, pair): the largest
    # count pops first and, among equal counts, the smallest pair (the tie-break).
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    progress = _progress_bar(n_tokens - len(tokens)) if verbose else None
    merges: list[Pair] = []
    while len(tokens) < n_tokens:
        pair, count = _pop_most_frequent(heap, pair_counts)
        if pair is None:
            raise ValueError(f"the training text supports only {len(tokens)} tokens (every "
                             f"chunk is a single token by then); asked for {n_tokens} (not "
                             "counting special tokens). Use more text or a smaller vocab_size.")
        new_id = len(tokens)
        tokens.append(tokens[pair[0]] + tokens[pair[1]])
        merges.append(pair)
        if progress:
            progress.update()
            progress.write(f"merge {len(merges)}: {tokens[pair[0]]!r} + {tokens[pair[1]]!r} -> "
                           f"{tokens[new_id]!r} (id {new_id}, {count} occurrences)")

        # Visit only the chunks that (may) hold the pair; collect the new pairs it creates.
        new_pairs: dict[Pair, set[int]] = defaultdict(set)  # new pair -> chunks that hold it
        for i in chunks_with.pop(pair):
            merged_ids = merge_in_chunk(chunks[i], pair, new_id, weights[i], pair_counts)
            if merged_ids is None:
                continue  # a stale entry: an earlier merge already took this chunk's pair apart
            chunks[i] = merged_ids
            for new in zip(merged_ids, merged_ids[1:]):
                if new_id in new:
                    new_pairs[new].add(i)
        # Only pairs containing new_id gained occurrences; every other count can only have
        # dropped, and the lazy heap fixes those when it meets them.
        for new, where in new_pairs.items():
            chunks_with[new] |= where
            if pair_counts[new] > 0:
                heapq.heappush(heap, (-pair_counts[new], new))
    if progress:
        progress.close()
    return tokens, merges


def _pop_most_frequent(heap: list, pair_counts: dict[Pair, int]) -> tuple[Pair | None, int]:
    while heap:
        negative_count, pair = heapq.heappop(heap)
        count = pair_counts[pair]
        if count == -negative_count:
            return pair, count
        if count > 0:  # out of date: the pair occurs less often now, so file it again
            heapq.heappush(heap, (-count, pair))
    return None, 0


def merge_in_chunk(ids: list[int], pair: Pair, new_id: int, weight: int,
                   pair_counts: dict[Pair, int]) -> list[int] | None:
    """Replace each occurrence of `pair` in `ids` (left to right) by `new_id`, and adjust the
    counts of the pairs around it, as if the chunk occurred `weight` times. None if no occurrence.

    An occurrence (left, right) with neighbours x and y turns x left right y into x new y:
    pairs (x, left), (left, right), (right, y) go away and (x, new), (new, y) appear. The left
    neighbour is read from the merged output and the right one from the input, so two
    occurrences in a row ("a b a b") come out right: (b, a) becomes (new, a), then (new, new).
    """
    left, right = pair
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if ids[i] == left and i + 1 < n and ids[i + 1] == right:
            pair_counts[pair] -= weight
            if out:
                x = out[-1]
                pair_counts[x, left] -= weight
                pair_counts[x, new_id] += weight
            if i + 2 < n:
                y = ids[i + 2]
                pair_counts[right, y] -= weight
                pair_counts[new_id, y] += weight
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out if len(out) < n else None


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="learning tokens", unit="token")

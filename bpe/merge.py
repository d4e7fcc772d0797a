"""Encoding one chunk: apply the learned merges to its bytes.

The rule is tiktoken's: start from single bytes and, as long as some pair of neighbouring parts
concatenates to a known token, merge the pair whose concatenation has the lowest rank (the token
learned earliest); among equal ranks, the leftmost pair. The ranks *are* the merge list: a token
learned at step k has rank 256 + k in a freshly trained vocabulary, so "lowest rank first"
replays training in order. Nothing needs the pair that produced a token, only its bytes.

Two implementations of the same rule:
  * `merge_short`: a list of parts plus the rank of each neighbouring pair; every step takes the
    minimum (a C-speed scan). O(n^2) in the chunk length, and the fastest for ordinary words.
  * `merge_long`: a min-heap of candidate pairs over a linked list of parts, O(n log n). A 100 KB
    run of one character is a single chunk, and the quadratic version takes over a minute on it.
"""
from __future__ import annotations

import heapq

# Chunks longer than this (in bytes) use the heap. Below it the simple scan wins.
LONG_CHUNK = 256

_SINGLE_BYTES = [bytes((b,)) for b in range(256)]
_NO_MERGE = float("inf")


def merge_chunk(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Token ids for one pre-split chunk."""
    rank = ranks.get(piece)
    if rank is not None:  # most chunks of real text are whole tokens already
        return [rank]
    if len(piece) > LONG_CHUNK:
        return merge_long(piece, ranks)
    return merge_short(piece, ranks)


def merge_short(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    get = ranks.get
    parts = list(map(_SINGLE_BYTES.__getitem__, piece))
    # pair_ranks[i] is the rank of parts[i] + parts[i + 1], or infinity if that is not a token.
    pair_ranks = [get(left + right, _NO_MERGE) for left, right in zip(parts, parts[1:])]
    while pair_ranks:
        best = min(pair_ranks)
        if best == _NO_MERGE:
            break
        i = pair_ranks.index(best)  # the leftmost pair with the lowest rank
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        # Only the two pairs touching the new part changed.
        if i > 0:
            pair_ranks[i - 1] = get(parts[i - 1] + parts[i], _NO_MERGE)
        if i < len(pair_ranks):
            pair_ranks[i] = get(parts[i] + parts[i + 1], _NO_MERGE)
    return [ranks[part] for part in parts]


def merge_long(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    n = len(piece)
    # The parts form a linked list over byte offsets: a part starts at `start` and ends where the
    # next one begins, end[start]; prev[start] is the start of the part before it.
    end = list(range(1, n + 1))
    prev = list(range(-1, n - 1))
    alive = [True] * n
    # A heap entry (rank, left_start, right_end) is a candidate merge of the part starting at
    # left_start with its right neighbour, which ends at right_end. Entries go stale when a part
    # changes; the pair (left_start, right_end) still describes the current neighbours exactly
    # when the left part is alive and its neighbour ends at right_end, so stale ones are skipped.
    heap = [(rank, i, i + 2) for i in range(n - 1)
            if (rank := ranks.get(piece[i:i + 2])) is not None]
    heapq.heapify(heap)  # ordered by rank, then by position: the leftmost of equal ranks first
    while heap:
        _, left, right_end = heapq.heappop(heap)
        right = end[left] if alive[left] else n
        if right >= n or end[right] != right_end:
            continue
        alive[right] = False
        end[left] = right_end
        if right_end < n:
            prev[right_end] = left
            rank = ranks.get(piece[left:end[right_end]])
            if rank is not None:
                heapq.heappush(heap, (rank, left, end[right_end]))
        if left > 0:
            before = prev[left]
            rank = ranks.get(piece[before:right_end])
            if rank is not None:
                heapq.heappush(heap, (rank, before, right_end))
    ids = []
    start = 0
    while start < n:
        ids.append(ranks[piece[start:end[start]]])
        start = end[start]
    return ids

"""Batches of sequences of different lengths: pad them on the right, and say which targets count.

    pad_sequences([[5, 6, 7], [8]], pad_token_id=0)       -> [[5, 6, 7], [8, 0, 0]]

    collate_causal_lm([(prompt, response), ...])          instruction-style causal-LM batches:
        tokens   p p p r r r            (prompt then response, padded)
        input    p p p r r _  _         (every token but the last)
        target   - - r r r -  -         (the next token; - = ignore_index: prompt and padding)

Only the response tokens are targets, so ``F.cross_entropy(..., ignore_index=-100)`` trains the
model to answer, not to repeat the question (Hugging Face's ``DataCollatorForSeq2Seq`` / TRL's
completion-only collator do the same with -100). Padding goes on the right because our GPT has no
attention mask: with causal attention, pads after a sequence change none of its positions.
"""
from __future__ import annotations

from typing import Sequence

import numpy

IGNORE_INDEX = -100  # torch's and F.cross_entropy's default ignore_index


def pad_token_for(tokenizer) -> int:
    """The id to pad with: ``<|endoftext|>`` where the tokenizer has it (GPT-2's convention), else
    the newline (a char tokenizer's id 0 on Shakespeare). The heads read a sequence's last token that
    is not this id, so the texts of `gpt.tasks` never end with it."""
    special = getattr(getattr(tokenizer, "tokenizer", None), "special_tokens", {})
    if "<|endoftext|>" in special:
        return special["<|endoftext|>"]
    return tokenizer.encode("\n")[0]


def pad_sequences(sequences: Sequence[Sequence[int]], pad_token_id: int, length: int | None = None) -> numpy.ndarray:
    """Token lists as one int64 array (N, length), each right-padded with ``pad_token_id``.

    ``length`` defaults to the longest sequence; a longer sequence is an error (crop before padding).
    """
    longest = max((len(sequence) for sequence in sequences), default=0)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"pad_sequences: a sequence has {longest} tokens, more than the length {length}")
    batch = numpy.full((len(sequences), length), pad_token_id, dtype=numpy.int64)
    for row, sequence in enumerate(sequences):
        batch[row, :len(sequence)] = sequence
    return batch


def collate_classification(token_lists: Sequence[Sequence[int]], labels: Sequence[int], pad_token_id: int,
                           block_size: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(input_ids (B, T), labels (B,)): each text's first ``block_size`` tokens, right-padded."""
    if len(token_lists) != len(labels):
        raise ValueError(f"collate_classification: {len(token_lists)} texts but {len(labels)} labels")
    if any(len(tokens) == 0 for tokens in token_lists):
        raise ValueError("collate_classification: an empty text has no last token to classify")
    cropped = [list(tokens[:block_size]) for tokens in token_lists]
    return pad_sequences(cropped, pad_token_id), numpy.asarray(labels, dtype=numpy.int64)


def split_into_windows(tokens: Sequence[int], block_size: int, max_windows: int | None = None) -> list[list[int]]:
    """A text too long for the model as consecutive, non-overlapping windows of ``block_size`` tokens.

        split_into_windows([1, 2, 3, 4, 5, 6, 7], block_size=3)   -> [[1, 2, 3], [4, 5, 6], [7]]

    A classifier then reads every window and averages their logits (``average_by_group``), so it
    sees the whole text, not only its first ``block_size`` tokens. ``max_windows`` keeps the first
    ones (a bound on the work for very long texts). An empty text is an error: it has nothing to read.
    """
    if block_size < 1:
        raise ValueError(f"split_into_windows: block_size must be >= 1, got {block_size}")
    if len(tokens) == 0:
        raise ValueError("split_into_windows: an empty text has no window to classify")
    windows = [list(tokens[start:start + block_size]) for start in range(0, len(tokens), block_size)]
    return windows if max_windows is None else windows[:max_windows]


def average_by_group(values: numpy.ndarray, groups: numpy.ndarray, num_groups: int) -> numpy.ndarray:
    """The mean of the rows of ``values`` (N, C) that share a group id ``groups`` (N,): (num_groups, C).

    With ``groups[i]`` the text that window ``i`` came from, this turns per-window logits into one
    row of logits per text. Every group must have at least one row.
    """
    values, groups = numpy.asarray(values), numpy.asarray(groups)
    if values.ndim != 2 or groups.shape != (values.shape[0],):
        raise ValueError(f"average_by_group: values {values.shape} need one group id per row, got groups {groups.shape}")
    counts = numpy.bincount(groups, minlength=num_groups)
    if len(counts) > num_groups or (counts == 0).any():
        raise ValueError(f"average_by_group: every one of {num_groups} groups needs rows; row counts {counts.tolist()}")
    sums = numpy.zeros((num_groups, values.shape[1]), dtype=numpy.float64)
    numpy.add.at(sums, groups, values)
    return (sums / counts[:, None]).astype(values.dtype)


def collate_causal_lm(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_token_id: int, block_size: int,
                      ignore_index: int = IGNORE_INDEX) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(input_ids (B, T), targets (B, T)) from (prompt, response) token lists; only response tokens are targets.

    A pair longer than ``block_size + 1`` tokens loses tokens from the left of its prompt (the
    response is what is trained on; a response that alone is too long is an error).
    """
    inputs, targets = [], []
    for prompt, response in pairs:
        if len(response) == 0:
            raise ValueError("collate_causal_lm: an empty response has nothing to train on")
        if len(response) > block_size:
            raise ValueError(f"collate_causal_lm: a response of {len(response)} tokens does not fit in "
                             f"block_size {block_size} (with at least one token of prompt before it)")
        tokens = (list(prompt) + list(response))[-(block_size + 1):]
        counts = numpy.zeros(len(tokens), dtype=bool)
        counts[len(tokens) - len(response):] = True         # which tokens are response tokens
        target = numpy.where(counts[1:], tokens[1:], ignore_index)  # target of position i: token i + 1
        inputs.append(tokens[:-1])
        targets.append(target)
    return pad_sequences(inputs, pad_token_id), pad_sequences(targets, ignore_index)


def collate_multiple_choice(questions: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], pad_token_id: int,
                            block_size: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(input_ids (B, num_choices, T), mc_token_ids (B, num_choices)) from (context, options) token lists.

    Choice j of a question is its context followed by option j, cut to the last ``block_size`` tokens
    (the context loses its beginning first); ``mc_token_ids`` is the position of each choice's last
    token, the one `GPTForMultipleChoice` reads (the options may end in the pad token, e.g. a newline).
    """
    num_choices = {len(options) for _, options in questions}
    if len(num_choices) != 1:
        raise ValueError(f"collate_multiple_choice: every question needs the same number of options, got {num_choices}")
    choices = [(list(context) + list(option))[-block_size:] for context, options in questions for option in options]
    B, N = len(questions), num_choices.pop()
    ids = pad_sequences(choices, pad_token_id).reshape(B, N, -1)
    last = numpy.array([len(choice) - 1 for choice in choices]).reshape(B, N)
    return ids, last

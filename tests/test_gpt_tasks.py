"""Padding and masking (gpt/collate.py), the two Shakespeare tasks (gpt/tasks.py), zero-shot option
scoring and the fine-tuning loop (gpt/finetune.py)."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

import tinygrad_lite as tl
from tinygrad_lite import functional as F
from gpt import GPT, GPTConfig
from gpt.collate import (IGNORE_INDEX, average_by_group, collate_causal_lm, collate_classification,
                         collate_multiple_choice, pad_sequences, pad_token_for, split_into_windows)
from gpt.data import CharTokenizer
from gpt.finetune import FineTuneConfig, fine_tune, option_log_likelihoods
from gpt.heads import GPTForSequenceClassification
from gpt.tasks import next_line_choice, parse_speeches, speaker_attribution, split_by_position
from conftest import require_data_file

_ = IGNORE_INDEX


# ------------------------------------------------------------------ collate

def test_pad_sequences_pads_on_the_right():
    assert pad_sequences([[5, 6, 7], [8]], pad_token_id=0).tolist() == [[5, 6, 7], [8, 0, 0]]
    assert pad_sequences([[5]], pad_token_id=9, length=3).tolist() == [[5, 9, 9]]
    with pytest.raises(ValueError, match="more than the length"):
        pad_sequences([[1, 2, 3]], 0, length=2)


def test_collate_causal_lm_masks_prompt_and_padding():
    inputs, targets = collate_causal_lm([([1, 2, 3], [4, 5]), ([6], [7, 8, 9])], pad_token_id=0, block_size=8)
    #                       tokens 1 2 3 4 5 -> inputs 1 2 3 4, targets - - 4 5
    #                       tokens 6 7 8 9   -> inputs 6 7 8,   targets 7 8 9
    assert inputs.tolist() == [[1, 2, 3, 4], [6, 7, 8, 0]]
    assert targets.tolist() == [[_, _, 4, 5], [7, 8, 9, _]]
    # the loss counts the response tokens only: 5 of them, whatever the logits at masked positions say
    logits = np.random.default_rng(0).normal(size=(2, 4, 10)).astype(np.float32)
    loss = F.cross_entropy(tl.Tensor(logits.reshape(8, 10)), targets.reshape(8), ignore_index=IGNORE_INDEX)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    kept = [(0, 2, 4), (0, 3, 5), (1, 0, 7), (1, 1, 8), (1, 2, 9)]
    np.testing.assert_allclose(loss.item(), -np.mean([log_probs[b, t, y] for b, t, y in kept]), rtol=1e-5)


def test_collate_causal_lm_crops_the_prompt_from_the_left():
    inputs, targets = collate_causal_lm([([1, 2, 3, 4, 5], [6, 7])], pad_token_id=0, block_size=4)
    assert inputs.tolist() == [[3, 4, 5, 6]] and targets.tolist() == [[_, _, 6, 7]]
    with pytest.raises(ValueError, match="does not fit"):
        collate_causal_lm([([1], [2, 3, 4, 5, 6])], 0, block_size=4)
    with pytest.raises(ValueError, match="empty response"):
        collate_causal_lm([([1], [])], 0, block_size=4)


def test_collate_classification_and_multiple_choice():
    ids, labels = collate_classification([[1, 2, 3, 4], [5]], [1, 0], pad_token_id=0, block_size=3)
    assert ids.tolist() == [[1, 2, 3], [5, 0, 0]] and labels.tolist() == [1, 0]
    ids, last = collate_multiple_choice([([1, 2, 3], [[4], [5, 6, 0]]), ([7], [[8, 9], [0]])], pad_token_id=0,
                                        block_size=4)
    assert ids.shape == (2, 2, 4)
    assert ids.tolist() == [[[1, 2, 3, 4], [3, 5, 6, 0]], [[7, 8, 9, 0], [7, 0, 0, 0]]]
    assert last.tolist() == [[3, 3], [2, 1]]  # the last real token, even when it is the pad id


def test_split_into_windows_covers_the_whole_text():
    assert split_into_windows([1, 2, 3, 4, 5, 6, 7], block_size=3) == [[1, 2, 3], [4, 5, 6], [7]]
    assert split_into_windows([1, 2, 3, 4, 5, 6], block_size=3) == [[1, 2, 3], [4, 5, 6]]
    assert split_into_windows([1, 2], block_size=3) == [[1, 2]]
    assert split_into_windows(list(range(10)), block_size=2, max_windows=2) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="empty text"):
        split_into_windows([], block_size=3)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        split_into_windows([1], block_size=0)


def test_average_by_group_gives_each_text_its_windows_mean():
    logits = np.array([[1.0, 0.0], [3.0, 2.0], [-1.0, 5.0], [0.0, 4.0], [2.0, 2.0]], dtype=np.float32)
    means = average_by_group(logits, np.array([0, 0, 1, 2, 2]), num_groups=3)
    assert means.dtype == np.float32
    np.testing.assert_allclose(means, [[2.0, 1.0], [-1.0, 5.0], [1.0, 3.0]])
    with pytest.raises(ValueError, match="every one of 3 groups needs rows"):
        average_by_group(logits, np.array([0, 0, 2, 2, 2]), num_groups=3)
    with pytest.raises(ValueError, match="one group id per row"):
        average_by_group(logits, np.array([0, 1]), num_groups=2)


def test_pad_token_for_char_and_gpt2_tokenizers():
    gpt2_dir = require_data_file("gpt2/vocab.bpe").parent
    assert pad_token_for(CharTokenizer("\n abc")) == 0
    from gpt.data import build_tokenizer
    assert pad_token_for(build_tokenizer("gpt2", "", "", gpt2_dir, gpt2_dir)) == 50256


# ------------------------------------------------------------------ tasks

PLAY = "".join(f"{speaker}:\nLine one of speech {i}.\nLine two of speech {i}.\n\n"
               for i, speaker in enumerate(["ANNE", "BOB", "ANNE", "CAROL", "BOB", "ANNE", "DAVE", "ANNE", "BOB",
                                            "CAROL"] * 4))


def test_parse_speeches():
    speeches = parse_speeches("ROMEO:\nIs the day so young?\n\nstage direction\n\nFirst Citizen:\nSpeak.\nSpeak!\n")
    assert [(s.speaker, s.lines, s.position) for s in speeches] == [
        ("ROMEO", ["Is the day so young?"], 0), ("First Citizen", ["Speak.", "Speak!"], 1)]
    with pytest.raises(ValueError, match="no speeches"):
        parse_speeches("just text")


def test_split_by_position():
    assert split_by_position(list(range(10)), (0.6, 0.2, 0.2)) == {"train": [0, 1, 2, 3, 4, 5], "val": [6, 7],
                                                                  "test": [8, 9]}
    with pytest.raises(ValueError, match="fractions"):
        split_by_position([1], (0.5, 0.5))


def test_speaker_attribution_on_a_small_play():
    data = speaker_attribution(PLAY, num_speakers=3, fractions=(0.5, 0.25, 0.25))
    assert data.labels == ["ANNE", "BOB", "CAROL"]  # 16, 12, 8 speeches; DAVE (4) is left out
    assert {name: len(rows) for name, rows in data.splits.items()} == {"train": 18, "val": 9, "test": 9}
    assert Counter(label for _, label in data.splits["test"]) == {0: 4, 1: 3, 2: 2}
    assert data.majority_class() == 0
    assert data.splits["train"][0] == ("Line one of speech 0.\nLine two of speech 0.", 0)  # no name line
    # each speaker's val and test speeches come after all of its training speeches
    number = {name: [(int(text.split()[-1][:-1]), label) for text, label in rows] for name, rows in data.splits.items()}
    for label in range(3):
        last_train = max(n for n, lab in number["train"] if lab == label)
        assert min(n for n, lab in number["val"] + number["test"] if lab == label) > last_train


def test_speaker_attribution_on_tiny_shakespeare():
    data = speaker_attribution(require_data_file("tinyshakespeare.txt").read_text(encoding="utf-8"))
    assert data.labels == ["GLOUCESTER", "DUKE VINCENTIO", "MENENIUS", "ROMEO", "PETRUCHIO", "CORIOLANUS",
                           "KING RICHARD III", "ISABELLA"]
    assert [len(rows) for rows in data.splits.values()] == [902, 193, 193]
    assert not any(text.startswith(tuple(data.labels)) for text, _ in data.splits["train"][:50])


def test_next_line_choice():
    questions = next_line_choice(PLAY, num_options=4, fractions=(0.5, 0.25, 0.25), seed=1)
    assert [len(rows) for rows in questions.values()] == [20, 10, 10]
    first = questions["train"][0]
    assert first.context == "ANNE:\nLine one of speech 0.\n"
    assert first.options[first.label] == "Line two of speech 0.\n"
    for name, rows in questions.items():
        numbers = {int(q.context.split()[-1][:-1]) for q in rows}
        for q in rows:
            assert len(q.options) == 4 and len(set(q.options)) == 4
            assert all(int(option.split()[-1][:-1]) in numbers for option in q.options)  # from the same split
            assert sum(option.startswith("Line two of speech " + q.context.split()[-1][:-1])
                       for option in q.options) == 1
    labels = [q.label for rows in next_line_choice(PLAY * 10, fractions=(0.8, 0.1, 0.1)).values() for q in rows]
    assert set(labels) == {0, 1, 2, 3, 4}  # the answer's place varies


# ------------------------------------------------------------------ finetune

def test_option_log_likelihoods_by_hand():
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    pairs = [([1, 2, 3], [4, 5]), ([6], [7, 8, 9])]
    scores = option_log_likelihoods(model, pairs, pad_token_id=0, block_size=8)
    for (prompt, response), score in zip(pairs, scores):
        tokens = prompt + response
        logits = model(np.array([tokens]))[0].numpy()[0].astype(np.float64)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        expected = sum(log_probs[t - 1, tokens[t]] for t in range(len(prompt), len(tokens)))
        assert math.isclose(score, expected, rel_tol=1e-5)


def test_fine_tune_learns_and_restores_the_best_weights():
    tl.manual_seed(0)
    model = GPTForSequenceClassification(GPTConfig(vocab_size=5, block_size=6, n_layer=1, n_head=1, n_embd=8),
                                         num_labels=2, pad_token_id=0)
    # class = whether token 4 occurs: learnable in a few dozen steps
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 5, (64, 6))
    labels = (ids == 4).any(axis=1).astype(np.int64)
    scores = []

    def evaluate():
        scores.append(float((model(ids)[0].numpy().argmax(1) == labels).mean()))
        return scores[-1]

    def next_batch(batch_rng):
        rows = batch_rng.integers(0, 64, 16)
        return {"input_ids": ids[rows], "labels": labels[rows]}

    result = fine_tune(model, next_batch, evaluate, FineTuneConfig(steps=60, lr=1e-2, eval_interval=10, warmup_steps=5))
    assert result.steps == 60 and len(result.history) == 6
    assert result.best_score == max(scores) and result.best_score > 0.8
    assert evaluate() == result.best_score  # the best weights are back
    stopped = fine_tune(model, next_batch, lambda: 0.5, FineTuneConfig(steps=60, eval_interval=5, patience=2))
    assert stopped.steps == 15 and stopped.best_step == 5  # 0.5 never improves after the first evaluation

"""Two fine-tuning tasks cut from tiny Shakespeare (nothing to download).

The text is a list of speeches, each a name line and the lines spoken, separated by blank lines:

    ROMEO:
    Is the day so young?

1. **Speaker attribution** (`speaker_attribution`): who says this speech? The labels are the
   ``num_speakers`` (8) speakers with the most speeches -- GLOUCESTER, DUKE VINCENTIO, MENENIUS,
   ROMEO, PETRUCHIO, CORIOLANUS, KING RICHARD III, ISABELLA: 1288 speeches -- and the input is
   the speech without its name line. Each speaker's speeches are split by their order in the text
   (first 70% train, next 15% val, last 15% test), so the val and test speeches come from later
   scenes than the training ones, and every speaker is in every split (902 / 193 / 193).
2. **Next line, multiple choice** (`next_line_choice`, the Kaggle exam format: a question, five
   options): the context is a speech's name line and opening line; the options are the true next
   line and four lines drawn from other speeches of the same split. The speeches are split by
   position in the whole text (80/10/10).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy

NAME_LINE = re.compile(r"[A-Z][A-Za-z' ]*:")  # "ROMEO:", "First Citizen:", "KING RICHARD III:"
SPLITS = ("train", "val", "test")


@dataclass
class Speech:
    speaker: str
    lines: list[str]      # the lines spoken, without the name line
    position: int         # 0 for the first speech of the text, 1 for the next, ...

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def parse_speeches(text: str) -> list[Speech]:
    """Every block of the text that starts with a name line (the few that do not are skipped)."""
    speeches = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = block.strip("\n").split("\n")
        if len(lines) >= 2 and NAME_LINE.fullmatch(lines[0]) and any(line.strip() for line in lines[1:]):
            speeches.append(Speech(lines[0][:-1], lines[1:], len(speeches)))
    if not speeches:
        raise ValueError("parse_speeches: the text has no speeches (blocks that start with a line 'NAME:')")
    return speeches


def split_by_position(items: list, fractions: tuple[float, float, float]) -> dict[str, list]:
    """The first ``fractions[0]`` of ``items`` (in order) for train, the next for val, the rest for test."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"split_by_position: fractions must be three positive numbers adding up to 1, got {fractions}")
    first = round(len(items) * fractions[0])
    second = first + round(len(items) * fractions[1])
    return {"train": items[:first], "val": items[first:second], "test": items[second:]}


# ------------------------------------------------------------ speaker attribution

@dataclass
class ClassificationData:
    labels: list[str]                              # class id -> speaker name
    splits: dict[str, list[tuple[str, int]]]       # split -> (speech text, class id), in text order

    def majority_class(self) -> int:
        """The most common class in train: the baseline that always guesses it."""
        return Counter(label for _, label in self.splits["train"]).most_common(1)[0][0]


def speaker_attribution(text: str, num_speakers: int = 8,
                        fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> ClassificationData:
    """The ``num_speakers`` most frequent speakers' speeches, each speaker's split by position (see the module)."""
    speeches = parse_speeches(text)
    counts = Counter(speech.speaker for speech in speeches)
    if len(counts) < num_speakers:
        raise ValueError(f"speaker_attribution: the text has {len(counts)} speakers, fewer than {num_speakers}")
    # most speeches first; equal counts by name, so the labels never depend on dict order
    labels = [name for name, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:num_speakers]]
    splits = {name: [] for name in SPLITS}
    for label, speaker in enumerate(labels):
        own = [speech for speech in speeches if speech.speaker == speaker]
        for name, part in split_by_position(own, fractions).items():
            splits[name].extend((speech.position, speech.text, label) for speech in part)
    ordered = {name: [(speech_text, label) for _, speech_text, label in sorted(rows)] for name, rows in splits.items()}
    for name, rows in ordered.items():
        if not rows:
            raise ValueError(f"speaker_attribution: the {name} split is empty; use more text or other fractions")
    return ClassificationData(labels, ordered)


# -------------------------------------------------------- multiple choice

@dataclass
class Question:
    context: str          # "NAME:\nopening line\n"
    options: list[str]    # each a line ending in "\n"; options[label] is the true next line
    label: int


def next_line_choice(text: str, num_options: int = 5, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                     seed: int = 0) -> dict[str, list[Question]]:
    """One question per speech of two or more lines: which line comes after the opening one?

    The distractors are lines of other speeches in the same split, chosen with ``seed``; the true
    line's place among the options is uniform, so always guessing one place scores 1 / num_options.
    """
    rng = numpy.random.default_rng(seed)
    speeches = [speech for speech in parse_speeches(text) if len(speech.lines) >= 2]
    questions = {}
    for name, part in split_by_position(speeches, fractions).items():
        pool = [(speech.position, line) for speech in part for line in speech.lines]
        if len(part) < num_options:
            raise ValueError(f"next_line_choice: the {name} split has {len(part)} speeches, fewer than {num_options}")
        questions[name] = [_question(speech, pool, num_options, rng) for speech in part]
    return questions


def _question(speech: Speech, pool: list[tuple[int, str]], num_options: int, rng) -> Question:
    answer = speech.lines[1]
    distractors: list[str] = []
    while len(distractors) < num_options - 1:  # lines of other speeches, none equal to the answer or each other
        position, line = pool[rng.integers(len(pool))]
        if position != speech.position and line != answer and line not in distractors:
            distractors.append(line)
    label = int(rng.integers(num_options))
    options = distractors[:label] + [answer] + distractors[label:]
    return Question(f"{speech.speaker}:\n{speech.lines[0]}\n", [option + "\n" for option in options], label)

"""argparse types that refuse impossible values when the flags are parsed (exit code 2, usage).

    parser.add_argument("--lr", type=number(above=0))
    parser.add_argument("--batch-size", type=whole_number(at_least=1))
"""
from __future__ import annotations

import argparse
import math
from typing import Callable


def whole_number(at_least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < at_least:
            raise argparse.ArgumentTypeError(f"{value} is too small: it must be at least {at_least}")
        return value
    return parse


def number(*, at_least: float | None = None, above: float | None = None, below: float | None = None,
           at_most: float | None = None) -> Callable[[str], float]:
    """A finite float within the given bounds (NaN and inf are always refused)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        for bound, holds, words in ((at_least, lambda b: value >= b, "at least"), (above, lambda b: value > b, "above"),
                                    (below, lambda b: value < b, "below"), (at_most, lambda b: value <= b, "at most")):
            if bound is not None and not holds(bound):
                raise argparse.ArgumentTypeError(f"{value:g} is out of range: it must be {words} {bound:g}")
        return value
    return parse

"""Scatter-add of whole rows on the CPU (the backward of an embedding lookup), without
``numpy.add.at``, which costs about 2 us per row (docs/performance.md)."""
from __future__ import annotations

import numpy


def is_row_scatter(target, indices, values) -> bool:
    """``target[indices] += values`` with a 1-D integer array picking whole rows (the embedding case)."""
    return (isinstance(indices, numpy.ndarray) and indices.ndim == 1 and indices.size > 0
            and indices.dtype.kind in "iu" and values.shape == indices.shape + target.shape[1:])


def add_rows(target, indices, values) -> None:
    """``numpy.add.at(target, indices, values)`` for row indices: sort the indices, sum each run of
    equal ones with one reduceat, and add each sum to its row once (then no index repeats)."""
    if indices.min() < 0:  # -1 and n-1 name the same row: make every row have one name
        indices = indices % target.shape[0]
    order = numpy.argsort(indices, kind="stable")  # stable: a fixed summation order
    sorted_indices = indices[order]
    run_starts = numpy.flatnonzero(numpy.r_[True, sorted_indices[1:] != sorted_indices[:-1]])
    target[sorted_indices[run_starts]] += numpy.add.reduceat(values[order], run_starts, axis=0)

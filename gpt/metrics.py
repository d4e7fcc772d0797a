"""Judging a classifier or a language model, in plain NumPy: accuracy, precision, recall, F1, perplexity.

    accuracy([0, 1, 1], [0, 1, 0])                    # 2/3
    scores = precision_recall_f1(y_true, y_pred)      # per class: precision, recall, f1, support
    macro_f1(y_true, y_pred)                          # the mean of the per-class F1s
    confusion_matrix(y_true, y_pred)                  # rows: the true class, columns: the predicted one
    perplexity(mean_loss)                             # exp(mean negative log-likelihood)

The names and conventions are scikit-learn's (``confusion_matrix[i, j]`` counts samples of class i
predicted as j; a class that is never predicted has precision 0, ``zero_division=0``), so the
numbers can be checked against it. Labels are integers 0 .. num_classes - 1.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy


def _labels(y_true, y_pred, num_classes: int | None) -> tuple[numpy.ndarray, numpy.ndarray, int]:
    """Both label lists as int arrays of one length, and the number of classes (given, or the largest + 1)."""
    true, pred = numpy.asarray(y_true), numpy.asarray(y_pred)
    if true.ndim != 1 or pred.ndim != 1 or len(true) != len(pred):
        raise ValueError(f"metrics: y_true and y_pred must be 1-D and of one length, got shapes {true.shape} "
                         f"and {pred.shape}")
    if len(true) == 0:
        raise ValueError("metrics: no samples (y_true is empty)")
    for what, labels in (("y_true", true), ("y_pred", pred)):
        if labels.dtype.kind not in "iu" or labels.min() < 0:
            raise ValueError(f"metrics: {what} must hold class ids 0, 1, 2, ... (got dtype {labels.dtype}, "
                             f"smallest {labels.min()})")
    largest = int(max(true.max(), pred.max()))
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(f"metrics: label {largest} is outside the {num_classes} classes 0..{num_classes - 1}")
    return true, pred, num_classes


def accuracy(y_true, y_pred) -> float:
    """The fraction of samples whose predicted class is the true one."""
    true, pred, _ = _labels(y_true, y_pred, None)
    return float(numpy.mean(true == pred))


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> numpy.ndarray:
    """(num_classes, num_classes) counts: ``[i, j]`` = how many samples of class i were predicted as j.

    The diagonal holds the right answers; row i sums to the support of class i, column j to how
    often j was predicted.
    """
    true, pred, num_classes = _labels(y_true, y_pred, num_classes)
    matrix = numpy.zeros((num_classes, num_classes), dtype=numpy.int64)
    numpy.add.at(matrix, (true, pred), 1)
    return matrix


class ClassScores(NamedTuple):
    """Per-class scores, each an array of length num_classes (scikit-learn's precision_recall_fscore_support)."""

    precision: numpy.ndarray  # of the samples predicted as c, the fraction that are c: TP / (TP + FP)
    recall: numpy.ndarray     # of the samples of class c, the fraction predicted as c: TP / (TP + FN)
    f1: numpy.ndarray         # their harmonic mean, 2 P R / (P + R)
    support: numpy.ndarray    # how many samples of class c there are


def _divide(numerator: numpy.ndarray, denominator: numpy.ndarray) -> numpy.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    result = numpy.zeros(len(numerator), dtype=numpy.float64)
    nonzero = denominator > 0
    result[nonzero] = numerator[nonzero] / denominator[nonzero]
    return result


def precision_recall_f1(y_true, y_pred, num_classes: int | None = None) -> ClassScores:
    """Precision, recall, F1 and support of every class, from the confusion matrix."""
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    true_positives = numpy.diag(matrix).astype(numpy.float64)
    predicted = matrix.sum(axis=0)  # column sums: TP + FP
    actual = matrix.sum(axis=1)     # row sums: TP + FN
    precision, recall = _divide(true_positives, predicted), _divide(true_positives, actual)
    f1 = _divide(2 * precision * recall, precision + recall)
    return ClassScores(precision, recall, f1, actual)


def macro_f1(y_true, y_pred, num_classes: int | None = None) -> float:
    """The unweighted mean of the per-class F1s: every class counts alike, however rare it is
    (a classifier that always answers the majority class scores low here, unlike on accuracy)."""
    return float(numpy.mean(precision_recall_f1(y_true, y_pred, num_classes).f1))


def classification_report(y_true, y_pred, class_names=None, num_classes: int | None = None) -> str:
    """A printable table: precision, recall, F1 and support per class, then accuracy and macro-F1."""
    scores = precision_recall_f1(y_true, y_pred, num_classes)
    names = [str(name) for name in class_names] if class_names is not None else \
        [str(c) for c in range(len(scores.f1))]
    if len(names) != len(scores.f1):
        raise ValueError(f"classification_report: {len(names)} class names for {len(scores.f1)} classes")
    width = max(12, *(len(name) for name in names))
    lines = [f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, p, r, f, n in zip(names, *scores):
        lines.append(f"{name:<{width}}{p:>10.3f}{r:>10.3f}{f:>10.3f}{int(n):>10}")
    lines.append(f"{'accuracy':<{width}}{accuracy(y_true, y_pred):>30.3f}{int(scores.support.sum()):>10}")
    lines.append(f"{'macro avg':<{width}}{scores.precision.mean():>10.3f}{scores.recall.mean():>10.3f}"
                 f"{scores.f1.mean():>10.3f}{int(scores.support.sum()):>10}")
    return "\n".join(lines)


def perplexity(nll, weights=None) -> float:
    """exp(mean negative log-likelihood per token), in nats: ``perplexity(val_loss)`` for a mean loss,
    or ``perplexity(per_token_losses)``; ``weights`` (e.g. tokens per batch) weights the mean.

    A model that spreads its bet evenly over k tokens has perplexity k: it is "as unsure as a
    k-sided die". Mean losses of batches of different sizes must be weighted by their sizes.
    """
    values = numpy.asarray(nll, dtype=numpy.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("perplexity: no losses given")
    mean = float(numpy.average(values, weights=weights))
    return math.exp(mean) if mean < 709.0 else math.inf  # exp overflows a float64 beyond ~709.78


def save_confusion_matrix_png(matrix, path: str | Path, class_names=None, title: str = "confusion matrix") -> bool:
    """Draw ``matrix`` (from ``confusion_matrix``) as a PNG with the counts in the cells.

    Returns False, with a warning that says so, when matplotlib is not installed (it is optional:
    ``pip install matplotlib``).
    """
    try:
        import matplotlib  # noqa: PLC0415 -- optional
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        warnings.warn(f"save_confusion_matrix_png: matplotlib is not installed, so {path} was not written "
                      "(pip install matplotlib)", stacklevel=2)
        return False
    matrix = numpy.asarray(matrix)
    names = [str(name) for name in class_names] if class_names is not None else [str(c) for c in range(len(matrix))]
    figure, axes = plt.subplots(figsize=(1.0 + 0.6 * len(names), 0.8 + 0.6 * len(names)))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            dark = matrix[i, j] > matrix.max() / 2
            axes.text(j, i, str(matrix[i, j]), ha="center", va="center", color="white" if dark else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True

"""gpt.metrics against values worked out by hand (scikit-learn is not a test dependency)."""
from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pytest

from gpt.metrics import (accuracy, classification_report, confusion_matrix, macro_f1, perplexity,
                         precision_recall_f1, save_confusion_matrix_png)

# Ten samples of three classes.
#   class 0: 4 samples, predicted 0, 0, 0, 1      -> TP 3, FN 1
#   class 1: 3 samples, predicted 1, 1, 2         -> TP 2, FN 1
#   class 2: 3 samples, predicted 2, 0, 0         -> TP 1, FN 2
# predicted 0 five times (3 right), 1 three times (2 right), 2 twice (1 right).
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 0, 1, 1, 1, 2, 2, 0, 0]


def test_accuracy():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(6 / 10)
    assert accuracy([1, 1], [1, 1]) == 1.0


def test_confusion_matrix_rows_are_true_classes():
    expected = np.array([[3, 1, 0],
                         [0, 2, 1],
                         [2, 0, 1]])
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, Y_PRED), expected)
    padded = confusion_matrix(Y_TRUE, Y_PRED, num_classes=4)  # a class with no samples: a zero row and column
    assert padded.shape == (4, 4) and padded[:3, :3].tolist() == expected.tolist() and padded[3].sum() == 0


def test_per_class_precision_recall_f1_and_macro_f1():
    scores = precision_recall_f1(Y_TRUE, Y_PRED)
    np.testing.assert_allclose(scores.precision, [3 / 5, 2 / 3, 1 / 2])
    np.testing.assert_allclose(scores.recall, [3 / 4, 2 / 3, 1 / 3])
    f1 = [2 * 0.6 * 0.75 / (0.6 + 0.75), 2 / 3, 2 * 0.5 * (1 / 3) / (0.5 + 1 / 3)]  # 2/3, 2/3, 2/5
    np.testing.assert_allclose(scores.f1, f1)
    np.testing.assert_allclose(scores.f1, [2 / 3, 2 / 3, 0.4])
    assert scores.support.tolist() == [4, 3, 3]
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx((2 / 3 + 2 / 3 + 0.4) / 3)


def test_a_class_never_predicted_scores_zero_not_nan():
    # always answering the majority class: accuracy 0.75, but macro-F1 only 0.43
    y_true, y_pred = [0, 0, 0, 1], [0, 0, 0, 0]
    scores = precision_recall_f1(y_true, y_pred)
    np.testing.assert_allclose(scores.precision, [0.75, 0.0])
    np.testing.assert_allclose(scores.recall, [1.0, 0.0])
    np.testing.assert_allclose(scores.f1, [6 / 7, 0.0])
    assert accuracy(y_true, y_pred) == 0.75 and macro_f1(y_true, y_pred) == pytest.approx(3 / 7)


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="of one length"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix([0, -1], [0, 1])
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="label 3 is outside the 3 classes"):
        confusion_matrix([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="no samples"):
        accuracy([], [])


def test_classification_report_shows_the_numbers():
    report = classification_report(Y_TRUE, Y_PRED, class_names=["ROMEO", "JULIET", "NURSE"])
    lines = report.splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "f1", "support"]
    assert lines[1].split() == ["ROMEO", "0.600", "0.750", "0.667", "4"]
    assert lines[3].split() == ["NURSE", "0.500", "0.333", "0.400", "3"]
    assert lines[4].split() == ["accuracy", "0.600", "10"]
    assert lines[5].split() == ["macro", "avg", "0.589", "0.583", "0.578", "10"]


def test_perplexity_is_exp_of_the_mean_nll():
    assert perplexity(math.log(65)) == pytest.approx(65)  # uniform over 65 characters
    assert perplexity([1.0, 3.0]) == pytest.approx(math.exp(2.0))
    assert perplexity([1.0, 4.0], weights=[2, 1]) == pytest.approx(math.exp(2.0))  # (2*1 + 4) / 3
    assert perplexity(0.0) == 1.0 and perplexity(1000.0) == math.inf
    with pytest.raises(ValueError, match="no losses"):
        perplexity([])


def test_confusion_matrix_png(tmp_path):
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed (it is optional)")
    path = tmp_path / "confusion.png"
    assert save_confusion_matrix_png(confusion_matrix(Y_TRUE, Y_PRED), path, ["a", "b", "c"]) is True
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_confusion_matrix_png_without_matplotlib_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an uninstalled package looks like to import
    path = tmp_path / "confusion.png"
    with pytest.warns(UserWarning, match="matplotlib is not installed, so .*confusion.png was not written"):
        assert save_confusion_matrix_png(confusion_matrix(Y_TRUE, Y_PRED), path) is False
    assert not path.exists()

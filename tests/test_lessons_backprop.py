"""Lesson 5 (makemore part 4, backprop by hand) runs with --quick and its gradients match the engine's."""
from __future__ import annotations

from conftest import require_data_file
from test_lessons import run_lesson


def test_backprop_ninja_lesson(tmp_path):
    names = require_data_file("names.txt")
    result = run_lesson("05_backprop_ninja.py", tmp_path, "--data", str(names))
    # Every hand-written gradient (26 step by step, the two fused formulas, the training
    # backward) against the engine's, in float64: rounding only, in quick mode too.
    assert result["max_abs_diff"] <= 1e-8
    assert result["fused_ce_diff"] <= 1e-8 and result["fused_bn_diff"] <= 1e-8
    assert result["max_abs_diff"] >= max(result["fused_ce_diff"], result["fused_bn_diff"])
    assert result["steps"] == 500
    # Trained with the hand backward alone: from about ln 27 = 3.3 (and worse) down.
    assert result["loss_start"] > 3.0
    assert result["train_loss"] < 2.7 and result["val_loss"] < 2.7

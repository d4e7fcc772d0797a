"""makemore's lessons 4 (batch norm) and 6 (WaveNet) run top to bottom with --quick."""
from __future__ import annotations

from conftest import require_data_file
from test_lessons import run_lesson


def test_batchnorm_lesson(tmp_path):
    names = require_data_file("names.txt")
    result = run_lesson("04_batchnorm.py", tmp_path, "--data", str(names))
    assert result["steps"] == 300
    # N(0, 1) output weights are confidently wrong; W2 * 0.01 starts at the uniform guess, -ln(1/27) = 3.2958
    assert result["initial_loss_before"] > 15
    assert abs(result["initial_loss_fixed"] - 3.2958) < 0.01
    assert result["saturated_before"] > 0.5 and result["saturated_after"] < 0.15  # the Kaiming init fixes tanh
    assert result["val_loss"] < result["initial_loss_fixed"] - 0.4
    assert abs(result["val_loss"] - result["train_loss"]) < 0.1
    assert result["batchnorm_diff"] < 1e-4  # the hand-written layer is nn.BatchNorm1d
    assert result["deep_saturated_bn"] < result["deep_saturated_plain"]


def test_wavenet_lesson(tmp_path):
    names = require_data_file("names.txt")
    result = run_lesson("06_wavenet.py", tmp_path, "--data", str(names))
    assert result["params"] == 76_579  # makemore part 5's count
    assert result["steps"] == 300
    assert result["val_loss"] < 3.2958 - 0.5  # from the uniform guess down
    assert abs(result["val_loss"] - result["train_loss"]) < 0.1
    assert result["batchnorm_3d_diff"] < 1e-4  # over dims (0, 1) == nn.BatchNorm1d on x.transpose(1, 2)

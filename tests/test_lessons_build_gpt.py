"""Lessons 9 (let's build GPT) and 10 (training experiments) run top to bottom with --quick."""
from __future__ import annotations

from conftest import require_data_file
from test_lessons import run_lesson  # --quick as a script, its result line as {key: number}

UNIFORM_LOSS = 4.1744  # ln(65): tiny Shakespeare's 65 characters, all equally likely


def test_build_gpt_lesson(tmp_path):
    text = require_data_file("tinyshakespeare.txt")
    result = run_lesson("09_gpt.py", tmp_path, "--data", str(text))
    stages = ["bigram", "one_head", "multi_head", "feed_forward", "residual", "layer_norm", "dropout"]
    assert set(f"{stage}_val" for stage in stages) <= set(result)
    # the parameter counts are exact in quick mode too (GPT-2 small with tied, position embeddings)
    assert result["gpt2_124m_params"] == 124_439_808
    assert result["gpt2_1558m_params"] == 1_557_611_200
    assert result["gpt3_175b_params"] == 174_604_259_328
    assert result["steps"] == 20
    assert result["val_loss"] == result["dropout_val"]
    assert result["bigram_val"] < result["initial_loss"]  # the table starts random, above ln(65)
    for stage in stages[1:]:  # every attention model has learned something in 20 steps
        assert result[f"{stage}_val"] < UNIFORM_LOSS - 0.5, (stage, result)


def test_training_experiments_lesson(tmp_path):
    text = require_data_file("tinyshakespeare.txt")
    result = run_lesson("10_training.py", tmp_path, "--data", str(text))
    assert result["best_lr"] in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
    assert abs(result["initial_dev_loss"] - UNIFORM_LOSS) < 0.1  # GPT-2's small init: nearly uniform
    assert result["sweep_best_dev"] < result["sweep_worst_dev"]
    assert result["sweep_best_dev"] < result["initial_dev_loss"] - 0.5
    assert result["best_val_loss"] < result["initial_dev_loss"] - 0.5
    assert result["best_dev_loss"] < result["initial_dev_loss"] - 0.5
    for key in ("batch8_dev", "batch32_dev", "batch128_dev", "high_lr_plain_dev", "high_lr_warmup_dev",
                "high_lr_clip_dev", "overfit_dev", "early_stop_dev"):
        assert result[key] < result["initial_dev_loss"], key
    assert 0 < result["early_stop_step"] <= 10 and 0 < result["final_steps"] <= 15
    assert {"overfit_gap", "dropout_gap", "weight_decay_gap", "overfit_slice_loss"} <= set(result)

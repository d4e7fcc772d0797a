"""Lessons 7 (the GPT tokenizer) and 8 (attention from scratch) run with --quick and reach their numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import require_data_file
from test_lessons import run_lesson


@pytest.fixture
def shakespeare():
    """tiny Shakespeare, with GPT-2's and GPT-4's vocabulary files beside it (the shared data folder)."""
    for name in ("gpt2/vocab.bpe", "gpt2/encoder.json", "cl100k_base.tiktoken"):
        require_data_file(name)
    return require_data_file("tinyshakespeare.txt")


@pytest.mark.parametrize("tiktoken", ["installed", "blocked"])
def test_tokenizer_lesson(tmp_path, monkeypatch, shakespeare, tiktoken):
    if tiktoken == "blocked":  # the lesson is library-side code: without tiktoken it checks the written-down ids
        blocker = tmp_path / "blocker"
        blocker.mkdir()
        (blocker / "tiktoken.py").write_text("raise ImportError('tiktoken is blocked for this test')\n")
        monkeypatch.setenv("PYTHONPATH", f"{blocker}:{__import__('os').environ.get('PYTHONPATH', '')}")
    else:
        pytest.importorskip("tiktoken")
    result = run_lesson("07_tokenizer.py", tmp_path, "--data", str(shakespeare))
    assert result["gpt2_parity"] == 1
    assert result["tiktoken_checked"] == (1 if tiktoken == "installed" else 0)
    assert result["plain_matches_library"] == 1  # the plain get_stats/merge loop learns the library's merges
    assert result["vocab_size"] == 512  # quick mode: 512 tokens on the first 100,000 characters
    assert 2.0 < result["compression"] < 2.5  # bytes per token on the held-out 10% (full run: 3.2)
    assert result["digits_gpt2"] == 4 and result["digits_gpt4"] == 4  # 123|45|678|90 and 123|456|789|0
    assert result["korean_vs_english_gpt2"] > result["korean_vs_english_gpt4"] > 2
    assert result["batch_tokens"] == 8 * 256 and result["windows"] > 100


def test_attention_lesson(tmp_path, shakespeare):
    result = run_lesson("08_attention.py", tmp_path, "--data", str(shakespeare))
    # Ours, built from primitive ops, against the engine's fused attention: float32 rounding only.
    assert result["sdpa_max_diff"] <= 1e-5 and result["grad_max_diff"] <= 1e-5
    assert result["model_attn_max_diff"] <= 1e-5
    head_size = result["head_size"]
    assert result["unscaled_std_ratio"] == pytest.approx(math.sqrt(head_size), rel=1e-3)
    assert result["unscaled_std"] == pytest.approx(math.sqrt(head_size), rel=0.05)  # Var(q.k) = d
    assert result["scaled_std"] == pytest.approx(1.0, rel=0.05)
    assert result["peak_unscaled"] > 5 * result["peak_scaled"]  # unscaled softmax is nearly one-hot
    assert result["steps"] == 5 and result["loss_end"] < result["loss_start"]
    assert result["loss_start"] == pytest.approx(math.log(65), abs=0.1)  # 65 characters, uniform at first
    assert np.isfinite(result["val_loss"]) and 0 < result["previous_token_weight"] <= 1


def test_attention_lesson_reads_a_checkpoint(tmp_path, shakespeare):
    from gpt.checkpoint import save_checkpoint
    from gpt.data import CharTokenizer
    from gpt.model import GPT, GPTConfig

    tokenizer = CharTokenizer.from_text(shakespeare.read_text(encoding="utf-8"))
    model = GPT(GPTConfig(tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(tmp_path / "run", "last", model=model, model_config=model.config.to_dict(),
                    tokenizer=tokenizer.to_dict(), train_state={"iteration": 0})
    result = run_lesson("08_attention.py", tmp_path, "--data", str(shakespeare), "--checkpoint", str(tmp_path / "run"))
    assert result["steps"] == 0  # loaded, not trained
    assert 0 < result["previous_token_weight"] <= 1  # maps of the loaded model (1 layer, 2 heads)
    assert result["sdpa_max_diff"] <= 1e-5


def test_result_line_keeps_tiny_differences(capsys):
    import _common

    line = _common.report(sdpa_max_diff=2.98e-07, zero=0.0, loss=2.45, steps=5)
    assert line == "result: sdpa_max_diff=2.98e-07 zero=0.0000 loss=2.4500 steps=5"
    assert float(line.split()[1].split("=")[1]) == 2.98e-07  # what run_lesson reads back
    capsys.readouterr()


def test_shakespeare_and_checkpoint_flags(monkeypatch, tmp_path):
    import _common

    monkeypatch.setattr("sys.argv", ["lesson", "--checkpoint", str(tmp_path / "run")])
    args = _common.lesson_args("test", checkpoint="out-shakespeare")
    assert args.checkpoint == tmp_path / "run"
    monkeypatch.setattr("sys.argv", ["lesson"])
    assert _common.lesson_args("test", checkpoint="out-shakespeare").checkpoint is None  # the lesson looks there
    assert not hasattr(_common.lesson_args("test"), "checkpoint")
    monkeypatch.setenv("TINYGRAD_LITE_DATA", str(tmp_path))
    (tmp_path / "tinyshakespeare.txt").write_text("First Citizen:\n", encoding="utf-8")
    args.data = None
    assert _common.shakespeare_path(args) == tmp_path / "tinyshakespeare.txt"  # the shared data folder
    args.data = tmp_path / "other.txt"
    assert _common.shakespeare_path(args) == tmp_path / "other.txt"  # --data wins

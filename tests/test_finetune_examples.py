"""The two fine-tuning examples run with --quick from a tiny checkpoint trained here, and end with
their result line; finetune_classify.py's --help gives the GPT-2 124M LoRA count (checked against
built models in tests/test_lora.py)."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import PROJECT_ROOT, require_data_file
from gpt.train import TrainConfig, train


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A one-layer char GPT trained for a few steps on tiny Shakespeare: (checkpoint folder, text path)."""
    data = require_data_file("tinyshakespeare.txt")
    folder = tmp_path_factory.mktemp("pretrained")
    train(TrainConfig(data=str(data), cache_dir=str(folder / "cache"), out_dir=str(folder / "out"), n_layer=1,
                      n_head=2, n_embd=16, block_size=64, batch_size=4, max_iters=4, warmup_iters=1,
                      eval_interval=2, eval_iters=1, final_eval_iters=1, sample_tokens=0, progress=False))
    return folder / "out", data


def result_line(output: str) -> dict[str, float]:
    last = output.strip().splitlines()[-1]
    assert last.startswith("result: "), f"no result line at the end: {last!r}"
    return {key: float(value) for key, value in (pair.split("=") for pair in last.split()[1:])}


@pytest.mark.timeout(120)
def test_finetune_classify_quick(pretrained, capsys):
    folder, data = pretrained
    assert load_example("finetune_classify").main(["--quick", "--init-from", str(folder), "--data", str(data)]) == 0
    result = result_line(capsys.readouterr().out)
    assert set(result) == {"scratch_acc", "full_acc", "frozen_acc", "lora_acc", "lora_trainable_frac", "chance",
                           "majority"}
    assert result["chance"] == 0.125 and 0 < result["majority"] < 1
    assert all(0 <= result[f"{method}_acc"] <= 1 for method in ("scratch", "full", "frozen", "lora"))
    assert 0 < result["lora_trainable_frac"] < 0.5


@pytest.mark.timeout(120)
def test_finetune_multiple_choice_quick(pretrained, capsys):
    folder, data = pretrained
    example = load_example("finetune_multiple_choice")
    assert example.main(["--quick", "--init-from", str(folder), "--data", str(data)]) == 0
    result = result_line(capsys.readouterr().out)
    assert set(result) == {"zero_shot_acc", "zero_shot_norm_acc", "finetuned_acc", "chance"}
    assert result["chance"] == 0.2
    assert all(0 <= value <= 1 for value in result.values())


def test_help_prints_the_gpt2_small_lora_count(capsys):
    with pytest.raises(SystemExit):
        load_example("finetune_classify").main(["--help"])
    assert "trains 2,360,832 of 126,800,640 parameters (1.86%)" in capsys.readouterr().out

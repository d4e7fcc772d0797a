"""The two fine-tuning examples run with --quick from a tiny checkpoint trained here, and end with
their result line; the GPT-2 124M LoRA count in finetune_classify.py's --help matches a real count."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import PROJECT_ROOT, require_data_file
from gpt import GPTConfig
from gpt.freezing import trainable_counts
from gpt.heads import GPTForSequenceClassification
from gpt.lora import apply_lora
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


def test_gpt2_small_lora_count_matches_the_modules():
    """The --help figure comes from a formula; the same formula on a small GPT-2-shaped model
    must give what apply_lora really adds."""
    example = load_example("finetune_classify")
    trainable, total = example.gpt2_small_lora_counts(r=16, num_labels=2)
    assert total - trainable == 124_439_808  # the frozen base: GPT-2 small as Hugging Face counts it
    # the same formula at a small size against a real model with LoRA applied
    small = (32, 2, 50, 16)
    model = GPTForSequenceClassification(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32),
                                         num_labels=2)
    apply_lora(model, r=16, alpha=32, modules_to_save=("score",))
    assert trainable_counts(model) == example.gpt2_small_lora_counts(r=16, num_labels=2, sizes=small)
    assert trainable / total < 0.05

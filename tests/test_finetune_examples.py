"""The two fine-tuning examples run with --quick from a tiny checkpoint trained here, and end with
their result line; finetune_classify.py's --help gives the GPT-2 124M LoRA count (checked against
built models in tests/test_lora.py)."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

import gpt.train
import tinygrad_lite as tl
from conftest import PROJECT_ROOT, require_data_file
from gpt import GPT, GPTConfig
from gpt.finetune import BASE_MODEL_FLAGS, ensure_pretrained, option_log_likelihoods
from gpt.tasks import Question
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


def test_zero_shot_scores_summed_per_character_and_pmi():
    """The three zero-shot rules pick the argmax of their own score, computed here from the option log-likelihoods."""
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    rng = np.random.default_rng(0)
    encoded = [(rng.integers(1, 12, 4).tolist(), [rng.integers(1, 12, n).tolist() for n in (1, 2, 3, 4, 5)])
               for _ in range(20)]
    questions = [Question("", ["x" * len(option) for option in options], label=i % 5)
                 for i, (_, options) in enumerate(encoded)]
    no_context = [11]
    accuracies = load_example("finetune_multiple_choice").zero_shot(model, questions, encoded, 0, 16, no_context,
                                                                     batch=6)
    pairs = [(context, option) for context, options in encoded for option in options]
    scores = option_log_likelihoods(model, pairs, 0, 16).reshape(20, 5)
    alone = option_log_likelihoods(model, [(no_context, option) for _, option in pairs], 0, 16).reshape(20, 5)
    lengths = np.array([[1, 2, 3, 4, 5]] * 20)
    labels = np.arange(20) % 5
    expected = [float(((chosen).argmax(1) == labels).mean()) for chosen in (scores, scores / lengths, scores - alone)]
    assert accuracies == pytest.approx(expected)
    assert len(set((scores - alone).argmax(1)) | set(scores.argmax(1))) > 1  # not a degenerate test


def test_ensure_pretrained_trains_the_base_model_only_when_missing(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(gpt.train, "train", lambda config: trained.append(config))
    assert ensure_pretrained(tmp_path / "base", tmp_path / "text.txt") == tmp_path / "base"
    (config,) = trained
    assert config.tokenizer == BASE_MODEL_FLAGS["tokenizer"] == "bpe:2048"
    assert (config.n_layer, config.n_embd, config.max_iters) == (4, 128, 5000)  # nanoGPT's network, 5,000 steps
    assert config.out_dir == str(tmp_path / "base") and config.data == str(tmp_path / "text.txt")


def test_ensure_pretrained_keeps_an_existing_checkpoint(pretrained, monkeypatch):
    monkeypatch.setattr(gpt.train, "train", lambda config: pytest.fail("trained although a checkpoint exists"))
    folder, data = pretrained
    assert ensure_pretrained(folder, data) == folder


@pytest.mark.parametrize("name, flags", [("finetune_classify", ["--lr", "0"]), ("finetune_classify", ["--steps", "0"]),
                                         ("finetune_classify", ["--num-speakers", "1"]),
                                         ("finetune_multiple_choice", ["--lr", "nan"]),
                                         ("finetune_multiple_choice", ["--batch-size", "-1"])])
def test_impossible_flags_are_refused_when_parsed(name, flags, capsys):
    with pytest.raises(SystemExit) as stopped:
        load_example(name).main(flags)
    assert stopped.value.code == 2 and flags[0] in capsys.readouterr().err

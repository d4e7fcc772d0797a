"""Training a GPT: data, checkpoints, the loop, resuming, Ctrl-C, the example scripts, and their errors.

Everything runs offline on a slice of tiny Shakespeare with tiny models."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
from pathlib import Path

import numpy as np
import pytest

import tinygrad_lite as tl
import gpt.checkpoint as checkpoint_module
import gpt.train
from gpt import GPT, GPTConfig
from gpt.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from gpt.data import (CharTokenizer, DataError, TokenData, download_tiny_shakespeare, load_text, prepare_data,
                      tokenizer_from_dict)
from gpt.sample import encode_prompt, load_for_sampling, sample_text
from gpt.train import TrainConfig, config_for_resume, train

ROOT = Path(__file__).resolve().parent.parent


def tiny_config(tmp_path: Path, data: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(data), cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "out"),
                    n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=4, max_iters=20, warmup_iters=2,
                    eval_interval=10, eval_iters=2, final_eval_iters=2, sample_tokens=10, progress=False)
    settings.update(overrides)
    return TrainConfig(**settings)


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------- data

class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_uses_the_opener_once_then_the_cache(tmp_path):
    calls = []

    def opener(url, timeout):
        calls.append(url)
        return FakeResponse(b"First Citizen:\nBefore we proceed\n")

    path = download_tiny_shakespeare(tmp_path, opener=opener)
    assert path.read_text() == "First Citizen:\nBefore we proceed\n" and len(calls) == 1
    assert download_tiny_shakespeare(tmp_path, opener=opener) == path and len(calls) == 1
    assert "raw.githubusercontent.com/karpathy/char-rnn" in calls[0]


def test_download_from_a_file_url(tmp_path, small_text):
    path = download_tiny_shakespeare(tmp_path / "cache", url=small_text.as_uri())
    assert path.read_text(encoding="utf-8") == small_text.read_text(encoding="utf-8")


def test_no_network_and_no_cache_says_how_to_pass_data(tmp_path):
    def offline(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")

    with pytest.raises(DataError, match="--data PATH") as error:
        prepare_data(None, cache_dir=tmp_path, opener=offline)
    assert "could not download" in str(error.value)
    assert not (tmp_path / "tinyshakespeare.txt").exists()
    with pytest.raises(DataError, match="empty"):
        download_tiny_shakespeare(tmp_path, opener=lambda url, timeout: FakeResponse(b""))


def test_missing_or_empty_data_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_text(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="is empty"):
        prepare_data(tmp_path / "empty.txt", cache_dir=tmp_path)


def test_char_data_is_split_encoded_and_cached(small_text, tmp_path):
    data, tokenizer, _ = prepare_data(small_text, cache_dir=tmp_path)
    text = small_text.read_text(encoding="utf-8")
    assert data.train.dtype == np.uint16 and len(data.train) + len(data.val) == len(text)
    assert len(data.train) == int(0.9 * len(text))
    assert tokenizer.decode(data.val) == text[len(data.train):]
    assert len(list(tmp_path.glob("tokens-*.npy"))) == 2
    again, _, _ = prepare_data(small_text, cache_dir=tmp_path)  # from the cache
    assert np.array_equal(again.train, data.train) and np.array_equal(again.val, data.val)

    x, y = data.get_batch("train", 5, 8, np.random.default_rng(0))
    assert x.shape == y.shape == (5, 8) and np.array_equal(x[:, 1:], y[:, :-1])
    with pytest.raises(DataError, match="block-size"):
        TokenData(data.train, data.val[:5]).check_block_size(8)


def test_char_tokenizer_out_of_vocabulary_error():
    tokenizer = CharTokenizer.from_text("hello world")
    assert tokenizer.decode(tokenizer.encode("hello")) == "hello"
    with pytest.raises(ValueError, match=r"'Z' \(U\+005A\) at position 2"):
        tokenizer.encode("heZ")
    assert tokenizer_from_dict(tokenizer.to_dict()).chars == tokenizer.chars


def test_bpe_and_gpt2_tokenizers(small_text, tmp_path, gpt2_files):
    data, tokenizer, _ = prepare_data(small_text, "bpe:300", cache_dir=tmp_path)
    assert tokenizer.vocab_size == 300 and len(data.train) < 0.9 * 60_000
    assert tokenizer_from_dict(tokenizer.to_dict()).encode("ROMEO: hi") == tokenizer.encode("ROMEO: hi")
    data, tokenizer, _ = prepare_data(small_text, "gpt2", cache_dir=tmp_path, gpt2_dir=gpt2_files[0].parent)
    assert tokenizer.vocab_size == 50257 and tokenizer.encode("Hello world") == [15496, 995]
    with pytest.raises(DataError, match="bpe:N"):
        prepare_data(small_text, "bpe:x", cache_dir=tmp_path)
    with pytest.raises(DataError, match="unknown --tokenizer"):
        prepare_data(small_text, "words", cache_dir=tmp_path)


# -------------------------------------------------------------- checkpoints

def make_checkpoint(out_dir: Path, iteration: int, seed: int = 0):
    tl.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    optimizer = model.configure_optimizer(lr=1e-3, weight_decay=0.1)
    _, loss = model(np.ones((2, 8), dtype=np.int64), targets=np.zeros((2, 8), dtype=np.int64))
    loss.backward()
    optimizer.step()
    save_checkpoint(out_dir, "last", model=model, model_config=model.config.to_dict(),
                    tokenizer=CharTokenizer("abcdefghijk").to_dict(),
                    train_state={"iteration": iteration, "rng_state": tl.backend.get_rng_state()}, optimizer=optimizer)
    return model, optimizer


def test_checkpoint_round_trip(tmp_path):
    model, optimizer = make_checkpoint(tmp_path, iteration=7)
    saved = load_checkpoint(tmp_path)
    assert saved.train_state["iteration"] == 7
    restored = load_model(saved)
    for (name, a), (_, b) in zip(model.named_parameters(), restored.named_parameters()):
        assert np.array_equal(a.numpy(), b.numpy()), name
    fresh = restored.configure_optimizer(lr=1e-3, weight_decay=0.1)
    fresh.load_state_dict(saved.optimizer_state)
    assert fresh.state_dict()["state"][0]["step"] == 1
    assert np.array_equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert len(list(tmp_path.glob("last-*.safetensors"))) == 1
    assert "pickle" not in (tmp_path / "last.json").read_text()


def test_crash_during_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):

    old_model, _ = make_checkpoint(tmp_path, iteration=1, seed=0)

    def crash_writing_json(path, data):  # die half-way through writing the new last.json
        (path.parent / f".{path.name}.partial.tmp").write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(checkpoint_module, "write_atomically", crash_writing_json)
    with pytest.raises(KeyboardInterrupt):
        make_checkpoint(tmp_path, iteration=2, seed=1)
    monkeypatch.undo()

    def crash_in_rename(source, target):  # die before the weights file gets its name
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash_in_rename)
    with pytest.raises(OSError):
        make_checkpoint(tmp_path, iteration=3, seed=2)
    monkeypatch.undo()

    saved = load_checkpoint(tmp_path)
    assert saved.train_state["iteration"] == 1
    assert np.array_equal(load_model(saved).wte.weight.numpy(), old_model.wte.weight.numpy())
    make_checkpoint(tmp_path, iteration=4)  # the next good save cleans up what the crashes left
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("last-")) == ["last.json"]
    assert len(list(tmp_path.glob("last-*.safetensors"))) == 1


def test_corrupted_or_incompatible_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    make_checkpoint(tmp_path, iteration=1)
    weights = next(tmp_path.glob("last-*.safetensors"))
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 2])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path)
    weights.write_bytes(original)

    document = json.loads((tmp_path / "last.json").read_text())
    document["model_config"]["n_embd"] = 16
    (tmp_path / "last.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="changed after it was saved"):  # the JSON's own checksum
        load_checkpoint(tmp_path)
    document["json_sha256"] = checkpoint_module._document_sha256(document)  # a consistent but wrong file
    (tmp_path / "last.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(load_checkpoint(tmp_path))
    document["version"] = 99
    (tmp_path / "last.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path)
    (tmp_path / "last.json").write_text('{"format": "tinygrad_lite-gpt-che')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path)


# ----------------------------------------------------------------- training

def test_150_steps_drive_the_loss_down(small_text, tmp_path):
    config = tiny_config(tmp_path, small_text, n_layer=2, n_embd=48, block_size=32, batch_size=8, max_iters=150,
                         lr=3e-3, min_lr=3e-4, warmup_iters=10, eval_interval=50, eval_iters=4, final_eval_iters=20)
    result = train(config)
    assert result.iterations == 150 and not result.interrupted
    assert result.train_losses[0] > 4.0                                # ln(59 characters) = 4.08 at the start
    assert result.final_val_loss < 2.85 and result.final_train_loss < 2.85  # (2.68 and 2.63 when written)
    out = Path(config.out_dir)
    assert {"last.json", "best.json", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    entries = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(e["kind"] == "train" for e in entries) == 150
    assert [e["iter"] for e in entries if e["kind"] == "eval"] == [0, 50, 100, 150]
    assert result.sample and result.ms_per_iter > 0
    try:
        import matplotlib  # noqa: F401
        assert (out / "loss.png").stat().st_size > 1000
    except ImportError:
        pass


def test_evaluating_several_batches_per_forward_gives_the_one_by_one_losses(small_text, tmp_path, monkeypatch):
    data, tokenizer, _ = prepare_data(small_text, "char", tmp_path / "cache")
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16))
    together = gpt.train.estimate_loss(model, data, 4, 8, 7, np.random.default_rng(3))  # 7 batches per forward
    monkeypatch.setattr(gpt.train, "EVAL_LOGITS_PER_FORWARD", 1)  # one batch per forward
    one_by_one = gpt.train.estimate_loss(model, data, 4, 8, 7, np.random.default_rng(3))
    assert together.keys() == one_by_one.keys() == {"train", "val"}
    for split in together:
        assert abs(together[split] - one_by_one[split]) < 1e-5, (split, together, one_by_one)
        assert 3.0 < together[split] < 5.0  # an untrained model: about ln(vocabulary)


def test_the_nanogpt_preset_is_nanogpts_recipe_and_the_default_is_ours():
    nanogpt = gpt.train.defaults_for_device("cpu", "nanogpt")
    expected = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, max_iters=2000, lr=1e-3,
                    min_lr=1e-4, warmup_iters=100, beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
                    dropout=0.0, bias=False, gradient_accumulation_steps=1, eval_interval=250, eval_iters=20)
    assert {name: nanogpt[name] for name in expected} == expected
    assert TrainConfig(**nanogpt).lr_decay_iters == 2000
    assert gpt.train.defaults_for_device("cpu") == {**{f: getattr(TrainConfig(), f) for f in expected},
                                                    **gpt.train.defaults_for_device("cpu")}
    gpu = gpt.train.defaults_for_device("cuda")
    assert (gpu["n_layer"], gpu["n_embd"], gpu["block_size"], gpu["batch_size"], gpu["lr"]) == (6, 384, 256, 64, 1e-3)
    assert gpt.train.defaults_for_device("cuda", "nanogpt") == gpu
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        gpt.train.defaults_for_device("cpu", "fast")
    script = load_example("train_shakespeare")
    config = script.config_from_args(script.build_parser().parse_args(["--preset", "nanogpt", "--lr", "2e-3"]))
    assert (config.lr, config.min_lr, config.n_embd, config.batch_size) == (2e-3, 1e-4, 128, 12)  # flags win
    with pytest.raises(SystemExit):
        script.main(["--preset", "nanogpt", "--resume"])


def scripted_losses(monkeypatch, val_losses: list[float]) -> None:
    """Make every evaluation of gpt.train report the next of ``val_losses`` (for train and val)."""
    remaining = iter(val_losses)

    def estimate_loss(*args, **kwargs):
        loss = next(remaining)
        return {"train": loss, "val": loss}

    monkeypatch.setattr(gpt.train, "estimate_loss", estimate_loss)


def test_early_stopping_after_patience_evals_keeps_the_best_checkpoint(small_text, tmp_path, monkeypatch, capsys):
    # evals at 0, 10, 20, 30: the best is at 10, and 20 and 30 do not beat it: patience 2 stops at 30
    scripted_losses(monkeypatch, [3.0, 2.5, 2.6, 2.7, 2.8])  # the last one: the final evaluation
    config = tiny_config(tmp_path, small_text, max_iters=100, eval_interval=10, patience=2)
    result = train(config)
    assert result.stopped_early and result.iterations == 30 and result.best_val_loss == 2.5
    out = capsys.readouterr().out
    assert "iter 10: train loss 2.5000, val loss 2.5000 (perplexity 12.18)" in out
    assert "early stopping: no better val loss in 2 evals (best 2.5000, perplexity 12.18)" in out
    assert load_checkpoint(config.out_dir, "best").train_state["iteration"] == 10
    assert load_checkpoint(config.out_dir, "last").train_state["iteration"] == 30
    evals = [json.loads(line) for line in (Path(config.out_dir) / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "eval"]
    assert evals[1]["val_perplexity"] == pytest.approx(np.exp(2.5))

    # the count of evals without improvement is saved: one more bad eval after resuming stops again
    scripted_losses(monkeypatch, [2.9, 3.0])
    resumed = train(config_for_resume(config.out_dir, {}))
    assert resumed.stopped_early and resumed.iterations == 40


def test_without_patience_training_runs_to_the_end(small_text, tmp_path, monkeypatch):
    scripted_losses(monkeypatch, [3.0, 3.1, 3.2, 3.3])
    result = train(tiny_config(tmp_path, small_text, max_iters=30, eval_interval=10))
    assert not result.stopped_early and result.iterations == 30


def test_resume_continues_exactly(small_text, tmp_path):
    overrides = dict(dropout=0.1, lr_decay_iters=20)  # dropout: its random masks must continue too
    whole = train(tiny_config(tmp_path / "a", small_text, **overrides))
    first = train(tiny_config(tmp_path / "b", small_text, max_iters=13, **overrides))
    assert first.iterations == 13
    resumed = train(config_for_resume(tmp_path / "b" / "out", {"max_iters": 20}))
    assert first.train_losses + resumed.train_losses == whole.train_losses
    assert resumed.final_val_loss == whole.final_val_loss


def test_ctrl_c_saves_and_resume_matches(small_text, tmp_path, monkeypatch):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach only the main thread")
    whole = train(tiny_config(tmp_path / "a", small_text))
    calls = {"train": 0}
    original = TokenData.get_batch

    def get_batch_then_ctrl_c(self, split, *args):
        if split == "train":
            calls["train"] += 1
            if calls["train"] == 7:
                # a real Ctrl-C during iteration 4 (the eval at iteration 0 drew 2 train batches)
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, split, *args)

    monkeypatch.setattr(TokenData, "get_batch", get_batch_then_ctrl_c)
    stopped = train(tiny_config(tmp_path / "b", small_text))
    monkeypatch.undo()
    assert stopped.interrupted and stopped.iterations == 5  # iteration 4 finished, then it stopped
    assert load_checkpoint(tmp_path / "b" / "out").train_state["iteration"] == 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = train(config_for_resume(tmp_path / "b" / "out", {}))
    assert stopped.train_losses + resumed.train_losses == whole.train_losses


def test_resume_with_a_different_block_size_or_vocabulary_is_refused(small_text, tmp_path):
    train(tiny_config(tmp_path, small_text, max_iters=2))
    out = Path(tmp_path / "out")
    with pytest.raises(CheckpointError, match="block_size: checkpoint 8, this run 16"):
        train(config_for_resume(out, {"block_size": 16}))
    other = tmp_path / "other.txt"
    other.write_text("only lowercase letters here " * 200)
    with pytest.raises(CheckpointError, match="vocabulary"):
        train(config_for_resume(out, {"data": str(other)}))
    assert load_checkpoint(out).train_state["iteration"] == 2  # nothing was overwritten


# -------------------------------------------------------- sampling and CLIs

def test_sampling_from_a_checkpoint(small_text, tmp_path):
    config = tiny_config(tmp_path, small_text, max_iters=5)
    train(config)
    model, tokenizer = load_for_sampling(config.out_dir)
    sample = sample_text(model, tokenizer, "ROMEO:", max_new_tokens=30, seed=3)
    assert sample.text.startswith("ROMEO:") and sample.new_tokens == 30
    assert sample_text(model, tokenizer, "ROMEO:", max_new_tokens=30, seed=3).text == sample.text
    assert sample_text(model, tokenizer, "ROMEO:", 30, seed=3, use_cache=False).text == sample.text
    assert sample_text(model, tokenizer, "ROMEO:", 30, seed=3, decoder="folded").text == sample.text
    with pytest.raises(ValueError, match="not in the vocabulary"):
        encode_prompt(tokenizer, "ROMEO: \u00e9")


def test_example_scripts(small_text, tmp_path, capsys):
    train_script, sample_script = load_example("train_shakespeare"), load_example("sample")
    out = tmp_path / "out"
    common = ["--data", str(small_text), "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
              "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "4",
              "--eval-interval", "5", "--eval-iters", "2", "--final-eval-iters", "2", "--warmup-iters", "1",
              "--sample-tokens", "10", "--no-progress"]
    assert train_script.main(common + ["--max-iters", "4"]) == 0
    assert "final loss (2 batches per split)" in capsys.readouterr().out
    assert train_script.main(["--out-dir", str(out), "--resume", "--max-iters", "6", "--no-progress",
                              "--cache-dir", str(tmp_path / "cache")]) == 0
    assert load_checkpoint(out).train_state["iteration"] == 6
    assert train_script.main(["--out-dir", str(out), "--resume", "--block-size", "16",
                              "--cache-dir", str(tmp_path / "cache")]) == 1
    assert "block_size" in capsys.readouterr().err
    assert train_script.main(["--data", str(tmp_path / "missing.txt"), "--out-dir", str(tmp_path / "o2")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()  # a failed start leaves no empty out-dir

    assert sample_script.main(["--out-dir", str(out), "--prompt", "ROMEO:", "--max-new-tokens", "20"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    assert sample_script.main(["--out-dir", str(out), "--prompt", "ROMEO:", "--max-new-tokens", "20",
                               "--compare-cache"]) == 0
    captured = capsys.readouterr()
    texts = captured.out.split("ROMEO:")[1:]  # modules, folded, no cache: the same text
    assert len(texts) == 3 and texts[0] == texts[1] == texts[2] and "decoder folded" in captured.err
    assert sample_script.main(["--out-dir", str(out), "--prompt", "\u00e9"]) == 1
    assert "not in the vocabulary" in capsys.readouterr().err
    (out / "last.json").write_text("{ broken")
    assert sample_script.main(["--out-dir", str(out)]) == 1
    assert "corrupted" in capsys.readouterr().err

    defaults = train_script.config_from_args(train_script.build_parser().parse_args([]))
    assert (defaults.n_layer, defaults.n_head, defaults.n_embd, defaults.block_size, defaults.batch_size,
            defaults.max_iters, defaults.lr, defaults.min_lr, defaults.lr_decay_iters, defaults.warmup_iters,
            defaults.dropout, defaults.eval_interval, defaults.eval_iters, defaults.final_eval_iters) == \
        (1, 4, 128, 64, 12, 5000, 4e-3, 4e-4, 5000, 100, 0.0, 500, 20, 200)  # docs/recipe.md


def test_float16_training_and_int8_sampling_from_the_example_scripts(small_text, tmp_path, capsys):
    train_script, sample_script = load_example("train_shakespeare"), load_example("sample")
    out = tmp_path / "out"
    assert train_script.main(["--data", str(small_text), "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                              "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8",
                              "--batch-size", "4", "--max-iters", "6", "--eval-interval", "3", "--eval-iters", "2",
                              "--final-eval-iters", "2", "--warmup-iters", "1", "--sample-tokens", "10",
                              "--no-progress", "--dtype", "float16"]) == 0
    saved = load_checkpoint(out)
    assert saved.train_state["train_config"]["dtype"] == "float16"
    model = load_model(saved)
    assert all(p.dtype == tl.float32 for p in model.parameters())  # float32 master weights
    entries = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in entries if e["kind"] == "train"]
    assert len(losses) == 6 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    capsys.readouterr()
    assert sample_script.main(["--out-dir", str(out), "--prompt", "ROMEO:", "--max-new-tokens", "20", "--int8"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("ROMEO:") and "int8 weights:" in captured.err
    with pytest.raises(SystemExit):
        sample_script.main(["--out-dir", str(out), "--int8", "--decoder", "folded"])
    assert "--int8 runs the modules decoder" in capsys.readouterr().err


def test_nothing_imports_torch():
    code = (
        "import runpy, sys\n"
        "sys.modules['torch'] = None  # `import torch` now raises ImportError\n"
        "sys.modules['transformers'] = None\n"
        "import gpt, gpt.model, gpt.generation, gpt.pretrained, gpt.data, gpt.checkpoint, gpt.train, gpt.sample\n"
        "for script in ('examples/train_shakespeare.py', 'examples/sample.py'):\n"
        "    sys.argv = [script, '--help']\n"
        "    try:\n"
        "        runpy.run_path(script, run_name='__main__')\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, exit.code\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")

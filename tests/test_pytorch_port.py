"""PyTorch code runs on tinygrad_lite with only its imports changed.

``torch_style_models.py`` is PyTorch code (a small GPT in nanoGPT's style, and makemore's
Bigram, MLP, RNN, GRU and BoW models, plus a batch-norm MLP). It is loaded twice: once as
it is, once with its three import lines pointed at tinygrad_lite. With the same weights,
both must give the same logits, loss, gradients, optimizer step and generated tokens.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import tinygrad_lite as tl

SOURCE_FILE = Path(__file__).with_name("torch_style_models.py")
TORCH_IMPORTS = "import torch\nimport torch.nn as nn\nfrom torch.nn import functional as F\n"
OUR_IMPORTS = "import tinygrad_lite as torch\nimport tinygrad_lite.nn as nn\nfrom tinygrad_lite.nn import functional as F\n"


def load(imports: str) -> types.ModuleType:
    source = SOURCE_FILE.read_text()
    assert source.count(TORCH_IMPORTS) == 1, "torch_style_models.py must keep its three import lines together"
    module = types.ModuleType(f"torch_style_models_{'ours' if imports == OUR_IMPORTS else 'torch'}")
    sys.modules[module.__name__] = module  # (dataclasses look their module up there)
    exec(compile(source.replace(TORCH_IMPORTS, imports), str(SOURCE_FILE), "exec"), module.__dict__)
    return module


THEIRS, OURS = load(TORCH_IMPORTS), load(OUR_IMPORTS)


def test_the_port_changes_only_the_imports():
    assert OURS.torch is tl and OURS.nn is tl.nn and OURS.F is tl.nn.functional
    assert THEIRS.torch is torch


def build(name: str, module: types.ModuleType, **config):
    """The model ``name`` from ``module``, built the same way in both worlds."""
    if name.startswith("gpt"):
        return module.GPT(module.GPTConfig(flash=name == "gpt", **config))
    char_config = module.CharConfig(**config)
    if name in ("rnn", "gru"):
        return module.RNN(char_config, name)
    return {"bigram": module.Bigram, "mlp": module.MLP, "bow": module.BoW,
            "batchnorm_mlp": module.BatchNormMLP}[name](char_config)


def twins(name: str, **config):
    """(torch model, our model) with torch's weights copied into ours."""
    torch.manual_seed(0)
    theirs = build(name, THEIRS, **config)
    ours = build(name, OURS, **config)
    theirs_state = theirs.state_dict()
    assert sorted(ours.state_dict()) == sorted(theirs_state)  # the same names, buffers included
    ours.load_state_dict({key: tl.tensor(value.detach().numpy().copy()) for key, value in theirs_state.items()})
    return theirs, ours


def batch(name: str, seed: int = 1):
    """(idx, targets) as numpy: (4, T) token ids, with a few targets -1 (ignored) for the sequence models."""
    rng = np.random.default_rng(seed)
    if name == "batchnorm_mlp":
        return rng.integers(0, 9, (6, 5)), rng.integers(0, 9, 6)
    vocab, time = (11, 16) if name.startswith("gpt") else (9, 5)
    idx, targets = rng.integers(0, vocab, (4, time)), rng.integers(0, vocab, (4, time))
    targets[0, :2] = -1
    return idx, targets


def assert_close(ours, theirs, what: str, rtol: float = 2e-4, atol: float = 2e-6):
    ours = ours.numpy() if isinstance(ours, tl.Tensor) else np.asarray(ours)
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch's {theirs.shape}"
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, err_msg=what)


def optimizer_for(name: str, model, module):
    if name.startswith("gpt"):
        return model.configure_optimizers(weight_decay=0.1, learning_rate=1e-2, betas=(0.9, 0.99), device_type="cpu")
    return module.torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01, betas=(0.9, 0.99), eps=1e-8)


MODELS = ["gpt", "gpt_matrix_attention", "bigram", "mlp", "rnn", "gru", "bow", "batchnorm_mlp"]


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_and_one_adamw_step_match_torch(name):
    theirs, ours = twins(name)
    idx, targets = batch(name)
    logits_t, loss_t = theirs(torch.tensor(idx), torch.tensor(targets))
    logits, loss = ours(tl.tensor(idx), tl.tensor(targets))
    assert_close(logits, logits_t, f"{name} logits")
    assert_close(loss, loss_t, f"{name} loss")

    optimizer_t, optimizer = optimizer_for(name, theirs, THEIRS), optimizer_for(name, ours, OURS)
    optimizer_t.zero_grad(set_to_none=True)
    optimizer.zero_grad(set_to_none=True)
    loss_t.backward()
    loss.backward()
    ours_params = dict(ours.named_parameters())
    theirs_params = dict(theirs.named_parameters())
    assert sorted(ours_params) == sorted(theirs_params)
    for key, p in theirs_params.items():
        assert_close(ours_params[key].grad, p.grad, f"{name} grad of {key}", atol=1e-6)
    optimizer_t.step()
    optimizer.step()
    for key, p in theirs_params.items():
        # (atol: the key bias's gradient is 0 in exact arithmetic -- softmax ignores a shift of all scores --
        # so both libraries hold rounding noise there, which Adam's normalisation turns into ~1e-6 steps)
        assert_close(ours_params[key], p, f"{name} {key} after one AdamW step", atol=1e-5)
    for key, buffer in theirs.named_buffers():  # batch norm's running statistics
        assert_close(dict(ours.named_buffers())[key], buffer, f"{name} buffer {key}")


def test_batchnorm_model_in_eval_mode_uses_its_running_statistics():
    theirs, ours = twins("batchnorm_mlp")
    idx, targets = batch("batchnorm_mlp")
    for _ in range(3):  # train mode: batch statistics, running statistics updated
        theirs(torch.tensor(idx), torch.tensor(targets))
        ours(tl.tensor(idx), tl.tensor(targets))
    theirs.eval()
    ours.eval()
    single = idx[:1]  # one example: only running statistics can normalise it
    assert_close(ours(tl.tensor(single))[0], theirs(torch.tensor(single))[0], "eval logits")


def test_gpt_counts_parameters_and_ties_weights_like_torch():
    theirs, ours = twins("gpt")
    assert ours.get_num_params() == theirs.get_num_params()
    assert ours.transformer.wte.weight is ours.lm_head.weight
    assert sum(1 for _ in ours.parameters()) == sum(1 for _ in theirs.parameters())  # the tied weight once


def test_gpt_generates_the_same_greedy_tokens_and_crops_its_block_size():
    theirs, ours = twins("gpt_matrix_attention")
    theirs.eval()
    ours.eval()
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    # top_k=1 leaves one token with probability 1: sampling is deterministic, so the tokens must agree
    tokens_t = theirs.generate(torch.tensor(prompt), max_new_tokens=20, top_k=1)  # runs past block_size 16
    tokens = ours.generate(tl.tensor(prompt), max_new_tokens=20, top_k=1)
    np.testing.assert_array_equal(tokens.numpy(), tokens_t.numpy())
    sampled = ours.generate(tl.tensor(prompt), max_new_tokens=5, temperature=0.8, top_k=4)
    assert sampled.shape == (2, 8) and sampled.dtype == np.int64 and int(sampled.max()) < 11

    theirs.crop_block_size(8)
    ours.crop_block_size(8)
    idx, targets = (a[:, :8] for a in batch("gpt"))
    assert_close(ours(tl.tensor(idx), tl.tensor(targets))[1], theirs(torch.tensor(idx), torch.tensor(targets))[1],
                 "loss after crop_block_size")
    assert ours.transformer.wpe.weight.shape == (8, 16)

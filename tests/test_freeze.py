"""Freezing: Module.freeze/unfreeze, gradual unfreezing, the trainable-parameter table, and optimizers
leaving frozen parameters alone."""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_lite as tl
from tinygrad_lite import nn
from gpt import GPT, GPTConfig
from gpt.freezing import trainable_counts, trainable_param_table, transformer_blocks, unfreeze_top_blocks


def tiny_gpt(n_layer: int = 4) -> GPT:
    tl.manual_seed(0)
    return GPT(GPTConfig(vocab_size=30, block_size=8, n_layer=n_layer, n_head=2, n_embd=8, bias=True))


def trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name, pattern, matches", [
    ("h.3.attn.c_attn.weight", "h.3", True),
    ("h.30.attn.c_attn.weight", "h.3", False),          # whole name parts only
    ("transformer.h.3.ln_1.bias", "h.3", True),          # anywhere in the name
    ("h.3.mlp.c_proj.weight", "mlp.c_proj", True),
    ("h.3.attn.c_proj.weight", "mlp.c_proj", False),
    ("lm_head.weight", "head", False),
    ("head.weight", "head", True),
    ("ln_f", "ln_f.weight", False),
])
def test_name_patterns_match_whole_parts(name, pattern, matches):
    assert nn.name_matches(name, pattern) is matches


def test_freeze_except_and_unfreeze():
    model = tiny_gpt()
    assert model.freeze(except_=("h.3", "ln_f")) is model
    expected = {name for name, _ in model.named_parameters() if name.startswith(("h.3.", "ln_f."))}
    assert trainable(model) == expected and len(expected) == 14
    model.unfreeze("h.2.mlp")
    assert trainable(model) == expected | {"h.2.mlp.c_fc.weight", "h.2.mlp.c_fc.bias", "h.2.mlp.c_proj.weight",
                                           "h.2.mlp.c_proj.bias"}
    model.unfreeze()
    assert trainable(model) == {name for name, _ in model.named_parameters()}
    model.freeze()
    assert trainable(model) == set()
    with pytest.raises(TypeError, match="non-empty strings"):
        model.freeze(except_=("h.3", 3))


def test_freeze_drops_existing_gradients_so_optimizers_skip_them():
    model = tiny_gpt(n_layer=1)
    idx = np.arange(8).reshape(1, 8) % 30
    _, loss = model(idx, idx)
    loss.backward()
    model.freeze(except_=("ln_f",))
    assert all(p.grad is None for name, p in model.named_parameters() if not name.startswith("ln_f"))
    assert model.ln_f.weight.grad is not None


def test_unfreeze_top_blocks_for_gradual_unfreezing():
    model = tiny_gpt()
    model.freeze(except_=("ln_f",))
    assert transformer_blocks(model)[0] == "h"
    assert unfreeze_top_blocks(model, 0) == [] and trainable(model) == {"ln_f.weight", "ln_f.bias"}
    assert unfreeze_top_blocks(model, 2) == ["h.3", "h.2"]
    blocks = {name.split(".")[1] for name in trainable(model) if name.startswith("h.")}
    assert blocks == {"2", "3"}
    with pytest.raises(ValueError, match="k must be in 0..4"):
        unfreeze_top_blocks(model, 5)


def test_unfreeze_top_blocks_finds_a_body_below_the_model():
    class WithHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = tiny_gpt(n_layer=2)
            self.score = nn.Linear(8, 2, bias=False)

    model = WithHead()
    model.freeze(except_=("score",))
    assert unfreeze_top_blocks(model, 1) == ["transformer.h.1"]
    assert "transformer.h.1.attn.c_attn.weight" in trainable(model)
    assert "transformer.h.0.attn.c_attn.weight" not in trainable(model)


def test_trainable_param_table_counts_and_fraction():
    model = tiny_gpt(n_layer=1)
    model.freeze(except_=("ln_f",))
    table = trainable_param_table(model)
    lines = table.splitlines()
    assert lines[0].split() == ["parameter", "shape", "params", "trainable"]
    assert lines[1].split() == ["wte.weight", "30x8", "240", "no"]  # lm_head.weight is tied: listed once
    assert lines[-2].split() == ["ln_f.bias", "8", "8", "yes"]
    total = model.num_params()  # wte 240 + wpe 64 + one block 872 (2 x 16 + 216 + 72 + 288 + 264) + ln_f 16
    assert trainable_counts(model) == (16, total) and total == 1192
    assert lines[-1].split() == ["trainable", "16", "1.34%", "of", "1,192"]
    assert len(trainable_param_table(model, only_trainable=True).splitlines()) == 4


@pytest.mark.parametrize("make", [
    lambda params: tl.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
    lambda params: tl.optim.AdamW(params, lr=1e-2, weight_decay=0.1, fused=False),
    lambda params: tl.optim.Adam(params, lr=1e-2, weight_decay=0.1),
    lambda params: tl.optim.SGD(params, lr=1e-1, momentum=0.9, weight_decay=0.1),
    lambda params: tl.optim.RMSprop(params, lr=1e-2, weight_decay=0.1),
], ids=["AdamW", "AdamW-unfused", "Adam", "SGD", "RMSprop"])
def test_frozen_parameters_are_bit_identical_after_50_steps(make):
    model = tiny_gpt(n_layer=2)
    model.freeze(except_=("h.1", "ln_f"))
    before = {name: p.numpy().copy() for name, p in model.named_parameters()}
    optimizer = make(model.parameters())  # all of them, frozen too, as torch allows
    idx = np.random.default_rng(0).integers(0, 30, (2, 8))
    for _ in range(50):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # zeros, not None: a frozen grad must stay None anyway
    for name, p in model.named_parameters():
        assert np.array_equal(p.numpy(), before[name]) == (not p.requires_grad), name


def test_freezing_and_unfreezing_mid_training_fused_adamw_matches_the_reference_loop():
    def run(fused: bool) -> dict:
        model = tiny_gpt(n_layer=2)
        optimizer = tl.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, fused=fused)
        idx = np.random.default_rng(0).integers(0, 30, (2, 8))
        for step in range(15):
            if step == 5:
                model.freeze(except_=("ln_f",))     # the moments of the frozen ones wait
            if step == 10:
                unfreeze_top_blocks(model, 1)       # h.1 goes on from its moments of step 5
            _, loss = model(idx[:, :-1], idx[:, 1:])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return {name: p.numpy() for name, p in model.named_parameters()}

    fused, reference = run(True), run(False)
    for name in fused:
        np.testing.assert_allclose(fused[name], reference[name], rtol=1e-6, atol=1e-7, err_msg=name)

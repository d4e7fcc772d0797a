"""LoRA: nn.LoRALinear, gpt.lora's apply/merge/adapters/export, and what the optimizer leaves alone.

The op itself (``F.lora_linear``) is a row of tests/op_table.py: gradcheck and PyTorch parity."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from safetensors import safe_open

import tinygrad_lite as tl
from tinygrad_lite import nn
from gpt import GPT, GPTConfig
from gpt.checkpoint import load_checkpoint, load_model
from gpt.lora import (apply_lora, export_merged, export_merged_hf, load_adapter, lora_layers, lora_parameter_counts,
                      merge_lora, merged_state_dict, save_adapter, unmerge_lora)

CONFIG = dict(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16, bias=True)
TARGET_NAMES = [f"h.{i}.{name}" for i in range(2) for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]


def tiny_gpt(seed: int = 0) -> GPT:
    tl.manual_seed(seed)
    return GPT(GPTConfig(**CONFIG))


def ids(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, CONFIG["vocab_size"], (2, 9))


def logits(model, idx) -> np.ndarray:
    with tl.no_grad():
        return model(idx)[0].numpy()


def set_values(parameter, values) -> None:
    with tl.no_grad():
        parameter.copy_(np.asarray(values, dtype=parameter.dtype))


def train_the_updates(model, seed: int = 2, scale: float = 0.3) -> None:
    """Give every lora_B random values, as training would (at init B = 0 and the update is 0)."""
    rng = np.random.default_rng(seed)
    for layer in lora_layers(model).values():
        set_values(layer.lora_B, scale * rng.standard_normal(layer.lora_B.shape))


# ------------------------------------------------------------ the layer

def test_lora_linear_shapes_init_and_names():
    tl.manual_seed(0)
    base = nn.Linear(12, 5)
    layer = nn.LoRALinear(base, r=3, lora_alpha=6.0)
    assert layer.weight is base.weight and layer.bias is base.bias  # the base's own Parameters
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias", "lora_A", "lora_B"]
    assert layer.lora_A.shape == (3, 12) and layer.lora_B.shape == (5, 3) and layer.scaling == 2.0
    assert layer.lora_A.dtype == np.float32 and not layer.merged
    bound = 1 / math.sqrt(12)  # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    a = layer.lora_A.numpy()
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.8 * bound and a.std() > 0.4 * bound
    assert not layer.lora_B.numpy().any()
    with pytest.raises(TypeError, match="expected an nn.Linear"):
        nn.LoRALinear(nn.LayerNorm(4), r=2)
    with pytest.raises(ValueError, match="r must be an int >= 1"):
        nn.LoRALinear(base, r=0)


def test_lora_linear_forward_and_grads_match_the_formula_in_float64():
    tl.manual_seed(0)
    layer = nn.LoRALinear(nn.Linear(4, 3).double(), r=2, lora_alpha=3.0)
    rng = np.random.default_rng(0)
    set_values(layer.lora_B, rng.standard_normal((3, 2)))
    x_np = rng.standard_normal((5, 4))
    x = tl.Tensor(x_np, requires_grad=True)
    y = layer(x)
    W, b, A, B = (p.numpy() for p in (layer.weight, layer.bias, layer.lora_A, layer.lora_B))
    np.testing.assert_allclose(y.numpy(), x_np @ W.T + b + 1.5 * x_np @ A.T @ B.T, rtol=1e-12)
    y.sum().backward()
    ones = np.ones((5, 3))
    np.testing.assert_allclose(layer.lora_B.grad.numpy(), 1.5 * ones.T @ (x_np @ A.T), rtol=1e-12)
    np.testing.assert_allclose(layer.lora_A.grad.numpy(), 1.5 * (ones @ B).T @ x_np, rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), ones @ (W + 1.5 * B @ A), rtol=1e-12)


def test_lora_dropout_touches_only_the_lora_branch():
    tl.manual_seed(0)
    base = nn.Linear(6, 4)
    layer = nn.LoRALinear(base, r=2, lora_alpha=2.0, lora_dropout=1.0)  # p=1: the whole LoRA input dropped
    set_values(layer.lora_B, np.ones((4, 2)))
    x = tl.randn(3, 6)
    np.testing.assert_array_equal(layer(x).numpy(), base(x).numpy())  # training: only the base is left
    layer.eval()
    assert not np.allclose(layer(x).numpy(), base(x).numpy())         # eval: no dropout


def test_merge_then_unmerge_round_trips_and_is_not_applied_twice():
    tl.manual_seed(0)
    layer = nn.LoRALinear(nn.Linear(8, 6), r=4, lora_alpha=8.0)
    set_values(layer.lora_B, np.random.default_rng(0).standard_normal((6, 4)))
    original = layer.weight.numpy().copy()
    x = tl.randn(5, 8)
    unmerged = layer(x).numpy()
    assert layer.merge() is layer and layer.merged
    np.testing.assert_allclose(layer.weight.numpy(), original + 2.0 * layer.lora_B.numpy() @ layer.lora_A.numpy(),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer(x).numpy(), unmerged, rtol=1e-5, atol=1e-5)  # the update counted once
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
    layer.unmerge()
    assert not layer.merged
    np.testing.assert_allclose(layer.weight.numpy(), original, rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()


# ------------------------------------------------------------ on a GPT

def test_apply_lora_replaces_the_targets_and_freezes_the_rest():
    model = tiny_gpt()
    base_weights = {name: p for name, p in model.named_parameters()}
    names = apply_lora(model, r=4, alpha=8)
    assert names == TARGET_NAMES
    assert isinstance(model.h[1].mlp.c_fc, nn.LoRALinear) and model.h[1].mlp.c_fc.scaling == 2.0
    assert model.h[0].attn.c_attn.weight is base_weights["h.0.attn.c_attn.weight"]
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == [f"{name}.{part}" for name in TARGET_NAMES for part in ("lora_A", "lora_B")]
    assert model.lm_head.weight is model.wte.weight  # tying untouched (lm_head is no target)
    with pytest.raises(ValueError, match="already has LoRA layers"):
        apply_lora(model, r=4, alpha=8)


def test_apply_lora_targets_and_modules_to_save():
    model = tiny_gpt()
    assert apply_lora(model, 2, 2, targets=("c_attn",), modules_to_save=("ln_f",)) == ["h.0.attn.c_attn",
                                                                                       "h.1.attn.c_attn"]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {"ln_f.weight", "ln_f.bias", "h.1.attn.c_attn.lora_A"} <= trainable and len(trainable) == 6
    with pytest.raises(ValueError, match="no nn.Linear in GPT has a name ending in one of"):
        apply_lora(tiny_gpt(), 2, 2, targets=("q_proj",))


def test_at_init_the_logits_equal_the_base_models_exactly():
    model, idx = tiny_gpt(), ids()
    before = logits(model, idx)
    apply_lora(model, r=4, alpha=16)
    np.testing.assert_array_equal(logits(model, idx), before)


def test_merged_and_unmerged_logits_agree_and_merging_round_trips():
    model, idx = tiny_gpt(), ids()
    apply_lora(model, r=4, alpha=16)
    train_the_updates(model)
    weights = {name: p.numpy().copy() for name, p in model.named_parameters()}
    unmerged = logits(model, idx)
    assert np.abs(unmerged - logits(tiny_gpt(), idx)).max() > 1e-2  # the updates do change the model
    merge_lora(model)
    assert all(layer.merged for layer in lora_layers(model).values())
    np.testing.assert_allclose(logits(model, idx), unmerged, rtol=0, atol=1e-5)
    unmerge_lora(model)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.numpy(), weights[name], rtol=0, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(logits(model, idx), unmerged, rtol=0, atol=1e-5)


def test_the_folded_decoder_sees_unmerged_lora_updates():
    model = tiny_gpt()
    apply_lora(model, r=4, alpha=16)
    train_the_updates(model, scale=1.0)
    prompt = ids()[:1, :4]
    folded = model.generate(prompt, 6, temperature=0, decoder="folded")
    np.testing.assert_array_equal(folded, model.generate(prompt, 6, temperature=0, decoder="modules"))


@pytest.mark.parametrize("fused", [True, False])
def test_frozen_parameters_are_bit_identical_after_50_adamw_steps(fused):
    model, idx = tiny_gpt(), ids()
    apply_lora(model, r=4, alpha=8)
    frozen = {name: p.numpy().copy() for name, p in model.named_parameters() if not p.requires_grad}
    lora = {name: p.numpy().copy() for name, p in model.named_parameters() if p.requires_grad}
    # every parameter handed to the optimizer, weight decay on: the frozen ones must still not move
    optimizer = tl.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, fused=fused)
    losses = []
    for _ in range(50):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    for name, p in model.named_parameters():
        if name in frozen:
            assert np.array_equal(p.numpy(), frozen[name]), name
        else:
            assert not np.array_equal(p.numpy(), lora[name]), name
    assert losses[-1] < losses[0] - 0.2  # the updates alone train (3.75 -> 3.43 when written)


# ------------------------------------------------------------ saving

def test_adapter_save_and_load_round_trip(tmp_path):
    model, idx = tiny_gpt(), ids()
    apply_lora(model, r=4, alpha=8, dropout=0.1)
    train_the_updates(model)
    expected = logits(model, idx)
    path = save_adapter(model, tmp_path / "adapter", base_model_name_or_path="gpt2")
    with safe_open(str(path), framework="numpy") as file:
        keys, metadata = sorted(file.keys()), file.metadata()
    assert len(keys) == 16 and "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight" in keys
    assert "base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight" in keys  # peft's names, no base weights
    assert metadata["r"] == "4" and metadata["lora_alpha"] == "8"
    assert json.loads(metadata["target_modules"]) == ["c_attn", "c_proj", "c_fc"]
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"], config["lora_dropout"]) == ("LORA", 4, 8, 0.1)
    assert config["fan_in_fan_out"] is True and config["base_model_name_or_path"] == "gpt2"

    fresh = tiny_gpt()  # the same base weights, no LoRA yet
    assert load_adapter(fresh, tmp_path / "adapter") == TARGET_NAMES
    assert fresh.h[0].mlp.c_fc.lora_dropout.p == 0.1
    np.testing.assert_array_equal(logits(fresh, idx), expected)


def test_load_adapter_refuses_one_that_does_not_fit(tmp_path):
    model = tiny_gpt()
    apply_lora(model, r=4, alpha=8)
    save_adapter(model, tmp_path / "adapter")
    other = tiny_gpt()
    apply_lora(other, r=2, alpha=8)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_adapter(other, tmp_path / "adapter")
    with pytest.raises(FileNotFoundError, match="adapter_config.json does not exist"):
        load_adapter(tiny_gpt(), tmp_path / "nowhere")


def test_merged_export_is_a_plain_gpt_checkpoint(tmp_path):
    model, idx = tiny_gpt(), ids()
    apply_lora(model, r=4, alpha=8)
    train_the_updates(model)
    expected = logits(model, idx)
    state = merged_state_dict(model)
    assert set(state) == set(tiny_gpt().state_dict())  # no lora_A / lora_B keys
    assert not lora_layers(model)["h.0.attn.c_attn"].merged  # the model itself is left as it was
    tokenizer = {"kind": "char", "chars": "".join(chr(65 + i) for i in range(40))}
    tl.manual_seed(5)
    export_merged(model, tmp_path / "merged", tokenizer=tokenizer)
    after_export = tl.randn(3).numpy()
    tl.manual_seed(5)
    np.testing.assert_array_equal(after_export, tl.randn(3).numpy())  # exporting drew no random numbers
    loaded = load_model(load_checkpoint(tmp_path / "merged", "best"))
    assert type(loaded.h[0].attn.c_attn) is nn.Linear
    np.testing.assert_allclose(logits(loaded, idx), expected, rtol=0, atol=1e-5)


# ------------------------------------------------------------ counting

@pytest.mark.parametrize("settings, r, targets, num_labels", [
    (dict(CONFIG), 4, ("c_attn", "c_proj", "c_fc"), 2),
    (dict(CONFIG, bias=False, n_layer=3), 2, ("c_attn",), 0),
    (dict(CONFIG, n_embd=24, n_head=3), 8, ("mlp.c_proj",), 5),
])
def test_lora_parameter_counts_match_a_built_model(settings, r, targets, num_labels):
    class WithHead(nn.Module):  # the body under `transformer` and a bias-free `score`, as Hugging Face's
        def __init__(self):
            super().__init__()
            self.transformer = GPT(GPTConfig(**settings))
            self.score = nn.Linear(settings["n_embd"], num_labels, bias=False)

    model = WithHead() if num_labels else GPT(GPTConfig(**settings))
    base = model.num_parameters()
    apply_lora(model, r, 2 * r, targets, modules_to_save=("score",) if num_labels else ())
    counts = lora_parameter_counts(GPTConfig(**settings), r, targets, num_labels)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["trainable"] == trainable and counts["total"] == model.num_parameters()
    assert counts["base"] + counts["head"] == base and counts["head"] == settings["n_embd"] * num_labels


def test_gpt2_124m_lora_rank_16_with_a_2_class_head():
    config = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, bias=True)
    counts = lora_parameter_counts(config, 16, num_labels=2)
    assert counts["base"] == 124_439_808  # GPT-2 small's own count (tests/test_gpt_model.py)
    # r (in + out) per layer of each block: c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
    assert counts["lora"] == 12 * 16 * ((768 + 2304) + (768 + 768) + (768 + 3072) + (3072 + 768))
    assert counts["trainable"] == counts["lora"] + 768 * 2 and counts["trainable_fraction"] < 0.02


# ------------------------------------------------------------ peft itself (when installed)

def tiny_hf_gpt2(folder):
    """A random GPT2LMHeadModel saved in ``folder``, and our GPT loaded from it."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(folder, safe_serialization=True)
    return hf, GPT.from_pretrained(folder)


def test_our_adapter_loads_into_peft_and_gives_the_same_logits(tmp_path):
    peft, torch = pytest.importorskip("peft"), pytest.importorskip("torch")
    hf, ours = tiny_hf_gpt2(tmp_path / "base")
    idx = ids()
    with torch.no_grad():
        base_logits = hf(torch.tensor(idx)).logits.numpy()
    apply_lora(ours, r=4, alpha=8)
    train_the_updates(ours, scale=1.0)
    save_adapter(ours, tmp_path / "adapter")
    peft_model = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        expected = peft_model(torch.tensor(idx)).logits.numpy()
    assert np.abs(expected - base_logits).max() > 1e-2  # peft did pick the updates up
    np.testing.assert_allclose(logits(ours, idx), expected, rtol=0, atol=1e-4)


def test_a_peft_adapter_loads_into_ours_and_gives_the_same_logits(tmp_path):
    peft, torch = pytest.importorskip("peft"), pytest.importorskip("torch")
    hf, ours = tiny_hf_gpt2(tmp_path / "base")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
    peft_model = peft.get_peft_model(hf, config).eval()
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param))
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    assert load_adapter(ours, tmp_path / "adapter") == TARGET_NAMES
    idx = ids()
    with torch.no_grad():
        expected = peft_model(torch.tensor(idx)).logits.numpy()
    np.testing.assert_allclose(logits(ours, idx), expected, rtol=0, atol=1e-4)


def test_apply_lora_refuses_a_tied_weight():
    with pytest.raises(ValueError, match=r"lm_head.weight is tied to wte.weight"):
        apply_lora(tiny_gpt(), 2, 2, targets=("lm_head",))


@pytest.mark.parametrize("bias", [True, False])
def test_merged_hugging_face_export_loads_here_and_in_transformers(tmp_path, bias):
    tl.manual_seed(0)
    model, idx = GPT(GPTConfig(**dict(CONFIG, bias=bias))), ids()
    apply_lora(model, r=4, alpha=8)
    train_the_updates(model)
    expected = logits(model, idx)
    export_merged_hf(model, tmp_path / "hf")
    np.testing.assert_allclose(logits(GPT.from_pretrained(tmp_path / "hf"), idx), expected, rtol=0, atol=1e-5)
    torch, transformers = pytest.importorskip("torch"), pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        np.testing.assert_allclose(hf(torch.tensor(idx)).logits.numpy(), expected, rtol=0, atol=1e-4)


def test_a_peft_classifier_adapter_with_modules_to_save_loads_into_ours(tmp_path):
    peft, torch = pytest.importorskip("peft"), pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2, num_labels=3,
                                     pad_token_id=0, bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2ForSequenceClassification(config)
    lora_config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True,
                                  modules_to_save=["score"])
    peft_model = peft.get_peft_model(hf, lora_config)
    peft_model.save_pretrained(str(tmp_path / "adapter"))

    class WithHead(nn.Module):  # Hugging Face's names: the body is `transformer`, the head `score`
        def __init__(self):
            super().__init__()
            self.transformer = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16))
            self.score = nn.Linear(16, 3, bias=False)

    ours = WithHead()
    assert load_adapter(ours, tmp_path / "adapter") == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    saved = {name: p.detach().numpy() for name, p in peft_model.named_parameters()}
    np.testing.assert_array_equal(ours.score.weight.numpy(),
                                  saved["base_model.model.score.modules_to_save.default.weight"])
    np.testing.assert_array_equal(ours.transformer.h[1].attn.c_attn.lora_A.numpy(),
                                  saved["base_model.model.transformer.h.1.attn.c_attn.lora_A.default.weight"])
    assert ours.score.weight.requires_grad and not ours.transformer.wte.weight.requires_grad


def test_a_lora_linear_trains_only_its_update():
    tl.manual_seed(0)
    base = nn.Linear(4, 3)
    layer = nn.LoRALinear(base, r=2)
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert [name for name, p in layer.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    layer(tl.randn(2, 4)).sum().backward()
    assert base.weight.grad is None and layer.lora_B.grad is not None

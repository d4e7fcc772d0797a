"""Loading OpenAI's GPT-2 weights from a Hugging Face checkpoint directory.

    model = GPT.from_pretrained("path/to/gpt2")    # a folder with config.json and model.safetensors

Hugging Face's GPT-2 has the same parameter names as ours (``h.0.attn.c_attn.weight`` ...),
with two differences handled here:

* the names may start with ``transformer.`` (GPT2LMHeadModel) or not (GPT2Model);
* the projections are ``Conv1D`` layers, whose weight is stored (in, out) --
  the transpose of a Linear's (out, in) -- so those four matrices are transposed.

Only safetensors files are read: a ``pytorch_model.bin`` is a pickle, which
can run arbitrary code when loaded.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy
from safetensors import SafetensorError
from safetensors.numpy import load_file

from .model import GPT, GPTConfig

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HEAD_PREFIXES = ("score.", "multiple_choice_head.")  # task heads (gpt/heads.py), not part of the GPT body


def config_from_hf(hf: dict, source: Path) -> GPTConfig:
    """Our GPTConfig for a Hugging Face GPT-2 config.json; an error for variants we do not implement."""
    unsupported = []
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        unsupported.append(f"activation_function {hf['activation_function']!r} (only GELU's tanh approximation)")
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        unsupported.append(f"n_inner {hf['n_inner']} (only 4 * n_embd)")
    if abs(hf.get("layer_norm_epsilon", 1e-5) - 1e-5) > 1e-12:
        unsupported.append(f"layer_norm_epsilon {hf['layer_norm_epsilon']} (only 1e-5)")
    if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
        unsupported.append("attention scaling other than 1/sqrt(head_size)")
    if not hf.get("tie_word_embeddings", True):
        unsupported.append("untied input and output embeddings")
    if unsupported:
        raise ValueError(f"{source}: this GPT-2 variant is not supported: {'; '.join(unsupported)}")
    return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                     n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=0.0, bias=True)


def read_hf_gpt2(path: str | Path) -> tuple[GPTConfig, dict, dict, dict]:
    """(our config, HF's config.json, body weights in our names, head weights) of the folder ``path``.

    The body is what ``GPT`` holds; the head weights are the rest under their Hugging Face names
    (``score.weight`` of GPT2ForSequenceClassification, ``multiple_choice_head.summary.*`` of
    GPT2DoubleHeadsModel), for the task heads in ``gpt/heads.py``; a GPT2LMHeadModel has none.
    """
    path = Path(path)
    config_path, weights_path = path / "config.json", path / "model.safetensors"
    if not config_path.is_file():
        raise FileNotFoundError(f"from_pretrained: {config_path} does not exist (expected a Hugging Face "
                                "checkpoint folder with config.json and model.safetensors)")
    if not weights_path.is_file():
        hint = " (only pytorch_model.bin is there: that is a pickle, which this loader refuses to run; " \
               "convert it to safetensors)" if (path / "pytorch_model.bin").is_file() else ""
        raise FileNotFoundError(f"from_pretrained: {weights_path} does not exist{hint}")
    hf_config = json.loads(config_path.read_text(encoding="utf-8"))
    if hf_config.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"from_pretrained: {config_path} describes a {hf_config['model_type']!r} model, not gpt2")
    config = config_from_hf(hf_config, config_path)
    try:
        tensors = load_file(str(weights_path))
    except SafetensorError as error:
        raise ValueError(f"from_pretrained: {weights_path} is not a readable safetensors file: {error}") from error

    state, head_state = {}, {}
    for name, array in tensors.items():
        if name.startswith(HEAD_PREFIXES):
            head_state[name] = array.astype(numpy.float32)
            continue
        name = name.removeprefix("transformer.")
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # old checkpoints store the causal mask as a buffer; we build it on the fly
        if name == "lm_head.weight":
            continue  # tied to wte.weight
        array = array.astype(numpy.float32)
        if name.endswith(CONV1D_WEIGHTS):
            array = numpy.ascontiguousarray(array.T)
        state[name] = array
    state["lm_head.weight"] = state.get("wte.weight")
    return config, hf_config, state, head_state


def load_body_weights(model: GPT, state: dict, source: str | Path) -> None:
    """Copy ``state`` (from `read_hf_gpt2`) into ``model``; an error naming what ``source`` lacks."""
    missing = [name for name in model.state_dict() if state.get(name) is None]
    if missing:
        raise ValueError(f"from_pretrained: {source} lacks {', '.join(missing)}")
    model.load_state_dict(state, strict=True)


def load_hf_gpt2(path: str | Path) -> GPT:
    """A GPT (in eval mode) with the weights of the Hugging Face GPT-2 checkpoint in folder ``path``."""
    config, _, state, _ = read_hf_gpt2(path)
    model = GPT(config)
    load_body_weights(model, state, Path(path) / "model.safetensors")
    return model.eval()

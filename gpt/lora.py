"""LoRA fine-tuning of a GPT: wrap its Linears, train only the low-rank updates, save them as an adapter.

    names = apply_lora(model, r=8, alpha=16)      # every c_attn, c_proj, c_fc -> nn.LoRALinear; rest frozen
    ...train (the optimizer sees only lora_A / lora_B)...
    save_adapter(model, "adapter/")               # adapter_model.safetensors + adapter_config.json
    load_adapter(base_model, "adapter/")          # the same LoRA layers on a fresh copy of the base
    export_merged(model, "merged/", tokenizer=checkpoint.tokenizer)   # a plain GPT checkpoint, LoRA folded in
    export_merged_hf(model, "merged-hf/")         # the same as a Hugging Face GPT-2 folder

The adapter folder is laid out as Hugging Face peft writes one, so the two can trade weights:

* ``adapter_model.safetensors`` holds ``base_model.model.<name>.lora_A.weight`` (r, in) and
  ``...lora_B.weight`` (out, r) for each wrapped layer. ``<name>`` is the layer's name in the
  matching ``transformers`` model: a plain ``GPT``'s ``h.0.attn.c_attn`` is ``transformer.h.0.attn.c_attn``
  in ``GPT2LMHeadModel``; a model that already names its body ``transformer`` (the task heads) keeps
  its names. peft's GPT-2 layers are ``Conv1D`` (``fan_in_fan_out=True``), but their lora_A and lora_B
  have the same shapes as ours, so no transposes are needed.
  Layers kept trainable with ``modules_to_save`` (a task head) are saved whole, as peft saves them:
  ``base_model.model.<name>.<param>`` (``base_model.model.score.weight``).
* ``adapter_config.json`` holds peft's ``LoraConfig`` fields: ``r``, ``lora_alpha``, ``target_modules``,
  ``lora_dropout``, ``fan_in_fan_out``, ``modules_to_save``, ``peft_type="LORA"``, ``bias="none"``.
  The same r, alpha and targets are also in the safetensors file's metadata.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy
from safetensors import safe_open

import tinygrad_lite as tl
from tinygrad_lite import nn

from .checkpoint import save_checkpoint
from .model import GPT, GPTConfig
from .pretrained import CONV1D_WEIGHTS

DEFAULT_TARGETS = ("c_attn", "c_proj", "c_fc")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."


# ------------------------------------------------------------ wrapping

def _is_target(name: str, targets: tuple[str, ...]) -> bool:
    """peft's rule for a list of target names: the module's full name is one, or ends in "." + one."""
    return any(name == target or name.endswith("." + target) for target in targets)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` where the dotted ``name`` points (``h.0.attn.c_attn``; list children are indices)."""
    parent_name, _, child = name.rpartition(".")
    parent = model
    for part in parent_name.split(".") if parent_name else []:
        parent = parent[int(part)] if isinstance(parent, nn.ModuleList) else getattr(parent, part)
    if isinstance(parent, nn.ModuleList):
        parent[int(child)] = module
    else:
        setattr(parent, child, module)


def _refuse_tied_weights(model: nn.Module, chosen: list[tuple[str, nn.Linear]]) -> None:
    """A merged update to a tied weight (GPT's lm_head is wte) would change its other use too."""
    owners: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(parameter), []).append(name)
    for name, linear in chosen:
        tied = [other for other in owners[id(linear.weight)] if other != f"{name}.weight"]
        if tied:
            raise ValueError(f"apply_lora: {name}.weight is tied to {', '.join(tied)}; merging a LoRA update "
                             "into it would change both, so leave it out of targets")


def apply_lora(model: nn.Module, r: int, alpha: float, targets=DEFAULT_TARGETS, dropout: float = 0.0,
               modules_to_save=()) -> list[str]:
    """Replace every ``nn.Linear`` whose name ends in one of ``targets`` by an ``nn.LoRALinear`` (rank
    ``r``, scaling ``alpha / r``, dropout on the LoRA input), freeze every other parameter, and return
    the names replaced. ``modules_to_save`` (e.g. ``("score",)``, a task head) stay trainable too,
    matched as in ``Module.freeze``.

    The base weights stay the same objects (tied weights stay tied); only lora_A and lora_B are new.
    """
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    modules_to_save = (modules_to_save,) if isinstance(modules_to_save, str) else tuple(modules_to_save)
    already = list(lora_layers(model))
    if already:  # one adapter per model: its settings are what save_adapter writes
        raise ValueError(f"apply_lora: {type(model).__name__} already has LoRA layers ({', '.join(already[:3])}, "
                         "...); apply it once, to a model without them")
    chosen = [(name, module) for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and _is_target(name, targets)]
    if not chosen:
        raise ValueError(f"apply_lora: no nn.Linear in {type(model).__name__} has a name ending in one of {targets}")
    _refuse_tied_weights(model, chosen)
    for name, linear in chosen:
        _set_submodule(model, name, nn.LoRALinear(linear, r, alpha, dropout))
    model.freeze(except_=("lora_A", "lora_B", *modules_to_save))
    model.lora_config = {"r": r, "lora_alpha": alpha, "target_modules": list(targets), "lora_dropout": dropout,
                         "modules_to_save": list(modules_to_save)}  # peft's LoraConfig fields, for save_adapter
    return [name for name, _ in chosen]


def lora_layers(model: nn.Module) -> dict[str, nn.LoRALinear]:
    """name -> LoRALinear, for every LoRA layer of ``model``."""
    return {name: module for name, module in model.named_modules() if isinstance(module, nn.LoRALinear)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight (``LoRALinear.merge``): inference at the base model's cost."""
    for layer in lora_layers(model).values():
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Take the updates out again (``LoRALinear.unmerge``), to go on training them."""
    for layer in lora_layers(model).values():
        layer.unmerge()
    return model


def merged_state_dict(model: nn.Module) -> dict[str, numpy.ndarray]:
    """The state dict of the model without LoRA: each wrapped weight with its update folded in
    (W + scaling B A) and no lora_A / lora_B entries. The model itself is not changed."""
    layers = lora_layers(model)
    state = {}
    for name, value in model.state_dict().items():
        module_name, _, leaf = name.rpartition(".")
        layer = layers.get(module_name)
        if layer is not None and leaf in ("lora_A", "lora_B"):
            continue
        array = tl.backend.to_numpy(value.data)
        if layer is not None and leaf == "weight" and not layer.merged:
            with tl.no_grad():
                array = array + tl.backend.to_numpy(layer.get_delta_weight().data)
        state[name] = array
    return state


def export_merged(model: GPT, out_dir: str | Path, *, tokenizer: dict, name: str = "best",
                  train_state: dict | None = None) -> Path:
    """Write a plain GPT checkpoint (``gpt/checkpoint.py``) of ``model`` with LoRA folded in, which
    ``load_model(load_checkpoint(out_dir, name))`` and ``python -m gpt.sample`` read like any other.
    ``tokenizer``: the base checkpoint's (``checkpoint.tokenizer``). Returns the JSON path."""
    if not isinstance(model, GPT):
        raise TypeError(f"export_merged: expected a GPT, got {type(model).__name__} (for other models, "
                        "merged_state_dict(model) gives the weights)")
    rng_state = tl.backend.get_rng_state("cpu")  # GPT() draws initial weights, overwritten at once:
    plain = GPT(model.config)                     # the generator is put back, so that exporting
    tl.backend.set_rng_state(rng_state)           # changes no random number drawn after it
    plain.load_state_dict(merged_state_dict(model), strict=True)
    return save_checkpoint(out_dir, name, model=plain, model_config=model.config.to_dict(), tokenizer=tokenizer,
                           train_state=train_state or {"merged_lora": getattr(model, "lora_config", None)})


def export_merged_hf(model: GPT, folder: str | Path) -> Path:
    """Write ``model`` with LoRA folded in as a Hugging Face GPT-2 folder (config.json and
    model.safetensors, ``GPT2LMHeadModel``'s names, Conv1D weights stored (in, out)), which
    ``GPT.from_pretrained`` and ``transformers.GPT2LMHeadModel.from_pretrained`` both read.
    A model without biases (``bias=False``) is written with zero biases, which GPT-2 computes the same."""
    if not isinstance(model, GPT):
        raise TypeError(f"export_merged_hf: expected a GPT, got {type(model).__name__}")
    c = model.config
    state = merged_state_dict(model)
    state.pop("lm_head.weight", None)  # tied to wte.weight, which transformers ties back on loading
    for index in range(c.n_layer):  # biases GPT-2 always has; a bias-free model's are zeros
        for name, size in (("ln_1.bias", c.n_embd), ("ln_2.bias", c.n_embd), ("attn.c_attn.bias", 3 * c.n_embd),
                           ("attn.c_proj.bias", c.n_embd), ("mlp.c_fc.bias", 4 * c.n_embd),
                           ("mlp.c_proj.bias", c.n_embd)):
            state.setdefault(f"h.{index}.{name}", numpy.zeros(size, dtype=numpy.float32))
    state.setdefault("ln_f.bias", numpy.zeros(c.n_embd, dtype=numpy.float32))
    tensors = {f"transformer.{name}": numpy.ascontiguousarray(array.T) if name.endswith(CONV1D_WEIGHTS) else array
               for name, array in state.items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tl.save(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": c.vocab_size,
              "n_positions": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head,
              "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
              "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "tie_word_embeddings": True}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


# ------------------------------------------------------------ counting

def block_linear_shapes(config: GPTConfig) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each Linear in one transformer block of ``config`` (see model.py)."""
    C = config.n_embd
    return {"attn.c_attn": (C, 3 * C), "attn.c_proj": (C, C), "mlp.c_fc": (C, 4 * C), "mlp.c_proj": (4 * C, C)}


def lora_parameter_counts(config: GPTConfig, r: int, targets=DEFAULT_TARGETS, num_labels: int = 0) -> dict:
    """How many numbers LoRA trains on a GPT of ``config``, without building it (GPT-2 124M's
    weights would take 0.5 GB): each wrapped Linear adds r (in + out); a classification head
    (``num_labels`` > 0, Hugging Face's ``score``, no bias) adds n_embd x num_labels.

    Returns base (the GPT's own count, tied embedding once), lora, head, trainable (lora + head),
    total and trainable_fraction. tests/test_lora.py checks it against built models.
    """
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    C, L, linears = config.n_embd, config.n_layer, block_linear_shapes(config)
    bias = int(config.bias)
    per_block = sum(i * o + bias * o for i, o in linears.values()) + 2 * (C + bias * C)  # + ln_1, ln_2
    base = config.vocab_size * C + config.block_size * C + L * per_block + (C + bias * C)  # + ln_f
    lora = L * sum(r * (i + o) for name, (i, o) in linears.items() if _is_target(name, targets))
    head = C * num_labels
    total = base + lora + head
    return {"base": base, "lora": lora, "head": head, "trainable": lora + head, "total": total,
            "trainable_fraction": (lora + head) / total}


# ------------------------------------------------------------ adapters

def hf_prefix(model: nn.Module) -> str:
    """What turns our module names into the ``transformers`` model's: ``transformer.`` for a plain GPT
    (GPT2LMHeadModel keeps its body there), nothing for a model whose body is already ``transformer``."""
    return "transformer." if isinstance(model, GPT) else ""


def _save_names(model: nn.Module, modules_to_save) -> list[str]:
    """The parameters of the ``modules_to_save`` layers, which an adapter file carries whole."""
    return [name for name, _ in model.named_parameters()
            if any(nn.name_matches(name, pattern) for pattern in modules_to_save)
            and not name.endswith(("lora_A", "lora_B"))]


def adapter_state_dict(model: nn.Module) -> dict[str, numpy.ndarray]:
    """The adapter's tensors under peft's names (see the module docstring)."""
    settings = _settings_of(model)
    prefix = PEFT_PREFIX + hf_prefix(model)
    state = {}
    for name, layer in lora_layers(model).items():
        state[f"{prefix}{name}.lora_A.weight"] = layer.lora_A.numpy()
        state[f"{prefix}{name}.lora_B.weight"] = layer.lora_B.numpy()
    parameters = dict(model.named_parameters())
    for name in _save_names(model, settings["modules_to_save"]):
        state[prefix + name] = parameters[name].numpy()
    return state


def _settings_of(model: nn.Module) -> dict:
    settings = getattr(model, "lora_config", None)
    if settings is None or not lora_layers(model):
        raise ValueError(f"{type(model).__name__} has no LoRA layers made by apply_lora (no model.lora_config): "
                         "call apply_lora(model, ...) first")
    return settings


def save_adapter(model: nn.Module, folder: str | Path, base_model_name_or_path: str | None = None) -> Path:
    """Write only the LoRA weights (and ``modules_to_save``) into ``folder``, as peft lays it out:
    ``adapter_model.safetensors`` and ``adapter_config.json``. Returns the weights file's path."""
    settings = _settings_of(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "r": str(settings["r"]), "lora_alpha": str(settings["lora_alpha"]),
                "target_modules": json.dumps(settings["target_modules"])}
    tl.save(adapter_state_dict(model), folder / ADAPTER_WEIGHTS, metadata=metadata)
    config = {"peft_type": "LORA", "r": settings["r"], "lora_alpha": settings["lora_alpha"],
              "target_modules": settings["target_modules"], "lora_dropout": settings["lora_dropout"],
              "modules_to_save": settings["modules_to_save"] or None, "fan_in_fan_out": True, "bias": "none",
              "base_model_name_or_path": base_model_name_or_path}
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder / ADAPTER_WEIGHTS


def read_adapter(folder: str | Path) -> tuple[dict, dict[str, numpy.ndarray]]:
    """(adapter_config.json's settings, the tensors of adapter_model.safetensors) of ``folder``."""
    folder = Path(folder)
    config_path, weights_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"load_adapter: {path} does not exist (expected a folder written by "
                                    "save_adapter or by peft's save_pretrained)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"load_adapter: {config_path} describes a {config['peft_type']} adapter, not LORA")
    with safe_open(str(weights_path), framework="numpy") as file:
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    return config, tensors


def load_adapter(model: nn.Module, folder: str | Path) -> list[str]:
    """Put the adapter in ``folder`` onto ``model``, a base model with the weights it was trained from:
    ``apply_lora`` with the adapter's settings (unless the model has LoRA layers already), then copy
    lora_A, lora_B and the ``modules_to_save`` weights. Returns the LoRA layers' names.
    Every tensor of the file must find its place, and every LoRA layer its tensors."""
    config, tensors = read_adapter(folder)
    if not lora_layers(model):
        apply_lora(model, int(config["r"]), float(config["lora_alpha"]), tuple(config["target_modules"]),
                   float(config.get("lora_dropout") or 0.0), tuple(config.get("modules_to_save") or ()))
    prefix = PEFT_PREFIX + hf_prefix(model)
    wanted = {}
    for name, layer in lora_layers(model).items():
        if layer.merged:
            raise RuntimeError(f"load_adapter: {name} is merged; unmerge_lora(model) before loading new weights")
        wanted[f"{prefix}{name}.lora_A.weight"] = layer.lora_A
        wanted[f"{prefix}{name}.lora_B.weight"] = layer.lora_B
    parameters = dict(model.named_parameters())
    for name in _save_names(model, config.get("modules_to_save") or ()):
        wanted[prefix + name] = parameters[name]
    missing = sorted(set(wanted) - set(tensors))
    unexpected = sorted(set(tensors) - set(wanted))
    bad_shapes = [f"{key}: file {tuple(tensors[key].shape)}, model {wanted[key].shape}"
                  for key in wanted if key in tensors and tuple(tensors[key].shape) != wanted[key].shape]
    if missing or unexpected or bad_shapes:
        raise ValueError(f"load_adapter: {folder} does not fit {type(model).__name__}: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}, shape mismatches {bad_shapes[:4]}")
    with tl.no_grad():
        for key, parameter in wanted.items():
            parameter.copy_(tensors[key].astype(parameter.dtype))
    return list(lora_layers(model))

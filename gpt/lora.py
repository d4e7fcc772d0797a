"""LoRA fine-tuning of a GPT: wrap its Linears, train only the low-rank updates, save them as an adapter.

    names = apply_lora(model, r=8, alpha=16)      # every c_attn, c_proj, c_fc -> nn.LoRALinear; rest frozen
    ...train (the optimizer sees only lora_A / lora_B)...
    save_adapter(model, "adapter/")               # adapter_model.safetensors + adapter_config.json
    load_adapter(base_model, "adapter/")          # the same LoRA layers on a fresh copy of the base
    export_merged(model, "merged/", tokenizer=checkpoint.tokenizer)   # a plain GPT checkpoint, LoRA folded in

The adapter folder is laid out as Hugging Face peft writes one, so the two can trade weights:

* ``adapter_model.safetensors`` holds ``base_model.model.<name>.lora_A.weight`` (r, in) and
  ``...lora_B.weight`` (out, r) for each wrapped layer. ``<name>`` is the layer's name in the
  matching ``transformers`` model: a plain ``GPT``'s ``h.0.attn.c_attn`` is ``transformer.h.0.attn.c_attn``
  in ``GPT2LMHeadModel``; a model that already names its body ``transformer`` (the task heads) keeps
  its names. peft's GPT-2 layers are ``Conv1D`` (``fan_in_fan_out=True``), but their lora_A and lora_B
  have the same shapes as ours, so no transposes are needed.
  Layers kept trainable with ``modules_to_save`` (a task head) are saved whole as
  ``base_model.model.<name>.<param>`` (peft itself adds a ``modules_to_save`` level to those names).
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
from .model import GPT

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
    chosen = [(name, module) for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and _is_target(name, targets)]
    if not chosen:
        already = [name for name, module in model.named_modules() if isinstance(module, nn.LoRALinear)]
        hint = f" (it already has LoRA layers: {', '.join(already[:3])}, ...)" if already else ""
        raise ValueError(f"apply_lora: no nn.Linear in {type(model).__name__} has a name ending in one of "
                         f"{targets}{hint}")
    for name, linear in chosen:
        _set_submodule(model, name, nn.LoRALinear(linear, r, alpha, dropout))
    model.freeze(except_=("lora_A", "lora_B", *modules_to_save))
    model._lora_settings = {"r": r, "lora_alpha": alpha, "target_modules": list(targets), "lora_dropout": dropout,
                            "modules_to_save": list(modules_to_save)}
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
    plain = GPT(model.config)
    plain.load_state_dict(merged_state_dict(model), strict=True)
    return save_checkpoint(out_dir, name, model=plain, model_config=model.config.to_dict(), tokenizer=tokenizer,
                           train_state=train_state or {"merged_lora": getattr(model, "_lora_settings", None)})


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
    settings = getattr(model, "_lora_settings", None)
    if settings is None or not lora_layers(model):
        raise ValueError(f"{type(model).__name__} has no LoRA layers: call apply_lora(model, ...) first")
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

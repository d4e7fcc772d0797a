"""Checkpoints: weights and optimizer state in safetensors, everything else in JSON. No pickle.

A checkpoint called ``last`` in ``out_dir`` is two files:

    last.json                      format, model config, tokenizer, training state
                                   (iteration, best val loss, RNG state, ...), the optimizer's
                                   hyperparameters, and the name + SHA-256 of its weights file
    last-3f9c2a1b.safetensors      model.<name> -> weights, optimizer.<index>.<name> -> AdamW moments

Saving is crash-safe: the weights go to a new, uniquely named file (written
to a temporary name, fsync'ed, renamed); only then is ``last.json`` replaced
(same dance) to point at it, and the old weights file is deleted. A crash at
any moment leaves a ``last.json`` that points at a complete weights file.
The JSON file is the commit, and it carries its own SHA-256 (``json_sha256``, over the rest of the
document), so a hand-edited or damaged JSON is refused on load instead of sampling garbage.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy
from safetensors import SafetensorError
from safetensors.numpy import load_file

import tinygrad_lite as tl

from .data import sha256_of_file, write_atomically

FORMAT = "tinygrad_lite-gpt-checkpoint"
VERSION = 2              # 2: the JSON carries json_sha256; version 1 files (without it) still load
CHECKPOINT_NAMES = ("last", "best")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted, or does not fit the model / data it is used with."""


@dataclass
class Checkpoint:
    path: Path                  # the JSON file
    model_config: dict
    tokenizer: dict
    train_state: dict           # iteration, best_val_loss, rng_state, train_config, ...
    model_state: dict           # name -> numpy array
    optimizer_state: dict | None  # in tinygrad_lite.optim's state_dict() form, or None


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _document_sha256(document: dict) -> str:
    """SHA-256 of the document without its own checksum, in one canonical JSON spelling."""
    rest = {key: value for key, value in document.items() if key != "json_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode("utf-8")).hexdigest()


def remove_debris(out_dir: Path, name: str, keep: str | None = None) -> None:
    """Delete what interrupted saves of checkpoint ``name`` left in ``out_dir``: temporary files,
    and weights files that ``name.json`` does not point at. ``keep``: a weights file to spare
    (default: the one ``name.json`` names). If ``name.json`` exists but cannot be read, weights
    files are left alone: they may be all that is left of the run."""
    for temporary in [*out_dir.glob(f"{name}-*.safetensors.tmp"), *out_dir.glob(f".{name}.json.*.tmp")]:
        temporary.unlink(missing_ok=True)
    if keep is None:
        json_path = out_dir / f"{name}.json"
        if json_path.exists():
            try:
                keep = json.loads(json_path.read_text(encoding="utf-8"))["weights_file"]
            except (OSError, ValueError, KeyError, TypeError):
                return
    for weights in out_dir.glob(f"{name}-*.safetensors"):
        if weights.name != keep:
            weights.unlink(missing_ok=True)


def save_checkpoint(out_dir: str | Path, name: str, *, model, model_config: dict, tokenizer: dict,
                    train_state: dict, optimizer=None) -> Path:
    """Write checkpoint ``name`` into ``out_dir`` (see the module docstring); returns the JSON path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{key}": value for key, value in model.state_dict().items()}
    optimizer_json = None
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars = {}
        for index, param_state in state["state"].items():
            for key, value in param_state.items():
                value = numpy.asarray(value)
                if value.ndim == 0:  # Adam's step count: a number, kept in the JSON
                    scalars.setdefault(str(index), {})[key] = value.item()
                else:
                    tensors[f"optimizer.{index}.{key}"] = value
        optimizer_json = {"param_groups": state["param_groups"], "scalars": scalars}

    weights_name = f"{name}-{uuid.uuid4().hex[:8]}.safetensors"
    weights_path = out_dir / weights_name
    tl.save(tensors, weights_path)  # tl.save writes a temporary file and renames it
    os.chmod(weights_path, 0o644)  # the safetensors writer makes it private; the JSON file is not
    with open(weights_path, "rb") as file:
        os.fsync(file.fileno())
    document = {
        "format": FORMAT,
        "version": VERSION,
        "weights_file": weights_name,
        "weights_sha256": sha256_of_file(weights_path),
        "model_config": model_config,
        "tokenizer": tokenizer,
        "train_state": train_state,
        "optimizer": optimizer_json,
    }
    document["json_sha256"] = _document_sha256(document)
    json_path = out_dir / f"{name}.json"
    write_atomically(json_path, json.dumps(document, indent=1).encode("utf-8"))
    _fsync_directory(out_dir)
    # The new checkpoint is committed: remove older weights files of this name, and any
    # temporary files an earlier crash left behind.
    remove_debris(out_dir, name, keep=weights_name)
    return json_path


def checkpoint_path(out_dir: str | Path, name: str = "last") -> Path:
    return Path(out_dir) / f"{name}.json"


def read_checkpoint_json(out_dir: str | Path, name: str = "last") -> dict:
    """The JSON half of checkpoint ``name`` (config, tokenizer, training state), checked but without weights."""
    path = checkpoint_path(out_dir, name)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train first, or check --out-dir")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupted: not valid JSON ({error})") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tinygrad_lite GPT checkpoint (no format {FORMAT!r})")
    if document.get("version") not in (1, VERSION):
        raise CheckpointError(f"checkpoint {path} has format version {document.get('version')}, "
                              f"this code reads versions 1 to {VERSION}")
    if document["version"] >= 2 and document.get("json_sha256") != _document_sha256(document):
        raise CheckpointError(f"checkpoint {path} was changed after it was saved (its json_sha256 does not "
                              "match its contents): restore it, or use the other checkpoint (best/last)")
    for key in ("weights_file", "weights_sha256", "model_config", "tokenizer", "train_state"):
        if key not in document:
            raise CheckpointError(f"checkpoint {path} is incomplete: it has no {key!r}")
    return document


def load_checkpoint(out_dir: str | Path, name: str = "last") -> Checkpoint:
    """Read checkpoint ``name`` from ``out_dir``; a clear CheckpointError if it is missing or damaged."""
    document = read_checkpoint_json(out_dir, name)
    path = checkpoint_path(out_dir, name)
    weights_path = path.parent / document["weights_file"]
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint {path} refers to weights file {weights_path}, which is missing")
    if sha256_of_file(weights_path) != document["weights_sha256"]:
        raise CheckpointError(f"checkpoint weights {weights_path} are corrupted: their SHA-256 does not match "
                              f"the one recorded in {path}")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint weights {weights_path} cannot be read: {error}") from error

    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optimizer_state = None
    if document.get("optimizer") is not None:
        try:
            per_param: dict[int, dict] = {}
            for key, value in tensors.items():
                if key.startswith("optimizer."):
                    _, index, state_name = key.split(".", 2)
                    per_param.setdefault(int(index), {})[state_name] = value
            for index, scalars in document["optimizer"].get("scalars", {}).items():
                for state_name, value in scalars.items():
                    per_param.setdefault(int(index), {})[state_name] = numpy.asarray(value)
            optimizer_state = {"state": per_param, "param_groups": document["optimizer"]["param_groups"]}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(f"checkpoint {path} has a malformed optimizer state ({error!r})") from error
    return Checkpoint(path=path, model_config=document["model_config"], tokenizer=document["tokenizer"],
                      train_state=document["train_state"], model_state=model_state,
                      optimizer_state=optimizer_state)


def load_model(checkpoint: Checkpoint):
    """A GPT with the checkpoint's config and weights (a CheckpointError if they do not fit)."""
    from .model import GPT, GPTConfig  # noqa: PLC0415

    head = checkpoint.model_config.get("head")
    if head is not None:
        raise CheckpointError(f"checkpoint {checkpoint.path} holds a GPT with a {head.get('task')!r} head, not a "
                              "language model: load it with gpt.heads (GPTForSequenceClassification / "
                              "GPTForMultipleChoice).from_pretrained")
    try:
        config = GPTConfig.from_dict(checkpoint.model_config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {checkpoint.path} has an unusable model config: {error}") from error
    not_finite = [name for name, value in checkpoint.model_state.items()
                  if value.dtype.kind == "f" and not numpy.isfinite(value).all()]
    if not_finite:
        raise CheckpointError(f"checkpoint {checkpoint.path} holds NaN or infinite weights ({', '.join(not_finite[:3])}"
                              f"{', ...' if len(not_finite) > 3 else ''}): the run that saved it had diverged")
    model = GPT(config)
    try:
        model.load_state_dict(checkpoint.model_state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {checkpoint.path} does not fit the model it describes: {error}") from error
    return model

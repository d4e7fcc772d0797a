"""Saving and loading tensors in the safetensors format (no pickle).

A safetensors file is a small JSON header (name -> dtype, shape, byte offsets,
plus optional string metadata) followed by the raw bytes of each array. It
cannot run code when loaded (unlike pickle), and PyTorch, JAX and the Hugging
Face hub read it, so ``tl.save(model.state_dict(), "model.safetensors")``
writes a checkpoint that ``safetensors.torch.load_file`` can open too.
"""
from __future__ import annotations

import os

import numpy
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from . import backend
from .tensor import Tensor


def _as_numpy(name: str, value) -> numpy.ndarray:
    """A C-contiguous numpy array for one entry (Tensors and cupy arrays are copied to the CPU)."""
    if isinstance(value, Tensor):
        array = value.numpy()
    elif hasattr(value, "shape") and hasattr(value, "dtype"):  # numpy or cupy array
        array = backend.to_numpy(value)
    else:
        raise TypeError(f"save: entry {name!r} is a {type(value).__name__}; expected a Tensor or an array")
    # safetensors writes the raw memory of each array, so a strided view (a
    # transpose) must be made contiguous first or its bytes would be wrong.
    # (Not numpy.ascontiguousarray: it turns a 0-d array into shape (1,).)
    return array if array.flags.c_contiguous else array.copy(order="C")


def save(state_dict: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write ``{name: Tensor or array}`` to ``path`` as a safetensors file.

    Tied weights (one tensor under two names) are written once per name: the
    numpy writer copies each entry's bytes, so sharing memory is fine (the
    torch writer refuses it). The file is written to a temporary name and then
    renamed, so a crash mid-save never leaves a half-written checkpoint behind.
    """
    arrays = {}
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"save: keys must be strings, got {name!r}")
        arrays[name] = _as_numpy(name, value)
    if metadata is not None:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"save: metadata must map strings to strings, got {key!r}: {value!r} "
                                "(use json.dumps for structured values)")
    path = os.fspath(path)
    temporary_path = path + ".tmp"
    try:
        save_file(arrays, temporary_path, metadata=metadata)
        os.replace(temporary_path, path)
    except (OSError, SafetensorError) as error:
        if os.path.exists(temporary_path):
            os.remove(temporary_path)
        raise OSError(f"save: could not write {path}: {error}") from error


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file: {path}")
    if not os.path.isfile(path):
        raise IsADirectoryError(f"load: {path} is not a file")


def load(path: str | os.PathLike, device: str = "cpu") -> dict[str, Tensor]:
    """Read a safetensors file into ``{name: Tensor}`` (no grad) on ``device``."""
    path = os.fspath(path)
    _check_file(path)
    try:
        arrays = load_file(path)
    except SafetensorError as error:
        raise ValueError(f"load: {path} is not a valid safetensors file (corrupt or truncated?): {error}") from error
    device = backend.check_device(device)
    tensors = {}
    for name, array in arrays.items():
        if not array.flags.writeable:  # an optimizer must be able to update a loaded weight in place
            array = array.copy()
        tensors[name] = Tensor(backend.to_device(array, device))
    return tensors


def load_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata saved with ``save(..., metadata=...)`` ({} if there was none)."""
    path = os.fspath(path)
    _check_file(path)
    try:
        with safe_open(path, framework="numpy") as file:
            return dict(file.metadata() or {})
    except SafetensorError as error:
        raise ValueError(f"load_metadata: {path} is not a valid safetensors file: {error}") from error


__all__ = ["save", "load", "load_metadata"]

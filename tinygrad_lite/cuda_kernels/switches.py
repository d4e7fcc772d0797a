"""When the CUDA kernels apply, and the switches that turn them (or flash attention) on and off."""
from __future__ import annotations

import contextlib
import math
import os

import numpy

from .. import backend

# ------------------------------------------------------------------ switches

_enabled = os.environ.get("TINYGRAD_LITE_CUDA_KERNELS", "1").strip() != "0"
_attention_mode = os.environ.get("TINYGRAD_LITE_ATTENTION", "auto").strip().lower() or "auto"
FLASH_AUTO_BYTES = 1 << 30
FLASH_MAX_HEAD_DIM = 64  # the flash kernels keep a head-sized row per thread in registers / shared memory
_ATTENTION_MODES = ("auto", "flash", "matmul")
if _attention_mode not in _ATTENTION_MODES:
    raise ValueError(f"TINYGRAD_LITE_ATTENTION={_attention_mode!r}: expected one of {_ATTENTION_MODES}")


def enabled() -> bool:
    """Whether the fused kernels are used on the GPU (``TINYGRAD_LITE_CUDA_KERNELS``, default on)."""
    return _enabled


def set_enabled(value: bool) -> None:
    global _enabled
    _enabled = bool(value)


@contextlib.contextmanager
def disabled():
    """Inside ``with cuda_kernels.disabled():`` GPU ops run their array-op twins instead of the kernels."""
    previous = _enabled
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(previous)


def set_attention_mode(mode: str) -> None:
    """'auto', 'flash' or 'matmul' (see the module docstring)."""
    global _attention_mode
    if mode not in _ATTENTION_MODES:
        raise ValueError(f"set_attention_mode: expected one of {_ATTENTION_MODES}, got {mode!r}")
    _attention_mode = mode


def attention_mode() -> str:
    return _attention_mode


def supports(*arrays, last_axis=None) -> bool:
    """True when the kernels take these arrays: kernels on, every array a non-empty float32 CuPy array.

    ``last_axis``, if given, is the normalised axis tuple of a row-wise op: the
    row kernels only reduce over the last axis.
    """
    if not _enabled:
        return False
    for array in arrays:
        if array is None:
            continue
        if not backend.is_cuda(array) or array.dtype != numpy.float32 or array.size == 0:
            return False
    if last_axis is not None:
        first = arrays[0]
        if first.ndim == 0 or tuple(last_axis) != (first.ndim - 1,):
            return False
    return True


def attention_algorithm(q, k, v) -> str | None:
    """Which GPU attention to run for these inputs: 'flash', 'fused_softmax', or None (use the twin)."""
    if not supports(q, k, v):
        return None
    same_batch = q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
    flash_fits = same_batch and q.shape[-1] == v.shape[-1] <= FLASH_MAX_HEAD_DIM
    if _attention_mode == "flash" and flash_fits:
        return "flash"
    if _attention_mode == "auto" and flash_fits:
        batch = math.prod(q.shape[:-2])
        if batch * q.shape[-2] * k.shape[-2] * 4 > FLASH_AUTO_BYTES:
            return "flash"
    return "fused_softmax"

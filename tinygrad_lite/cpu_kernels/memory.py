"""Memory on the CPU: glibc's allocator settings, and 64-byte aligned arrays.

Both exist for speed only (the measurements: docs/performance.md); the math never depends on them.
"""
from __future__ import annotations

import math
import os

import numpy

from .. import backend

# ------------------------------------------------------ CPU allocator
# NumPy asks malloc for every temporary array. glibc serves big blocks with a
# fresh mmap and unmaps them again on free, so a training step that makes
# ~100 MB of temporaries page-faults through ~100 MB of new zeroed pages every
# step (a third of the baby GPT's step: docs/performance.md). Raising the mmap and trim
# thresholds keeps freed blocks in the heap, where the next step reuses them.

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
_allocator_tuned = False


def tune_allocator() -> bool:
    """Keep freed large blocks for reuse (glibc only; set TINYGRAD_LITE_MALLOC_TUNING=0 to skip).

    Returns True when the thresholds are changed. Called by ``tinygrad_lite.cpu.tune()``.
    """
    global _allocator_tuned
    if _allocator_tuned or os.environ.get("TINYGRAD_LITE_MALLOC_TUNING", "1") == "0":
        return _allocator_tuned
    try:
        import ctypes  # noqa: PLC0415
        libc = ctypes.CDLL("libc.so.6")
        # 32 MiB is the largest mmap threshold glibc accepts on 64-bit machines.
        _allocator_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, 512 << 20))
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): leave the allocator alone
        _allocator_tuned = False
    return _allocator_tuned


# ----------------------------------------------------- aligned arrays
# NumPy takes its buffers from malloc, which aligns them to 16 bytes only. A SIMD loop over an array
# whose start is not 64-byte aligned (a cache line; one AVX-512 register) splits loads across cache
# lines, and elementwise passes run slower (docs/performance.md). The fused ops allocate their big
# outputs and scratch arrays with ``empty`` instead. (CuPy's memory pool aligns to 512 bytes.)

ALIGNMENT = 64
ALIGN_MIN_BYTES = 1 << 14  # smaller arrays: the extra Python work costs more than it saves


def empty(shape, dtype, xp=numpy):
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary (on the CPU)."""
    shape = tuple(shape)
    dtype = numpy.dtype(dtype)
    nbytes = dtype.itemsize * math.prod(shape)
    if xp is not numpy or ALIGNMENT <= 1 or nbytes < ALIGN_MIN_BYTES:
        return xp.empty(shape, dtype=dtype)
    raw = numpy.empty(nbytes + ALIGNMENT, dtype=numpy.uint8)
    start = -raw.__array_interface__["data"][0] % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def empty_like(array):
    """``empty`` with the shape and dtype of ``array`` (C order)."""
    return empty(array.shape, array.dtype, backend.xp_of(array))

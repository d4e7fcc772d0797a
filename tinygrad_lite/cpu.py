"""Process-wide CPU settings that speed up NumPy work, applied only when you ask.

    import os
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # first: OpenBLAS reads it when numpy loads
    import tinygrad_lite as tl
    tl.cpu.tune()

Importing tinygrad_lite changes nothing in your process. The training entry point
(``gpt.train.train``) and the example scripts call ``tune()``; your own scripts may.

* ``tune()`` lets glibc's malloc keep freed large blocks for reuse (see
  ``memory.tune_allocator``): without it a training step page-faults through every big
  temporary array anew.
* ``OPENBLAS_THREAD_TIMEOUT=4`` lets OpenBLAS's idle threads sleep soon after a matrix product
  instead of spinning on the cores that the elementwise work needs next. OpenBLAS reads it once,
  when numpy loads it, so only the environment or a line before ``import numpy`` can set it.
* ``TINYGRAD_LITE_CPU_THREADS=N`` sets how many threads the fused ops use (default: the usable
  cores); ``tl.reference_mode()`` uses none.
"""
from __future__ import annotations

import os

from .cpu_kernels import memory


def tune() -> dict[str, object]:
    """Apply the settings above that can still be applied; returns what is in effect."""
    return {"allocator_tuned": memory.tune_allocator(),
            "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT")}

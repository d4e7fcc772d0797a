"""Fused CUDA kernels for the GPU hot paths, written with CuPy.

On the GPU every primitive op is one CuPy call, i.e. one kernel launch that
reads its inputs from GPU memory and writes its output back. A softmax built
from primitives is five launches and five round trips through memory; the
kernels here do each hot spot in one or two. Each is a small Python function
with the math in its docstring, and each has a **NumPy twin**: the code path
in ``fused.py`` or ``optim/`` that computes the same thing with array ops
(and that the CPU runs). CPU CI tests the twins, and runs the CUDA sources
themselves through a small CPU emulation of CUDA threads
(``tests/test_gpu_emulated.py``); ``tests/test_gpu.py`` checks on a real GPU
that every kernel equals its twin.

    kernel                                   twin
    softmax_forward / softmax_backward       fused.Softmax, fused.LogSoftmax
    cross_entropy_forward / _backward        fused.CrossEntropy
    layer_norm_forward / _backward           fused.LayerNorm
    gelu_forward / gelu_backward             fused.Gelu
    attention_softmax_forward / _backward    fused.ScaledDotProductAttention (the softmax between the matmuls)
    flash_attention_forward / _backward      fused.ScaledDotProductAttention, and the tiled
                                             fused.flash_attention_tiled(_backward) (same tiles, same order)
    adam_update                              optim.flat_adam.update_flat (the fused AdamW/Adam step)
    sum_of_squares / scale_                  optim.clip_grad_norm_ (its CPU loop)

Three kinds of CuPy kernel are used:

* ``ElementwiseKernel``: a C snippet run once per element (index ``i``); CuPy
  writes the loop, the indexing and the launch.
* ``RawKernel`` (here a ``RawModule`` of several): a whole CUDA C function,
  for the row-wise ops, where the threads of one block cooperate on one row
  (a softmax needs the row's max and sum before it can write anything), and
  for the ops over many tensors at once (gradient clipping).
* the flash-attention kernels, a ``RawModule`` compiled once per head size.

All kernels compute in float32 (the GPU training dtype); ``supports`` says
when they apply, and ``fused.py`` falls back to its twin otherwise (float64,
an axis other than the last, ...). Row kernels use one thread block per row
and reduce with warp shuffles; nothing here is tuned per GPU model.

CuPy is imported only through ``backend`` and only when a kernel runs:
importing this module on a machine without CuPy is fine.

Switches (read once at import, or changed with the functions below):

* ``TINYGRAD_LITE_CUDA_KERNELS=0`` -- use the array-op twins on the GPU too
  (for comparing and debugging; ``disabled()`` does it for a ``with`` block).
* ``TINYGRAD_LITE_ATTENTION=auto|flash|matmul`` -- attention algorithm on the
  GPU. ``matmul``: cuBLAS for Q K^T and P V with the fused scale+mask+softmax
  kernel between them (materialises the T x T scores, fastest for GPT-sized
  T). ``flash``: the tiled kernels that never materialise them (memory O(T)).
  ``auto`` (default): flash only when the scores would take more than
  ``FLASH_AUTO_BYTES`` (1 GiB) and the shapes suit it.

The kernels live in small modules: ``switches`` (when they apply), ``launch``
(CuPy plumbing), ``row_source`` + ``rows`` (row-wise kernels), ``flash``
(flash attention) and ``elementwise`` (GELU, clipping, AdamW).
"""
from __future__ import annotations

from .elementwise import (ADAM_UPDATE, GELU_BACKWARD, GELU_FORWARD, adam_update, gelu_backward, gelu_forward,
                          scale_, sum_of_squares)
from .flash import FLASH_ATTENTION_SOURCE, FLASH_BLOCK, FLASH_TILE, flash_attention_backward, flash_attention_forward
from .row_source import ROW_KERNELS_SOURCE
from .rows import (ATTENTION_SOFTMAX_BACKWARD, CROSS_ENTROPY_BACKWARD, attention_softmax_backward,
                   attention_softmax_forward, cross_entropy_backward, cross_entropy_forward, layer_norm_backward,
                   layer_norm_forward, softmax_backward, softmax_forward)
from .switches import (FLASH_AUTO_BYTES, FLASH_MAX_HEAD_DIM, attention_algorithm, attention_mode, disabled, enabled,
                       set_attention_mode, set_enabled, supports)

# The ElementwiseKernel specs, by name (the CPU emulation in tests/test_gpu_emulated.py runs each).
ELEMENTWISE_KERNELS = ("CROSS_ENTROPY_BACKWARD", "GELU_FORWARD", "GELU_BACKWARD", "ATTENTION_SOFTMAX_BACKWARD",
                       "ADAM_UPDATE")

__all__ = ["ADAM_UPDATE", "GELU_BACKWARD", "GELU_FORWARD", "FLASH_ATTENTION_SOURCE", "FLASH_BLOCK", "FLASH_TILE",
           "ROW_KERNELS_SOURCE", "ATTENTION_SOFTMAX_BACKWARD", "CROSS_ENTROPY_BACKWARD", "FLASH_AUTO_BYTES",
           "FLASH_MAX_HEAD_DIM", "ELEMENTWISE_KERNELS", "enabled", "set_enabled", "disabled", "supports", "attention_algorithm", "attention_mode",
           "set_attention_mode", "softmax_forward", "softmax_backward", "cross_entropy_forward",
           "cross_entropy_backward", "layer_norm_forward", "layer_norm_backward", "gelu_forward", "gelu_backward",
           "attention_softmax_forward", "attention_softmax_backward", "flash_attention_forward",
           "flash_attention_backward", "adam_update", "sum_of_squares", "scale_"]

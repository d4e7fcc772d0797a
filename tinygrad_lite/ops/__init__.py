"""Primitive ops: each one a ``Function`` with its forward and backward side by side.

* ``elementwise`` -- + - * / ** neg exp log sqrt tanh sigmoid relu abs, where, cast, clamp
* ``reduce``      -- sum, max
* ``movement``    -- reshape, permute, expand, getitem, cat, copy, roll, to-device
* ``matmul``      -- (batched) matrix multiplication
* ``indexing``    -- embedding lookup (gather) with a scatter-add backward

Composite ops (softmax, cross-entropy, layer norm, attention, GELU) are built
from these in ``tinygrad_lite.functional``; their fused fast paths live in
``tinygrad_lite.fused``.
"""

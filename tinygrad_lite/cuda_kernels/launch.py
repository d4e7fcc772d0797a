"""Plumbing shared by the kernels: CuPy itself, scalar arguments, row views, block sizes."""
from __future__ import annotations

import numpy

from .. import backend



def _cupy():
    return backend.get_xp("cuda")


def _f32(value) -> numpy.float32:
    return numpy.float32(value)


def _i32(value) -> numpy.int32:
    return numpy.int32(value)


def _rows(array):
    """A C-contiguous (rows, last axis) view of ``array`` (a copy only when it was not contiguous)."""
    array = _cupy().ascontiguousarray(array)
    return array.reshape(-1, array.shape[-1])


def _threads_for_row(cols: int) -> int:
    """Threads per block for a row of ``cols`` elements: one per element up to 1024, a multiple of 32.

    The block reductions work warp by warp (32 threads), so the count must be
    a multiple of 32.
    """
    return min(1024, max(32, -(-cols // 32) * 32))



_elementwise_kernels: dict[str, object] = {}


def elementwise(spec: dict):
    """The ``cupy.ElementwiseKernel`` for a spec dict (in_params, out_params, operation, name, ...).

    Built once per kernel name; CuPy compiles it at its first call.
    """
    name = spec["name"]
    if name not in _elementwise_kernels:
        options = {key: value for key, value in spec.items()
                   if key not in ("in_params", "out_params", "operation", "name")}
        _elementwise_kernels[name] = _cupy().ElementwiseKernel(spec["in_params"], spec["out_params"],
                                                               spec["operation"], name, **options)
    return _elementwise_kernels[name]

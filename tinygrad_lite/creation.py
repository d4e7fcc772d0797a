"""Making tensors: zeros, ones, full, arange, randn, rand, and their ``_like`` forms."""
from __future__ import annotations

import numpy

from . import backend
from .tensor import Tensor, _shape_arg as _shape


def zeros(*shape, dtype=numpy.float32, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    xp = backend.get_xp(backend.check_device(device))
    return Tensor(xp.zeros(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def ones(*shape, dtype=numpy.float32, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    xp = backend.get_xp(backend.check_device(device))
    return Tensor(xp.ones(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def full(shape, fill_value, dtype=numpy.float32, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    xp = backend.get_xp(backend.check_device(device))
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return Tensor(xp.full(shape, fill_value, dtype=dtype), requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=None, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    """Like torch.arange: integer arguments give int64, otherwise float32."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        all_ints = all(isinstance(v, (int, numpy.integer)) for v in (start, stop, step))
        dtype = numpy.int64 if all_ints else numpy.float32
    xp = backend.get_xp(backend.check_device(device))
    return Tensor(xp.arange(start, stop, step, dtype=dtype), requires_grad=requires_grad)


def randn(*shape, dtype=numpy.float32, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    """Standard normal samples from the device's generator (seed with ``tl.manual_seed``)."""
    device = backend.check_device(device)
    rng = backend.generator(device)
    return Tensor(rng.standard_normal(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def rand(*shape, dtype=numpy.float32, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1) from the device's generator."""
    device = backend.check_device(device)
    rng = backend.generator(device)
    return Tensor(rng.random(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def zeros_like(t: Tensor, requires_grad: bool = False) -> Tensor:
    return zeros(t.shape, dtype=t.dtype, device=t.device, requires_grad=requires_grad)


def ones_like(t: Tensor, requires_grad: bool = False) -> Tensor:
    return ones(t.shape, dtype=t.dtype, device=t.device, requires_grad=requires_grad)


def tensor(data, dtype=None, device: str | None = None, requires_grad: bool = False) -> Tensor:
    """Like ``Tensor(...)``; kept for readers used to ``torch.tensor``."""
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)

"""GELU on the CPU: the fast path of ``fused.Gelu``, the same math (see its docstring).

Each core takes a chunk of the elements, in blocks small enough to stay in its cache, and every
step is written into a preallocated array (``out=``): no temporaries, each pass over cached data.
"""
from __future__ import annotations

import numpy

from . import memory, threads


def forward(x, c: float, k: float):
    """(y, s) with s = (1 + tanh(c (x + k x^3))) / 2 and y = x s, both shaped like x."""
    flat = x.reshape(-1)  # also turns a 0-d x into a 1-element view, which takes out=
    s, out = memory.empty_like(flat), memory.empty_like(flat)

    def chunk(start, stop):
        xs, ss = flat[start:stop], s[start:stop]
        numpy.multiply(xs, xs, out=ss)
        ss *= c * k
        ss += c
        ss *= xs  # u = c x + c k x^3
        numpy.tanh(ss, out=ss)
        ss += 1.0
        ss *= 0.5  # s = (1 + t) / 2
        numpy.multiply(xs, ss, out=out[start:stop])

    threads.parallel_rows(chunk, flat.size, xp=numpy, cache_blocks=True)
    return out.reshape(x.shape), s.reshape(x.shape)


def backward(x, s, grad, c: float, k: float):
    """dL/dx = grad * (s + s (1 - s) (2 c x + 6 c k x^3))."""
    flat_x, flat_s, flat_grad = x.reshape(-1), s.reshape(-1), grad.reshape(-1)
    dx, scratch = memory.empty_like(flat_x), memory.empty_like(flat_x)

    def chunk(start, stop):
        xs, ss, dxs, s_one_minus_s = flat_x[start:stop], flat_s[start:stop], dx[start:stop], scratch[start:stop]
        numpy.multiply(xs, xs, out=dxs)
        dxs *= 6.0 * c * k
        dxs += 2.0 * c
        dxs *= xs  # 2 c x + 6 c k x^3
        numpy.subtract(1.0, ss, out=s_one_minus_s)
        s_one_minus_s *= ss
        dxs *= s_one_minus_s
        dxs += ss
        dxs *= flat_grad[start:stop]

    threads.parallel_rows(chunk, flat_x.size, xp=numpy, cache_blocks=True)
    return dx.reshape(grad.shape)

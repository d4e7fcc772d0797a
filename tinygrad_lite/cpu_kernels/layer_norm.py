"""Layer norm on the CPU: the fast path of ``fused.LayerNorm``, the same math (see its docstring).

Rows are independent, so each core normalises a chunk of them (``threads.parallel_rows``), in
blocks small enough to stay in its cache; row means are matrix-vector products with a column of
1/D, one BLAS call, several times faster than NumPy's reduction along the last axis.
"""
from __future__ import annotations

import numpy

from . import memory, threads


def forward(x, weight, bias, eps: float):
    """(out, (xhat, rstd)) for a numpy x (..., D): rows normalised chunk by chunk on the cores."""
    size = x.shape[-1]
    rows = x.reshape(-1, size)
    xhat, out = memory.empty_like(rows), memory.empty_like(rows)
    rstd = numpy.empty((rows.shape[0], 1), dtype=x.dtype)
    # Row means as a matrix-vector product with a column of 1/D: one BLAS call,
    # several times faster than NumPy's reduction along the last axis.
    average = numpy.full((size, 1), 1.0 / size, dtype=x.dtype)

    def chunk(start, stop):  # rows start..stop, each normalised on its own
        x_c, xhat_c, out_c, rstd_c = rows[start:stop], xhat[start:stop], out[start:stop], rstd[start:stop]
        numpy.subtract(x_c, x_c @ average, out=xhat_c)
        numpy.multiply(xhat_c, xhat_c, out=out_c)  # scratch for the variance; becomes the output below
        numpy.matmul(out_c, average, out=rstd_c)
        rstd_c += eps
        numpy.sqrt(rstd_c, out=rstd_c)
        numpy.reciprocal(rstd_c, out=rstd_c)
        xhat_c *= rstd_c
        if weight is not None:
            numpy.multiply(xhat_c, weight, out=out_c)
        else:
            out_c[...] = xhat_c  # a copy: the output must not alias the saved xhat
        if bias is not None:
            out_c += bias

    threads.parallel_rows(chunk, rows.shape[0], size, xp=numpy, cache_blocks=True)
    return out.reshape(x.shape), (xhat, rstd)


def backward(xhat, rstd, weight, grad, need_x: bool, need_weight: bool, need_bias: bool):
    """(dx, dw, db) (None where not needed), each chunk of rows on a core; dw and db are the
    chunks' sums added in a fixed order, so the result does not depend on the thread count."""
    xp = numpy
    grad_rows = grad.reshape(xhat.shape)
    g_xhat = memory.empty_like(xhat)  # g * xhat, then (in place) dx
    partial_sums = {}  # first row of a chunk -> its rows' sums of g * xhat and of g

    def chunk(start, stop):
        g, gx = grad_rows[start:stop], g_xhat[start:stop]
        xp.multiply(g, xhat[start:stop], out=gx)
        # column sums as (1, ..., 1) @ rows: one BLAS call, faster than NumPy's sum over axis 0
        ones = xp.ones(stop - start, dtype=xhat.dtype)
        partial_sums[start] = (ones @ gx if need_weight else None, ones @ g if need_bias else None)
        if need_x:  # rows are independent: each chunk overwrites its g_xhat rows with dx
            _grad_x(xp, g, gx, xhat[start:stop], rstd[start:stop], weight)

    threads.parallel_rows(chunk, xhat.shape[0], xhat.shape[1], xp=xp, cache_blocks=True)
    chunk_sums = [partial_sums[start] for start in sorted(partial_sums)]  # a fixed order: reproducible
    zeros = xp.zeros(xhat.shape[1], dtype=xhat.dtype)  # (also the answer when there are no rows)
    grad_weight = sum((sums[0] for sums in chunk_sums), zeros) if need_weight else None
    grad_bias = sum((sums[1] for sums in chunk_sums), zeros) if need_bias else None
    return (g_xhat.reshape(grad.shape) if need_x else None), grad_weight, grad_bias


def _grad_x(xp, grad, g_xhat, xhat, rstd, weight):
    """dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)); overwrites g_xhat."""
    size = xhat.shape[-1]
    if weight is not None:
        # sum_i a_i w_i is the matrix-vector product a @ w: BLAS does it with no temporary a * w
        mean_gw = (grad @ weight)[..., None] / size
        mean_gw_xhat = (g_xhat @ weight)[..., None] / size
    else:
        mean_gw = grad.mean(axis=-1, keepdims=True)
        mean_gw_xhat = g_xhat.mean(axis=-1, keepdims=True)
    correction = xhat * mean_gw_xhat
    correction += mean_gw
    dx = g_xhat  # reuse its memory: g * xhat is not needed any more
    if weight is not None:
        xp.multiply(grad, weight, out=dx)
    else:
        dx[...] = grad
    dx -= correction
    dx *= rstd
    return dx

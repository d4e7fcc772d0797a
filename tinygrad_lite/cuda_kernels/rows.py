"""Row-wise kernels: softmax, cross-entropy, layer norm and the attention softmax.

Each launch runs one thread block per row of the last axis (see ``row_source.py``),
plus a few ``ElementwiseKernel``s for the simple per-element backward passes.
"""
from __future__ import annotations

import functools

import numpy

from .launch import _cupy, _f32, _i32, _rows, _threads_for_row, elementwise
from .row_source import ROW_KERNELS_SOURCE

def _row_module():
    """The row kernels, compiled on first use (CuPy caches the binary on disk across runs)."""
    return _cupy().RawModule(code=ROW_KERNELS_SOURCE)


@functools.cache
def _row_kernel(name: str):
    return _row_module().get_function(name)


# ------------------------------------------------------------------ softmax


def softmax_forward(x, log: bool):
    """Softmax (or log-softmax) over the last axis, one thread block per row.

        m = max_j x_j,  s = sum_j e^(x_j - m)      (one pass, "online": m and s are updated together)
        softmax:      y_i = e^(x_i - m) / s
        log-softmax:  y_i = (x_i - m) - log s

    Twin: ``fused.Softmax.forward`` / ``fused.LogSoftmax.forward``.
    """
    rows = _rows(x)
    y = _cupy().empty_like(rows)
    cols = rows.shape[1]
    _row_kernel("tl_softmax_forward")((rows.shape[0],), (_threads_for_row(cols),),
                                      (rows, y, _i32(cols), _i32(bool(log))))
    return y.reshape(x.shape)


def softmax_backward(y, grad, log: bool):
    """The gradient of softmax / log-softmax over the last axis, from the saved output ``y``.

        softmax:      dx = y * (g - sum(g * y))
        log-softmax:  dx = g - e^y * sum(g)

    Twin: ``fused.Softmax.backward`` / ``fused.LogSoftmax.backward``.
    """
    y_rows, g_rows = _rows(y), _rows(grad)
    dx = _cupy().empty_like(y_rows)
    cols = y_rows.shape[1]
    _row_kernel("tl_softmax_backward")((y_rows.shape[0],), (_threads_for_row(cols),),
                                       (y_rows, g_rows, dx, _i32(cols), _i32(bool(log))))
    return dx.reshape(y.shape)


# ------------------------------------------------------------ cross-entropy

CROSS_ENTROPY_BACKWARD = dict(
    in_params="raw float32 logits, raw int64 targets, raw float32 lse, raw float32 weight, int64 cols",
    out_params="float32 dx",
    operation="""
        const long long row = i / cols, col = i - row * cols;
        const float prob = expf(logits[i] - lse[row]);      // softmax, recomputed from the log-sum-exp
        dx = (prob - (col == targets[row] ? 1.0f : 0.0f)) * weight[row];
    """,
    name="tl_cross_entropy_backward")


def cross_entropy_forward(logits, targets, ignore_index: int):
    """Per-row cross-entropy of (N, C) logits against int64 targets (N,), one block per row.

        lse_n  = m_n + log sum_c e^(x_nc - m_n)      (m_n = max_c x_nc)
        loss_n = lse_n - x_n[t_n]                     (0 where t_n == ignore_index)

    Returns (losses, lse); the backward recomputes the softmax from lse, so no
    (N, C) probability matrix is kept (for GPT-2's 50k vocabulary that is the
    biggest activation of all). Twin: ``fused.CrossEntropy.forward``.
    """
    cp = _cupy()
    rows, cols = logits.shape
    losses = cp.empty(rows, dtype=numpy.float32)
    lse = cp.empty(rows, dtype=numpy.float32)
    _row_kernel("tl_cross_entropy_forward")((rows,), (_threads_for_row(cols),),
                                            (logits, targets, losses, lse, _i32(cols), numpy.int64(ignore_index)))
    return losses, lse


def cross_entropy_backward(logits, targets, lse, row_weight):
    """dx_nc = (e^(x_nc - lse_n) - [c == t_n]) * w_n in one elementwise pass.

    ``row_weight`` w_n already holds the upstream gradient, the 1/count of
    "mean" and a 0 for ignored rows. Twin: ``fused.CrossEntropy.backward``.
    """
    dx = _cupy().empty_like(logits)
    elementwise(CROSS_ENTROPY_BACKWARD)(logits.reshape(-1), targets, lse, row_weight,
                                           numpy.int64(logits.shape[1]), dx)
    return dx


# --------------------------------------------------------------- layer norm


def layer_norm_forward(rows, weight, bias, eps: float):
    """Layer norm of each row of a contiguous (N, D) array, one block per row.

        mean = sum(x) / D,  var = sum((x - mean)^2) / D,  rstd = 1 / sqrt(var + eps)
        y = (x - mean) * rstd * w + b          (w, b optional)

    Returns (y, mean, rstd); the backward recomputes xhat from x, mean and rstd
    instead of keeping an (N, D) xhat. Twin: ``fused.LayerNorm.forward``.
    """
    cp = _cupy()
    n, d = rows.shape
    y = cp.empty_like(rows)
    mean = cp.empty(n, dtype=numpy.float32)
    rstd = cp.empty(n, dtype=numpy.float32)
    w = cp.ascontiguousarray(weight) if weight is not None else rows  # any pointer: unused when absent
    b = cp.ascontiguousarray(bias) if bias is not None else rows
    _row_kernel("tl_layer_norm_forward")((n,), (_threads_for_row(d),),
                                         (rows, w, b, y, mean, rstd, _i32(d), _f32(eps),
                                          _i32(weight is not None), _i32(bias is not None)))
    return y, mean, rstd


_LAYER_NORM_ROWS_PER_CHUNK = 64


def _layer_norm_rows_per_chunk(rows: int) -> int:
    """Rows summed by one block of the dw/db kernel (at most 65535 chunks: a grid's y limit)."""
    return max(_LAYER_NORM_ROWS_PER_CHUNK, -(-rows // 65535))


def layer_norm_backward(rows, grad_rows, mean, rstd, weight, need_x: bool, need_weight: bool, need_bias: bool):
    """Gradients of layer norm for contiguous (N, D) rows and upstream gradients.

        xhat = (x - mean) * rstd,  gw = g * w
        dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat))     (one block per row)
        dw = sum_rows g * xhat,   db = sum_rows g                (column sums: partial sums
                                                                   per chunk of rows, then added)

    Returns (dx, dw, db), None for what is not needed. Twin: ``fused.LayerNorm.backward``.
    """
    cp = _cupy()
    n, d = rows.shape
    grad_x = grad_weight = grad_bias = None
    if need_x:
        grad_x = cp.empty_like(rows)
        w = cp.ascontiguousarray(weight) if weight is not None else rows
        _row_kernel("tl_layer_norm_backward_input")((n,), (_threads_for_row(d),),
                                                    (rows, grad_rows, mean, rstd, w, grad_x, _i32(d),
                                                     _i32(weight is not None)))
    if need_weight or need_bias:
        rows_per_chunk = _layer_norm_rows_per_chunk(n)
        chunks = -(-n // rows_per_chunk)
        partial_dw = cp.empty((chunks, d), dtype=numpy.float32)
        partial_db = cp.empty((chunks, d), dtype=numpy.float32)
        _row_kernel("tl_layer_norm_backward_params")((-(-d // 32), chunks), (32, 8),
                                                     (rows, grad_rows, mean, rstd, partial_dw, partial_db,
                                                      _i32(n), _i32(d), _i32(rows_per_chunk)))
        grad_weight = partial_dw.sum(axis=0) if need_weight else None
        grad_bias = partial_db.sum(axis=0) if need_bias else None
    return grad_x, grad_weight, grad_bias


# ------------------------------------------------------- attention softmax

ATTENTION_SOFTMAX_BACKWARD = dict(
    in_params="raw float32 delta, float32 probs, int64 tk, float32 scale", out_params="float32 grad_scores",
    operation="grad_scores = (grad_scores - delta[i / tk]) * probs * scale",
    name="tl_attention_softmax_backward")


def attention_softmax_forward(scores, scale: float, causal: bool) -> None:
    """In place on the contiguous (..., Tq, Tk) scores S = Q K^T, one block per row:

        P = softmax(S * scale),  keys j > i masked out (P_ij = 0) for query i when ``causal``

    Scaling, masking and softmax in one read and one write of the T x T matrix
    (the twin needs five passes and a mask array). Twin: the middle of
    ``fused.ScaledDotProductAttention.forward``.
    """
    if not scores.flags.c_contiguous:  # the kernel walks rows of tk consecutive floats
        raise ValueError("attention_softmax_forward: the scores must be C-contiguous (a fresh matmul result)")
    tq, tk = scores.shape[-2:]
    _row_kernel("tl_attention_softmax_forward")((scores.size // tk,), (_threads_for_row(tk),),
                                                (scores, _i32(tq), _i32(tk), _f32(scale), _i32(bool(causal))))


def attention_softmax_backward(grad_scores, probs, delta, scale: float) -> None:
    """In place on dP = G V^T:  dS * scale = (dP - delta) * P * scale,  delta_i = rowsum(G * out)_i.

    (softmax backward, and the scale of S = Q K^T * scale, in one elementwise
    pass.) Twin: the middle of ``fused.ScaledDotProductAttention.backward``.
    """
    delta = _cupy().ascontiguousarray(delta, dtype=numpy.float32).reshape(-1)
    elementwise(ATTENTION_SOFTMAX_BACKWARD)(delta, probs, numpy.int64(grad_scores.shape[-1]), _f32(scale),
                                               grad_scores)

"""Per-element and many-tensor kernels: GELU, gradient clipping and the AdamW update."""
from __future__ import annotations

import math

import numpy

from .launch import _cupy, _f32, _i32, elementwise
from .rows import _row_kernel

# --------------------------------------------------------------------- GELU

_GELU_PREAMBLE = """
#define TL_GELU_C 0.7978845608028654f   /* sqrt(2 / pi) */
#define TL_GELU_K 0.044715f
"""

GELU_FORWARD = dict(
    in_params="float32 x", out_params="float32 y",
    operation="""
        const float t = tanhf(x * (1.0f + TL_GELU_K * x * x) * TL_GELU_C);
        y = 0.5f * x * (1.0f + t);
    """,
    name="tl_gelu_forward", preamble=_GELU_PREAMBLE)

GELU_BACKWARD = dict(
    in_params="float32 x, float32 g", out_params="float32 dx",
    operation="""
        const float t = tanhf(x * (1.0f + TL_GELU_K * x * x) * TL_GELU_C);
        const float x_du_dx = x * (1.0f + 3.0f * TL_GELU_K * x * x) * TL_GELU_C;
        dx = 0.5f * (1.0f + t + x_du_dx * (1.0f - t * t)) * g;
    """,
    name="tl_gelu_backward", preamble=_GELU_PREAMBLE)


def gelu_forward(x):
    """GELU (tanh approximation), one thread per element:

        y = 0.5 x (1 + tanh(u)),   u = c (x + k x^3),   c = sqrt(2/pi), k = 0.044715

    Twin: ``fused.Gelu.forward``. Only x is saved: the backward recomputes the tanh
    (cheaper on a GPU than storing and re-reading it).
    """
    return elementwise(GELU_FORWARD)(x)


def gelu_backward(x, grad):
    """dx = g * (0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 k x^2)),  t = tanh(c (x + k x^3)).

    Twin: ``fused.Gelu.backward``.
    """
    return elementwise(GELU_BACKWARD)(x, grad)


# ------------------------------------------------------ gradient clipping

_MULTI_THREADS = 256
_MULTI_MAX_BLOCKS = 1024


def _pointer_table(arrays):
    """(addresses uint64, offsets int64) on the GPU for a list of contiguous arrays, and the element count."""
    cp = _cupy()
    offsets = numpy.zeros(len(arrays) + 1, dtype=numpy.int64)
    numpy.cumsum([a.size for a in arrays], out=offsets[1:])
    pointers = numpy.array([a.data.ptr for a in arrays], dtype=numpy.uint64)
    return cp.asarray(pointers), cp.asarray(offsets), int(offsets[-1])


def _multi_grid(total: int) -> int:
    return max(1, min(_MULTI_MAX_BLOCKS, -(-total // _MULTI_THREADS)))


def sum_of_squares(arrays) -> float:
    """sum over all arrays and elements of x^2 (in float64), in one launch plus one small sum.

    For ``optim.clip_grad_norm_`` on the GPU: the twin is its CPU loop,
    ``sum(float((g * g).sum()) for g in grads)``. Each block of threads
    adds up a stretch of the flat index range of all the tensors together.
    """
    pointers, offsets, total = _pointer_table(arrays)
    blocks = _multi_grid(total)
    partial = _cupy().empty(blocks, dtype=numpy.float64)
    _row_kernel("tl_multi_sum_of_squares")((blocks,), (_MULTI_THREADS,),
                                           (pointers, offsets, _i32(len(arrays)), partial))
    return float(partial.sum())


def scale_(arrays, factor: float) -> None:
    """x = x * factor in place for every element of every array, in one launch (twin: ``grad.mul_(factor)``)."""
    pointers, offsets, total = _pointer_table(arrays)
    _row_kernel("tl_multi_scale")((_multi_grid(total),), (_MULTI_THREADS,),
                                  (pointers, offsets, _i32(len(arrays)), _f32(factor)))


# ------------------------------------------------------------------- AdamW

ADAM_UPDATE = dict(
    in_params=("raw uint64 params, raw uint64 grads, raw int64 offsets, int32 n_tensors, int32 use_l2, "
               "float32 weight_decay, float32 decay, float32 beta1, float32 one_minus_beta1, float32 beta2, "
               "float32 one_minus_beta2, float32 sqrt_bias_correction2, float32 eps, float32 step_size"),
    out_params="float32 exp_avg, float32 exp_avg_sq",
    operation="""
        // Element i of the flat moment buffers belongs to the tensor t with offsets[t] <= i < offsets[t + 1].
        int lo = 0, hi = n_tensors - 1;
        while (lo < hi) {
            const int mid = (lo + hi + 1) / 2;
            if (offsets[mid] <= i) lo = mid; else hi = mid - 1;
        }
        const long long local = i - offsets[lo];
        float* param = reinterpret_cast<float*>(params[lo]) + local;
        float g = reinterpret_cast<const float*>(grads[lo])[local];
        float p = *param;
        // The _rn intrinsics round every product and sum on its own (no fused multiply-add),
        // so each step rounds exactly as the NumPy twin's array ops do.
        if (use_l2) g = __fadd_rn(g, __fmul_rn(p, weight_decay));        // Adam: g + wd p
        p = __fmul_rn(p, decay);                                          // AdamW: p (1 - lr wd)
        exp_avg = __fadd_rn(__fmul_rn(exp_avg, beta1), __fmul_rn(g, one_minus_beta1));
        exp_avg_sq = __fadd_rn(__fmul_rn(exp_avg_sq, beta2), __fmul_rn(__fmul_rn(g, one_minus_beta2), g));
        const float denominator = __fadd_rn(__fdiv_rn(__fsqrt_rn(exp_avg_sq), sqrt_bias_correction2), eps);
        *param = __fsub_rn(p, __fdiv_rn(__fmul_rn(exp_avg, step_size), denominator));
    """,
    name="tl_adam_update")


def adam_update(params, grads, exp_avg, exp_avg_sq, offsets, *, use_l2: bool, weight_decay: float, decay: float,
                beta1: float, beta2: float, bias_correction1: float, bias_correction2: float, lr: float,
                eps: float) -> None:
    """One Adam/AdamW step for *all* parameters of a group in a single kernel launch.

    ``params`` and ``grads`` are lists of contiguous float32 CuPy arrays (updated
    in place: they stay the same arrays); ``exp_avg``/``exp_avg_sq`` are the
    group's flat moment buffers and ``offsets`` (int64 on the GPU) where each
    tensor starts in them. Thread i finds its tensor by binary search and does

        g = g + wd p                      (Adam's L2 term, if use_l2)
        p = p (1 - lr wd)                 (AdamW's decoupled decay; decay = 1 for Adam)
        m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
        p = p - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)

    Twin: ``optim.flat_adam.update_flat`` (rounding for rounding: the same float32
    operations in the same order).
    """
    cp = _cupy()
    # the tensors' addresses, for the kernel to reach them without copying them into one buffer
    pointers = cp.asarray(numpy.array([a.data.ptr for a in params] + [g.data.ptr for g in grads], dtype=numpy.uint64))
    count = len(params)
    elementwise(ADAM_UPDATE)(pointers[:count], pointers[count:], offsets, _i32(count), _i32(bool(use_l2)),
                                _f32(weight_decay), _f32(decay), _f32(beta1), _f32(1.0 - beta1), _f32(beta2),
                                _f32(1.0 - beta2), _f32(math.sqrt(bias_correction2)), _f32(eps),
                                _f32(lr / bias_correction1), exp_avg, exp_avg_sq)

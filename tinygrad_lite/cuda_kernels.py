"""Fused CUDA kernels for the GPU hot paths, written with CuPy.

On the GPU every primitive op is one CuPy call, i.e. one kernel launch that
reads its inputs from GPU memory and writes its output back. A softmax built
from primitives is five launches and five round trips through memory; the
kernels here do each hot spot in one or two. Each is a small Python function
with the math in its docstring, and each has a **NumPy twin**: the code path
in ``fused.py`` or ``optim.py`` that computes the same thing with array ops
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
    adam_update                              optim._adam_update_flat (the fused AdamW/Adam step)
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
"""
from __future__ import annotations

import contextlib
import functools
import math
import os

import numpy

from . import backend

# ------------------------------------------------------------------ switches

_enabled = os.environ.get("TINYGRAD_LITE_CUDA_KERNELS", "1").strip() != "0"
_attention_mode = os.environ.get("TINYGRAD_LITE_ATTENTION", "auto").strip().lower() or "auto"
FLASH_AUTO_BYTES = 1 << 30
FLASH_MAX_HEAD_DIM = 64  # the flash kernels keep a head-sized row per thread in registers / shared memory
_ATTENTION_MODES = ("auto", "flash", "matmul")
if _attention_mode not in _ATTENTION_MODES:
    raise ValueError(f"TINYGRAD_LITE_ATTENTION={_attention_mode!r}: expected one of {_ATTENTION_MODES}")


def enabled() -> bool:
    """Whether the fused kernels are used on the GPU (``TINYGRAD_LITE_CUDA_KERNELS``, default on)."""
    return _enabled


def set_enabled(value: bool) -> None:
    global _enabled
    _enabled = bool(value)


@contextlib.contextmanager
def disabled():
    """Inside ``with cuda_kernels.disabled():`` GPU ops run their array-op twins instead of the kernels."""
    previous = _enabled
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(previous)


def set_attention_mode(mode: str) -> None:
    """'auto', 'flash' or 'matmul' (see the module docstring)."""
    global _attention_mode
    if mode not in _ATTENTION_MODES:
        raise ValueError(f"set_attention_mode: expected one of {_ATTENTION_MODES}, got {mode!r}")
    _attention_mode = mode


def attention_mode() -> str:
    return _attention_mode


def supports(*arrays, last_axis=None) -> bool:
    """True when the kernels take these arrays: kernels on, every array a non-empty float32 CuPy array.

    ``last_axis``, if given, is the normalised axis tuple of a row-wise op: the
    row kernels only reduce over the last axis.
    """
    if not _enabled:
        return False
    for array in arrays:
        if array is None:
            continue
        if not backend.is_cuda(array) or array.dtype != numpy.float32 or array.size == 0:
            return False
    if last_axis is not None:
        first = arrays[0]
        if first.ndim == 0 or tuple(last_axis) != (first.ndim - 1,):
            return False
    return True


def attention_algorithm(q, k, v) -> str | None:
    """Which GPU attention to run for these inputs: 'flash', 'fused_softmax', or None (use the twin)."""
    if not supports(q, k, v):
        return None
    same_batch = q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
    flash_fits = same_batch and q.shape[-1] == v.shape[-1] <= FLASH_MAX_HEAD_DIM
    if _attention_mode == "flash" and flash_fits:
        return "flash"
    if _attention_mode == "auto" and flash_fits:
        batch = math.prod(q.shape[:-2])
        if batch * q.shape[-2] * k.shape[-2] * 4 > FLASH_AUTO_BYTES:
            return "flash"
    return "fused_softmax"


# ---------------------------------------------------------------- plumbing


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


# ------------------------------------------------------- row kernels (CUDA C)

ROW_KERNELS_SOURCE = r"""
// ---------------------------------------------------------------- helpers
#define TL_NEG_INF (-__int_as_float(0x7f800000))
#define TL_FULL_MASK 0xffffffffu

// (m, s) summarises a set of numbers x_j as s = sum_j e^(x_j - m). Add one number.
__device__ __forceinline__ void tl_add_element(float& m, float& s, const float x) {
    if (x > m) {                       // a new maximum: rescale what we have
        s = s * expf(m - x) + 1.0f;
        m = x;
    } else if (x != TL_NEG_INF) {      // -inf contributes e^-inf = 0 (and -inf - -inf would be NaN)
        s += expf(x - m);
    }
}

// Merge the summary (m2, s2) of another set into (m, s).
__device__ __forceinline__ void tl_merge(float& m, float& s, const float m2, const float s2) {
    const float m_new = fmaxf(m, m2);
    if (m_new == TL_NEG_INF) return;   // both sets empty (or all -inf)
    s = s * expf(m - m_new) + s2 * expf(m2 - m_new);
    m = m_new;
}

__device__ __forceinline__ void tl_warp_merge(float& m, float& s) {
    #pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float m2 = __shfl_xor_sync(TL_FULL_MASK, m, offset);
        const float s2 = __shfl_xor_sync(TL_FULL_MASK, s, offset);
        tl_merge(m, s, m2, s2);
    }
}

// Every thread of the block ends with the summary of the whole block.
// blockDim.x must be a multiple of 32.
__device__ void tl_block_merge(float& m, float& s) {
    __shared__ float shared_m[32], shared_s[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    tl_warp_merge(m, s);
    __syncthreads();                   // a previous call may still be reading shared_*
    if (lane == 0) { shared_m[warp] = m; shared_s[warp] = s; }
    __syncthreads();
    m = lane < n_warps ? shared_m[lane] : TL_NEG_INF;
    s = lane < n_warps ? shared_s[lane] : 0.0f;
    tl_warp_merge(m, s);               // each warp reduces the per-warp partials itself
}

__device__ __forceinline__ float tl_warp_sum(float a) {
    #pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) a += __shfl_xor_sync(TL_FULL_MASK, a, offset);
    return a;
}

// Block-wide sums of two numbers; every thread gets both totals.
__device__ void tl_block_sum2(float& a, float& b) {
    __shared__ float shared_a[32], shared_b[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    a = tl_warp_sum(a);
    b = tl_warp_sum(b);
    __syncthreads();
    if (lane == 0) { shared_a[warp] = a; shared_b[warp] = b; }
    __syncthreads();
    a = tl_warp_sum(lane < n_warps ? shared_a[lane] : 0.0f);
    b = tl_warp_sum(lane < n_warps ? shared_b[lane] : 0.0f);
}

// ---------------------------------------------------------------- softmax
// One block per row of `cols` elements.
// y = e^(x - m) / s             (log_mode 0)
// y = (x - m) - log s           (log_mode 1)
extern "C" __global__ void tl_softmax_forward(const float* __restrict__ x, float* __restrict__ y,
                                              const int cols, const int log_mode) {
    const long long start = (long long)blockIdx.x * cols;
    const float* x_row = x + start;
    float* y_row = y + start;
    float m = TL_NEG_INF, s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) tl_add_element(m, s, x_row[c]);
    tl_block_merge(m, s);
    if (log_mode) {
        const float log_s = logf(s);
        for (int c = threadIdx.x; c < cols; c += blockDim.x) y_row[c] = (x_row[c] - m) - log_s;
    } else {
        for (int c = threadIdx.x; c < cols; c += blockDim.x) y_row[c] = expf(x_row[c] - m) / s;
    }
}

// dx = y * (g - sum(g * y))      (log_mode 0: y is the softmax)
// dx = g - e^y * sum(g)          (log_mode 1: y is the log-softmax)
extern "C" __global__ void tl_softmax_backward(const float* __restrict__ y, const float* __restrict__ g,
                                               float* __restrict__ dx, const int cols, const int log_mode) {
    const long long start = (long long)blockIdx.x * cols;
    const float* y_row = y + start;
    const float* g_row = g + start;
    float* dx_row = dx + start;
    float total = 0.0f, unused = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) total += log_mode ? g_row[c] : g_row[c] * y_row[c];
    tl_block_sum2(total, unused);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        dx_row[c] = log_mode ? g_row[c] - expf(y_row[c]) * total : y_row[c] * (g_row[c] - total);
    }
}

// ---------------------------------------------------------- cross-entropy
// One block per row n: lse_n = m + log s (the log-sum-exp of the logits),
// loss_n = lse_n - x_n[t_n], or 0 when t_n == ignore_index.
extern "C" __global__ void tl_cross_entropy_forward(const float* __restrict__ logits,
                                                    const long long* __restrict__ targets,
                                                    float* __restrict__ losses, float* __restrict__ lse,
                                                    const int cols, const long long ignore_index) {
    const long long row = blockIdx.x;
    const float* x_row = logits + row * cols;
    float m = TL_NEG_INF, s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) tl_add_element(m, s, x_row[c]);
    tl_block_merge(m, s);
    if (threadIdx.x == 0) {
        const float row_lse = logf(s) + m;
        const long long target = targets[row];
        lse[row] = row_lse;
        losses[row] = target == ignore_index ? 0.0f : row_lse - x_row[target];
    }
}

// ------------------------------------------------------------- layer norm
// One block per row: mean, var = mean((x - mean)^2) (two passes: no cancellation),
// rstd = 1 / sqrt(var + eps), y = (x - mean) * rstd [* w] [+ b].
extern "C" __global__ void tl_layer_norm_forward(const float* __restrict__ x, const float* __restrict__ weight,
                                                 const float* __restrict__ bias, float* __restrict__ y,
                                                 float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                                 const int cols, const float eps,
                                                 const int has_weight, const int has_bias) {
    const long long row = blockIdx.x;
    const float* x_row = x + row * cols;
    float* y_row = y + row * cols;
    float sum = 0.0f, unused = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) sum += x_row[c];
    tl_block_sum2(sum, unused);
    const float mean = sum / cols;
    float squares = 0.0f;
    unused = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float centered = x_row[c] - mean;
        squares += centered * centered;
    }
    tl_block_sum2(squares, unused);
    const float rstd = 1.0f / sqrtf(squares / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float value = (x_row[c] - mean) * rstd;
        if (has_weight) value *= weight[c];
        if (has_bias) value += bias[c];
        y_row[c] = value;
    }
    if (threadIdx.x == 0) {
        mean_out[row] = mean;
        rstd_out[row] = rstd;
    }
}

// One block per row: with xhat = (x - mean) * rstd and gw = g * w (g without a weight),
// dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)).
extern "C" __global__ void tl_layer_norm_backward_input(const float* __restrict__ x, const float* __restrict__ g,
                                                        const float* __restrict__ mean, const float* __restrict__ rstd,
                                                        const float* __restrict__ weight, float* __restrict__ dx,
                                                        const int cols, const int has_weight) {
    const long long row = blockIdx.x;
    const float* x_row = x + row * cols;
    const float* g_row = g + row * cols;
    float* dx_row = dx + row * cols;
    const float row_mean = mean[row], row_rstd = rstd[row];
    float sum_gw = 0.0f, sum_gw_xhat = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float xhat = (x_row[c] - row_mean) * row_rstd;
        const float gw = has_weight ? g_row[c] * weight[c] : g_row[c];
        sum_gw += gw;
        sum_gw_xhat += gw * xhat;
    }
    tl_block_sum2(sum_gw, sum_gw_xhat);
    const float mean_gw = sum_gw / cols, mean_gw_xhat = sum_gw_xhat / cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float xhat = (x_row[c] - row_mean) * row_rstd;
        const float gw = has_weight ? g_row[c] * weight[c] : g_row[c];
        dx_row[c] = (gw - (xhat * mean_gw_xhat + mean_gw)) * row_rstd;
    }
}

// dw = sum over rows of g * xhat, db = sum over rows of g: column sums.
// Block (32, 8) covers 32 columns (coalesced reads along a row) of one chunk of
// rows_per_chunk rows; each block writes one partial sum per column, and the
// caller adds the chunks' partials (a small (chunks, cols) array).
extern "C" __global__ void tl_layer_norm_backward_params(const float* __restrict__ x, const float* __restrict__ g,
                                                         const float* __restrict__ mean,
                                                         const float* __restrict__ rstd,
                                                         float* __restrict__ partial_dw, float* __restrict__ partial_db,
                                                         const int rows, const int cols, const int rows_per_chunk) {
    __shared__ float shared_dw[8][33], shared_db[8][33];   // 33: no shared-memory bank conflicts
    const int col = blockIdx.x * 32 + threadIdx.x;
    const int row_begin = blockIdx.y * rows_per_chunk;
    const int row_end = min(rows, row_begin + rows_per_chunk);
    float dw = 0.0f, db = 0.0f;
    if (col < cols) {
        for (int row = row_begin + threadIdx.y; row < row_end; row += 8) {
            const long long at = (long long)row * cols + col;
            const float grad = g[at];
            dw += grad * ((x[at] - mean[row]) * rstd[row]);
            db += grad;
        }
    }
    shared_dw[threadIdx.y][threadIdx.x] = dw;
    shared_db[threadIdx.y][threadIdx.x] = db;
    __syncthreads();
    if (threadIdx.y == 0 && col < cols) {
        for (int k = 1; k < 8; ++k) {
            dw += shared_dw[k][threadIdx.x];
            db += shared_db[k][threadIdx.x];
        }
        partial_dw[(long long)blockIdx.y * cols + col] = dw;
        partial_db[(long long)blockIdx.y * cols + col] = db;
    }
}

// ------------------------------------------------------ many tensors at once
// Tensor t (float32, contiguous, at address pointers[t]) holds the flat elements
// offsets[t] .. offsets[t + 1] - 1. Grid-stride loops over the flat index i; i only
// grows, so each thread walks forward through the tensors instead of searching.

__device__ __forceinline__ double tl_warp_sum_double(double a) {
    #pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) a += __shfl_xor_sync(TL_FULL_MASK, a, offset);
    return a;
}

// sum of x^2 over every element of every tensor, accumulated in double; one partial sum per block
extern "C" __global__ void tl_multi_sum_of_squares(const unsigned long long* __restrict__ pointers,
                                                   const long long* __restrict__ offsets, const int n_tensors,
                                                   double* __restrict__ partial) {
    __shared__ double shared[32];
    const long long total = offsets[n_tensors];
    double sum = 0.0;
    int t = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        while (offsets[t + 1] <= i) ++t;
        const double x = reinterpret_cast<const float*>(pointers[t])[i - offsets[t]];
        sum += x * x;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    sum = tl_warp_sum_double(sum);
    if (lane == 0) shared[warp] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        double block_sum = 0.0;
        for (int w = 0; w < n_warps; ++w) block_sum += shared[w];
        partial[blockIdx.x] = block_sum;
    }
}

// x = x * factor for every element of every tensor
extern "C" __global__ void tl_multi_scale(const unsigned long long* __restrict__ pointers,
                                          const long long* __restrict__ offsets, const int n_tensors,
                                          const float factor) {
    const long long total = offsets[n_tensors];
    int t = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        while (offsets[t + 1] <= i) ++t;
        float* x = reinterpret_cast<float*>(pointers[t]) + (i - offsets[t]);
        *x = *x * factor;
    }
}

// ------------------------------------------------------ attention softmax
// In place on the scores S (rows of tk keys; row r belongs to query r % tq):
// P = softmax(S * scale), with keys j > query masked out (P = 0) when causal.
extern "C" __global__ void tl_attention_softmax_forward(float* __restrict__ scores, const int tq, const int tk,
                                                        const float scale, const int causal) {
    const long long row = blockIdx.x;
    float* s_row = scores + row * tk;
    const int query = (int)(row % tq);
    const int visible = causal ? min(tk, query + 1) : tk;  // keys 0..query (top-left aligned)
    float m = TL_NEG_INF, s = 0.0f;
    for (int c = threadIdx.x; c < visible; c += blockDim.x) tl_add_element(m, s, s_row[c] * scale);
    tl_block_merge(m, s);
    for (int c = threadIdx.x; c < tk; c += blockDim.x) {
        s_row[c] = c < visible ? expf(s_row[c] * scale - m) / s : 0.0f;
    }
}
"""


@functools.cache
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
    _elementwise("CROSS_ENTROPY_BACKWARD")(logits.reshape(-1), targets, lse, row_weight,
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
    return _elementwise("GELU_FORWARD")(x)


def gelu_backward(x, grad):
    """dx = g * (0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 k x^2)),  t = tanh(c (x + k x^3)).

    Twin: ``fused.Gelu.backward``.
    """
    return _elementwise("GELU_BACKWARD")(x, grad)


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
    _elementwise("ATTENTION_SOFTMAX_BACKWARD")(delta, probs, numpy.int64(grad_scores.shape[-1]), _f32(scale),
                                               grad_scores)


# ----------------------------------------------------------- flash attention

FLASH_BLOCK = 64     # queries per block in the forward and dQ kernels, keys per block in the dK/dV kernel
FLASH_TILE = 16      # keys (forward, dQ) or queries (dK/dV) staged in shared memory at a time

FLASH_ATTENTION_SOURCE = r"""
// Compiled with -DHEAD_DIM=D (D <= 64). q, k, v, out, grads: (batch, T, D) contiguous;
// lse, delta: (batch, tq). Grid (batch, tiles), FLASH_BLOCK threads: one thread per query
// (forward, dQ) or per key (dK, dV). Keys j > query i are masked when causal (top-left aligned).
#define TL_NEG_INF (-__int_as_float(0x7f800000))
#define BLOCK FLASH_BLOCK_VALUE
#define TILE FLASH_TILE_VALUE
#define ROW (HEAD_DIM + 1)          // padded shared-memory rows: thread t reads row t conflict-free

// Forward: for query i, over key tiles, online softmax (Milakov & Gimelshein; FlashAttention):
//   s_j = q_i . k_j * scale;  m' = max(m, max_j s_j);  l = l e^(m - m') + sum_j e^(s_j - m');
//   acc = acc e^(m - m') + sum_j e^(s_j - m') v_j;  m = m'.
//   out_i = acc / l,  lse_i = m + log l  (kept for the backward).
extern "C" __global__ void tl_flash_attention_forward(
        const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
        float* __restrict__ out, float* __restrict__ lse,
        const int tq, const int tk, const float scale, const int causal) {
    __shared__ float k_tile[TILE][HEAD_DIM];
    __shared__ float v_tile[TILE][HEAD_DIM];
    const long long batch = blockIdx.x;
    const int first_query = blockIdx.y * BLOCK;
    const int query = first_query + threadIdx.x;
    const bool active = query < tq;
    const float* q_batch = q + batch * tq * HEAD_DIM;
    const float* k_batch = k + batch * tk * HEAD_DIM;
    const float* v_batch = v + batch * tk * HEAD_DIM;

    float q_row[HEAD_DIM], acc[HEAD_DIM];
    #pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) {
        q_row[d] = active ? q_batch[(long long)query * HEAD_DIM + d] : 0.0f;
        acc[d] = 0.0f;
    }
    float m = TL_NEG_INF, l = 0.0f;
    const int last_query = min(tq - 1, first_query + BLOCK - 1);
    const int key_end = causal ? min(tk, last_query + 1) : tk;   // later keys: masked for the whole block

    for (int key_start = 0; key_start < key_end; key_start += TILE) {
        for (int index = threadIdx.x; index < TILE * HEAD_DIM; index += blockDim.x) {
            const int r = index / HEAD_DIM, d = index % HEAD_DIM, key = key_start + r;
            k_tile[r][d] = key < tk ? k_batch[(long long)key * HEAD_DIM + d] : 0.0f;
            v_tile[r][d] = key < tk ? v_batch[(long long)key * HEAD_DIM + d] : 0.0f;
        }
        __syncthreads();
        if (active) {
            float scores[TILE];
            float tile_max = TL_NEG_INF;
            #pragma unroll
            for (int j = 0; j < TILE; ++j) {
                const int key = key_start + j;
                float score = TL_NEG_INF;
                if (key < tk && !(causal && key > query)) {
                    float dot = 0.0f;
                    #pragma unroll
                    for (int d = 0; d < HEAD_DIM; ++d) dot += q_row[d] * k_tile[j][d];
                    score = dot * scale;
                }
                scores[j] = score;
                tile_max = fmaxf(tile_max, score);
            }
            if (tile_max != TL_NEG_INF) {          // some key of this tile is visible
                const float m_new = fmaxf(m, tile_max);
                const float correction = expf(m - m_new);   // 0 on the first visible tile (m = -inf)
                l *= correction;
                #pragma unroll
                for (int d = 0; d < HEAD_DIM; ++d) acc[d] *= correction;
                #pragma unroll
                for (int j = 0; j < TILE; ++j) {
                    const float p = expf(scores[j] - m_new);  // masked keys: e^-inf = 0
                    l += p;
                    #pragma unroll
                    for (int d = 0; d < HEAD_DIM; ++d) acc[d] += p * v_tile[j][d];
                }
                m = m_new;
            }
        }
        __syncthreads();
    }
    if (active) {
        float* out_row = out + (batch * tq + query) * HEAD_DIM;
        #pragma unroll
        for (int d = 0; d < HEAD_DIM; ++d) out_row[d] = acc[d] / l;
        lse[batch * tq + query] = m + logf(l);
    }
}

// Backward, dK and dV: one thread per key j, over tiles of the queries that see it:
//   p_ij = e^(q_i . k_j * scale - lse_i)            (P recomputed, never stored)
//   dV_j += p_ij dO_i;  dp_ij = dO_i . v_j;  ds_ij = p_ij (dp_ij - delta_i) * scale;  dK_j += ds_ij q_i
extern "C" __global__ void tl_flash_attention_backward_kv(
        const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
        const float* __restrict__ grad_out, const float* __restrict__ lse, const float* __restrict__ delta,
        float* __restrict__ grad_k, float* __restrict__ grad_v,
        const int tq, const int tk, const float scale, const int causal) {
    __shared__ float k_own[BLOCK][ROW];
    __shared__ float v_own[BLOCK][ROW];
    __shared__ float q_tile[TILE][HEAD_DIM];
    __shared__ float g_tile[TILE][HEAD_DIM];
    __shared__ float lse_tile[TILE], delta_tile[TILE];
    const long long batch = blockIdx.x;
    const int first_key = blockIdx.y * BLOCK;
    const int key = first_key + threadIdx.x;
    const bool active = key < tk;
    const float* q_batch = q + batch * tq * HEAD_DIM;
    const float* g_batch = grad_out + batch * tq * HEAD_DIM;

    for (int index = threadIdx.x; index < BLOCK * HEAD_DIM; index += blockDim.x) {
        const int r = index / HEAD_DIM, d = index % HEAD_DIM, row_key = first_key + r;
        const long long at = (batch * tk + row_key) * HEAD_DIM + d;
        k_own[r][d] = row_key < tk ? k[at] : 0.0f;
        v_own[r][d] = row_key < tk ? v[at] : 0.0f;
    }
    float dk[HEAD_DIM], dv[HEAD_DIM];
    #pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) { dk[d] = 0.0f; dv[d] = 0.0f; }
    __syncthreads();

    // causal: queries before the block's first key see none of its keys
    const int query_begin = causal ? min(first_key, tq) : 0;
    for (int query_start = query_begin; query_start < tq; query_start += TILE) {
        for (int index = threadIdx.x; index < TILE * HEAD_DIM; index += blockDim.x) {
            const int r = index / HEAD_DIM, d = index % HEAD_DIM, query = query_start + r;
            q_tile[r][d] = query < tq ? q_batch[(long long)query * HEAD_DIM + d] : 0.0f;
            g_tile[r][d] = query < tq ? g_batch[(long long)query * HEAD_DIM + d] : 0.0f;
        }
        if (threadIdx.x < TILE) {
            const int query = query_start + threadIdx.x;
            lse_tile[threadIdx.x] = query < tq ? lse[batch * tq + query] : 0.0f;
            delta_tile[threadIdx.x] = query < tq ? delta[batch * tq + query] : 0.0f;
        }
        __syncthreads();
        if (active) {
            for (int r = 0; r < TILE; ++r) {
                const int query = query_start + r;
                if (query >= tq) break;
                if (causal && key > query) continue;
                float dot = 0.0f, dp = 0.0f;
                #pragma unroll
                for (int d = 0; d < HEAD_DIM; ++d) {
                    dot += q_tile[r][d] * k_own[threadIdx.x][d];
                    dp += g_tile[r][d] * v_own[threadIdx.x][d];
                }
                const float p = expf(dot * scale - lse_tile[r]);
                const float ds = p * (dp - delta_tile[r]) * scale;
                #pragma unroll
                for (int d = 0; d < HEAD_DIM; ++d) {
                    dv[d] += p * g_tile[r][d];
                    dk[d] += ds * q_tile[r][d];
                }
            }
        }
        __syncthreads();
    }
    if (active) {
        const long long at = (batch * tk + key) * HEAD_DIM;
        #pragma unroll
        for (int d = 0; d < HEAD_DIM; ++d) { grad_k[at + d] = dk[d]; grad_v[at + d] = dv[d]; }
    }
}

// Backward, dQ: one thread per query i, over tiles of the keys it sees:
//   p_ij = e^(q_i . k_j * scale - lse_i);  ds_ij = p_ij (dO_i . v_j - delta_i) * scale;  dQ_i += ds_ij k_j
extern "C" __global__ void tl_flash_attention_backward_q(
        const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
        const float* __restrict__ grad_out, const float* __restrict__ lse, const float* __restrict__ delta,
        float* __restrict__ grad_q, const int tq, const int tk, const float scale, const int causal) {
    __shared__ float q_own[BLOCK][ROW];
    __shared__ float g_own[BLOCK][ROW];
    __shared__ float k_tile[TILE][HEAD_DIM];
    __shared__ float v_tile[TILE][HEAD_DIM];
    const long long batch = blockIdx.x;
    const int first_query = blockIdx.y * BLOCK;
    const int query = first_query + threadIdx.x;
    const bool active = query < tq;
    const float* k_batch = k + batch * tk * HEAD_DIM;
    const float* v_batch = v + batch * tk * HEAD_DIM;

    for (int index = threadIdx.x; index < BLOCK * HEAD_DIM; index += blockDim.x) {
        const int r = index / HEAD_DIM, d = index % HEAD_DIM, row_query = first_query + r;
        const long long at = (batch * tq + row_query) * HEAD_DIM + d;
        q_own[r][d] = row_query < tq ? q[at] : 0.0f;
        g_own[r][d] = row_query < tq ? grad_out[at] : 0.0f;
    }
    const float row_lse = active ? lse[batch * tq + query] : 0.0f;
    const float row_delta = active ? delta[batch * tq + query] : 0.0f;
    float dq[HEAD_DIM];
    #pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) dq[d] = 0.0f;
    __syncthreads();

    const int last_query = min(tq - 1, first_query + BLOCK - 1);
    const int key_end = causal ? min(tk, last_query + 1) : tk;
    for (int key_start = 0; key_start < key_end; key_start += TILE) {
        for (int index = threadIdx.x; index < TILE * HEAD_DIM; index += blockDim.x) {
            const int r = index / HEAD_DIM, d = index % HEAD_DIM, key = key_start + r;
            k_tile[r][d] = key < tk ? k_batch[(long long)key * HEAD_DIM + d] : 0.0f;
            v_tile[r][d] = key < tk ? v_batch[(long long)key * HEAD_DIM + d] : 0.0f;
        }
        __syncthreads();
        if (active) {
            for (int j = 0; j < TILE; ++j) {
                const int key = key_start + j;
                if (key >= tk || (causal && key > query)) break;   // later keys are masked too
                float dot = 0.0f, dp = 0.0f;
                #pragma unroll
                for (int d = 0; d < HEAD_DIM; ++d) {
                    dot += q_own[threadIdx.x][d] * k_tile[j][d];
                    dp += g_own[threadIdx.x][d] * v_tile[j][d];
                }
                const float p = expf(dot * scale - row_lse);
                const float ds = p * (dp - row_delta) * scale;
                #pragma unroll
                for (int d = 0; d < HEAD_DIM; ++d) dq[d] += ds * k_tile[j][d];
            }
        }
        __syncthreads();
    }
    if (active) {
        float* out_row = grad_q + (batch * tq + query) * HEAD_DIM;
        #pragma unroll
        for (int d = 0; d < HEAD_DIM; ++d) out_row[d] = dq[d];
    }
}
""".replace("FLASH_BLOCK_VALUE", str(FLASH_BLOCK)).replace("FLASH_TILE_VALUE", str(FLASH_TILE))


@functools.cache
def _flash_module(head_dim: int):
    """The flash-attention kernels for one head size (the per-thread rows are sized at compile time)."""
    return _cupy().RawModule(code=FLASH_ATTENTION_SOURCE, options=(f"-DHEAD_DIM={head_dim}",))


def _batched(array, rows: int):
    """(batch, rows, D) contiguous view of a (..., rows, D) array."""
    array = _cupy().ascontiguousarray(array)
    return array.reshape(-1, rows, array.shape[-1])


def flash_attention_forward(q, k, v, scale: float, causal: bool):
    """softmax(Q K^T * scale [+ causal mask]) V without ever storing the Tq x Tk matrix.

    One thread per query row; key/value tiles of ``FLASH_TILE`` rows are staged in
    shared memory, and the softmax is computed online (running max m, running
    sum l, running output acc rescaled by e^(m_old - m_new) when the max grows):

        out_i = sum_j e^(s_ij - m_i) v_j / l_i,    lse_i = m_i + log l_i

    Needs q, k, v of shapes (..., Tq, D), (..., Tk, D), (..., Tk, D) with the
    same leading dims and D <= 64. Returns (out, lse). Twins:
    ``fused.ScaledDotProductAttention.forward`` (same math) and
    ``fused.flash_attention_tiled`` (same tiles, in NumPy).
    """
    cp = _cupy()
    tq, tk, head_dim = q.shape[-2], k.shape[-2], q.shape[-1]
    q3, k3, v3 = _batched(q, tq), _batched(k, tk), _batched(v, tk)
    batch = q3.shape[0]
    out = cp.empty_like(q3)
    lse = cp.empty((batch, tq), dtype=numpy.float32)
    kernel = _flash_module(head_dim).get_function("tl_flash_attention_forward")
    kernel((batch, -(-tq // FLASH_BLOCK)), (FLASH_BLOCK,),
           (q3, k3, v3, out, lse, _i32(tq), _i32(tk), _f32(scale), _i32(bool(causal))))
    return out.reshape(q.shape), lse


def flash_attention_backward(q, k, v, out, lse, grad, scale: float, causal: bool):
    """dQ, dK, dV of flash attention, recomputing P tile by tile from q, k and the saved lse.

        delta_i = rowsum(dO_i * out_i)                   (one small array op)
        p_ij = e^(s_ij - lse_i),  dp_ij = dO_i . v_j,  ds_ij = p_ij (dp_ij - delta_i) * scale
        dV_j = sum_i p_ij dO_i,   dK_j = sum_i ds_ij q_i     (kernel 1: one thread per key)
        dQ_i = sum_j ds_ij k_j                               (kernel 2: one thread per query)

    Twins: ``fused.ScaledDotProductAttention.backward`` and ``fused.flash_attention_tiled_backward``.
    """
    cp = _cupy()
    tq, tk, head_dim = q.shape[-2], k.shape[-2], q.shape[-1]
    q3, k3, v3 = _batched(q, tq), _batched(k, tk), _batched(v, tk)
    g3, o3 = _batched(grad, tq), _batched(out, tq)
    batch = q3.shape[0]
    delta = (g3 * o3).sum(axis=-1)
    grad_q, grad_k, grad_v = cp.empty_like(q3), cp.empty_like(k3), cp.empty_like(v3)
    module = _flash_module(head_dim)
    common = (_i32(tq), _i32(tk), _f32(scale), _i32(bool(causal)))
    module.get_function("tl_flash_attention_backward_kv")(
        (batch, -(-tk // FLASH_BLOCK)), (FLASH_BLOCK,), (q3, k3, v3, g3, lse, delta, grad_k, grad_v) + common)
    module.get_function("tl_flash_attention_backward_q")(
        (batch, -(-tq // FLASH_BLOCK)), (FLASH_BLOCK,), (q3, k3, v3, g3, lse, delta, grad_q) + common)
    return grad_q.reshape(q.shape), grad_k.reshape(k.shape), grad_v.reshape(v.shape)


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

    Twin: ``optim._adam_update_flat`` (rounding for rounding: the same float32
    operations in the same order).
    """
    cp = _cupy()
    # the tensors' addresses, for the kernel to reach them without copying them into one buffer
    pointers = cp.asarray(numpy.array([a.data.ptr for a in params] + [g.data.ptr for g in grads], dtype=numpy.uint64))
    count = len(params)
    _elementwise("ADAM_UPDATE")(pointers[:count], pointers[count:], offsets, _i32(count), _i32(bool(use_l2)),
                                _f32(weight_decay), _f32(decay), _f32(beta1), _f32(1.0 - beta1), _f32(beta2),
                                _f32(1.0 - beta2), _f32(math.sqrt(bias_correction2)), _f32(eps),
                                _f32(lr / bias_correction1), exp_avg, exp_avg_sq)


# ------------------------------------------------------------------ helpers

ELEMENTWISE_KERNELS = ("CROSS_ENTROPY_BACKWARD", "GELU_FORWARD", "GELU_BACKWARD", "ATTENTION_SOFTMAX_BACKWARD",
                       "ADAM_UPDATE")


@functools.cache
def _elementwise(name: str):
    """The ``cupy.ElementwiseKernel`` for one of the specs above (built once; compiled at first call)."""
    spec = dict(globals()[name])
    return _cupy().ElementwiseKernel(spec.pop("in_params"), spec.pop("out_params"), spec.pop("operation"),
                                     spec.pop("name"), **spec)


__all__ = ["enabled", "set_enabled", "disabled", "supports", "attention_algorithm", "attention_mode",
           "set_attention_mode", "softmax_forward", "softmax_backward", "cross_entropy_forward",
           "cross_entropy_backward", "layer_norm_forward", "layer_norm_backward", "gelu_forward", "gelu_backward",
           "attention_softmax_forward", "attention_softmax_backward", "flash_attention_forward",
           "flash_attention_backward", "adam_update", "sum_of_squares", "scale_"]

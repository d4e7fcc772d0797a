"""Flash attention: tiled kernels that never store the Tq x Tk attention matrix."""
from __future__ import annotations

import functools

import numpy

from .launch import _cupy, _f32, _i32

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

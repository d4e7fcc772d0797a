"""The CUDA C source of the row kernels (one thread block per row): softmax, cross-entropy,
layer norm and the attention softmax. ``rows.py`` compiles and launches them."""

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

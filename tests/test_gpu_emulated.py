"""The CUDA kernels of ``tinygrad_lite.cuda_kernels``, run on the CPU against their NumPy twins.

CPU CI has no GPU, but the kernels' *logic* -- indexing, tiling, masking,
the block reductions -- can still be checked: the kernel sources are compiled
with g++ together with a tiny emulation of CUDA's thread model:

* every CUDA thread of a block is an OS thread, blocks run one after another;
* ``__syncthreads()`` is a barrier of the block's threads;
* ``__shfl_xor_sync`` swaps values through memory between two barriers of the warp;
* ``__shared__`` variables are ``static`` (one copy, shared by the block's threads);
* ``ElementwiseKernel`` snippets run in a plain loop over ``i``.

What this cannot check (the real compiler, timing, memory coalescing, the
launch through CuPy) is left to ``tests/test_gpu.py`` on a GPU. The tests
skip when there is no C++20 compiler. A second test compiles every kernel
with NVRTC (CUDA's runtime compiler; needs CuPy and the NVRTC library but no
GPU), so that syntax errors are caught here too.
"""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import tinygrad_lite as tl
from tinygrad_lite import cuda_kernels as ck
from tinygrad_lite import fused
from tinygrad_lite.optim import flat_adam

EMULATOR_HEADER = r"""
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
using std::max;
using std::min;

struct dim3 { unsigned x, y, z; };
static thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;
static std::barrier<>* emu_block_barrier = nullptr;
static std::vector<std::unique_ptr<std::barrier<>>> emu_warp_barriers;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }
inline float __int_as_float(int bits) { float f; std::memcpy(&f, &bits, sizeof f); return f; }
inline int emu_thread_id() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }
template <typename T>  // float and double: each type gets its own exchange slots
inline T __shfl_xor_sync(unsigned, T value, int lane_mask) {
    static T exchange[1024];  // one slot per thread of the block
    const int t = emu_thread_id(), warp = t / 32, lane = t % 32;
    exchange[t] = value;
    emu_warp_barriers[warp]->arrive_and_wait();
    const T other = exchange[warp * 32 + (lane ^ lane_mask)];
    emu_warp_barriers[warp]->arrive_and_wait();
    return other;
}
// compiled with -ffp-contract=off: every operation rounds on its own, as the _rn intrinsics do
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }

template <typename Kernel, typename... Args>
void emu_launch(Kernel kernel, dim3 grid, dim3 block, Args... args) {
    blockDim = block;
    gridDim = grid;
    const int threads = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::barrier<> block_barrier(threads);
        emu_block_barrier = &block_barrier;
        emu_warp_barriers.clear();
        for (int first = 0; first < threads; first += 32)
            emu_warp_barriers.emplace_back(new std::barrier<>(std::min(32, threads - first)));
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([=] {
                threadIdx = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                blockIdx = dim3{bx, by, bz};
                kernel(args...);
            });
        }
        for (auto& thread : pool) thread.join();
    }
}
#define LAUNCH(kernel, ...) emu_launch(kernel, dim3{gx, gy, 1}, dim3{bx, by, 1}, __VA_ARGS__)
#define GRID unsigned gx, unsigned gy, unsigned bx, unsigned by
"""

ROW_WRAPPERS = r"""
extern "C" {
void run_softmax_forward(GRID, const float* x, float* y, int cols, int log_mode) {
    LAUNCH(tl_softmax_forward, x, y, cols, log_mode); }
void run_softmax_backward(GRID, const float* y, const float* g, float* dx, int cols, int log_mode) {
    LAUNCH(tl_softmax_backward, y, g, dx, cols, log_mode); }
void run_cross_entropy_forward(GRID, const float* x, const long long* t, float* losses, float* lse, int cols,
                               long long ignore) {
    LAUNCH(tl_cross_entropy_forward, x, t, losses, lse, cols, ignore); }
void run_layer_norm_forward(GRID, const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                            int cols, float eps, int has_w, int has_b) {
    LAUNCH(tl_layer_norm_forward, x, w, b, y, mean, rstd, cols, eps, has_w, has_b); }
void run_layer_norm_backward_input(GRID, const float* x, const float* g, const float* mean, const float* rstd,
                                   const float* w, float* dx, int cols, int has_w) {
    LAUNCH(tl_layer_norm_backward_input, x, g, mean, rstd, w, dx, cols, has_w); }
void run_layer_norm_backward_params(GRID, const float* x, const float* g, const float* mean, const float* rstd,
                                    float* pdw, float* pdb, int rows, int cols, int rows_per_chunk) {
    LAUNCH(tl_layer_norm_backward_params, x, g, mean, rstd, pdw, pdb, rows, cols, rows_per_chunk); }
void run_attention_softmax_forward(GRID, float* s, int tq, int tk, float scale, int causal) {
    LAUNCH(tl_attention_softmax_forward, s, tq, tk, scale, causal); }
void run_multi_sum_of_squares(GRID, const unsigned long long* pointers, const long long* offsets, int n,
                              double* partial) {
    LAUNCH(tl_multi_sum_of_squares, pointers, offsets, n, partial); }
void run_multi_scale(GRID, const unsigned long long* pointers, const long long* offsets, int n, float factor) {
    LAUNCH(tl_multi_scale, pointers, offsets, n, factor); }
}
"""

FLASH_WRAPPERS = r"""
extern "C" {
void run_flash_forward(GRID, const float* q, const float* k, const float* v, float* out, float* lse,
                       int tq, int tk, float scale, int causal) {
    LAUNCH(tl_flash_attention_forward, q, k, v, out, lse, tq, tk, scale, causal); }
void run_flash_backward_kv(GRID, const float* q, const float* k, const float* v, const float* g, const float* lse,
                           const float* delta, float* dk, float* dv, int tq, int tk, float scale, int causal) {
    LAUNCH(tl_flash_attention_backward_kv, q, k, v, g, lse, delta, dk, dv, tq, tk, scale, causal); }
void run_flash_backward_q(GRID, const float* q, const float* k, const float* v, const float* g, const float* lse,
                          const float* delta, float* dq, int tq, int tk, float scale, int causal) {
    LAUNCH(tl_flash_attention_backward_q, q, k, v, g, lse, delta, dq, tq, tk, scale, causal); }
}
"""

# Which parameters of each ElementwiseKernel are passed as scalars (the others are arrays).
ELEMENTWISE_SCALARS = {
    "CROSS_ENTROPY_BACKWARD": {"cols"},
    "GELU_FORWARD": set(),
    "GELU_BACKWARD": set(),
    "ATTENTION_SOFTMAX_BACKWARD": {"tk", "scale"},
    "ADAM_UPDATE": {"n_tensors", "use_l2", "weight_decay", "decay", "beta1", "one_minus_beta1", "beta2",
                    "one_minus_beta2", "sqrt_bias_correction2", "eps", "step_size"},
}
C_TYPES = {"float32": "float", "int64": "long long", "uint64": "unsigned long long", "int32": "int"}
CTYPES = {"float32": ctypes.c_float, "int64": ctypes.c_longlong, "uint64": ctypes.c_ulonglong, "int32": ctypes.c_int}


def parse_params(text: str) -> list[tuple[bool, str, str]]:
    """'raw float32 x, int64 n' -> [(True, 'float32', 'x'), (False, 'int64', 'n')]."""
    params = []
    for part in text.split(","):
        words = part.split()
        params.append((words[0] == "raw", words[-2], words[-1]))
    return params


def elementwise_wrapper(name: str) -> str:
    """A C function running an ElementwiseKernel spec as a loop over i (raw arrays as pointers)."""
    spec = getattr(ck, name)
    scalars = ELEMENTWISE_SCALARS[name]
    params = parse_params(spec["in_params"]) + parse_params(spec["out_params"])
    signature, bind = ["long long n"], []
    for raw, dtype, param in params:
        ctype = C_TYPES[dtype]
        if param in scalars:
            signature.append(f"{ctype} {param}")
        elif raw:
            signature.append(f"{ctype}* {param}")
        else:
            signature.append(f"{ctype}* _raw_{param}")
            bind.append(f"{ctype}& {param} = _raw_{param}[i];")
    loop = f"    for (long long i = 0; i < n; ++i) {{\n        {' '.join(bind)}\n        {spec['operation']};\n    }}\n"
    return spec.get("preamble", "") + f'\nextern "C" void run_{name.lower()}({", ".join(signature)}) {{\n{loop}}}\n'


def compile_library(tmp_dir: Path, name: str, source: str, defines=()) -> ctypes.CDLL:
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++ or clang++) to emulate the CUDA kernels with")
    source_path = tmp_dir / f"{name}.cpp"
    library_path = tmp_dir / f"{name}.so"
    source_path.write_text(source)
    command = [compiler, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-ffp-contract=off",
               "-Wno-unknown-pragmas", *[f"-D{d}" for d in defines], str(source_path), "-o", str(library_path)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        if "barrier" in result.stderr and "No such file" in result.stderr:
            pytest.skip(f"{compiler} has no C++20 <barrier>: {result.stderr[:200]}")
        raise AssertionError(f"the CUDA sources do not compile as emulated C++:\n{result.stderr[:4000]}")
    return ctypes.CDLL(str(library_path))


@pytest.fixture(scope="module")
def row_lib(tmp_path_factory):
    return compile_library(tmp_path_factory.mktemp("rows"), "rows",
                           EMULATOR_HEADER + ck.ROW_KERNELS_SOURCE + ROW_WRAPPERS)


@pytest.fixture(scope="module")
def elementwise_lib(tmp_path_factory):
    source = EMULATOR_HEADER + "\n".join(elementwise_wrapper(name) for name in ck.ELEMENTWISE_KERNELS)
    return compile_library(tmp_path_factory.mktemp("elementwise"), "elementwise", source)


_flash_libs: dict = {}


def flash_lib(tmp_path_factory, head_dim: int):
    if head_dim not in _flash_libs:
        _flash_libs[head_dim] = compile_library(tmp_path_factory.mktemp(f"flash{head_dim}"), f"flash{head_dim}",
                                                EMULATOR_HEADER + ck.FLASH_ATTENTION_SOURCE + FLASH_WRAPPERS,
                                                defines=(f"HEAD_DIM={head_dim}",))
    return _flash_libs[head_dim]


# ---------------------------------------------------------------- calling


def arg(value):
    """numpy arrays become pointers, numpy scalars C scalars of their type."""
    if isinstance(value, np.ndarray):
        assert value.flags.c_contiguous
        return ctypes.c_void_p(value.ctypes.data)
    return {np.float32: ctypes.c_float, np.int32: ctypes.c_int, np.int64: ctypes.c_longlong,
            np.uint64: ctypes.c_ulonglong}[type(value)](value)


def launch(lib, name: str, grid, block, *args) -> None:
    grid, block = (tuple(grid) + (1,))[:2], (tuple(block) + (1,))[:2]
    getattr(lib, name)(*[ctypes.c_uint(n) for n in grid + block], *[arg(a) for a in args])


def run_elementwise(lib, name: str, n: int, *args) -> None:
    getattr(lib, f"run_{name.lower()}")(ctypes.c_longlong(n), *[arg(a) for a in args])


def f32(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def twin(function_class, *arrays, upstream=None, **options):
    """Forward and input gradients of a fused Function on the CPU (the NumPy twin), float32."""
    tensors = [tl.Tensor(a, requires_grad=True) for a in arrays]
    out = function_class.apply(*tensors, **options)
    if upstream is not None:
        out.backward(upstream)
    return out.numpy(), [t.grad.numpy() if t.grad is not None else None for t in tensors]


def close(actual, desired, rtol=2e-5, atol=2e-6):
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol)


# ------------------------------------------------------------------ tests

ROW_SHAPES = [(3, 1), (4, 7), (2, 33), (3, 100), (1, 1030)]  # 1030: more than 1024 threads, so a loop per thread


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("rows, cols", ROW_SHAPES)
def test_softmax_kernels_equal_their_twin(row_lib, rows, cols, log):
    x, g = f32(rows, cols, seed=1, scale=3.0), f32(rows, cols, seed=2)
    x[0, 0] = 40.0  # a large logit: the online max must handle it
    y, dx = np.empty_like(x), np.empty_like(x)
    threads = ck.launch._threads_for_row(cols)
    launch(row_lib, "run_softmax_forward", (rows,), (threads,), x, y, np.int32(cols), np.int32(log))
    launch(row_lib, "run_softmax_backward", (rows,), (threads,), y, g, dx, np.int32(cols), np.int32(log))
    expected, (grad,) = twin(fused.LogSoftmax if log else fused.Softmax, x, upstream=g, axis=-1)
    close(y, expected)
    close(dx, grad, atol=1e-5)


def test_softmax_kernel_handles_minus_infinity(row_lib):
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, -np.inf]], np.float32)
    y = np.empty_like(x)
    launch(row_lib, "run_softmax_forward", (2,), (32,), x, y, np.int32(3), np.int32(0))
    close(y, tl.functional.softmax(tl.Tensor(x)).numpy())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("rows, cols", [(5, 3), (6, 65), (3, 1030)])
def test_cross_entropy_kernels_equal_their_twin(row_lib, elementwise_lib, rows, cols, reduction):
    logits = f32(rows, cols, seed=3, scale=4.0)
    targets = np.random.default_rng(4).integers(0, cols, rows).astype(np.int64)
    targets[1] = -100  # ignored
    losses, lse = np.empty(rows, np.float32), np.empty(rows, np.float32)
    launch(row_lib, "run_cross_entropy_forward", (rows,), (ck.launch._threads_for_row(cols),), logits, targets, losses, lse,
           np.int32(cols), np.int64(-100))
    expected = tl.functional.cross_entropy(tl.Tensor(logits), targets, reduction="none").numpy()
    close(losses, expected)

    # backward: the same row weights fused.CrossEntropy._backward_gpu builds
    upstream = f32(rows, seed=5) if reduction == "none" else np.float32(0.7)
    keep = (targets != -100).astype(np.float32)
    scale = upstream / max(keep.sum(), 1) if reduction == "mean" else upstream
    weight = np.ascontiguousarray(np.broadcast_to(keep * scale, (rows,)), dtype=np.float32)
    dx = np.empty_like(logits)
    run_elementwise(elementwise_lib, "CROSS_ENTROPY_BACKWARD", dx.size, logits, targets, lse, weight,
                    np.int64(cols), dx)
    _, (grad,) = twin(fused.CrossEntropy, logits, upstream=np.asarray(upstream, np.float32), targets=targets,
                      reduction=reduction)
    close(dx, grad)


@pytest.mark.timeout(90)  # ~10-15 s each under `pytest -n 2` on two cores (the C++ emulation)
@pytest.mark.parametrize("affine", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("rows, cols", [(3, 2), (70, 48), (2, 1030), (130, 5)])
def test_layer_norm_kernels_equal_their_twin(row_lib, rows, cols, affine):
    x, g = f32(rows, cols, seed=6, scale=2.0) + 0.5, f32(rows, cols, seed=7)
    weight = f32(cols, seed=8) if affine[0] else None
    bias = f32(cols, seed=9) if affine[1] else None
    y, mean, rstd = np.empty_like(x), np.empty(rows, np.float32), np.empty(rows, np.float32)
    threads = ck.launch._threads_for_row(cols)
    dummy = x
    launch(row_lib, "run_layer_norm_forward", (rows,), (threads,), x, weight if weight is not None else dummy,
           bias if bias is not None else dummy, y, mean, rstd, np.int32(cols), np.float32(1e-5),
           np.int32(weight is not None), np.int32(bias is not None))
    dx = np.empty_like(x)
    launch(row_lib, "run_layer_norm_backward_input", (rows,), (threads,), x, g, mean, rstd,
           weight if weight is not None else dummy, dx, np.int32(cols), np.int32(weight is not None))
    per_chunk = ck.rows._layer_norm_rows_per_chunk(rows)
    chunks = -(-rows // per_chunk)
    partial_dw, partial_db = np.empty((chunks, cols), np.float32), np.empty((chunks, cols), np.float32)
    launch(row_lib, "run_layer_norm_backward_params", (-(-cols // 32), chunks), (32, 8), x, g, mean, rstd,
           partial_dw, partial_db, np.int32(rows), np.int32(cols), np.int32(per_chunk))

    params = [p for p in (weight, bias) if p is not None]
    expected, grads = twin(fused.LayerNorm, x, *params, upstream=g, has_weight=weight is not None,
                           has_bias=bias is not None)
    close(y, expected, atol=1e-5)
    close(dx, grads[0], rtol=1e-4, atol=1e-4)
    if weight is not None:
        close(partial_dw.sum(axis=0), grads[1], rtol=1e-4, atol=1e-4)
    if bias is not None:
        close(partial_db.sum(axis=0), grads[-1], rtol=1e-4, atol=1e-4)


def test_gelu_kernels_equal_their_twin(elementwise_lib):
    x, g = f32(1000, seed=10, scale=3.0), f32(1000, seed=11)
    y, dx = np.empty_like(x), np.empty_like(x)
    run_elementwise(elementwise_lib, "GELU_FORWARD", x.size, x, y)
    run_elementwise(elementwise_lib, "GELU_BACKWARD", x.size, x, g, dx)
    expected, (grad,) = twin(fused.Gelu, x, upstream=g)
    close(y, expected, atol=1e-6)
    # for large x, 1 - t^2 is a few float32 ulps of tanh, times x du/dx ~ 20: the two roundings differ there
    close(dx, grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("batch, tq, tk, d", [(2, 5, 5, 3), (3, 1, 4, 2), (1, 40, 40, 8), (2, 6, 70, 4)])
def test_attention_softmax_kernels_equal_their_twin(row_lib, elementwise_lib, batch, tq, tk, d, causal):
    q, k, v = f32(batch, tq, d, seed=12), f32(batch, tk, d, seed=13), f32(batch, tk, d, seed=14)
    g = f32(batch, tq, d, seed=15)
    scale = 1.0 / np.sqrt(d)
    probs = np.ascontiguousarray(q @ k.swapaxes(-1, -2))
    launch(row_lib, "run_attention_softmax_forward", (batch * tq,), (ck.launch._threads_for_row(tk),), probs,
           np.int32(tq), np.int32(tk), np.float32(scale), np.int32(causal))
    out = probs @ v
    grad_scores = np.ascontiguousarray(g @ v.swapaxes(-1, -2))
    delta = np.ascontiguousarray((g * out).sum(axis=-1), dtype=np.float32)
    run_elementwise(elementwise_lib, "ATTENTION_SOFTMAX_BACKWARD", grad_scores.size, delta, probs, np.int64(tk),
                    np.float32(scale), grad_scores)
    grads = [grad_scores @ k, grad_scores.swapaxes(-1, -2) @ q, probs.swapaxes(-1, -2) @ g]

    expected, expected_grads = twin(fused.ScaledDotProductAttention, q, k, v, upstream=g, is_causal=causal)
    close(out, expected, atol=1e-5)
    for actual, desired in zip(grads, expected_grads):
        close(actual, desired, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("batch, tq, tk, d", [(2, 5, 5, 4), (1, 70, 70, 8), (2, 3, 20, 4), (1, 17, 130, 3),
                                               (2, 70, 6, 4)])
def test_flash_attention_kernels_equal_their_twins(tmp_path_factory, batch, tq, tk, d, causal):
    lib = flash_lib(tmp_path_factory, d)
    q, k, v = f32(batch, tq, d, seed=16), f32(batch, tk, d, seed=17), f32(batch, tk, d, seed=18)
    g = f32(batch, tq, d, seed=19)
    scale = np.float32(1.0 / np.sqrt(d))
    common = (np.int32(tq), np.int32(tk), scale, np.int32(causal))
    out, lse = np.empty_like(q), np.empty((batch, tq), np.float32)
    launch(lib, "run_flash_forward", (batch, -(-tq // ck.FLASH_BLOCK)), (ck.FLASH_BLOCK,), q, k, v, out, lse, *common)
    delta = np.ascontiguousarray((g * out).sum(axis=-1), dtype=np.float32)
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    launch(lib, "run_flash_backward_kv", (batch, -(-tk // ck.FLASH_BLOCK)), (ck.FLASH_BLOCK,), q, k, v, g, lse, delta,
           dk, dv, *common)
    launch(lib, "run_flash_backward_q", (batch, -(-tq // ck.FLASH_BLOCK)), (ck.FLASH_BLOCK,), q, k, v, g, lse, delta,
           dq, *common)

    expected, expected_grads = twin(fused.ScaledDotProductAttention, q, k, v, upstream=g, is_causal=causal)
    close(out, expected, atol=1e-5)
    _, tiled_lse = fused.flash_attention_tiled(q, k, v, causal)
    close(lse, tiled_lse, atol=1e-5)
    for actual, desired in zip((dq, dk, dv), expected_grads):
        close(actual, desired, rtol=1e-4, atol=1e-5)


@pytest.mark.timeout(90)  # ~10 s for 70,000 elements under the C++ emulation
@pytest.mark.parametrize("sizes", [[3, 0, 1, 700, 5], [70_000], [1] * 40])
def test_gradient_clipping_kernels_equal_their_twin(row_lib, sizes):
    """sum_of_squares and scale_ (optim.clip_grad_norm_ on the GPU) against the CPU loop."""
    arrays = [f32(n, seed=22 + i) for i, n in enumerate(sizes)]
    offsets = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum([a.size for a in arrays], out=offsets[1:])
    pointers = np.array([a.ctypes.data for a in arrays], np.uint64)
    blocks = ck.elementwise._multi_grid(int(offsets[-1]))
    partial = np.zeros(blocks, np.float64)
    launch(row_lib, "run_multi_sum_of_squares", (blocks,), (ck.elementwise._MULTI_THREADS,), pointers, offsets,
           np.int32(len(arrays)), partial)
    expected = sum(float((a.astype(np.float64) ** 2).sum()) for a in arrays)
    np.testing.assert_allclose(partial.sum(), expected, rtol=1e-12)
    scaled = [a * np.float32(0.37) for a in arrays]
    launch(row_lib, "run_multi_scale", (blocks,), (ck.elementwise._MULTI_THREADS,), pointers, offsets, np.int32(len(arrays)),
           np.float32(0.37))
    for a, b in zip(arrays, scaled):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("use_l2", [False, True])
def test_adam_kernel_is_bit_identical_to_the_numpy_twin(elementwise_lib, use_l2):
    rng = np.random.default_rng(20)
    shapes = [(3, 4), (5,), (1,), (7, 2, 3)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    tensors = [tl.Tensor(p.copy(), requires_grad=True) for p in params]
    states = [{} for _ in tensors]
    flat = flat_adam.FlatMoments(tensors, states, "cpu")
    flat.exp_avg[...] = rng.standard_normal(flat.exp_avg.size).astype(np.float32) * 0.1
    flat.exp_avg_sq[...] = rng.random(flat.exp_avg.size).astype(np.float32) * 0.01
    m, v = flat.exp_avg.copy(), flat.exp_avg_sq.copy()
    hyper = dict(use_l2=use_l2, weight_decay=0.1, decay=1.0 if use_l2 else 1.0 - 0.01 * 0.1, beta1=0.9, beta2=0.99,
                 bias_correction1=1.0 - 0.9 ** 3, bias_correction2=1.0 - 0.99 ** 3, lr=0.01, eps=1e-8)
    flat_adam.update_flat(flat, [t.data for t in tensors], grads, **hyper)  # the twin, on the CPU

    kernel_params = [p.copy() for p in params]
    pointers = np.array([p.ctypes.data for p in kernel_params], np.uint64)
    grad_pointers = np.array([g.ctypes.data for g in grads], np.uint64)
    h = hyper
    run_elementwise(elementwise_lib, "ADAM_UPDATE", m.size, pointers, grad_pointers, flat.offsets,
                    np.int32(len(params)), np.int32(use_l2), np.float32(h["weight_decay"]), np.float32(h["decay"]),
                    np.float32(h["beta1"]), np.float32(1 - h["beta1"]), np.float32(h["beta2"]),
                    np.float32(1 - h["beta2"]), np.float32(np.sqrt(h["bias_correction2"])), np.float32(h["eps"]),
                    np.float32(h["lr"] / h["bias_correction1"]), m, v)
    np.testing.assert_array_equal(m, flat.exp_avg)
    np.testing.assert_array_equal(v, flat.exp_avg_sq)
    for kernel_param, tensor in zip(kernel_params, tensors):
        np.testing.assert_array_equal(kernel_param, tensor.numpy())


# ---------------------------------------------------------- NVRTC compile


def _nvrtc():
    """CuPy's NVRTC binding and compile options, or a skip saying what is missing."""
    try:
        import cupy  # noqa: F401
        from cupy._core import core
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as error:  # noqa: BLE001 -- CuPy or the NVRTC library missing
        pytest.skip(f"compiling with NVRTC needs CuPy and the NVRTC library: {error}")
    return nvrtc, core


def nvrtc_compile(source: str, options=()) -> str:
    """Compile CUDA C with NVRTC for sm_80 (no GPU needed); returns ptxas' resource report."""
    nvrtc, core = _nvrtc()
    program = nvrtc.createProgram(source, "kernels.cu", [], [])
    try:
        nvrtc.compileProgram(program, list(core.assemble_cupy_compiler_options(())) +
                             ["-arch=sm_80", "-Xptxas=-v", *options])
        return nvrtc.getProgramLog(program)
    except nvrtc.NVRTCError as error:
        raise AssertionError(f"NVRTC rejected the kernels:\n{nvrtc.getProgramLog(program)}") from error
    finally:
        nvrtc.destroyProgram(program)


def test_every_kernel_compiles_with_nvrtc():
    nvrtc_compile(ck.ROW_KERNELS_SOURCE)
    for head_dim in (1, 8, 32, ck.FLASH_MAX_HEAD_DIM):
        report = nvrtc_compile(ck.FLASH_ATTENTION_SOURCE, (f"-DHEAD_DIM={head_dim}",))
        smem = [int(n) for n in re.findall(r"(\d+) bytes smem", report)]
        assert smem and max(smem) <= 48 * 1024, f"static shared memory over 48 KiB: {report}"
    # ElementwiseKernels: let CuPy write the full kernel source, as it would before launching
    import cupy
    from cupy._core import _carray, _kernel, _scalar
    from cupy._core import core

    headers = "".join(f"#include <{h}>\n" for h in core._cupy_header_list)
    for name in ck.ELEMENTWISE_KERNELS:
        spec = dict(getattr(ck, name))
        kernel = cupy.ElementwiseKernel(spec.pop("in_params"), spec.pop("out_params"), spec.pop("operation"),
                                        spec.pop("name"), **spec)
        infos = []
        for param in kernel.params:  # argument kinds: 1 array, 2 indexer, 3 scalar (CuPy's _ArgKind)
            if param.name == "_ind":
                infos.append(_kernel._ArgInfo(2, _carray.Indexer, None, 1, True, True))
            elif param.name in ELEMENTWISE_SCALARS[name]:
                infos.append(_kernel._ArgInfo(3, _scalar.CScalar, param.dtype, 0, True, True))
            else:
                infos.append(_kernel._ArgInfo(1, cupy.ndarray, param.dtype, 1, True, True))
        code = _kernel._get_elementwise_kernel_code(tuple(infos), _kernel._TypeMap(()), kernel.params,
                                                    kernel.operation, kernel.name, kernel.preamble)
        nvrtc_compile(headers + code)

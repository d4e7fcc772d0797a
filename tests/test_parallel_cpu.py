"""The fused CPU ops split large elementwise work across threads (threads.parallel_rows).

Threads must not change the result: run each op with the threshold forced
down (so even small inputs are split, into an uneven 3 chunks) and compare
with a single-threaded run.
"""
import numpy as np
import pytest

import tinygrad_lite as tl
from tinygrad_lite import backend, optim
from tinygrad_lite.cpu_kernels import attention as cpu_attention
from tinygrad_lite.cpu_kernels import memory, threads
from tinygrad_lite import functional as F


def _run(op, arrays):
    tensors = [tl.Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = op(*tensors)
    out.backward(np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype))
    return [out.numpy()] + [t.grad.numpy() for t in tensors]


OPS = {
    "gelu": (lambda x: F.gelu(x, approximate="tanh"), [(7, 5)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (6,), w, b), [(11, 6), (6,), (6,)]),
    "attention": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                  [(2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 4)]),
}


@pytest.mark.parametrize("name", OPS)
def test_threaded_equals_single_threaded(name, monkeypatch):
    op, shapes = OPS[name]
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    monkeypatch.setenv("TINYGRAD_LITE_CPU_THREADS", "1")
    single = _run(op, arrays)
    monkeypatch.setenv("TINYGRAD_LITE_CPU_THREADS", "3")
    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 1)
    monkeypatch.setattr(threads, "CACHE_BLOCK_ELEMENTS", 8)  # and each thread's rows in small cache blocks
    threaded = _run(op, arrays)
    for a, b in zip(single, threaded):
        # BLAS may block a matrix-vector product over fewer rows differently (last-bit rounding,
        # which layer norm's cancellation magnifies); a chunking bug would be off by O(1)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_threaded_adamw_equals_single_threaded(monkeypatch):
    def trajectory():
        rng = np.random.default_rng(0)
        params = [tl.Tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True)
                  for s in [(300, 200), (200,), (50, 7)]]
        opt = optim.AdamW(params, lr=1e-2, weight_decay=0.1)
        for _ in range(3):
            for p in params:
                p.grad = tl.Tensor(rng.standard_normal(p.shape).astype(np.float32))
            opt.step()
        return [p.numpy() for p in params]

    monkeypatch.setenv("TINYGRAD_LITE_CPU_THREADS", "1")
    single = trajectory()
    monkeypatch.setenv("TINYGRAD_LITE_CPU_THREADS", "3")
    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 1)
    for a, b in zip(single, trajectory()):
        np.testing.assert_array_equal(a, b)  # elementwise only: identical to the bit


def test_parallel_rows_covers_every_row_once_and_reraises(monkeypatch):
    monkeypatch.setenv("TINYGRAD_LITE_CPU_THREADS", "4")
    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 1)
    hits = np.zeros(10, dtype=int)

    def body(start, stop):
        hits[start:stop] += 1

    threads.parallel_rows(body, 10)
    assert hits.tolist() == [1] * 10

    calls = []
    monkeypatch.setattr(threads, "CACHE_BLOCK_ELEMENTS", 6)  # 3 elements per row: blocks of 2 rows
    threads.parallel_rows(lambda a, b: (body(a, b), calls.append(b - a)), 10, 3, cache_blocks=True)
    assert hits.tolist() == [2] * 10 and max(calls) <= 2

    def failing(start, stop):
        if start > 0:
            raise ValueError("boom in a worker")

    with pytest.raises(ValueError, match="boom in a worker"):
        threads.parallel_rows(failing, 10)


def test_parallel_rows_nested_or_from_two_threads_falls_back_to_one_thread(monkeypatch):
    """The worker threads serve one call at a time: a call made while they are busy (from inside a body,
    or from another thread) runs in its own thread instead of waiting for them -- no deadlock."""
    import threading

    monkeypatch.setenv("TINYGRAD_LITE_CPU_THREADS", "2")
    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 1)
    hits = np.zeros((8, 8), dtype=int)

    def outer(start, stop):
        for row in range(start, stop):
            threads.parallel_rows(lambda a, b: hits[row, a:b].__iadd__(1), 8)

    threads.parallel_rows(outer, 8)
    assert (hits == 1).all()

    totals = []
    callers = [threading.Thread(target=lambda: totals.append(_sum_in_parallel(10_000))) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert totals == [sum(range(10_000))] * 4


def test_parallel_rows_interrupted_while_waiting_starts_fresh_workers(monkeypatch):
    """Ctrl-C while the caller waits for a worker: the interrupt propagates, and the next call does not
    reuse the interrupted worker (it may still be running) but starts new ones."""
    monkeypatch.setenv("TINYGRAD_LITE_CPU_THREADS", "2")
    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 1)
    threads.parallel_rows(lambda a, b: None, 4)  # make sure a worker exists
    interrupted = threads._workers[0]
    real_wait = interrupted.wait
    monkeypatch.setattr(interrupted, "wait", lambda: (real_wait(), (_ for _ in ()).throw(KeyboardInterrupt())))
    with pytest.raises(KeyboardInterrupt):
        threads.parallel_rows(lambda a, b: None, 4)
    assert _sum_in_parallel(1000) == sum(range(1000))
    assert interrupted not in threads._workers


def _sum_in_parallel(n: int) -> int:
    values, partial = np.arange(n), {}
    threads.parallel_rows(lambda a, b: partial.__setitem__(a, int(values[a:b].sum())), n)
    return sum(partial.values())


def test_allocator_tuning_is_applied_on_glibc_and_can_be_turned_off(monkeypatch):
    import platform
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert tl.cpu.tune()["allocator_tuned"], "tl.cpu.tune() should have raised glibc's mmap/trim thresholds"
    monkeypatch.setattr(memory, "_allocator_tuned", False)
    monkeypatch.setenv("TINYGRAD_LITE_MALLOC_TUNING", "0")
    assert memory.tune_allocator() is False


@pytest.mark.parametrize("module", ["tinygrad_lite", "gpt"])
def test_importing_the_library_changes_nothing_in_the_process(module):
    """No environment variable, no allocator setting, no thread: tuning is explicit (tl.cpu.tune())."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    code = (f"import os, threading, {module}; from tinygrad_lite.cpu_kernels import memory; "
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), memory._allocator_tuned, threading.active_count())")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.stdout.split() == ["None", "False", "1"]


@pytest.mark.parametrize("script", ["train_shakespeare.py", "sample.py"])
def test_the_scripts_let_openblas_threads_sleep_before_numpy_loads(script):
    """OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when numpy loads it: the scripts set it before any import."""
    from pathlib import Path

    lines = (Path(__file__).resolve().parent.parent / "examples" / script).read_text().splitlines()
    setting = next(i for i, line in enumerate(lines) if 'os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")' in line)
    first_import = next(i for i, line in enumerate(lines)
                        if line.startswith(("import ", "from ", "    import ")) and "__future__" not in line
                        and line.strip() != "import os")
    assert setting < first_import, (setting, first_import)


def test_attention_with_big_products_and_a_short_batch_splits_only_the_softmax(monkeypatch):
    """Big products and fewer batch entries than threads: BLAS runs each product whole and only the softmax
    stage is split -- the same numbers as per-core slices."""
    from tinygrad_lite import fused

    op, shapes = OPS["attention"]
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    monkeypatch.setenv("TINYGRAD_LITE_CPU_THREADS", "3")  # the batch is 2
    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 1)
    per_core_slices = _run(op, arrays)
    monkeypatch.setattr(cpu_attention, "_ONE_CORE_PRODUCT", 1)  # every product counts as big
    monkeypatch.setattr(threads, "CACHE_BLOCK_ELEMENTS", 8)
    stages, one_core_products = [], []
    real_parallel_rows, real_one_core = threads.parallel_rows, cpu_attention._matmul_on_one_core
    monkeypatch.setattr(threads, "parallel_rows", lambda body, *a, **k: (stages.append(body.__name__),
                                                                         real_parallel_rows(body, *a, **k)))
    monkeypatch.setattr(cpu_attention, "_matmul_on_one_core", lambda *a: (one_core_products.append(1), real_one_core(*a)))
    big = _run(op, arrays)
    assert stages == ["softmax", "softmax_backward"]
    assert one_core_products == []  # the products were not cut down to one core's size
    for a, b in zip(per_core_slices, big):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_attention_with_big_products_runs_them_per_core_in_row_blocks(monkeypatch):
    """Big products and a batch slice for every thread: each thread runs all stages on its slice, with every
    product cut into row blocks (and a shorter last block) -- the same numbers as one unsplit thread."""
    from tinygrad_lite import fused

    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((4, 2, 7, 3)).astype(np.float32) for _ in range(3))
    op = OPS["attention"][0]
    monkeypatch.setenv("TINYGRAD_LITE_CPU_THREADS", "1")
    single = _run(op, [q, k, v])
    monkeypatch.setenv("TINYGRAD_LITE_CPU_THREADS", "2")
    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 1)
    monkeypatch.setattr(cpu_attention, "_ONE_CORE_PRODUCT", 2 * 3 * 7)  # blocks of 2 rows: 7 = 2 + 2 + 2 + 1
    stages, block_products = [], []
    real_parallel_rows, real_blocked = threads.parallel_rows, cpu_attention._matmul_on_one_core
    monkeypatch.setattr(threads, "parallel_rows", lambda body, *a, **kw: (stages.append(body.__name__),
                                                                          real_parallel_rows(body, *a, **kw)))
    monkeypatch.setattr(cpu_attention, "_matmul_on_one_core", lambda xp, a, b, out: (block_products.append(a.shape),
                                                                             real_blocked(xp, a, b, out)))
    threaded = _run(op, [q, k, v])
    assert stages == ["all_stages", "all_stages"] and len(block_products) == 2 * (2 + 4)
    for a, b in zip(single, threaded):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 6, 7, 8])
def test_matmul_on_one_core_equals_matmul_for_every_layout(rows, monkeypatch):
    from tinygrad_lite import fused

    monkeypatch.setattr(cpu_attention, "_ONE_CORE_PRODUCT", 3 * 5 * 2)  # blocks of 2 rows (3 x 5 right operands)
    rng = np.random.default_rng(rows)
    a = rng.standard_normal((2, 4, 3, rows)).astype(np.float32).swapaxes(-1, -2)  # a transposed view
    b = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    out = np.full((2, rows, 4, 5), np.nan, dtype=np.float32).transpose(0, 2, 1, 3)  # written through a view
    cpu_attention._matmul_on_one_core(np, a, b, out)
    np.testing.assert_allclose(out, np.matmul(a, b), rtol=1e-6, atol=1e-6)


def test_backend_empty_is_64_byte_aligned_and_usable():
    for shape, dtype in [((1000, 7), np.float32), ((3, 5000), np.float64), ((4,), np.float32), ((0, 3), np.float32)]:
        a = memory.empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        if a.nbytes >= memory.ALIGN_MIN_BYTES:
            assert a.__array_interface__["data"][0] % 64 == 0
        a[...] = 1
        assert float(a.sum()) == a.size

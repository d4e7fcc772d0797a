"""Threads for the CPU: ``parallel_rows`` splits big elementwise work over the cores.

The fused ops call it; ``tl.reference_mode()`` never does. The measurements behind each choice
are in docs/performance.md.
"""
from __future__ import annotations

import os
import threading

import numpy

# ------------------------------------------------------- CPU threads
# NumPy runs each elementwise op (exp, tanh, +, *) on one core, while BLAS
# matmuls use them all. NumPy releases the GIL inside those loops on large
# arrays, so splitting a big elementwise job into one contiguous chunk of rows
# per core and running the chunks in threads really runs them at the same time.
# The fused CPU ops (GELU, layer norm, the attention softmax, AdamW) do this.

PARALLEL_MIN_ELEMENTS = 1 << 16  # below this (measured), thread hand-off costs more than it saves
CACHE_BLOCK_ELEMENTS = 1 << 16  # 256 KB of float32 per array: a few arrays fit a core's L2 cache


def cpu_threads() -> int:
    """Threads for large elementwise CPU work: $TINYGRAD_LITE_CPU_THREADS, else the usable cores."""
    configured = os.environ.get("TINYGRAD_LITE_CPU_THREADS")
    if configured:
        return max(1, int(configured))
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 8))
    except AttributeError:  # not Linux
        return max(1, min(os.cpu_count() or 1, 8))


def parallel_rows(body, n_rows: int, elements_per_row: int = 1, xp=numpy, cache_blocks: bool = False) -> None:
    """Call ``body(start, stop)`` on contiguous chunks covering rows [0, n_rows), in parallel.

    ``body`` must only write rows start..stop of its outputs (so chunks never
    touch the same memory). Small jobs, GPU arrays (``xp`` is CuPy: the GPU
    is parallel already), and calls made while the worker threads serve
    another call (from inside a ``body``, or from a second thread of yours)
    run in the calling thread.

    With ``cache_blocks`` each thread walks its rows in blocks of about
    ``CACHE_BLOCK_ELEMENTS`` elements: for a body that is a chain of passes
    over the same rows (multiply, add, tanh, ...), a block small enough to
    stay in the core's cache makes every pass after the first read cache
    instead of memory.
    """
    threads = min(cpu_threads(), n_rows)
    if threads <= 1 or xp is not numpy or n_rows * elements_per_row < PARALLEL_MIN_ELEMENTS:
        threads = 1
    rows_per_block = max(1, n_rows)
    if cache_blocks and xp is numpy:
        rows_per_block = max(1, CACHE_BLOCK_ELEMENTS // max(1, elements_per_row))

    def blocks(start, stop):
        for block_start in range(start, stop, rows_per_block):
            body(block_start, min(stop, block_start + rows_per_block))

    workers = _claim_workers(threads - 1) if threads > 1 else None
    if workers is None:  # one thread, or the workers are busy (a call from inside a worker, or another thread)
        blocks(0, n_rows)
        return
    bounds = [n_rows * i // threads for i in range(threads + 1)]
    started = []
    try:
        for i, worker in enumerate(workers, start=1):
            worker.start(blocks, bounds[i], bounds[i + 1])
            started.append(worker)
        blocks(bounds[0], bounds[1])  # the calling thread takes the first chunk itself
    finally:
        try:
            errors = [worker.wait() for worker in started]
        except BaseException:  # interrupted (Ctrl-C) while workers still run: use fresh ones next time
            _release_workers(discard=True)
            raise
        _release_workers()
    for error in errors:
        if error is not None:
            raise error  # an error from a worker, raised in the caller


class _WorkerThread:
    """A thread that runs one job at a time, handed over with two locks.

    concurrent.futures' ThreadPoolExecutor would do, but its hand-off (a
    queue, a Future, a condition variable) costs several times a pair of plain
    locks -- and the fused ops call parallel_rows dozens of times per training
    step, on small jobs (numbers: docs/performance.md).
    """

    def __init__(self):
        self._job_ready, self._job_done = threading.Lock(), threading.Lock()
        self._job_ready.acquire()
        self._job_done.acquire()
        self._job, self._error = None, None
        threading.Thread(target=self._loop, daemon=True, name="tinygrad_lite-worker").start()

    def _loop(self) -> None:
        while True:
            self._job_ready.acquire()  # sleeps until start() hands over a job
            function, start, stop = self._job
            try:
                function(start, stop)
            except BaseException as error:  # noqa: BLE001 -- handed to the caller by wait()
                self._error = error
            self._job_done.release()

    def start(self, function, start: int, stop: int) -> None:
        self._job, self._error = (function, start, stop), None
        self._job_ready.release()

    def wait(self):
        """Block until the job is done; returns the exception it raised, or None."""
        self._job_done.acquire()
        self._job = None
        return self._error


_workers: list = []
_workers_pid = None
_workers_lock = threading.Lock()  # held by the one parallel_rows call using the workers


def _claim_workers(count: int):
    """``count`` idle worker threads (started on first use), or None if another call holds them."""
    global _workers, _workers_pid
    if not _workers_lock.acquire(blocking=False):
        return None
    if _workers_pid != os.getpid():  # first use, or a forked child (threads do not survive fork)
        _workers, _workers_pid = [], os.getpid()
    while len(_workers) < count:
        _workers.append(_WorkerThread())
    return _workers[:count]


def _release_workers(discard: bool = False) -> None:
    global _workers_pid
    if discard:
        _workers_pid = None
    _workers_lock.release()

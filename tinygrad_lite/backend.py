"""The backend: the one place where the CPU (NumPy) and the GPU (CuPy) differ.

Every op asks this module for ``xp`` -- the array module of the device its
inputs live on -- and then writes ``xp.exp(x)``, ``xp.matmul(a, b)`` and so on.
NumPy and CuPy share that API, so one implementation of each op runs on both
(the idea comes from Chainer). What they do *not* share lives here:

* how to find the module for a device (CuPy is imported lazily, only when
  someone asks for ``"cuda"``; CPU use never imports it),
* moving arrays between devices,
* scatter-add (``numpy.add.at`` vs ``cupyx.scatter_add``),
* random number generators, one per device, seeded by ``tl.manual_seed``,
  and their state (for checkpoints),
* CuPy's memory pool (``memory_pool_stats``, ``empty_cache``),
* TF32 matmuls (off by default; ``CUPY_TF32=1`` or ``set_tf32(True)``),
* synchronisation (for honest GPU timings).
"""
from __future__ import annotations

import contextlib
import math
import os
import threading

import numpy

DEVICES = ("cpu", "cuda")

_cupy_module = None
_generators: dict[str, object] = {}
_seed: int | None = None


class GPUUnavailableError(RuntimeError):
    """Raised when ``device="cuda"`` is asked for but cannot be used.

    The message says which piece is missing -- the CuPy package, the NVIDIA
    driver, or a GPU -- and how to install CuPy.
    """


_INSTALL_HINT = ('install CuPy with `pip install -e ".[gpu-cuda12]"` (CUDA 12 drivers) or '
                 '`pip install -e ".[gpu-cuda13]"` (CUDA 13 drivers); `nvidia-smi` shows which CUDA your driver has')


def _load_cupy():
    """Import CuPy on first use and check that a driver and a GPU are really there."""
    global _cupy_module
    if _cupy_module is not None:
        return _cupy_module
    try:
        import cupy  # noqa: PLC0415 -- lazy on purpose: CPU users never pay for it
    except ModuleNotFoundError as error:
        if error.name not in (None, "cupy"):  # CuPy is there but one of its own dependencies is not
            raise GPUUnavailableError(f"device 'cuda' is unavailable: CuPy is installed but could not be imported "
                                      f"({error}); reinstall it: {_INSTALL_HINT}") from error
        raise GPUUnavailableError(f"device 'cuda' is unavailable: CuPy is not installed; {_INSTALL_HINT}") from error
    except ImportError as error:  # e.g. a CuPy built for another CUDA major version
        raise GPUUnavailableError(f"device 'cuda' is unavailable: CuPy is installed but could not be imported "
                                  f"({error}); reinstall it: {_INSTALL_HINT}") from error
    _check_driver_and_device(cupy)
    _cupy_module = cupy
    return cupy


def _check_driver_and_device(cupy) -> None:
    """Raise GPUUnavailableError unless CuPy sees a driver and at least one GPU."""
    runtime = cupy.cuda.runtime
    try:
        driver_version = runtime.driverGetVersion()  # 0 when libcuda (the NVIDIA driver) is not loaded
    except Exception:  # noqa: BLE001 -- any failure here means "no usable driver"
        driver_version = 0
    if not driver_version:
        raise GPUUnavailableError("device 'cuda' is unavailable: no CUDA driver (CuPy is installed, but the NVIDIA "
                                  "driver library libcuda could not be loaded; is this a machine with an NVIDIA GPU? "
                                  "`nvidia-smi` should list it); use device='cpu' here, or install the driver and "
                                  "then, if needed, " + _INSTALL_HINT)
    try:
        count = runtime.getDeviceCount()
    except Exception as error:  # noqa: BLE001 -- CUDARuntimeError, whose text names the cause
        text = str(error)
        if "NoDevice" in text or "no CUDA-capable device" in text:
            count = 0
        elif "InsufficientDriver" in text:
            raise GPUUnavailableError(
                f"device 'cuda' is unavailable: the CUDA driver is too old for this CuPy (the driver supports CUDA "
                f"{driver_version // 1000}.{driver_version % 1000 // 10}; {error}); update the driver, or "
                f"{_INSTALL_HINT}") from error
        else:
            raise GPUUnavailableError(f"device 'cuda' is unavailable: the CUDA driver could not list the GPUs "
                                      f"({error}); check `nvidia-smi`. CuPy: {_INSTALL_HINT}") from error
    if count == 0:
        raise GPUUnavailableError("device 'cuda' is unavailable: no CUDA device (CuPy and the NVIDIA driver are "
                                  "installed, but no GPU is visible; check `nvidia-smi` and CUDA_VISIBLE_DEVICES). "
                                  "CuPy: " + _INSTALL_HINT)


def check_device(device: str) -> str:
    """Normalise and validate a device name ('cpu', 'cuda', 'cuda:0')."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string like 'cpu' or 'cuda', got {device!r}")
    name = device.split(":")[0]
    if name not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    if name == "cuda":
        _load_cupy()
    return name


def get_xp(device: str):
    """The array module (numpy or cupy) for a device."""
    if device == "cpu":
        return numpy
    if device == "cuda":
        return _load_cupy()
    raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")


def is_cuda(array) -> bool:
    """True for a CuPy array. Never imports CuPy: with CuPy not loaded, nothing is on the GPU."""
    return _cupy_module is not None and isinstance(array, _cupy_module.ndarray)


def device_of(array) -> str:
    """'cpu' for numpy arrays and scalars, 'cuda' for cupy arrays."""
    if isinstance(array, numpy.ndarray) or numpy.isscalar(array):
        return "cpu"
    if _cupy_module is not None and isinstance(array, _cupy_module.ndarray):
        return "cuda"
    raise TypeError(f"not an array of a known backend: {type(array).__name__}")


def xp_of(array):
    """The array module an array belongs to."""
    return get_xp(device_of(array))


def to_device(array, device: str):
    """Copy an array to a device (no copy when it is already there)."""
    if device_of(array) == device:
        return array
    if device == "cpu":
        return array.get()  # cupy -> numpy
    return get_xp(device).asarray(array)


def to_numpy(array) -> numpy.ndarray:
    """Always a numpy.ndarray, whatever the device."""
    return numpy.asarray(to_device(array, "cpu"))


def _is_row_scatter(target, indices, values) -> bool:
    """``target[indices] += values`` with a 1-D integer array picking whole rows (the embedding case)."""
    return (isinstance(indices, numpy.ndarray) and indices.ndim == 1 and indices.size > 0
            and indices.dtype.kind in "iu" and values.shape == indices.shape + target.shape[1:])


def scatter_add(target, indices, values) -> None:
    """``target[indices] += values`` where repeated indices *accumulate*.

    Plain ``target[idx] += v`` keeps only one of the repeated writes; the
    backward of gather/embedding needs every occurrence summed.
    """
    if device_of(target) == "cpu":
        if _is_row_scatter(target, indices, values):
            # NumPy's add.at is slow per row (docs/performance.md): instead sort the indices, sum each run of equal
            # ones with one reduceat, and add each sum to its row once (now no index repeats).
            if indices.min() < 0:  # -1 and n-1 name the same row: make every row have one name
                indices = indices % target.shape[0]
            order = numpy.argsort(indices, kind="stable")  # stable: a fixed summation order
            sorted_indices = indices[order]
            run_starts = numpy.flatnonzero(numpy.r_[True, sorted_indices[1:] != sorted_indices[:-1]])
            target[sorted_indices[run_starts]] += numpy.add.reduceat(values[order], run_starts, axis=0)
        else:
            numpy.add.at(target, indices, values)
    else:
        import cupyx  # noqa: PLC0415

        cupyx.scatter_add(target, indices, values)


# ------------------------------------------------------------- random numbers


def manual_seed(seed: int) -> None:
    """Seed the random generators of every device (made lazily)."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def generator(device: str = "cpu"):
    """The random generator of a device (numpy/cupy ``Generator``)."""
    if device not in _generators:
        _generators[device] = get_xp(device).random.default_rng(_seed)
    return _generators[device]


def get_rng_state(device: str = "cpu") -> dict:
    """The state of a device's generator, to restore later with ``set_rng_state``.

    CPU: numpy's ``bit_generator.state``, a JSON-able dict. CUDA: CuPy's cuRAND
    states copied to the host, ``{"bit_generator": name, "state": uint8 numpy
    array}`` (about a megabyte: store the array with ``tl.save``, not in JSON).
    """
    if device == "cpu":
        return generator("cpu").bit_generator.state
    if device != "cuda":
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    bit_generator = generator("cuda").bit_generator
    return {"bit_generator": type(bit_generator).__name__, "state": _cuda_rng_buffer(bit_generator).get()}


def set_rng_state(state: dict, device: str = "cpu") -> None:
    """Restore a state saved by ``get_rng_state(device)``."""
    if device == "cpu":
        generator("cpu").bit_generator.state = state
        return
    if device != "cuda":
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    bit_generator = generator("cuda").bit_generator
    if state.get("bit_generator") != type(bit_generator).__name__:
        raise ValueError(f"set_rng_state: the state is of a {state.get('bit_generator')} generator, "
                         f"this one is a {type(bit_generator).__name__}")
    buffer = _cuda_rng_buffer(bit_generator)
    saved = numpy.asarray(state["state"]).reshape(-1).view(numpy.uint8)
    if saved.size != buffer.size:
        raise ValueError(f"set_rng_state: the saved CUDA state has {saved.size} bytes, this generator's has "
                         f"{buffer.size} (saved on another GPU model or CuPy version?)")
    buffer.set(saved)


def _cuda_rng_buffer(bit_generator):
    """The bytes of a CuPy cuRAND bit generator's state, as a uint8 cupy array (a view, not a copy).

    CuPy keeps them in the array ``bit_generator._state`` (one cuRAND state per
    thread it launches); there is no public accessor, hence this one place
    that knows about it.
    """
    buffer = getattr(bit_generator, "_state", None)
    if buffer is None or not is_cuda(buffer):
        raise NotImplementedError(f"get/set_rng_state('cuda'): this CuPy's {type(bit_generator).__name__} keeps its "
                                  "state where tinygrad_lite cannot reach it; re-seed with tl.manual_seed instead")
    return buffer.view(_cupy_module.uint8)


# ---------------------------------------------------------------- GPU memory


def memory_pool_stats() -> dict[str, int]:
    """Bytes in CuPy's device memory pool and on the GPU (for logging and benchmarks).

    ``used_bytes``: held by live arrays; ``pool_bytes``: everything the pool
    has taken from the GPU (live + cached for reuse; it only grows until
    ``empty_cache()``, so it is the run's high-water mark); ``free_blocks``:
    cached blocks; ``device_free_bytes``/``device_total_bytes``: the whole
    GPU as the driver sees it (other processes included).
    """
    cupy = _load_cupy()
    pool = cupy.get_default_memory_pool()
    free, total = cupy.cuda.runtime.memGetInfo()
    return {"used_bytes": int(pool.used_bytes()), "pool_bytes": int(pool.total_bytes()),
            "free_blocks": int(pool.n_free_blocks()), "device_free_bytes": int(free),
            "device_total_bytes": int(total)}


def empty_cache() -> None:
    """Give the GPU memory cached by CuPy's pools back to the driver (no-op if CuPy was never used).

    Arrays still alive keep their memory; only cached free blocks are released.
    """
    if _cupy_module is None:
        return
    _cupy_module.get_default_memory_pool().free_all_blocks()
    _cupy_module.get_default_pinned_memory_pool().free_all_blocks()


# ----------------------------------------------------------------------- TF32


def tf32_enabled() -> bool:
    """Whether float32 matmuls on the GPU may use TF32 tensor cores (10-bit mantissa inputs).

    Off by default: results then match the CPU to float32 precision. CuPy
    reads ``CUPY_TF32=1`` from the environment at its first matmul; ``set_tf32``
    switches it at run time.
    """
    if _cupy_module is None:
        return os.environ.get("CUPY_TF32", "0").strip() not in ("", "0")
    from cupy._core import _routines_linalg as linalg  # noqa: PLC0415

    return linalg.get_compute_type(numpy.float32) == linalg.COMPUTE_TYPE_TF32


def set_tf32(enabled: bool) -> None:
    """Allow (True) or forbid (False) TF32 for float32 matmuls on the GPU from now on."""
    os.environ["CUPY_TF32"] = "1" if enabled else "0"  # what CuPy reads if it has not decided yet
    if _cupy_module is None:
        return
    from cupy._core import _routines_linalg as linalg  # noqa: PLC0415

    linalg.set_compute_type(numpy.float32, linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_DEFAULT)


# ------------------------------------------------------------------- timing


def synchronize(device: str = "cpu") -> None:
    """Wait for queued GPU work (no-op on the CPU); call before reading a timer."""
    if device == "cuda":
        _load_cupy().cuda.get_current_stream().synchronize()


# ------------------------------------------------------ CPU allocator
# NumPy asks malloc for every temporary array. glibc serves big blocks with a
# fresh mmap and unmaps them again on free, so a training step that makes
# ~100 MB of temporaries page-faults through ~100 MB of new zeroed pages every
# step (a third of the baby GPT's step: docs/performance.md). Raising the mmap and trim
# thresholds keeps freed blocks in the heap, where the next step reuses them.

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
_allocator_tuned = False


def tune_cpu_allocator() -> bool:
    """Keep freed large blocks for reuse (glibc only; set TINYGRAD_LITE_MALLOC_TUNING=0 to skip).

    Returns True when the thresholds are changed. Called by ``tinygrad_lite.cpu.tune()``.
    """
    global _allocator_tuned
    if _allocator_tuned or os.environ.get("TINYGRAD_LITE_MALLOC_TUNING", "1") == "0":
        return _allocator_tuned
    try:
        import ctypes  # noqa: PLC0415
        libc = ctypes.CDLL("libc.so.6")
        # 32 MiB is the largest mmap threshold glibc accepts on 64-bit machines.
        _allocator_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, 512 << 20))
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): leave the allocator alone
        _allocator_tuned = False
    return _allocator_tuned


# ----------------------------------------------------- aligned arrays
# NumPy takes its buffers from malloc, which aligns them to 16 bytes only. A SIMD loop over an array
# whose start is not 64-byte aligned (a cache line; one AVX-512 register) splits loads across cache
# lines, and elementwise passes run slower (docs/performance.md). The fused ops allocate their big
# outputs and scratch arrays with ``empty`` instead. (CuPy's memory pool aligns to 512 bytes.)

ALIGNMENT = 64
ALIGN_MIN_BYTES = 1 << 14  # smaller arrays: the extra Python work costs more than it saves


def empty(shape, dtype, xp=numpy):
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary (on the CPU)."""
    shape = tuple(shape)
    dtype = numpy.dtype(dtype)
    nbytes = dtype.itemsize * math.prod(shape)
    if xp is not numpy or ALIGNMENT <= 1 or nbytes < ALIGN_MIN_BYTES:
        return xp.empty(shape, dtype=dtype)
    raw = numpy.empty(nbytes + ALIGNMENT, dtype=numpy.uint8)
    start = -raw.__array_interface__["data"][0] % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def empty_like(array):
    """``empty`` with the shape and dtype of ``array`` (C order)."""
    return empty(array.shape, array.dtype, xp_of(array))


def overflow_allowed(xp):
    """A context in which exp overflowing to inf is expected (NumPy warns about it; CuPy never does)."""
    if xp is numpy:
        return numpy.errstate(over="ignore", under="ignore")
    return contextlib.nullcontext()


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

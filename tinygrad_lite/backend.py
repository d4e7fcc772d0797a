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

The CPU's speed machinery (threads, aligned arrays, allocator settings) is in ``cpu_kernels/``.
"""
from __future__ import annotations

import contextlib
import os

import numpy

from .cpu_kernels import scatter

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


def scatter_add(target, indices, values) -> None:
    """``target[indices] += values`` where repeated indices *accumulate*.

    Plain ``target[idx] += v`` keeps only one of the repeated writes; the
    backward of gather/embedding needs every occurrence summed.
    """
    if device_of(target) == "cpu":
        if scatter.is_row_scatter(target, indices, values):
            scatter.add_rows(target, indices, values)  # the embedding case, without numpy.add.at's cost per row
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


def overflow_allowed(xp):
    """A context in which exp overflowing to inf is expected (NumPy warns about it; CuPy never does)."""
    if xp is numpy:
        return numpy.errstate(over="ignore", under="ignore")
    return contextlib.nullcontext()

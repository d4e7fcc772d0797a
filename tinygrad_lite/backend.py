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
* synchronisation (for honest GPU timings).
"""
from __future__ import annotations

import numpy

DEVICES = ("cpu", "cuda")

_cupy_module = None
_generators: dict[str, object] = {}
_seed: int | None = None


class GPUUnavailableError(RuntimeError):
    """Raised when ``device="cuda"`` is asked for but cannot be used."""


_INSTALL_HINT = 'install CuPy with `pip install -e ".[gpu-cuda12]"` (CUDA 12) or `pip install -e ".[gpu-cuda13]"` (CUDA 13)'


def _load_cupy():
    """Import CuPy on first use and check that a GPU is really there."""
    global _cupy_module
    if _cupy_module is not None:
        return _cupy_module
    try:
        import cupy  # noqa: PLC0415 -- lazy on purpose: CPU users never pay for it
    except ImportError as error:
        raise GPUUnavailableError(f"device 'cuda' needs CuPy, which is not installed ({error}); {_INSTALL_HINT}") from error
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDARuntimeError when no driver is loaded
        raise GPUUnavailableError(f"CuPy is installed but no CUDA driver could be used ({error}); "
                                  "check `nvidia-smi`, or " + _INSTALL_HINT) from error
    if count == 0:
        raise GPUUnavailableError("CuPy is installed but no CUDA device was found")
    _cupy_module = cupy
    return cupy


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
        numpy.add.at(target, indices, values)
    else:
        import cupyx  # noqa: PLC0415
        cupyx.scatter_add(target, indices, values)


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
    """The CPU generator's state as a JSON-able dict (for checkpoints)."""
    if device != "cpu":
        raise NotImplementedError("saving the GPU generator's state is not supported")
    return generator("cpu").bit_generator.state


def set_rng_state(state: dict, device: str = "cpu") -> None:
    if device != "cpu":
        raise NotImplementedError("restoring the GPU generator's state is not supported")
    generator("cpu").bit_generator.state = state


def synchronize(device: str = "cpu") -> None:
    """Wait for queued GPU work (no-op on the CPU); call before reading a timer."""
    if device == "cuda":
        _load_cupy().cuda.get_current_stream().synchronize()

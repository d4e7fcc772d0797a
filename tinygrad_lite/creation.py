"""Making tensors: zeros, ones, full, arange, eye, linspace, the random ones (randn, rand, randint,
randperm, multinomial) and the ``_like`` forms; plus a few torch utilities (from_numpy, allclose,
Generator, inference_mode).

Random numbers come from NumPy's (CuPy's on the GPU) ``Generator``: ``tl.manual_seed(s)`` or a
``tl.Generator().manual_seed(s)`` makes them reproducible, but they are not torch's numbers.
"""
from __future__ import annotations

import contextlib

import numpy

from . import backend
from .autograd import no_grad
from .tensor import Tensor, _shape_arg as _shape


def zeros(*shape, dtype=numpy.float32, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    xp = backend.get_xp(backend.check_device(device))
    return Tensor(xp.zeros(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def ones(*shape, dtype=numpy.float32, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    xp = backend.get_xp(backend.check_device(device))
    return Tensor(xp.ones(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def full(shape, fill_value, dtype=numpy.float32, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    xp = backend.get_xp(backend.check_device(device))
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return Tensor(xp.full(shape, fill_value, dtype=dtype), requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=None, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    """Like torch.arange: integer arguments give int64, otherwise float32."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        all_ints = all(isinstance(v, (int, numpy.integer)) for v in (start, stop, step))
        dtype = numpy.int64 if all_ints else numpy.float32
    xp = backend.get_xp(backend.check_device(device))
    return Tensor(xp.arange(start, stop, step, dtype=dtype), requires_grad=requires_grad)


class Generator:
    """A random generator of one's own, as torch.Generator: ``g = tl.Generator().manual_seed(42)``,
    then ``tl.randn(3, generator=g)``. It wraps NumPy's (CuPy's) ``Generator``, so the same seed
    gives the same numbers here every time, but not torch's numbers."""

    def __init__(self, device: str = "cpu"):
        self.device = backend.check_device(device)
        self._seed: int | None = None
        self.rng = backend.get_xp(self.device).random.default_rng()  # unseeded: fresh entropy

    def manual_seed(self, seed: int) -> "Generator":
        self._seed = int(seed)
        self.rng = backend.get_xp(self.device).random.default_rng(self._seed)
        return self

    def initial_seed(self) -> int | None:
        return self._seed


def _rng(generator: Generator | None, device: str, op: str):
    """The backend generator to draw from: ``generator``'s, or the device's shared one."""
    device = backend.check_device(device)
    if generator is None:
        return backend.generator(device)
    if not isinstance(generator, Generator):
        raise TypeError(f"{op}: generator must be a tl.Generator, got {type(generator).__name__}")
    if generator.device != device:
        raise ValueError(f"{op}: the generator is on {generator.device!r}, the tensor is made on {device!r}")
    return generator.rng


def randn(*shape, generator: "Generator | None" = None, dtype=numpy.float32, device: str = "cpu",
          requires_grad: bool = False) -> Tensor:
    """Standard normal samples from ``generator`` (default: the device's, seeded by ``tl.manual_seed``)."""
    rng = _rng(generator, device, "randn")
    return Tensor(rng.standard_normal(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def rand(*shape, generator: "Generator | None" = None, dtype=numpy.float32, device: str = "cpu",
         requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1) from ``generator`` (default: the device's)."""
    rng = _rng(generator, device, "rand")
    return Tensor(rng.random(_shape(shape), dtype=dtype), requires_grad=requires_grad)


# ``*_like(t)``: t's shape, and t's dtype and device unless told otherwise.
def zeros_like(t: Tensor, dtype=None, device: str | None = None, requires_grad: bool = False) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def ones_like(t: Tensor, dtype=None, device: str | None = None, requires_grad: bool = False) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def full_like(t: Tensor, fill_value, dtype=None, device: str | None = None, requires_grad: bool = False) -> Tensor:
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def empty_like(t: Tensor, dtype=None, device: str | None = None, requires_grad: bool = False) -> Tensor:
    return empty(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def rand_like(t: Tensor, dtype=None, device: str | None = None, requires_grad: bool = False) -> Tensor:
    return rand(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def randn_like(t: Tensor, dtype=None, device: str | None = None, requires_grad: bool = False) -> Tensor:
    return randn(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def randint_like(t: Tensor, low: int, high: int | None = None, dtype=None, device: str | None = None) -> Tensor:
    """``randint_like(t, high)`` or ``randint_like(t, low, high)``: integers in [low, high), t's dtype."""
    low, high = (0, low) if high is None else (low, high)
    return randint(low, high, t.shape, dtype=dtype or t.dtype, device=device or t.device)


def tensor(data, dtype=None, device: str | None = None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data``, with torch.tensor's dtypes.

    Python ints (and nested lists of them) become int64, floats float32, bools bool;
    numpy/cupy arrays, numpy scalars and tensors keep their dtype (a float64 array stays float64).
    ``Tensor(data)`` differs on purpose, as torch.Tensor does: Python numbers become float32.
    """
    data = data.data if isinstance(data, Tensor) else data
    if isinstance(data, (numpy.ndarray, numpy.generic)) or backend.is_cuda(data):
        array = data.copy()
    else:
        array = numpy.array(data)
        torch_kinds = {"b": numpy.bool_, "i": numpy.int64, "u": numpy.int64, "f": numpy.float32, "c": numpy.complex64}
        if array.dtype.kind not in torch_kinds:
            raise TypeError(f"tensor(): cannot make a tensor from {type(data).__name__} "
                            f"(numpy reads it as dtype {array.dtype}); expected numbers or nested lists of numbers")
        array = array.astype(torch_kinds[array.dtype.kind] if dtype is None else dtype)
    return Tensor(array, dtype=dtype, device=device, requires_grad=requires_grad)


def empty(*shape, dtype=numpy.float32, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    """A tensor whose values are whatever the memory held (fast; fill it before reading it)."""
    xp = backend.get_xp(backend.check_device(device))
    return Tensor(xp.empty(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def eye(n: int, m: int | None = None, dtype=numpy.float32, device: str = "cpu",
        requires_grad: bool = False) -> Tensor:
    """The (n, m) identity matrix (m defaults to n): ones on the diagonal."""
    xp = backend.get_xp(backend.check_device(device))
    return Tensor(xp.eye(n, n if m is None else m, dtype=dtype), requires_grad=requires_grad)


def linspace(start: float, end: float, steps: int, dtype=numpy.float32, device: str = "cpu",
             requires_grad: bool = False) -> Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end``, both included."""
    xp = backend.get_xp(backend.check_device(device))
    return Tensor(xp.linspace(start, end, steps, dtype=numpy.float64).astype(dtype), requires_grad=requires_grad)


def randint(low: int, high=None, size=None, generator: Generator | None = None, dtype=numpy.int64,
            device: str = "cpu", requires_grad: bool = False) -> Tensor:
    """Integers drawn uniformly from [low, high): ``randint(high, size)`` or ``randint(low, high, size)``."""
    if size is None:  # torch.randint(high, size)
        low, high, size = 0, low, high
    if size is None:
        raise TypeError("randint() missing the size argument (a tuple such as (2, 3))")
    if high <= low:
        raise ValueError(f"randint: empty range [{low}, {high}); high must be greater than low")
    size = (size,) if isinstance(size, int) else tuple(size)
    values = _rng(generator, device, "randint").integers(low, high, size=size, dtype=numpy.int64)
    return Tensor(values.astype(dtype, copy=False), requires_grad=requires_grad)


def randperm(n: int, generator: Generator | None = None, dtype=numpy.int64, device: str = "cpu") -> Tensor:
    """0, ..., n-1 in a uniformly random order: the order that sorts n uniform random keys."""
    rng = _rng(generator, device, "randperm")
    return Tensor(backend.get_xp(device).argsort(rng.random(n)).astype(dtype))


def multinomial(probs: Tensor, num_samples: int, replacement: bool = False,
                generator: Generator | None = None) -> Tensor:
    """Category indices drawn with probability proportional to each row of ``probs`` (1-D or 2-D;
    weights need not sum to 1). Result: int64 of shape (num_samples,) or (rows, num_samples).

    With replacement each draw is independent: inverse transform sampling, the first category
    whose running total of probability exceeds a uniform u. Without replacement, as torch, the
    draws are one after another without putting back; that is the same as taking the
    ``num_samples`` largest keys u^(1/p) (Efraimidis and Spirakis, 2006), computed as log(u) / p.
    """
    weights = probs.data if isinstance(probs, Tensor) else numpy.asarray(probs)
    xp = backend.xp_of(weights)
    if weights.ndim not in (1, 2) or weights.dtype.kind not in "fc":
        raise ValueError(f"multinomial: probs must be a 1-D or 2-D float tensor, got shape {tuple(weights.shape)} "
                         f"and dtype {weights.dtype}")
    rows = weights.reshape(-1, weights.shape[-1]).astype(numpy.float64)  # (R, C)
    if not bool(xp.isfinite(rows).all() & (rows >= 0).all() & (rows.sum(axis=1) > 0).all()):
        raise ValueError(f"multinomial: every row of probs (shape {tuple(weights.shape)}) must be finite, "
                         "non-negative, with a positive sum")
    rng = _rng(generator, backend.device_of(weights), "multinomial")
    if replacement:
        running = xp.cumsum(rows, axis=1)
        running /= running[:, -1:]  # the last total is exactly 1.0, and u < 1: never past the end
        uniform = rng.random((rows.shape[0], num_samples))
        picks = xp.stack([xp.searchsorted(total, u, side="right") for total, u in zip(running, uniform)])
    else:
        if num_samples > int((rows > 0).sum(axis=1).min()):
            raise ValueError(f"multinomial: cannot draw {num_samples} samples without replacement from a row with "
                             f"fewer categories of nonzero probability (probs of shape {tuple(weights.shape)})")
        with numpy.errstate(divide="ignore", invalid="ignore"):
            keys = xp.where(rows > 0, xp.log(1.0 - rng.random(rows.shape)) / rows, -xp.inf)  # log u, u in (0, 1]
        picks = xp.argsort(-keys, axis=1, kind="stable")[:, :num_samples]
    return Tensor(picks.astype(numpy.int64).reshape(weights.shape[:-1] + (num_samples,)))


def from_numpy(array: numpy.ndarray) -> Tensor:
    """A tensor that shares ``array``'s memory and keeps its dtype (writes show in both)."""
    if not isinstance(array, numpy.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)


def allclose(a: Tensor, b: Tensor, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> bool:
    """True if |a - b| <= atol + rtol |b| everywhere (a and b broadcast), as torch.allclose."""
    a = a.numpy() if isinstance(a, Tensor) else numpy.asarray(a)
    b = b.numpy() if isinstance(b, Tensor) else numpy.asarray(b)
    return bool(numpy.allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))


def inference_mode(mode: bool = True):
    """torch.inference_mode: here just ``no_grad()`` (mode=False: no change). A context manager,
    and a decorator as ``@tl.inference_mode()``."""
    return no_grad() if mode else contextlib.nullcontext()

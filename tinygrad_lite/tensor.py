"""``Tensor``: an n-dimensional array that remembers how it was computed.

A Tensor wraps a backend array (``.data``, numpy on the CPU, cupy on the GPU).
When it comes out of an op and gradients are wanted it also holds ``_ctx``
(public name: ``grad_fn``), the ``Function`` that created it; those links are
the autograd graph. Every method here is a thin call into one op in
``tinygrad_lite.ops`` (or a short composition of them), so the graph is built
from primitives only.

The spellings are PyTorch's: ``dim=``/``keepdim=``, ``x.size()`` (a method,
returning ``Size``), ``x.max(dim)`` giving ``(values, indices)``. NumPy's
``axis=``/``keepdims=`` are accepted too (``_numpy_spellings`` folds them in).
"""
from __future__ import annotations

import difflib
import numbers
from typing import NamedTuple

import numpy

from . import amp, backend
from .autograd import backward_pass, is_grad_enabled
from .ops import elementwise as ew
from .ops import indexing, matmul, movement, reduce


def _float_dtype_of_python_values(dtype):
    return numpy.dtype(dtype) if dtype is not None else numpy.dtype(numpy.float32)


class Size(tuple):
    """A shape, as ``x.size()`` returns it: a plain tuple (like torch.Size), so ``B, T, C = x.size()`` works."""

    def numel(self) -> int:
        return int(numpy.prod(self, dtype=numpy.int64))

    def __repr__(self) -> str:
        return f"tl.Size({list(self)})"


class ValuesIndices(NamedTuple):
    """What ``max``/``min`` along a dim return, as torch.return_types.max: ``values, indices = x.max(1)``."""

    values: "Tensor"
    indices: "Tensor"


class Histogram(NamedTuple):
    """What ``histogram`` returns, as torch.return_types.histogram: ``hist, bin_edges = x.histogram(50)``."""

    hist: "Tensor"
    bin_edges: "Tensor"


# NumPy's keyword -> the torch keyword it stands for
NUMPY_SPELLINGS = {"axis": "dim", "keepdims": "keepdim"}


def _numpy_spellings(op: str, numpy_names: dict, dim, dim_default=None, keepdim=None):
    """``(dim, keepdim)`` with NumPy's ``axis=``/``keepdims=`` (in ``numpy_names``) taken as torch's.

    ``numpy_names`` is what the op got in its ``**numpy_names``: empty in the usual call.
    ``keepdim=None`` means the op takes no keepdim. ``dim`` counts as given when it is not
    ``dim_default``. Any other keyword is a TypeError that names the torch keyword meant.
    """
    if not numpy_names:
        return dim, keepdim
    for name, value in numpy_names.items():
        if name == "axis" and dim is not None and dim != dim_default:
            raise TypeError(f"{op}() got both dim={dim!r} and axis={value!r}; pass only dim")
        if name == "keepdims" and keepdim:
            raise TypeError(f"{op}() got both keepdim and keepdims; pass only keepdim")
        if name == "axis":
            dim = value
        elif name == "keepdims" and keepdim is not None:
            keepdim = value
        else:
            known = ("dim", "axis") if keepdim is None else ("dim", "axis", "keepdim", "keepdims")
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean '{NUMPY_SPELLINGS.get(close[0], close[0])}'?" if close else ""
            raise TypeError(f"{op}() got an unexpected keyword argument '{name}'{hint}")
    return dim, keepdim


class Tensor:
    # Let ``numpy_array + tensor`` call Tensor.__radd__ instead of numpy's own loop.
    __array_ufunc__ = None
    # Called with the tensor once backward has added into its .grad (a class default: most have none).
    _post_accumulate_grad_hooks: tuple = ()

    def __init__(self, data, requires_grad: bool = False, dtype=None, device: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        if _is_backend_array(data):
            array = data if dtype is None else data.astype(dtype, copy=False)
        elif isinstance(data, numpy.generic):  # numpy scalar: its dtype is kept
            array = numpy.asarray(data, dtype=dtype)
        else:  # Python lists and scalars become float32 (bools stay bool) unless told otherwise
            array = numpy.asarray(data)
            if dtype is not None:
                array = array.astype(dtype)
            elif array.dtype != numpy.bool_:
                array = array.astype(numpy.float32)
        if device is not None:
            array = backend.to_device(array, backend.check_device(device))
        self._data = array
        self._version = 0
        self.grad: Tensor | None = None
        self._ctx = None  # the Function that created this tensor (None for leaves)
        self._output_index = 0  # which of its creator's outputs this is (ops like split have several)
        self._retains_grad = False
        self._graph_freed = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ------------------------------------------------------------ properties
    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        """Replacing the data is an in-place change: it bumps the version."""
        self._data = value.data if isinstance(value, Tensor) else value
        self._version += 1

    @property
    def shape(self) -> tuple:
        return tuple(self._data.shape)

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def dtype(self):
        return self._data.dtype

    def size(self, dim: int | None = None):
        """The shape as a ``Size`` (a tuple), or its length along ``dim`` (negative counts from the end).

        ``size`` is this method, as in torch; NumPy's ``array.size`` (the element count) is ``numel()``.
        """
        if dim is None:
            return Size(self._data.shape)
        if not -self.ndim <= dim < self.ndim:
            raise IndexError(f"size(): dim {dim} is out of range for a tensor with {self.ndim} dimensions "
                             f"(shape {self.shape})")
        return self._data.shape[dim]

    @property
    def device(self) -> str:
        return backend.device_of(self._data)

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def grad_fn(self):
        """The Function that made this tensor in the graph (None for leaves), as torch's ``grad_fn``."""
        return self._ctx

    @property
    def xp(self):
        """The array module (numpy or cupy) of this tensor's device."""
        return backend.get_xp(self.device)

    def numel(self) -> int:
        """The number of elements (NumPy's ``array.size``)."""
        return int(self._data.size)

    nelement = numel  # torch's older name, as makemore writes it

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        """``for row in x`` yields x[0], x[1], ... (differentiable views), as torch does."""
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self) -> str:
        extras = ""
        if self._ctx is not None:
            extras = f", grad_fn={self._ctx!r}"
        elif self.requires_grad:
            extras = ", requires_grad=True"
        device = "" if self.device == "cpu" else f", device='{self.device}'"
        body = numpy.array2string(self.numpy(), separator=", ", prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype}{device}{extras})"

    # ----------------------------------------------------- leaving the graph
    def numpy(self) -> numpy.ndarray:
        """The values as a numpy.ndarray (copied from the GPU if needed)."""
        return backend.to_numpy(self._data)

    def item(self):
        if self.numel() != 1:
            raise ValueError(f"item(): only one-element tensors can be converted, this one has shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def __int__(self) -> int:  # int(x), float(x) of a one-element tensor, as torch
        return int(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def detach(self) -> "Tensor":
        """The same values, cut from the graph (shares the array; no grad)."""
        return Tensor(self._data)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self._data.dtype.kind not in "fc":
            raise TypeError(f"only floating point tensors can require gradients, got dtype {self.dtype}")
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("requires_grad_(False) on a non-leaf tensor: use detach() instead")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> "Tensor":
        """Keep ``.grad`` on this non-leaf after backward (leaves always keep it)."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a tensor that does not require grad")
        if self._ctx is not None:
            self._retains_grad = True
        return self

    def register_post_accumulate_grad_hook(self, hook) -> "HookHandle":
        """Call ``hook(self)`` each time a backward pass has added this leaf's gradient into ``.grad``.

        By then the gradient is complete for that backward (every op that used the leaf has run),
        which is what ``distributed.DistributedDataParallel`` waits for to start averaging a bucket
        of gradients while the rest of the backward runs. Returns a handle; ``handle.remove()``.
        """
        if self._ctx is not None:
            raise RuntimeError("register_post_accumulate_grad_hook: only for leaf tensors "
                               f"(this one, shape {self.shape}, was computed by {type(self._ctx).__name__})")
        self._post_accumulate_grad_hooks = (*self._post_accumulate_grad_hooks, hook)
        return HookHandle(self, hook)

    def to(self, *args, dtype=None, device: str | None = None) -> "Tensor":
        """This tensor with another device and/or dtype, as torch: ``to('cuda')``, ``to(tl.float64)``,
        ``to(other)`` (its device and dtype), ``to('cpu', tl.long)``; differentiable (float dtypes)."""
        for arg in args:
            if isinstance(arg, Tensor):
                device, dtype = arg.device, arg.dtype
            elif isinstance(arg, str):
                device = arg
            else:
                dtype = arg
        out = self if dtype is None else self.astype(dtype)
        if device is None or backend.check_device(device) == out.device:
            return out
        return movement.ToDevice.apply(out, device=backend.check_device(device))

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        return self.to("cuda")

    def astype(self, dtype) -> "Tensor":
        """A copy with another dtype; differentiable between float dtypes (to ints or bool it leaves the graph)."""
        try:
            dtype = numpy.dtype(dtype)
        except TypeError:
            raise TypeError(f"astype/to: {dtype!r} is not a dtype (expected e.g. tl.float32 or tl.long)") from None
        if dtype == self.dtype:
            return self
        if dtype.kind not in "fc":
            return Tensor(self._data.astype(dtype))
        return ew.Cast.apply(self, dtype=dtype)

    def type_as(self, other: "Tensor") -> "Tensor":
        return self.astype(other.dtype)

    def float(self) -> "Tensor":
        return self.astype(numpy.float32)

    def double(self) -> "Tensor":
        return self.astype(numpy.float64)

    def half(self) -> "Tensor":
        return self.astype(numpy.float16)

    def long(self) -> "Tensor":
        return self.astype(numpy.int64)

    def int(self) -> "Tensor":  # int32, as torch's .int()
        return self.astype(numpy.int32)

    def bool(self) -> "Tensor":
        return self.astype(numpy.bool_)

    # -------------------------------------------------------------- backward
    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        """Compute d(self)/d(leaf) for every leaf that requires grad.

        ``gradient`` is dLoss/dself; it may be left out only for a one-element
        tensor (a loss), where it is 1.
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no graph "
                               "(was it computed under no_grad(), or from tensors without requires_grad=True?)")
        if gradient is None:
            if self.numel() != 1:
                raise RuntimeError(f"backward(): gradient can be left out only for a one-element tensor, "
                                   f"this one has shape {self.shape}; pass gradient= of the same shape")
            gradient = self.xp.ones(self.shape, dtype=self.dtype)
        else:
            gradient = gradient.data if isinstance(gradient, Tensor) else self.xp.asarray(gradient)
            if tuple(gradient.shape) != self.shape:
                raise ValueError(f"backward(): gradient has shape {tuple(gradient.shape)}, "
                                 f"the tensor has shape {self.shape}")
            gradient = gradient.astype(self.dtype, copy=False)
        backward_pass(self, gradient, retain_graph=retain_graph)

    def _accumulate_grad(self, grad) -> None:
        """``.grad += grad`` (the first time, a private copy: grads must not alias); then the hooks
        of ``register_post_accumulate_grad_hook`` (leaves only), as backward_pass finishes a leaf."""
        if self.grad is None:
            self.grad = Tensor(grad.copy())
        else:
            self.grad._data += grad
        for hook in self._post_accumulate_grad_hooks:  # e.g. DDP starting a bucket's all-reduce
            hook(self)

    # ------------------------------------------------------- in-place edits
    def _check_inplace(self, op: str) -> None:
        if is_grad_enabled() and self.requires_grad:
            kind = "a leaf tensor that requires grad" if self._ctx is None else "a tensor that is part of a graph"
            raise RuntimeError(f"{op}: in-place change of {kind} (shape {self.shape}); "
                               "do it under `with no_grad():` (as optimizers do) or on a detached copy")

    def __setitem__(self, index, value) -> None:
        self._check_inplace("__setitem__")
        self._data[_index_arrays(index, self)] = value.data if isinstance(value, Tensor) else value
        self._version += 1

    def add_(self, other, alpha: float = 1.0) -> "Tensor":
        self._check_inplace("add_")
        other = other.data if isinstance(other, Tensor) else other
        self._data += other if alpha == 1.0 else alpha * other
        self._version += 1
        return self

    def sub_(self, other) -> "Tensor":
        return self.add_(other, alpha=-1.0)

    def mul_(self, other) -> "Tensor":
        self._check_inplace("mul_")
        self._data *= other.data if isinstance(other, Tensor) else other
        self._version += 1
        return self

    def fill_(self, value) -> "Tensor":
        self._check_inplace("fill_")
        self._data.fill(value)
        self._version += 1
        return self

    def zero_(self) -> "Tensor":
        return self.fill_(0)

    def copy_(self, source) -> "Tensor":
        self._check_inplace("copy_")
        source = source.data if isinstance(source, Tensor) else source
        if tuple(source.shape) != self.shape:
            raise ValueError(f"copy_: source shape {tuple(source.shape)} != destination shape {self.shape}")
        self._data[...] = backend.to_device(source, self.device)
        self._version += 1
        return self

    # ------------------------------------------------------------ arithmetic
    def _coerce(self, other) -> "Tensor":
        """Turn a Python number or array into a constant Tensor for a binary op.

        Python scalars do not upcast: float32 * 2.0 stays float32.
        """
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (bool, numbers.Number)) and not isinstance(other, numpy.generic):
            if self.dtype.kind in "fc":
                dtype = self.dtype
            elif isinstance(other, float):
                dtype = numpy.float32
            else:
                dtype = self.dtype
            return Tensor(self.xp.asarray(other, dtype=dtype))
        if _is_backend_array(other) or isinstance(other, numpy.generic):
            return Tensor(backend.to_device(numpy.asarray(other) if isinstance(other, numpy.generic) else other,
                                            self.device))
        if isinstance(other, (list, tuple)):
            return Tensor(self.xp.asarray(other, dtype=self.dtype))
        raise TypeError(f"unsupported operand type for a Tensor op: {type(other).__name__}")

    def __add__(self, other):
        return _checked(ew.Add, "add", self, self._coerce(other))

    def __radd__(self, other):
        return _checked(ew.Add, "add", self._coerce(other), self)

    def __sub__(self, other):
        return _checked(ew.Sub, "sub", self, self._coerce(other))

    def __rsub__(self, other):
        return _checked(ew.Sub, "sub", self._coerce(other), self)

    def __mul__(self, other):
        return _checked(ew.Mul, "mul", self, self._coerce(other))

    def __rmul__(self, other):
        return _checked(ew.Mul, "mul", self._coerce(other), self)

    def __truediv__(self, other):
        return _checked(ew.Div, "div", self, self._coerce(other))

    def __rtruediv__(self, other):
        return _checked(ew.Div, "div", self._coerce(other), self)

    def __pow__(self, other):
        return _checked(ew.Pow, "pow", self, self._coerce(other))

    def __rpow__(self, other):
        return _checked(ew.Pow, "pow", self._coerce(other), self)

    def __matmul__(self, other):
        return _matmul(self, self._coerce(other))

    def __rmatmul__(self, other):
        return _matmul(self._coerce(other), self)

    def __neg__(self):
        return ew.Neg.apply(self)

    # ------------------------------------- comparisons (bool, no gradient)
    def _compare(self, other, compare):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor(compare(self._data, other))

    def __lt__(self, other):
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other):
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other):
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other):
        return self._compare(other, lambda a, b: a >= b)

    def __eq__(self, other):  # elementwise, like numpy and torch
        return self._compare(other, lambda a, b: a == b)

    def __ne__(self, other):
        return self._compare(other, lambda a, b: a != b)

    __hash__ = object.__hash__  # tensors are hashed by identity (dict keys, sets)

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise RuntimeError(f"the truth value of a tensor of shape {self.shape} is ambiguous; use .any() or .all()")
        return bool(self.item())

    def any(self) -> bool:
        return bool(self._data.any())

    def all(self) -> bool:
        return bool(self._data.all())

    # ------------------------------------------------------- unary math
    def exp(self):
        return ew.Exp.apply(self)

    def log(self):
        return ew.Log.apply(self)

    def sqrt(self):
        return ew.Sqrt.apply(self)

    def log10(self):
        """log10(x) = ln(x) / ln(10)."""
        return ew.Log.apply(self) * float(1.0 / numpy.log(10.0))

    def tanh(self):
        return ew.Tanh.apply(self)

    def sigmoid(self):
        return ew.Sigmoid.apply(self)

    def relu(self):
        return ew.Relu.apply(self)

    def abs(self):
        return ew.Abs.apply(self)

    def gelu(self, approximate: str = "none"):
        from .nn.functional import gelu  # noqa: PLC0415 -- functional builds on Tensor

        return gelu(self, approximate)

    def softmax(self, dim: int = -1, **numpy_names):
        from .functional import softmax  # noqa: PLC0415

        dim, _ = _numpy_spellings("softmax", numpy_names, dim, -1)
        return softmax(self, dim)

    def log_softmax(self, dim: int = -1, **numpy_names):
        from .functional import log_softmax  # noqa: PLC0415

        dim, _ = _numpy_spellings("log_softmax", numpy_names, dim, -1)
        return log_softmax(self, dim)

    # ------------------------------------------------------------ reductions
    # ``dim`` is an int, a tuple of ints, or None (all dims).
    def sum(self, dim=None, keepdim: bool = False, **numpy_names):
        dim, keepdim = _numpy_spellings("sum", numpy_names, dim, keepdim=keepdim)
        return reduce.Sum.apply(self, axis=dim, keepdims=keepdim)

    def mean(self, dim=None, keepdim: bool = False, **numpy_names):
        dim, keepdim = _numpy_spellings("mean", numpy_names, dim, keepdim=keepdim)
        if self.dtype.kind == "f":
            return reduce.Mean.apply(self, axis=dim, keepdims=keepdim)
        axes = reduce.normalize_axis(dim, self.ndim, "mean")  # integers: the sum, then a true division
        count = int(numpy.prod([self.shape[a] for a in axes])) if axes else 1
        return self.sum(dim, keepdim) / count

    def var(self, dim=None, keepdim: bool = False, correction: int = 1, unbiased: bool | None = None,
            **numpy_names):
        """Variance; ``correction=1`` (the default, as in torch) divides by n - 1; ``unbiased=False`` is correction 0."""
        dim, keepdim = _numpy_spellings("var", numpy_names, dim, keepdim=keepdim)
        correction = correction if unbiased is None else int(unbiased)
        if self.dtype.kind == "f":
            return reduce.Var.apply(self, axis=dim, keepdims=keepdim, correction=correction)
        axes = reduce.normalize_axis(dim, self.ndim, "var")
        count = int(numpy.prod([self.shape[a] for a in axes])) if axes else 1
        centered = self - self.mean(dim, keepdim=True)
        return (centered * centered).sum(dim, keepdim) / max(count - correction, 0)

    def amax(self, dim=None, keepdim: bool = False, **numpy_names):
        """The largest values over ``dim`` (several dims allowed); ties share the gradient, as torch.amax."""
        dim, keepdim = _numpy_spellings("amax", numpy_names, dim, keepdim=keepdim)
        return reduce.Max.apply(self, axis=dim, keepdims=keepdim)

    def amin(self, dim=None, keepdim: bool = False, **numpy_names):
        dim, keepdim = _numpy_spellings("amin", numpy_names, dim, keepdim=keepdim)
        return -((-self).amax(dim, keepdim))

    def max(self, dim=None, keepdim: bool = False, **numpy_names):
        """As torch: ``x.max()`` the largest value; ``x.max(dim)`` a ``(values, indices)`` pair;
        ``x.max(other)`` the elementwise maximum."""
        if isinstance(dim, Tensor):
            return maximum(self, dim)
        dim, keepdim = _numpy_spellings("max", numpy_names, dim, keepdim=keepdim)
        if dim is None:
            return self.amax()
        return _values_at(self, dim, keepdim, "max")

    def min(self, dim=None, keepdim: bool = False, **numpy_names):
        """As ``max``: the smallest value, ``(values, indices)`` along ``dim``, or the elementwise minimum."""
        if isinstance(dim, Tensor):
            return minimum(self, dim)
        dim, keepdim = _numpy_spellings("min", numpy_names, dim, keepdim=keepdim)
        if dim is None:
            return self.amin()
        return _values_at(self, dim, keepdim, "min")

    def argmax(self, dim=None, keepdim: bool = False, **numpy_names):
        """The index of the largest value (int64; the first of ties), over all elements or along ``dim``."""
        dim, keepdim = _numpy_spellings("argmax", numpy_names, dim, keepdim=keepdim)
        return Tensor(self.xp.argmax(self._data, axis=dim, keepdims=keepdim).astype(numpy.int64, copy=False))

    def argmin(self, dim=None, keepdim: bool = False, **numpy_names):
        dim, keepdim = _numpy_spellings("argmin", numpy_names, dim, keepdim=keepdim)
        return Tensor(self.xp.argmin(self._data, axis=dim, keepdims=keepdim).astype(numpy.int64, copy=False))

    # -------------------------------------------------------------- shapes
    def reshape(self, *shape):
        shape = _shape_arg(shape)
        if shape == self.shape:
            return self
        return movement.Reshape.apply(self, shape=shape)

    def view(self, *shape):
        return self.reshape(*shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        if self.ndim == 0:
            return self.reshape(1)
        start, end = start_dim % self.ndim, end_dim % self.ndim
        merged = int(numpy.prod(self.shape[start:end + 1]))
        return self.reshape(self.shape[:start] + (merged,) + self.shape[end + 1:])

    def permute(self, *dims):
        return movement.Permute.apply(self, axes=_shape_arg(dims))

    def transpose(self, dim0: int = -2, dim1: int = -1):
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(*dims)

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    def unsqueeze(self, dim: int | None = None, **numpy_names):
        dim, _ = _numpy_spellings("unsqueeze", numpy_names, dim)
        if dim is None:
            raise TypeError("unsqueeze() missing required argument 'dim'")
        dim = dim % (self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim=None, **numpy_names):
        dim, _ = _numpy_spellings("squeeze", numpy_names, dim)
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        axes = reduce.normalize_axis(dim, self.ndim, "squeeze")
        return self.reshape(tuple(n for i, n in enumerate(self.shape) if not (i in axes and n == 1)))

    def expand(self, *shape):
        shape = _shape_arg(shape)
        offset = len(shape) - self.ndim
        shape = tuple(self.shape[i - offset] if n == -1 else n for i, n in enumerate(shape))
        if shape == self.shape:
            return self
        return movement.Expand.apply(self, shape=shape)

    def __getitem__(self, index):
        return movement.GetItem.apply(self, index=_index_arrays(index, self))

    def masked_fill(self, mask, value):
        """``value`` where ``mask`` is true, ``self`` elsewhere (mask broadcasts)."""
        mask = mask if isinstance(mask, Tensor) else Tensor(mask, device=self.device)
        return where(mask, self._coerce(value), self)

    def split(self, split_size_or_sections, dim: int = 0, **numpy_names):
        """Pieces of size ``split_size`` (the last may be smaller), or of the listed sizes."""
        axis, _ = _numpy_spellings("split", numpy_names, dim, 0)
        length = self.shape[axis]
        if isinstance(split_size_or_sections, int):
            if split_size_or_sections <= 0:
                raise ValueError(f"split: split_size must be positive, got {split_size_or_sections}")
            sizes = [min(split_size_or_sections, length - s) for s in range(0, length, split_size_or_sections)]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != length:
                raise ValueError(f"split: sizes {sizes} do not add up to {length} (axis {axis} of shape {self.shape})")
        if any(size < 0 for size in sizes):
            raise ValueError(f"split: sizes must not be negative, got {sizes}")
        return movement.Split.apply(self, sizes=tuple(sizes), axis=axis % self.ndim)

    def chunk(self, chunks: int, dim: int = 0, **numpy_names):
        """``chunks`` pieces of equal size (the last may be smaller), like torch.chunk."""
        dim, _ = _numpy_spellings("chunk", numpy_names, dim, 0)
        return self.split(-(-self.shape[dim] // chunks), dim)

    # ------------------------------------------------------------ torch methods
    # PyTorch's names for things built from the ops above; ``dim`` counts from the end when negative.
    def dim(self) -> int:
        """The number of dimensions (``ndim``), as torch's ``x.dim()``."""
        return self.ndim

    def contiguous(self) -> "Tensor":
        """Self: every op here takes arrays of any memory layout, so there is nothing to do."""
        return self

    def clone(self) -> "Tensor":
        """A copy in new memory, still in the graph (the gradient passes through)."""
        return movement.Copy.apply(self)

    @property
    def mT(self) -> "Tensor":
        """The last two dims swapped (a batch of matrices, transposed)."""
        if self.ndim < 2:
            raise ValueError(f"mT: needs at least 2 dimensions, got shape {self.shape}")
        return self.transpose(-2, -1)

    def expand_as(self, other: "Tensor") -> "Tensor":
        return self.expand(other.shape)

    def pow(self, exponent) -> "Tensor":
        return self ** exponent

    def clamp(self, min=None, max=None) -> "Tensor":  # noqa: A002 -- torch's keyword names
        """Each element limited to [min, max] (numbers; either may be None). Gradient 1 where
        min <= x <= max (the bounds included, as torch), else 0."""
        if min is None and max is None:
            raise ValueError("clamp: at least one of min and max must be given")
        if isinstance(min, Tensor) or isinstance(max, Tensor):
            raise TypeError("clamp: min and max must be numbers here; for tensor bounds use x.max(low).min(high)")
        return ew.Clamp.apply(self, low=min, high=max)

    def clamp_min(self, min) -> "Tensor":  # noqa: A002
        return self.clamp(min=min)

    def clamp_max(self, max) -> "Tensor":  # noqa: A002
        return self.clamp(max=max)

    clip = clamp

    def std(self, dim=None, keepdim: bool = False, correction: int = 1, unbiased: bool | None = None,
            **numpy_names) -> "Tensor":
        """Standard deviation, sqrt of ``var`` (same arguments: correction=1 divides by n - 1)."""
        return self.var(dim, keepdim, correction, unbiased, **numpy_names).sqrt()

    def tril(self, diagonal: int = 0) -> "Tensor":
        return tril(self, diagonal)

    def triu(self, diagonal: int = 0) -> "Tensor":
        return triu(self, diagonal)

    def roll(self, shifts, dims=None) -> "Tensor":
        """Shift elements cyclically along ``dims`` (None: over the flattened tensor, shape kept)."""
        shifts = tuple(shifts) if isinstance(shifts, (list, tuple)) else int(shifts)
        dims = tuple(dims) if isinstance(dims, (list, tuple)) else dims
        if dims is None and isinstance(shifts, tuple):
            raise ValueError(f"roll: several shifts {shifts} need as many dims")
        return movement.Roll.apply(self, shifts=shifts, axes=dims)

    def repeat(self, *sizes) -> "Tensor":
        """The tensor tiled ``sizes[d]`` times along each dim d (torch.repeat, numpy's tile).

        Built as unsqueeze-expand-reshape: (a, b) repeated (r, s) is (1, a, 1, b) expanded to
        (r, a, s, b), then merged to (r*a, s*b); the expand's backward sums the copies' gradients.
        """
        sizes = _shape_arg(sizes)
        if len(sizes) < self.ndim:
            raise ValueError(f"repeat: {len(sizes)} sizes for a tensor with {self.ndim} dimensions (shape {self.shape})")
        shape = (1,) * (len(sizes) - self.ndim) + self.shape
        spread = self.reshape(tuple(n for side in shape for n in (1, side)))
        tiled = spread.expand(tuple(n for r, side in zip(sizes, shape) for n in (r, side)))
        return tiled.reshape(tuple(r * side for r, side in zip(sizes, shape)))

    def gather(self, dim: int, index) -> "Tensor":
        """out[i][j] = self[index[i][j]][j] for dim 0 (self[i][index[i][j]] for dim 1, ...), as torch.gather."""
        index = index if isinstance(index, Tensor) else Tensor(self.xp.asarray(index))
        if index.ndim != self.ndim or index.dtype.kind not in "iu":
            raise ValueError(f"gather: index must be an integer tensor with {self.ndim} dimensions like the input "
                             f"(shape {self.shape}), got dtype {index.dtype} and shape {index.shape}")
        return _take_along(self, index.data, dim, "gather")

    def sort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> "ValuesIndices":
        """``(values, indices)`` sorted along ``dim`` (ties keep their order; values differentiable)."""
        indices = self.argsort(dim, descending)
        return ValuesIndices(_take_along(self, indices.data, dim, "sort"), indices)

    def argsort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> "Tensor":
        """The int64 indices that sort ``dim`` (a stable sort: ties keep their order)."""
        keys = -self._data if descending and self.dtype != numpy.bool_ else self._data
        if descending and self.dtype == numpy.bool_:
            keys = ~keys
        return Tensor(self.xp.argsort(keys, axis=dim, kind="stable").astype(numpy.int64, copy=False))

    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> "ValuesIndices":  # noqa: A002
        """The ``k`` largest (or smallest) values along ``dim`` and their indices, largest first.

        Values are picked by indexing, so the gradient goes to those places only. ``sorted=False``
        returns them sorted too (torch leaves that order unspecified).
        """
        dim = reduce.normalize_axis(dim, self.ndim, "topk")[0] if self.ndim else 0
        length = self.shape[dim] if self.ndim else 1
        if not 0 <= k <= length:
            raise ValueError(f"topk: k={k} is out of range for dim {dim} of size {length} (shape {self.shape})")
        indices = self.argsort(dim, descending=largest)[(slice(None),) * dim + (slice(0, k),)]
        return ValuesIndices(_take_along(self, indices.data, dim, "topk"), indices)

    def histogram(self, bins: int = 100, range: tuple[float, float] | None = None,  # noqa: A002 -- torch's name
                  density: bool = False) -> "Histogram":
        """Counts of the values in ``bins`` equal bins over ``range`` (default: min to max), as torch.histogram.

        ``density=True`` scales the counts so that the histogram integrates to 1. Not differentiable:
        it is for looking at activations and gradients (makemore part 3's saturation plots).
        """
        if self.dtype.kind != "f":
            raise TypeError(f"histogram: expected a floating point tensor, got dtype {self.dtype}")
        if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:
            raise ValueError(f"histogram: bins must be a positive int, got {bins!r}")
        hist, edges = self.xp.histogram(self._data, bins=int(bins), range=range, density=density)
        return Histogram(Tensor(hist.astype(self.dtype)), Tensor(edges.astype(self.dtype)))


# ---------------------------------------------------------------- helpers


def _is_backend_array(value) -> bool:
    if isinstance(value, numpy.ndarray):
        return True
    return type(value).__module__.startswith("cupy")


def _shape_arg(shape) -> tuple:
    """Accept both f(2, 3) and f((2, 3))."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(n) for n in shape)


def _index_arrays(index, tensor: Tensor):
    """Replace Tensors and lists inside an index by backend arrays."""
    def convert(part):
        if isinstance(part, Tensor):
            return part.data
        if isinstance(part, list):
            return tensor.xp.asarray(part)
        return part
    if isinstance(index, tuple):
        return tuple(convert(part) for part in index)
    return convert(index)


def _checked(op, name: str, x: Tensor, y: Tensor) -> Tensor:
    """Run a broadcasting binary op with an error that names the op and shapes."""
    try:
        numpy.broadcast_shapes(x.shape, y.shape)
    except ValueError:
        raise ValueError(f"{name}: shapes {x.shape} and {y.shape} cannot be broadcast together") from None
    return op.apply(x, y)


def _matmul(x: Tensor, y: Tensor) -> Tensor:
    """``@`` with NumPy's rules for 1-D operands (made 2-D, then squeezed back)."""
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"matmul: operands must not be scalars (shapes {x.shape} and {y.shape})")
    x, y = amp.autocast_inputs(x, y)  # under tl.autocast: float16 copies (their grads are cast back)
    x2 = x.unsqueeze(0) if x.ndim == 1 else x
    y2 = y.unsqueeze(-1) if y.ndim == 1 else y
    out = matmul.MatMul.apply(x2, y2)
    if y.ndim == 1:
        out = out.squeeze(-1)
    if x.ndim == 1:
        out = out.squeeze(-2 if y.ndim > 1 else -1)
    return out


def _values_at(x: Tensor, dim, keepdim: bool, op: str) -> ValuesIndices:
    """``max``/``min`` along one dim: the indices from argmax/argmin, and x's values at them.

    Picked by indexing (``_take_along``), so the gradient goes to those places only, as torch's max(dim) does.
    """
    if not isinstance(dim, (int, numpy.integer)):
        raise TypeError(f"{op}(): dim must be an int, got {dim!r} (for several dims use a{op}())")
    indices = x.argmax(dim, keepdim=True) if op == "max" else x.argmin(dim, keepdim=True)
    if x.ndim == 0:  # torch allows dim 0 (or -1) on a 0-d tensor: the value itself, index 0
        reduce.normalize_axis(dim, 0, op)
        return ValuesIndices(x.reshape(()), indices.reshape(()))
    dim = reduce.normalize_axis(dim, x.ndim, op)[0]
    values = _take_along(x, indices.data, dim, op)
    if not keepdim:
        values, indices = values.squeeze(dim), indices.squeeze(dim)
    return ValuesIndices(values, indices)


def maximum(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise max of a and b (they broadcast); where they are equal each gets half the gradient, as torch."""
    b = a._coerce(b)
    tie = a * 0.5 + b * 0.5 if a.dtype.kind in "fc" else a  # == a == b, but the gradient is shared
    return where(a > b, a, where(a < b, b, tie))  # NaN on either side falls through to tie: NaN


def minimum(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise min of a and b; ties share the gradient, as torch."""
    b = a._coerce(b)
    tie = a * 0.5 + b * 0.5 if a.dtype.kind in "fc" else a
    return where(a < b, a, where(a > b, b, tie))


def where(condition, a, b) -> Tensor:
    """Elementwise ``a if condition else b`` (all three broadcast)."""
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    if like is None:
        a = Tensor(a)
        like = a
    condition = condition if isinstance(condition, Tensor) else Tensor(condition, device=like.device)
    if condition.dtype != numpy.bool_:
        condition = Tensor(condition.data.astype(bool))
    a, b = like._coerce(a), like._coerce(b)
    try:
        numpy.broadcast_shapes(condition.shape, a.shape, b.shape)
    except ValueError:
        raise ValueError(f"where: shapes {condition.shape}, {a.shape} and {b.shape} "
                         "cannot be broadcast together") from None
    return ew.Where.apply(condition, a, b)


def embedding_lookup(indices, weight: Tensor) -> Tensor:
    """Rows of ``weight`` picked by integer ``indices`` (any shape)."""
    indices = indices.data if isinstance(indices, Tensor) else weight.xp.asarray(indices)
    return indexing.Embedding.apply(weight, indices=indices)


def cat(tensors, dim: int = 0, **numpy_names) -> Tensor:
    """Join tensors along an existing dim."""
    axis, _ = _numpy_spellings("cat", numpy_names, dim, 0)
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    if len(tensors) == 1:
        return tensors[0]
    return movement.Cat.apply(*tensors, axis=axis)


def stack(tensors, dim: int = 0, **numpy_names) -> Tensor:
    """Join same-shaped tensors along a new dim."""
    axis, _ = _numpy_spellings("stack", numpy_names, dim, 0)
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    for i, t in enumerate(tensors[1:], 1):
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: tensor {i} has shape {t.shape}, tensor 0 has shape {tensors[0].shape}")
    axis = axis % (tensors[0].ndim + 1)
    return cat([t.unsqueeze(axis) for t in tensors], axis)


def tril(x: Tensor, diagonal: int = 0) -> Tensor:
    """The lower triangle of the last two axes (elements above ``diagonal`` set to 0)."""
    rows, cols = x.shape[-2], x.shape[-1]
    keep = x.xp.tril(x.xp.ones((rows, cols), dtype=bool), k=diagonal)
    return where(Tensor(keep), x, 0.0 if x.dtype.kind in "fc" else 0)


def triu(x: Tensor, diagonal: int = 0) -> Tensor:
    """The upper triangle of the last two axes (elements below ``diagonal`` set to 0)."""
    rows, cols = x.shape[-2], x.shape[-1]
    keep = x.xp.triu(x.xp.ones((rows, cols), dtype=bool), k=diagonal)
    return where(Tensor(keep), x, 0.0 if x.dtype.kind in "fc" else 0)


def _take_along(x: Tensor, indices, dim: int, op: str) -> Tensor:
    """x's elements at ``indices`` along ``dim`` (numpy's take_along_axis), differentiable.

    ``indices`` has x's number of dims; along every other dim d the position is 0, 1, 2, ...
    (an arange shaped to broadcast), so one integer-array GetItem picks them all and its
    backward scatter-adds the gradient back to those places.
    """
    if x.ndim == 0:
        return x.reshape(()) if indices.size == 1 else x.reshape(1).expand(indices.shape)
    dim = reduce.normalize_axis(dim, x.ndim, op)[0]
    for d, (n, m) in enumerate(zip(indices.shape, x.shape)):
        if d != dim and n > m:
            raise ValueError(f"{op}: index shape {tuple(indices.shape)} is larger than the input's {x.shape} in dim {d}")
    index = tuple(indices if d == dim else x.xp.arange(n).reshape((1,) * d + (n,) + (1,) * (x.ndim - d - 1))
                  for d, n in enumerate(indices.shape))
    return movement.GetItem.apply(x, index=index)


# torch's function spellings of the methods above, one line each
def clamp(x: Tensor, min=None, max=None) -> Tensor:  # noqa: A002 -- torch's keyword names
    return x.clamp(min, max)


def roll(x: Tensor, shifts, dims=None) -> Tensor:
    return x.roll(shifts, dims)


def topk(x: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> ValuesIndices:  # noqa: A002
    return x.topk(k, dim, largest, sorted)


def sort(x: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> ValuesIndices:
    return x.sort(dim, descending, stable)


def argsort(x: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    return x.argsort(dim, descending, stable)


def gather(x: Tensor, dim: int, index) -> Tensor:
    return x.gather(dim, index)


def histogram(x: Tensor, bins: int = 100, range: tuple[float, float] | None = None,  # noqa: A002
              density: bool = False) -> Histogram:
    return x.histogram(bins, range=range, density=density)


def pow(x: Tensor, exponent) -> Tensor:  # noqa: A001 -- torch.pow
    return x ** exponent


def exp(x: Tensor) -> Tensor:
    return x.exp()


def log(x: Tensor) -> Tensor:
    return x.log()


def sqrt(x: Tensor) -> Tensor:
    return x.sqrt()


def tanh(x: Tensor) -> Tensor:
    return x.tanh()


def sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid()


class HookHandle:
    """What ``register_post_accumulate_grad_hook`` returns: ``remove()`` unregisters the hook."""

    def __init__(self, tensor: Tensor, hook):
        self.tensor, self.hook = tensor, hook

    def remove(self) -> None:
        self.tensor._post_accumulate_grad_hooks = tuple(h for h in self.tensor._post_accumulate_grad_hooks
                                                        if h is not self.hook)

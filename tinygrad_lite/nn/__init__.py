"""Neural-network building blocks: ``Module`` and the layers a GPT needs.

A ``Module`` is a plain Python object whose attributes are its parameters
(tensors that require grad) and its sub-modules. Nothing is registered by
magic: ``named_parameters()`` simply looks through ``vars(self)`` in the
order the attributes were assigned, so

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 8)
            self.proj = nn.Linear(8, 2)

has the parameters ``fc.weight, fc.bias, proj.weight, proj.bias``, the same
dotted names PyTorch gives, so ``state_dict()`` files can be compared with
(and loaded from) PyTorch checkpoints. A list of layers must be wrapped in
``nn.ModuleList`` (its children are named ``0, 1, 2, ...``).
"""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple

import numpy

from .. import backend
from . import functional as F
from ..autograd import no_grad
from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a learnable weight of a module (``requires_grad=True``).

    It is an ordinary Tensor in every way; the subclass only says "this is a
    parameter", so a module lists it even when it is frozen
    (``requires_grad=False``). Results of ops on a Parameter are plain Tensors.
    """

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)


def _is_parameter(value) -> bool:
    """A Parameter, or any leaf Tensor that requires grad (a hand-made weight)."""
    if isinstance(value, Parameter):
        return True
    return isinstance(value, Tensor) and value.requires_grad and value.is_leaf


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` could not match (both empty when everything matched)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer and model.

    Subclasses set their parameters and sub-modules as attributes in
    ``__init__`` and write ``forward``; calling the module calls ``forward``.
    """

    # A class-level default, so a subclass that forgets super().__init__() still works.
    training: bool = True

    def __init__(self):
        self.training = True

    # ------------------------------------------------------------- calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --------------------------------------------- what this module holds
    def _local_parameters(self) -> Iterator[tuple[str, Tensor]]:
        """(name, tensor) for the parameters set directly on this module."""
        for name, value in vars(self).items():
            if _is_parameter(value):
                yield name, value

    def _local_buffers(self) -> Iterator[tuple[str, Tensor]]:
        """(name, tensor) for the other tensors set on this module (a causal mask, ...)."""
        for name, value in vars(self).items():
            if isinstance(value, Tensor) and not _is_parameter(value):
                yield name, value

    def _local_children(self) -> Iterator[tuple[str, "Module"]]:
        """(name, module) for the sub-modules set directly on this module."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and any(isinstance(item, Module) for item in value):
                # A plain list hides its layers: their parameters would silently not be trained.
                raise TypeError(f"{type(self).__name__}.{name} is a plain {type(value).__name__} of modules; "
                                f"wrap it in nn.ModuleList so its parameters are found")

    # ------------------------------------------------------ tree traversal
    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        seen = set()
        for name, child in self._local_children():
            if id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator["Module"]:
        for _, child in self.named_children():
            yield child

    def named_modules(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, "Module"]]:
        """This module and every module below it, parents before children.

        A module reachable by two paths (a shared block) is listed once unless
        ``remove_duplicate=False``. An explicit stack, not recursion.
        """
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if remove_duplicate:
                if id(module) in seen:
                    continue
                seen.add(id(module))
            yield name, module
            children = [(f"{name}.{child_name}" if name else child_name, child)
                        for child_name, child in module._local_children()]
            stack.extend(reversed(children))  # reversed: the first child is popped first

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        """(dotted name, parameter) pairs, e.g. ``h.0.attn.c_attn.weight``.

        A tensor registered under two names (weight tying) is listed once,
        under its first name, unless ``remove_duplicate=False``.
        """
        seen = set()
        for module_name, module in self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate):
            for name, parameter in module._local_parameters():
                if remove_duplicate:
                    if id(parameter) in seen:
                        continue
                    seen.add(id(parameter))
                yield (f"{module_name}.{name}" if module_name else name), parameter

    def parameters(self) -> Iterator[Tensor]:
        """Every parameter once (tied weights once): what an optimizer should update."""
        for _, parameter in self.named_parameters():
            yield parameter

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    # --------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, Tensor]:
        """name -> parameter values (detached: they share memory but not the graph).

        Tied weights appear under every name, as in PyTorch, so a checkpoint
        can be loaded by a model that does not tie them.
        """
        return {name: parameter.detach() for name, parameter in self.named_parameters(remove_duplicate=False)}

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values (Tensors or numpy/cupy arrays) into the parameters, in place.

        Everything is checked before anything is copied, so a failed load leaves
        the model unchanged. A shape mismatch is always an error; missing and
        unexpected keys are errors only when ``strict``.
        """
        own = dict(self.named_parameters(remove_duplicate=False))
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]
        problems = []
        if strict and missing:
            problems.append(f"missing key(s): {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected key(s): {', '.join(unexpected)}")
        for name, parameter in own.items():
            if name in state_dict:
                shape = tuple(_array_of(state_dict[name]).shape)
                if shape != parameter.shape:
                    problems.append(f"size mismatch for {name}: the checkpoint has shape {shape}, "
                                    f"the model's parameter has shape {parameter.shape}")
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n  "
                               + "\n  ".join(problems))
        with no_grad():  # an in-place change of a parameter is not part of any graph
            for name, parameter in own.items():
                if name in state_dict:
                    parameter.copy_(_array_of(state_dict[name]))
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------- modes
    def train(self, mode: bool = True) -> "Module":
        """Set the training flag of this module and all below it (Dropout reads it)."""
        for module in self.modules():
            module.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (``backward`` adds into ``.grad``, it does not overwrite)."""
        for parameter in self.parameters():
            if set_to_none:
                parameter.grad = None
            elif parameter.grad is not None:
                parameter.grad.zero_()

    def to(self, device: str) -> "Module":
        """Move every parameter (with its grad) and every other tensor attribute to ``device``.

        The tensors stay the same objects (only their ``.data`` is replaced), so
        an optimizer built before the move still holds the right parameters.
        """
        device = backend.check_device(device)
        for module in self.modules():
            for _, tensor in list(module._local_parameters()) + list(module._local_buffers()):
                if tensor.device != device:
                    tensor.data = backend.to_device(tensor.data, device)
                if tensor.grad is not None and tensor.grad.device != device:
                    tensor.grad.data = backend.to_device(tensor.grad.data, device)
        return self

    # -------------------------------------------------------------- repr
    def extra_repr(self) -> str:
        """Settings shown in ``repr`` (e.g. ``in_features=4, out_features=8``)."""
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in children:
            child_text = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_text}")
        lines.append(")")
        return "\n".join(lines)


def _array_of(value):
    """The backend array inside a Tensor, or the value itself if it is already an array."""
    if isinstance(value, Tensor):
        return value.data
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return value
    return numpy.asarray(value)


# ------------------------------------------------------------ containers


class ModuleList(Module):
    """A list of modules whose parameters are found (children named 0, 1, 2, ...)."""

    def __init__(self, modules=None):
        super().__init__()
        self._items: list[Module] = []
        for module in modules or []:
            self.append(module)

    def _local_children(self) -> Iterator[tuple[str, Module]]:
        for index, module in enumerate(self._items):
            yield str(index), module

    def append(self, module: Module) -> "ModuleList":
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}.append: expected a Module, got {type(module).__name__}")
        self._items.append(module)
        return self

    def extend(self, modules) -> "ModuleList":
        for module in modules:
            self.append(module)
        return self

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(self._items[index])
        return self._items[index]

    def __setitem__(self, index: int, module: Module) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}: expected a Module, got {type(module).__name__}")
        self._items[index] = module


class Sequential(ModuleList):
    """Modules applied one after the other: ``Sequential(a, b)(x) == b(a(x))``."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self._items[index])
        return self._items[index]

    def forward(self, x):
        for module in self._items:
            x = module(x)
        return x


# ---------------------------------------------------------------- layers


class Linear(Module):
    """y = x @ W^T + b, with W of shape (out_features, in_features) as in PyTorch.

    Both W and b start uniform in [-1/sqrt(in_features), 1/sqrt(in_features)]
    (PyTorch's default), which keeps the output variance near the input's.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=numpy.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        rng = backend.generator("cpu")
        self.weight = Parameter(rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype))
        self.bias = Parameter(rng.uniform(-bound, bound, (out_features,)).astype(dtype)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}): input has shape {x.shape}, "
                             f"its last axis should be {self.in_features}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: row i of ``weight`` (num_embeddings, embedding_dim) is the vector of id i.

    Initialised N(0, 1) as in PyTorch (GPT-2 re-initialises it with std 0.02).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype=numpy.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        rng = backend.generator("cpu")
        self.weight = Parameter(rng.standard_normal((num_embeddings, embedding_dim)).astype(dtype))

    def forward(self, indices) -> Tensor:
        return F.embedding(indices, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis.

    ``weight`` starts at ones and ``bias`` at zeros, so a new LayerNorm only
    normalises; ``bias=False`` leaves the shift out (as in nanoGPT).
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, dtype=numpy.float32):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(numpy.ones((dim,), dtype=dtype))
        self.bias = Parameter(numpy.zeros((dim,), dtype=dtype)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"LayerNorm({self.dim}): input has shape {x.shape}, its last axis should be {self.dim}")
        return F.layer_norm(x, self.weight, self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, bias={self.bias is not None}"


class Dropout(Module):
    """While training, zero each element with probability p and scale the rest by 1/(1-p).

    The scaling keeps the expected value unchanged, so in eval mode (where
    dropout is the identity) the next layer sees inputs of the same size.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GELU(Module):
    """GELU with the tanh approximation (GPT-2's): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def __init__(self, approximate: str = "tanh"):
        super().__init__()
        if approximate != "tanh":
            raise ValueError(f"GELU: only approximate='tanh' is implemented, got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class ReLU(Module):
    """max(x, 0)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.tanh()


__all__ = ["Parameter", "Module", "ModuleList", "Sequential", "Linear", "Embedding", "LayerNorm", "Dropout",
           "GELU", "ReLU", "Tanh", "IncompatibleKeys"]

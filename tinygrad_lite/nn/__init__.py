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
``nn.ModuleList`` (its children are named ``0, 1, 2, ...``), a dict in
``nn.ModuleDict``; assigning a plain one is a TypeError. Tensors that are
state but not weights are registered with ``register_buffer``.

The functional ops are in ``nn/functional.py`` (``from tinygrad_lite.nn import
functional as F``), the initialisers in ``nn/init.py``.
"""
from __future__ import annotations

import math
from typing import Iterable, Iterator, NamedTuple

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
    Tensors that are state but not weights (batch norm's running statistics, a
    causal mask) are registered with ``register_buffer``: they are saved in
    ``state_dict`` and move with ``to``, and the optimizer never sees them.
    """

    # A class-level default, so a subclass that forgets super().__init__() still works.
    training: bool = True

    def __init__(self):
        self.training = True
        self._buffer_names: dict[str, bool] = {}  # name -> persistent (saved in state_dict)

    def __setattr__(self, name: str, value) -> None:
        error = _plain_container_error(self, name, value) or _lost_parameter_error(self, name, value)
        if error:
            raise error  # at the assignment, where the bug is
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------- calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --------------------------------------------- what this module holds
    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Set ``tensor`` as the attribute ``name``, a buffer: in ``state_dict`` (unless not
        ``persistent``), in ``buffers()``, moved by ``to``; never a parameter."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer({name!r}): expected a Tensor or None, got {type(tensor).__name__}")
        if "_buffer_names" not in vars(self):
            self._buffer_names = {}
        self._buffer_names[name] = persistent
        setattr(self, name, tensor)

    def _local_parameters(self) -> Iterator[tuple[str, Tensor]]:
        """(name, tensor) for the parameters set directly on this module."""
        buffers = vars(self).get("_buffer_names", {})
        for name, value in vars(self).items():
            if _is_parameter(value) and name not in buffers:
                yield name, value

    def _local_buffers(self, persistent_only: bool = False) -> Iterator[tuple[str, Tensor]]:
        """(name, tensor) for the buffers registered on this module (see ``register_buffer``)."""
        for name, persistent in vars(self).get("_buffer_names", {}).items():
            value = getattr(self, name, None)
            if value is not None and (persistent or not persistent_only):
                yield name, value

    def _local_tensors(self) -> Iterator[Tensor]:
        """Every tensor attribute of this module: parameters, buffers, and any other (what ``to`` moves)."""
        for value in vars(self).values():
            if isinstance(value, Tensor):
                yield value

    def _local_children(self) -> Iterator[tuple[str, "Module"]]:
        """(name, module) for the sub-modules set directly on this module."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            error = _plain_container_error(self, name, value)  # a list filled after its assignment
            if error:
                raise error

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

    def apply(self, fn) -> "Module":
        """Call ``fn(module)`` on every sub-module (children first) and then on this one, as torch."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def _named_tensors(self, local, prefix: str, recurse: bool, remove_duplicate: bool):
        """(dotted name, tensor) for ``local(module)`` of each module below (shared by parameters and buffers)."""
        seen = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for module_name, module in modules:
            for name, tensor in local(module):
                if remove_duplicate:
                    if id(tensor) in seen:
                        continue
                    seen.add(id(tensor))
                yield (f"{module_name}.{name}" if module_name else name), tensor

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        """(dotted name, parameter) pairs, e.g. ``h.0.attn.c_attn.weight``.

        A tensor registered under two names (weight tying) is listed once,
        under its first name, unless ``remove_duplicate=False``.
        """
        return self._named_tensors(Module._local_parameters, prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Tensor]:
        """Every parameter once (tied weights once): what an optimizer should update."""
        for _, parameter in self.named_parameters(recurse=recurse):
            yield parameter

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        return self._named_tensors(Module._local_buffers, prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Freeze (``False``) or unfreeze every parameter of this module and those below it."""
        for parameter in self.parameters():
            parameter.requires_grad_(requires_grad)
        return self

    def freeze(self, except_: Iterable[str] = ()) -> "Module":
        """Freeze every parameter except those whose dotted name contains one of ``except_``.

        ``model.freeze(except_=("h.3", "ln_f"))`` leaves ``h.3.attn.c_attn.weight`` and ``ln_f.bias``
        trainable; a pattern matches whole name parts (``"h.3"`` is not ``h.30``). Frozen parameters
        lose their ``.grad`` too, so an optimizer that already holds them leaves them alone.
        """
        patterns = _patterns("freeze", except_)
        for name, parameter in self.named_parameters():
            keep = any(name_matches(name, pattern) for pattern in patterns)
            parameter.requires_grad_(keep)
            if not keep:
                parameter.grad = None
        return self

    def unfreeze(self, names: Iterable[str] | None = None) -> "Module":
        """Make trainable again every parameter (``names=None``) or those whose dotted name contains one
        of ``names`` (matched as in ``freeze``); the others keep their setting."""
        patterns = None if names is None else _patterns("unfreeze", names)
        for name, parameter in self.named_parameters():
            if patterns is None or any(name_matches(name, pattern) for pattern in patterns):
                parameter.requires_grad_(True)
        return self

    # --------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, Tensor]:
        """name -> parameter and persistent buffer values (detached: they share memory but not the graph).

        Module by module, its parameters and then its buffers, as torch orders them. Tied
        weights appear under every name, as in PyTorch, so a checkpoint can be loaded by a
        model that does not tie them.
        """
        return {name: tensor.detach() for name, tensor in self._state_tensors()}

    def _state_tensors(self) -> list[tuple[str, Tensor]]:
        state = []
        for module_name, module in self.named_modules(remove_duplicate=False):
            for name, tensor in list(module._local_parameters()) + list(module._local_buffers(persistent_only=True)):
                state.append((f"{module_name}.{name}" if module_name else name, tensor))
        return state

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values (Tensors or numpy/cupy arrays) into the parameters and buffers, in place.

        Everything is checked before anything is copied, so a failed load leaves
        the model unchanged. A shape mismatch is always an error; missing and
        unexpected keys are errors only when ``strict``.
        """
        own = dict(self._state_tensors())
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
        """Set the training flag of this module and all below it (Dropout and BatchNorm1d read it)."""
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

    def to(self, device_or_dtype=None, dtype=None, *, device: str | None = None) -> "Module":
        """Move every parameter (with its grad), buffer and other tensor attribute to a device,
        and/or cast the floating-point ones to a float ``dtype`` (as torch: integer buffers keep theirs).

        ``model.to("cuda")``, ``model.to(tl.float64)``, ``model.to("cpu", tl.float64)``. The tensors
        stay the same objects (only their ``.data`` is replaced), so an optimizer built before the
        move still holds the right parameters.
        """
        if isinstance(device_or_dtype, str):
            device = device_or_dtype
        elif device_or_dtype is not None:  # to(dtype)
            dtype = device_or_dtype
        device = backend.check_device(device) if device is not None else None
        if dtype is not None and numpy.dtype(dtype).kind != "f":
            raise TypeError(f"Module.to: only floating dtypes can be given to a module, got {numpy.dtype(dtype)}")
        for module in self.modules():
            for tensor in module._local_tensors():
                for t in (tensor, tensor.grad):
                    if t is None:
                        continue
                    if device is not None and t.device != device:
                        t.data = backend.to_device(t.data, device)
                    if dtype is not None and t.dtype.kind == "f" and t.dtype != dtype:
                        t.data = t.data.astype(dtype)
        return self

    def double(self) -> "Module":
        """Cast floating-point parameters and buffers to float64 (``to(tl.float64)``)."""
        return self.to(numpy.float64)

    def float(self) -> "Module":
        """Cast floating-point parameters and buffers to float32."""
        return self.to(numpy.float32)

    def half(self) -> "Module":
        """Cast floating-point parameters and buffers to float16."""
        return self.to(numpy.float16)

    # -------------------------------------------------------------- repr
    def extra_repr(self) -> str:
        """Settings shown in ``repr`` (e.g. ``in_features=4, out_features=8``)."""
        return ""

    def __repr__(self) -> str:
        """torch's layout: ``Name(extra)`` for a leaf, else the extra and ``(name): child`` lines indented."""
        lines = self.extra_repr().split("\n") if self.extra_repr() else []
        lines += [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        if len(lines) == 1 and not list(self.named_children()):
            return f"{type(self).__name__}({lines[0]})"
        if not lines:
            return f"{type(self).__name__}()"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _plain_container_error(owner: Module, name: str, value) -> TypeError | None:
    """A plain list, tuple or dict of modules hides its layers (their parameters would silently not be
    trained): the error to raise, naming the container that registers them, or None."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    if not any(isinstance(item, Module) for item in items):
        return None
    wrapper = "nn.ModuleDict" if isinstance(value, dict) else "nn.ModuleList"
    return TypeError(f"{type(owner).__name__}.{name} is a plain {type(value).__name__} of modules; "
                     f"wrap it in {wrapper} so its parameters are found")


def _patterns(op: str, names) -> tuple[str, ...]:
    """The name patterns of freeze/unfreeze as a tuple (a lone string is one pattern, not its letters)."""
    patterns = (names,) if isinstance(names, str) else tuple(names)
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"Module.{op}: name patterns must be non-empty strings, got {pattern!r}")
    return patterns


def name_matches(name: str, pattern: str) -> bool:
    """Whether the parts of ``pattern`` ("h.3") appear in a row among the parts of ``name``
    ("h.3.mlp.c_fc.weight" yes, "h.30.mlp.c_fc.weight" no, "transformer.h.3.ln_1.bias" yes)."""
    parts, wanted = name.split("."), pattern.split(".")
    return any(parts[i:i + len(wanted)] == wanted for i in range(len(parts) - len(wanted) + 1))


def _lost_parameter_error(owner: Module, name: str, value) -> TypeError | None:
    """Replacing a parameter with a plain tensor would silently stop training it (``layer.weight *= 0.1``
    makes a new tensor here: Tensor has no in-place operators): the error to raise, or None. torch
    refuses that assignment too."""
    if not (_is_parameter(vars(owner).get(name)) and isinstance(value, Tensor) and not _is_parameter(value)):
        return None
    return TypeError(f"{type(owner).__name__}.{name} is a parameter; assigning a tensor that is not one would "
                     f"stop it from being trained. `{name} *= c` makes a new tensor here: scale it in place with "
                     f"`{name}.mul_(c)` under no_grad(), or assign nn.Parameter(...)")


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


class ModuleDict(Module):
    """A dict of modules whose parameters are found (children named by their keys, in insertion order).

    ``d["wte"]`` and ``d.wte`` are the same module, as in torch.
    """

    def __init__(self, modules=None):
        super().__init__()
        self._items: dict[str, Module] = {}
        self.update(modules or {})

    def _local_children(self) -> Iterator[tuple[str, Module]]:
        yield from self._items.items()

    def __getattr__(self, name: str):  # only called when the ordinary lookup fails
        items = vars(self).get("_items", {})
        if name in items:
            return items[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or key {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, Module) and "_items" in vars(self):
            self[name] = value
        else:
            super().__setattr__(name, value)

    def __setitem__(self, key: str, module: Module) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}[{key!r}]: expected a Module, got {type(module).__name__}")
        self._items[key] = module

    def __getitem__(self, key: str) -> Module:
        return self._items[key]

    def __delitem__(self, key: str) -> None:
        del self._items[key]

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def keys(self):
        return self._items.keys()

    def values(self):
        return self._items.values()

    def items(self):
        return self._items.items()

    def update(self, modules) -> None:
        for key, module in (modules.items() if hasattr(modules, "items") else modules):
            self[key] = module


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


class LoRALinear(Module):
    """A ``Linear`` plus a trainable low-rank update (LoRA, Hu et al. 2021), in Hugging Face peft's names:

        y = x W^T + b  +  scaling * dropout(x) lora_A^T lora_B^T,    scaling = lora_alpha / r

    ``weight`` and ``bias`` are the wrapped Linear's own Parameters (the same objects, so a state dict
    of the base model still says ``c_attn.weight``), frozen: only ``lora_A`` and ``lora_B`` train.
    ``lora_A`` (r, in_features) starts Kaiming-uniform
    (peft's ``kaiming_uniform_(a=sqrt(5))``, i.e. U(-1/sqrt(in), 1/sqrt(in))) and ``lora_B``
    (out_features, r) at zeros, so a new LoRALinear computes exactly what the Linear did.

    ``merge()`` folds the update into ``weight`` (W += scaling B A) for inference at the plain Linear's
    cost; ``unmerge()`` takes it out again (up to float rounding). ``merged`` says which state it is
    in, and a merged forward does not add the update a second time (nor trains A and B: unmerge first).
    """

    def __init__(self, base: Linear, r: int, lora_alpha: float = 1.0, lora_dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, Linear):
            raise TypeError(f"LoRALinear: expected an nn.Linear to wrap, got {type(base).__name__}")
        if not (isinstance(r, int) and r >= 1):
            raise ValueError(f"LoRALinear({base.in_features}, {base.out_features}): r must be an int >= 1, got {r!r}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        for parameter in (self.weight, self.bias):
            if parameter is not None:
                parameter.requires_grad_(False)
                parameter.grad = None
        self.r, self.lora_alpha, self.scaling = r, lora_alpha, lora_alpha / r
        self.lora_dropout = Dropout(lora_dropout)
        xp, dtype = base.weight.xp, base.weight.dtype
        self.lora_A = Parameter(xp.zeros((r, base.in_features), dtype=dtype))
        self.lora_B = Parameter(xp.zeros((base.out_features, r), dtype=dtype))
        init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"LoRALinear({self.in_features}, {self.out_features}): input has shape {x.shape}, "
                             f"its last axis should be {self.in_features}")
        if self.merged:  # the update is inside weight already
            return F.linear(x, self.weight, self.bias)
        return F.lora_linear(x, self.weight, self.bias, self.lora_A, self.lora_B, self.scaling,
                             self.lora_dropout.p, self.training)

    def get_delta_weight(self) -> Tensor:
        """scaling * lora_B @ lora_A, the (out, in) change this layer makes to ``weight`` (peft's name)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def merge(self) -> "LoRALinear":
        """W += scaling B A, in place; the forward is then one plain Linear. Merging twice is an error."""
        if self.merged:
            raise RuntimeError(f"LoRALinear({self.in_features}, {self.out_features}).merge(): already merged")
        with no_grad():
            self.weight.add_(self.get_delta_weight())
        self.merged = True
        return self

    def unmerge(self) -> "LoRALinear":
        """W -= scaling B A (the same B A that was merged, if lora_A/lora_B did not change meanwhile)."""
        if not self.merged:
            raise RuntimeError(f"LoRALinear({self.in_features}, {self.out_features}).unmerge(): not merged")
        with no_grad():
            self.weight.sub_(self.get_delta_weight())
        self.merged = False
        return self

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"r={self.r}, lora_alpha={self.lora_alpha}, merged={self.merged}")


class Embedding(Module):
    """A lookup table: row i of ``weight`` (num_embeddings, embedding_dim) is the vector of id i.

    Initialised N(0, 1) as in PyTorch (GPT-2 re-initialises it with std 0.02). The row of
    ``padding_idx`` starts at zero and gets no gradient, as in torch.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 dtype=numpy.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"Embedding({num_embeddings}, {embedding_dim}): padding_idx={padding_idx} "
                             "is not a row of the table")
        self.padding_idx = None if padding_idx is None else padding_idx % num_embeddings
        rng = backend.generator("cpu")
        weight = rng.standard_normal((num_embeddings, embedding_dim)).astype(dtype)
        if self.padding_idx is not None:
            weight[self.padding_idx] = 0
        self.weight = Parameter(weight)

    def forward(self, indices) -> Tensor:
        return F.embedding(indices, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        padding = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{padding}"


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last dims, ``normalized_shape``.

    ``weight`` starts at ones and ``bias`` at zeros, so a new LayerNorm only
    normalises; ``bias=False`` leaves the shift out (as in nanoGPT), and
    ``elementwise_affine=False`` both.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 dtype=numpy.float32):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        self.weight = Parameter(numpy.ones(shape, dtype=dtype)) if elementwise_affine else None
        self.bias = Parameter(numpy.zeros(shape, dtype=dtype)) if elementwise_affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[x.ndim - len(self.normalized_shape):] != self.normalized_shape:
            raise ValueError(f"LayerNorm({self.normalized_shape}): input has shape {x.shape}, "
                             f"its last dims should be {self.normalized_shape}")
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class BatchNorm1d(Module):
    """Batch norm over the channels C of (N, C) or (N, C, L) inputs (``F.batch_norm``), as torch's.

    Training normalises with the batch's statistics and moves the running ones towards them
    (``momentum``; ``None`` averages over every batch seen); eval normalises with the running
    ones. ``weight``/``bias`` start at ones/zeros (``affine``); the running statistics and
    ``num_batches_tracked`` are buffers (``track_running_stats``).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, dtype=numpy.float32):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(numpy.ones(num_features, dtype=dtype)) if affine else None
        self.bias = Parameter(numpy.zeros(num_features, dtype=dtype)) if affine else None
        tracked = track_running_stats
        self.register_buffer("running_mean", Tensor(numpy.zeros(num_features, dtype=dtype)) if tracked else None)
        self.register_buffer("running_var", Tensor(numpy.ones(num_features, dtype=dtype)) if tracked else None)
        self.register_buffer("num_batches_tracked", Tensor(numpy.array(0, dtype=numpy.int64)) if tracked else None)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in (2, 3) or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm1d({self.num_features}): expected input (N, {self.num_features}) or "
                             f"(N, {self.num_features}, L), got shape {x.shape}")
        use_batch_statistics = self.training or self.running_mean is None
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.running_mean is not None:
            with no_grad():
                self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative average of the batch statistics
                momentum = 1.0 / int(self.num_batches_tracked.item())
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, use_batch_statistics,
                            momentum, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class Dropout(Module):
    """While training, zero each element with probability p and scale the rest by 1/(1-p).

    The scaling keeps the expected value unchanged, so in eval mode (where
    dropout is the identity) the next layer sees inputs of the same size.
    ``inplace=True`` is accepted for torch code and computes a new tensor.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class GELU(Module):
    """GELU: exact x Phi(x) by default, as torch; ``approximate="tanh"`` is GPT-2's
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class ReLU(Module):
    """max(x, 0). ``inplace=True`` is accepted for torch code and computes a new tensor."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return x.relu()

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.tanh()


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.sigmoid()


class SiLU(Module):
    """x sigmoid(x)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)


class Identity(Module):
    """Returns its input; takes (and ignores) any arguments, as torch's."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Flatten(Module):
    """``x.flatten(start_dim, end_dim)``; by default keeps the batch dim: (N, *) -> (N, prod(*))."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# ---------------------------------------------------------------- losses


class CrossEntropyLoss(Module):
    """``F.cross_entropy`` as a module: ``CrossEntropyLoss(ignore_index=-1)(logits, targets)``."""

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__()
        if weight is not None:
            raise NotImplementedError("CrossEntropyLoss: class weights (weight=) are not implemented")
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing

    def forward(self, logits: Tensor, targets) -> Tensor:
        return F.cross_entropy(logits, targets, ignore_index=self.ignore_index, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)


class MSELoss(Module):
    """``F.mse_loss`` as a module."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, input: Tensor, target) -> Tensor:
        return F.mse_loss(input, target, self.reduction)


from . import init  # noqa: E402  (nn.init.normal_ and the rest; it needs nothing from this file)

__all__ = ["Parameter", "Module", "ModuleList", "ModuleDict", "Sequential", "Linear", "LoRALinear", "Embedding",
           "LayerNorm", "BatchNorm1d", "Dropout", "GELU", "ReLU", "Tanh", "Sigmoid", "SiLU", "Identity", "Flatten",
           "CrossEntropyLoss", "MSELoss", "IncompatibleKeys", "functional", "init"]

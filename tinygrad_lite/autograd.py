"""Reverse-mode automatic differentiation: ``Function`` and the backward pass.

Every op is a subclass of ``Function`` with two methods side by side:

* ``forward(self, *arrays, **options)`` computes the result from raw backend
  arrays (numpy or cupy) and saves what backward needs with
  ``self.save_for_backward(...)``;
* ``backward(self, grad)`` receives dLoss/dOutput and returns dLoss/dInput for
  each tensor input (a tuple, or a single array for one input; ``None`` for an
  input that needs no gradient).

A few ops have several outputs (``Split``: the pieces of a tensor): their
forward returns a tuple of arrays, ``apply`` returns a tuple of tensors, and
backward receives one gradient per output, ``None`` for an output the loss
does not depend on.

``MyOp.apply(*tensors, **options)`` runs forward and, when gradients are
wanted, records the Function as the output's ``_ctx`` (its "creator"), with
``parents`` pointing at the inputs. The recorded ``_ctx`` links form the graph
that ``Tensor.backward()`` walks back from the loss. A learner in pdb can step
from ``loss.backward()`` into ``backward_pass`` below and from there into every
op's ``backward``.
"""
from __future__ import annotations

import contextlib
import os
import traceback
import weakref
from typing import Any

from . import backend, profiler


# ---------------------------------------------------------------- grad mode

_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


@contextlib.contextmanager
def no_grad():
    """Inside ``with no_grad():`` ops record nothing (inference, optimizer steps)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


@contextlib.contextmanager
def enable_grad():
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, True
    try:
        yield
    finally:
        _grad_enabled = previous


# --------------------------------------------------------------- debug mode

_debug = False


def set_debug(enabled: bool) -> None:
    """Debug mode: remember where each op was created and raise on NaN/inf."""
    global _debug
    _debug = bool(enabled)


def is_debug() -> bool:
    return _debug


@contextlib.contextmanager
def debug_mode(enabled: bool = True):
    previous = _debug
    set_debug(enabled)
    try:
        yield
    finally:
        set_debug(previous)


# ----------------------------------------------------------- reference mode

_reference = False


def set_reference_mode(enabled: bool) -> None:
    """Reference mode, for reading and stepping through the code: the composite ops (softmax,
    log-softmax, cross-entropy, layer norm, GELU, attention, linear) run as their plain
    ``*_reference`` twins in nn/functional.py, built from primitive ops, and Adam/AdamW take their
    per-parameter loop. Nothing runs on worker threads, so pdb steps from ``loss.backward()`` into
    every op's backward on the main thread. Slower; the same numbers to float32 rounding."""
    global _reference
    _reference = bool(enabled)


def is_reference_mode() -> bool:
    return _reference


@contextlib.contextmanager
def reference_mode(enabled: bool = True):
    """``with tl.reference_mode(): ...`` runs the block in reference mode (see ``set_reference_mode``)."""
    previous = _reference
    set_reference_mode(enabled)
    try:
        yield
    finally:
        set_reference_mode(previous)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _user_frame() -> str:
    """The innermost stack frame outside tinygrad_lite: the user's line."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE_DIR):
            return f"{frame.filename}:{frame.lineno} in {frame.name}: {frame.line}"
    return "<unknown>"


def _check_finite(array, what: str, fn: "Function") -> None:
    xp = backend.xp_of(array)
    if xp.issubdtype(array.dtype, xp.floating) and not bool(xp.isfinite(array).all()):
        where = f"\n  op created at {fn.created_at}" if fn.created_at else ""
        raise FloatingPointError(f"{type(fn).__name__}: {what} contains NaN or inf{where}")


# ----------------------------------------------------------------- Function


class Function:
    """Base class of every differentiable op (see the module docstring)."""

    def __init__(self, *parents: "Tensor"):
        self.parents = parents
        self.num_outputs = 1
        self.needs_input_grad = tuple(p.requires_grad for p in parents)
        self.saved_tensors: tuple = ()
        self.created_at: str | None = None
        # (tensor, version at save time) for every saved array that is the data
        # of an input or of the output: changing those in place would make the
        # saved copy stale, and backward would silently be wrong.
        self._saved_versions: list[tuple[Any, int]] = []

    # -- to be written by each op ------------------------------------------
    def forward(self, *arrays, **options):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, grad):
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    # -- helpers ------------------------------------------------------------
    def save_for_backward(self, *values) -> None:
        self.saved_tensors = values

    @classmethod
    def apply(cls, *inputs: "Tensor", **options):
        """Run the op on tensors and (if needed) record it in the graph.

        Returns the output tensor (a tuple of them if forward returned a tuple).
        """
        for position, tensor in enumerate(inputs):
            if not isinstance(tensor, Tensor):
                raise TypeError(f"{cls.__name__}.apply: input {position} is {type(tensor).__name__}, expected Tensor")
        device = inputs[0].device if inputs else "cpu"
        for tensor in inputs[1:]:
            if tensor.device != device:
                raise RuntimeError(f"{cls.__name__}: inputs are on different devices "
                                   f"({', '.join(t.device for t in inputs)}); move them with .to()")

        fn = cls(*inputs)
        if _debug:
            fn.created_at = _user_frame()
        start = profiler.start()
        output_data = fn.forward(*(t.data for t in inputs), **options)
        profiler.stop(start, cls.__name__, "forward", output_data)
        if _debug:
            _check_finite(output_data, "forward output", fn)

        needs_grad = _grad_enabled and any(fn.needs_input_grad)
        several = isinstance(output_data, tuple)
        outputs = tuple(Tensor(data, requires_grad=needs_grad) for data in (output_data if several else (output_data,)))
        if needs_grad:
            fn.num_outputs = len(outputs)
            for index, output in enumerate(outputs):
                output._ctx, output._output_index = fn, index
            fn._remember_saved_versions(inputs, outputs)
        else:
            fn.parents = ()
            fn.saved_tensors = ()
        return outputs if several else outputs[0]

    def _remember_saved_versions(self, inputs, outputs) -> None:
        saved_ids = {id(value) for value in self.saved_tensors}
        for tensor in inputs:
            if id(tensor.data) in saved_ids:
                self._saved_versions.append((tensor, tensor._version))
        for output in outputs:
            if id(output.data) in saved_ids:
                # a weak reference: the output owns this Function, not the other way round
                self._saved_versions.append((weakref.ref(output), output._version))

    def _check_saved_versions(self) -> None:
        for holder, version in self._saved_versions:
            tensor = holder() if isinstance(holder, weakref.ref) else holder
            if tensor is not None and tensor._version != version:
                where = f" (op created at {self.created_at})" if self.created_at else ""
                raise RuntimeError(
                    f"{type(self).__name__}: a tensor of shape {tuple(tensor.shape)} that this op saved for backward "
                    f"was modified in place (version {version} -> {tensor._version}){where}; "
                    "clone it before changing it, or change it after backward")

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


# -------------------------------------------------------- shared helpers


def unbroadcast(grad, shape: tuple):
    """Sum a broadcast gradient back down to an input's ``shape``.

    If ``x`` of shape (3, 1) was broadcast to (2, 3, 4) in the forward pass,
    each x element fed 2*4 outputs, so its gradient is the sum over those:
    sum away the leading axis that broadcasting added, then sum (keeping the
    axis) over every axis where x had size 1.
    """
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


# ----------------------------------------------------------- backward pass


def _topological_order(root: "Tensor") -> list:
    """Tensors that lead to ``root``, each after all of its inputs.

    An explicit stack instead of recursion: a chain of 100,000 ops must not
    hit Python's recursion limit.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        tensor, children_done = stack.pop()
        if children_done:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        if tensor._ctx is not None:
            for parent in tensor._ctx.parents:
                if id(parent) not in visited:
                    stack.append((parent, False))
    return order


def _check_grad(fn: Function, index: int, parent: "Tensor", grad) -> None:
    if tuple(grad.shape) != tuple(parent.shape):
        raise RuntimeError(f"{type(fn).__name__}.backward returned a gradient of shape {tuple(grad.shape)} "
                           f"for input {index} of shape {tuple(parent.shape)}")
    if grad.dtype != parent.dtype:
        raise RuntimeError(f"{type(fn).__name__}.backward returned a gradient of dtype {grad.dtype} "
                           f"for input {index} of dtype {parent.dtype}")


class _Waiting:
    """A Function in the backward walk: the gradients of its outputs so far, and how many of its
    outputs the walk has still to reach (an op with several outputs, like Split, runs once)."""

    __slots__ = ("output_grads", "outputs_to_come")

    def __init__(self, num_outputs: int):
        self.output_grads: list = [None] * num_outputs
        self.outputs_to_come = 0


def backward_pass(root: "Tensor", gradient, retain_graph: bool = False) -> None:
    """Propagate ``gradient`` (dLoss/droot) back through the graph.

    Walks tensors from the root to the leaves (reverse topological order). Each tensor's
    gradient, summed over all the ops that used it (a "diamond", weight tying, ...), goes to
    the Function that created it; once the walk has passed all of that Function's outputs, its
    ``backward`` runs and adds to the gradients of its inputs. Leaves that require grad
    accumulate into ``.grad``; so do non-leaves that called ``retain_grad()``. Unless
    ``retain_graph``, each tensor forgets its creator as the walk passes it.
    """
    if root._graph_freed:
        raise RuntimeError("Trying to backward through the graph a second time: its saved values were freed "
                           "by the first backward; pass retain_graph=True to the first backward call")
    order = _topological_order(root)
    waiting: dict[int, _Waiting] = {}
    for tensor in order:
        if tensor._ctx is not None:
            fn = tensor._ctx
            waiting.setdefault(id(fn), _Waiting(fn.num_outputs)).outputs_to_come += 1
    grads = {id(root): gradient}
    for tensor in reversed(order):
        grad, fn = grads.pop(id(tensor), None), tensor._ctx
        if fn is None:  # a leaf, or a tensor whose graph an earlier backward freed
            if grad is not None and tensor._graph_freed:
                raise RuntimeError("Trying to backward through the graph a second time: an intermediate result "
                                   "was freed by an earlier backward; pass retain_graph=True to it")
            if grad is not None and tensor.requires_grad:
                tensor._accumulate_grad(grad)  # then the tensor's post-accumulate hooks, if any
            continue
        if grad is not None and tensor._retains_grad:
            tensor._accumulate_grad(grad)
        if not retain_graph:
            tensor._ctx, tensor._graph_freed = None, True
        node = waiting[id(fn)]
        node.output_grads[tensor._output_index] = grad
        node.outputs_to_come -= 1
        if node.outputs_to_come == 0 and any(g is not None for g in node.output_grads):
            _run_backward(fn, tuple(node.output_grads), grads)


def _run_backward(fn: Function, output_grads: tuple, grads: dict) -> None:
    """Call ``fn.backward`` and add what it returns to the gradients of fn's inputs in ``grads``."""
    fn._check_saved_versions()
    start = profiler.start()
    input_grads = fn.backward(*output_grads)
    profiler.stop(start, type(fn).__name__, "backward", input_grads)
    if not isinstance(input_grads, tuple):
        input_grads = (input_grads,)
    if len(input_grads) != len(fn.parents):
        raise RuntimeError(f"{type(fn).__name__}.backward returned {len(input_grads)} gradients "
                           f"for {len(fn.parents)} inputs")
    for index, (parent, parent_grad) in enumerate(zip(fn.parents, input_grads)):
        if parent_grad is None or not parent.requires_grad:
            continue
        _check_grad(fn, index, parent, parent_grad)
        if _debug:
            _check_finite(parent_grad, f"gradient for input {index}", fn)
        previous = grads.get(id(parent))
        grads[id(parent)] = parent_grad if previous is None else previous + parent_grad


# tensor.py builds on this module, so Tensor comes last: by the time tensor.py runs, everything it
# imports from here is defined (the package's __init__ imports this module before tensor.py).
from .tensor import Tensor  # noqa: E402

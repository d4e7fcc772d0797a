"""Activation checkpointing (torch.utils.checkpoint): trade compute for memory.

Backward needs what forward computed: a Linear saves its input, attention its probabilities, GELU
its input, ... For a GPT block that is about 20 arrays of (B, T, C) or (B, n_head, T, T) per layer,
all alive from the forward pass until backward reaches that layer. ``checkpoint(block, x)`` keeps
only ``x``:

* forward runs ``block(x)`` under ``no_grad()``: no graph, so every intermediate is freed as soon
  as the next op has used it; only the input (and the output, which the next layer needs anyway)
  survive;
* backward runs ``block(x)`` again, this time with grad, from a fresh leaf copy of ``x``, and
  backpropagates the incoming gradient through that small graph: ``x``'s gradient is returned to
  the outer backward, and the parameters' gradients too.

The cost is one more forward per checkpointed block (about a third more compute for a training
step); the gradients are the same numbers, because the same ops run on the same inputs.

(Not to be confused with ``gpt/checkpoint.py``, which saves training state to disk.)
"""
from __future__ import annotations

from .. import amp, backend
from ..autograd import Function, backward_pass, enable_grad, is_grad_enabled, no_grad
from ..tensor import Tensor


class Checkpoint(Function):
    """out = function(*inputs), with the intermediates recomputed in backward instead of kept.

    The op's inputs are the function's tensor inputs followed by ``parameters`` (a Module's, when
    ``function`` is one), so that the outer backward gives each parameter its gradient the usual way.

    Backward: with x' = fresh leaves holding the inputs' values, run out' = function(*x') with grad
    and backpropagate g = dL/dout through it: dL/dx = x'.grad, dL/dparam = the gradient that inner
    backward left in param.grad (each parameter's own .grad is set aside meanwhile and put back).
    """

    def forward(self, *arrays, function, num_inputs, device):
        self.function, self.num_inputs, self.device = function, num_inputs, device
        self.save_for_backward(*arrays[:num_inputs])  # the inputs only: everything else is recomputed
        # the rerun in backward must compute the same thing: the same dropout masks, the same precision
        self.rng_state = backend.get_rng_state(device)
        self.autocast_dtype = amp.get_autocast_dtype()
        with no_grad():
            out = function(*(Tensor(array) for array in arrays[:num_inputs]))
        if not isinstance(out, Tensor):
            raise TypeError(f"checkpoint: the function must return one Tensor, got {type(out).__name__}")
        return out.data

    def backward(self, grad):
        parameters = self.parents[self.num_inputs:]
        inputs = [Tensor(array, requires_grad=need) for array, need in zip(self.saved_tensors, self.needs_input_grad)]
        set_aside = [param.grad for param in parameters]
        for param in parameters:
            param.grad = None
        after_forward = backend.get_rng_state(self.device)
        backend.set_rng_state(self.rng_state, self.device)
        try:
            with enable_grad(), amp.autocast(self.autocast_dtype, enabled=self.autocast_dtype is not None):
                out = self.function(*inputs)
            if out.requires_grad:
                backward_pass(out, grad)
            input_grads = [None if x.grad is None else x.grad.data for x in inputs]
            parameter_grads = [None if param.grad is None else param.grad.data for param in parameters]
        finally:
            for param, previous in zip(parameters, set_aside):
                param.grad = previous
            backend.set_rng_state(after_forward, self.device)  # the rest of training draws what it would have
        return tuple(input_grads + parameter_grads)


def checkpoint(function, *inputs: Tensor, use_reentrant: bool | None = None) -> Tensor:
    """``function(*inputs)``, keeping none of its intermediate results for backward (torch's name).

    ``function`` is a Module (a GPT block) or any callable of Tensors that returns one Tensor;
    the parameters it uses are found when it is a Module (for another callable, only the inputs
    get gradients through this op: close over no trainable tensors). Outside grad mode it is just
    ``function(*inputs)``. ``use_reentrant`` is accepted for torch code and ignored.
    """
    for position, value in enumerate(inputs):
        if not isinstance(value, Tensor):
            raise TypeError(f"checkpoint: input {position} is {type(value).__name__}; pass Tensors "
                            "(bind other arguments with functools.partial or a lambda)")
    if not is_grad_enabled():  # nothing will be backpropagated: nothing to save or recompute
        return function(*inputs)
    parameters = list(function.parameters()) if hasattr(function, "parameters") else []
    trained = [param for param in parameters if param.requires_grad]
    device = inputs[0].device if inputs else "cpu"
    return Checkpoint.apply(*inputs, *trained, function=function, num_inputs=len(inputs), device=device)

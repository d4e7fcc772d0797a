"""Finite-difference gradient checking: is an op's backward right?

For f: inputs -> output and a random upstream gradient g, backward computes
the vector-Jacobian product  sum_j g_j * d f_j / d x_i  for every input
element x_i. The same number can be estimated with no calculus at all:

    d/dx_i <g, f(x)>  ~=  (<g, f(x + eps e_i)> - <g, f(x - eps e_i)>) / (2 eps)

(central differences, error O(eps^2)). Run in float64, the two agree to many
digits when backward is right -- and visibly disagree when it is not.
"""
from __future__ import annotations

import numpy

from .autograd import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """The analytic and the numeric gradient disagree."""


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3, seed: int = 0) -> bool:
    """Check ``fn(*inputs)``'s backward against central differences.

    ``inputs`` are float64 Tensors; those with ``requires_grad=True`` are
    checked. Returns True, or raises ``GradcheckError`` naming the worst element.
    """
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    for position, t in enumerate(inputs):
        if isinstance(t, Tensor) and t.requires_grad and t.dtype != numpy.float64:
            raise TypeError(f"gradcheck: input {position} is {t.dtype}; use float64 inputs, "
                            "finite differences in float32 are too noisy to judge a gradient")
    checked = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")

    for t in checked:
        if not t.data.flags.c_contiguous:  # so that reshape(-1) below is a view we can nudge
            t.data = t.xp.ascontiguousarray(t.data)
        t.grad = None

    # Analytic: one backward with a random upstream gradient g.
    output = fn(*inputs)
    rng = numpy.random.default_rng(seed)
    upstream = rng.standard_normal(output.shape)
    output.backward(output.xp.asarray(upstream, dtype=output.dtype))
    analytic = [t.grad.numpy() if t.grad is not None else numpy.zeros(t.shape) for t in checked]

    def weighted_output() -> float:
        with no_grad():
            return float((fn(*inputs).numpy().astype(numpy.float64) * upstream).sum())

    # Numeric: nudge each element both ways.
    for which, (t, grad) in enumerate(zip(checked, analytic)):
        flat = t.data.reshape(-1)  # a view: writing it changes t
        numeric = numpy.zeros(t.numel())
        for i in range(t.numel()):
            original = float(flat[i])
            flat[i] = original + eps
            plus = weighted_output()
            flat[i] = original - eps
            minus = weighted_output()
            flat[i] = original
            numeric[i] = (plus - minus) / (2 * eps)
        numeric = numeric.reshape(t.shape)
        error = numpy.abs(numeric - grad) - (atol + rtol * numpy.abs(numeric))
        if error.size and error.max() > 0:
            worst = numpy.unravel_index(int(numpy.argmax(error)), t.shape)
            raise GradcheckError(f"gradcheck failed for input {which} of shape {t.shape}: at index {worst} "
                                 f"numeric {numeric[worst]:.8g} vs analytic {grad[worst]:.8g} "
                                 f"(atol={atol}, rtol={rtol})")
    return True

"""Elementwise ops. Binary ops broadcast like NumPy; their backward sums the
gradient back to each input's shape with ``unbroadcast`` and casts it to the
input's dtype (``x + y`` with float32 x and float64 y is float64, but x's
gradient must be float32)."""
from __future__ import annotations

import numpy

from ..autograd import Function, unbroadcast
from ..backend import xp_of


def reduce_to(grad, like):
    """The gradient for input ``like``: un-broadcast to its shape, cast to its dtype."""
    grad = unbroadcast(grad, like.shape)
    return grad if grad.dtype == like.dtype else grad.astype(like.dtype)


class Add(Function):
    """z = x + y.   dz/dx = 1,  dz/dy = 1."""

    def forward(self, x, y):
        return x + y

    def backward(self, grad):
        x, y = self.parents
        return reduce_to(grad, x), reduce_to(grad, y)


class Sub(Function):
    """z = x - y.   dz/dx = 1,  dz/dy = -1."""

    def forward(self, x, y):
        return x - y

    def backward(self, grad):
        x, y = self.parents
        return reduce_to(grad, x), reduce_to(-grad, y)


class Mul(Function):
    """z = x * y.   dz/dx = y,  dz/dy = x."""

    def forward(self, x, y):
        self.save_for_backward(x, y)
        return x * y

    def backward(self, grad):
        x, y = self.saved_tensors
        tx, ty = self.parents
        grad_x = reduce_to(grad * y, tx) if self.needs_input_grad[0] else None
        grad_y = reduce_to(grad * x, ty) if self.needs_input_grad[1] else None
        return grad_x, grad_y


class Div(Function):
    """z = x / y.   dz/dx = 1/y,  dz/dy = -x/y^2 = -z/y.

    A broadcast y (batch norm's x / std) is one value over the positions that it is
    summed over, so dL/dy = -sum(g * z) / y: the division happens on y's small shape.
    """

    def forward(self, x, y):
        out = x / y
        self.save_for_backward(y, out)
        return out

    def backward(self, grad):
        y, out = self.saved_tensors
        tx, ty = self.parents
        grad_x = reduce_to(grad / y, tx) if self.needs_input_grad[0] else None
        grad_y = reduce_to(-reduce_to(grad * out, ty) / y, ty) if self.needs_input_grad[1] else None
        return grad_x, grad_y


class Pow(Function):
    """z = x ** y.   dz/dx = y * x^(y-1),  dz/dy = x^y * log(x)  (needs x > 0)."""

    def forward(self, x, y):
        out = x ** y
        self.save_for_backward(x, y, out)
        return out

    def backward(self, grad):
        x, y, out = self.saved_tensors
        tx, ty = self.parents
        xp = xp_of(x)
        grad_x = reduce_to(grad * y * x ** (y - 1), tx) if self.needs_input_grad[0] else None
        grad_y = reduce_to(grad * out * xp.log(x), ty) if self.needs_input_grad[1] else None
        return grad_x, grad_y


class Neg(Function):
    """z = -x.   dz/dx = -1."""

    def forward(self, x):
        return -x

    def backward(self, grad):
        return -grad


class Exp(Function):
    """z = e^x.   dz/dx = e^x = z  (so we save the output, not the input)."""

    def forward(self, x):
        out = xp_of(x).exp(x)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_tensors
        return grad * out


class Log(Function):
    """z = ln x.   dz/dx = 1/x."""

    def forward(self, x):
        self.save_for_backward(x)
        return xp_of(x).log(x)

    def backward(self, grad):
        (x,) = self.saved_tensors
        return grad / x


class Sqrt(Function):
    """z = sqrt(x).   dz/dx = 1 / (2 sqrt(x)) = 1 / (2z)."""

    def forward(self, x):
        out = xp_of(x).sqrt(x)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_tensors
        return grad / (2 * out)


class Tanh(Function):
    """z = tanh x.   dz/dx = 1 - tanh^2 x = 1 - z^2."""

    def forward(self, x):
        out = xp_of(x).tanh(x)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_tensors
        return grad * (1 - out * out)


class Sigmoid(Function):
    """z = 1 / (1 + e^-x).   dz/dx = z (1 - z).

    Computed as e^x / (1 + e^x) for negative x, so that e^-x never overflows
    (sigmoid(-1e4) is 0, not a warning and a NaN).
    """

    def forward(self, x):
        xp = xp_of(x)
        e = xp.exp(-xp.abs(x))  # in (0, 1]: never overflows
        out = xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_tensors
        return grad * out * (1 - out)


class Relu(Function):
    """z = max(x, 0).   dz/dx = 1 where x > 0, else 0."""

    def forward(self, x):
        self.save_for_backward(x)
        return xp_of(x).maximum(x, 0)

    def backward(self, grad):
        (x,) = self.saved_tensors
        return grad * (x > 0)


class Abs(Function):
    """z = |x|.   dz/dx = sign(x)  (0 at x = 0, as in PyTorch)."""

    def forward(self, x):
        self.save_for_backward(x)
        return xp_of(x).abs(x)

    def backward(self, grad):
        (x,) = self.saved_tensors
        return grad * xp_of(x).sign(x)


class Where(Function):
    """z = cond ? a : b.   dz/da = cond,  dz/db = not cond  (cond has no gradient)."""

    def forward(self, cond, a, b):
        self.save_for_backward(cond)
        return xp_of(a).where(cond, a, b)

    def backward(self, grad):
        (cond,) = self.saved_tensors
        _, a, b = self.parents
        xp = xp_of(grad)
        zero = xp.zeros((), dtype=grad.dtype)
        grad_a = reduce_to(xp.where(cond, grad, zero), a) if self.needs_input_grad[1] else None
        grad_b = reduce_to(xp.where(cond, zero, grad), b) if self.needs_input_grad[2] else None
        return None, grad_a, grad_b


class Cast(Function):
    """z = x converted to another dtype.   dz/dx = 1, cast back to x's dtype."""

    def forward(self, x, dtype):
        return x.astype(dtype)

    def backward(self, grad):
        return grad.astype(self.parents[0].dtype)


# ---------------------------------------------------------------------- erf
# W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23 (1969)
# 631-637, as in his CALERF routine (netlib specfun): three rational functions, relative error
# below 1e-15 in float64 on each range.
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03,
          1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
_ERF_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
          8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03,
          2.15311535474403846e-8)
_ERF_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
          3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)
_ERF_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
          6.58749161529837803e-4, 1.63153871373020978e-2)
_ERF_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
          2.33520497626869185e-3)
_ONE_OVER_SQRT_PI = 0.56418958354775628695


def _ratio(numerator, denominator, t):
    """p(t) / q(t) in Cody's nesting: numerator[-1] is the leading coefficient, the denominator is monic."""
    top, bottom = numerator[-1] * t, t
    for a, b in zip(numerator[:len(denominator) - 1], denominator[:-1]):
        top, bottom = (top + a) * t, (bottom + b) * t
    return (top + numerator[len(denominator) - 1]) / (bottom + denominator[-1])


def erf_array(x):
    """erf(x) = 2/sqrt(pi) * integral_0^x e^(-t^2) dt, elementwise, computed in float64.

    NumPy has no erf (and SciPy is no dependency), so this is Cody's (cited above):
    |x| <= 0.5: erf = x R1(x^2);  0.5 < |x| <= 4: erfc = e^(-x^2) R2(|x|);
    |x| > 4: erfc = e^(-x^2) / |x| (1/sqrt(pi) + R3(1/x^2) / x^2);  erf = sign(x) (1 - erfc).
    On the GPU CuPy's own erf does it.
    """
    xp = xp_of(x)
    if xp is not numpy:
        from cupyx.scipy.special import erf  # noqa: PLC0415 -- only with CuPy

        return erf(x)
    x = numpy.asarray(x, dtype=numpy.float64)
    y = numpy.minimum(numpy.abs(x), 27.0)  # erfc(27) < 1e-318: beyond it erf is +-1 (and inf stays finite)
    with numpy.errstate(divide="ignore", invalid="ignore", over="ignore"):  # each range is used only on its own
        small = x * _ratio(_ERF_A, _ERF_B, x * x)
        inverse_square = 1.0 / (y * y)
        large = (_ONE_OVER_SQRT_PI - inverse_square * _ratio(_ERF_P, _ERF_Q, inverse_square)) / y
        # e^(-y^2) as e^(-r^2) e^(-(y - r)(y + r)), r = y rounded down to 1/16: r^2 is exact, no error grows
        rounded = numpy.trunc(y * 16.0) / 16.0
        exp_minus_square = numpy.exp(-rounded * rounded) * numpy.exp(-(y - rounded) * (y + rounded))
        erfc = numpy.where(y <= 4.0, _ratio(_ERF_C, _ERF_D, y), large) * exp_minus_square
    return numpy.where(y <= 0.5, small, numpy.copysign(1.0 - erfc, x))


class Erf(Function):
    """z = erf x.   dz/dx = 2/sqrt(pi) e^(-x^2)  (the integrand of erf at x)."""

    def forward(self, x):
        self.save_for_backward(x)
        return erf_array(x).astype(x.dtype, copy=False)

    def backward(self, grad):
        (x,) = self.saved_tensors
        return grad * (2.0 * _ONE_OVER_SQRT_PI) * xp_of(x).exp(-x * x)


class Clamp(Function):
    """z = min(max(x, low), high)  (either bound may be None: no bound on that side).

    dz/dx = 1 where low <= x <= high, else 0. At a bound the gradient passes,
    as in PyTorch (finite differences there would give 1/2).
    """

    def forward(self, x, low=None, high=None):
        if low is not None and high is not None and low > high:
            raise ValueError(f"clamp: min {low} is greater than max {high} (tensor of shape {x.shape})")
        self.save_for_backward(x)
        self.low, self.high = low, high
        return xp_of(x).clip(x, low, high).astype(x.dtype, copy=False)

    def backward(self, grad):
        (x,) = self.saved_tensors
        inside = xp_of(x).ones(x.shape, dtype=bool)
        if self.low is not None:
            inside &= x >= self.low
        if self.high is not None:
            inside &= x <= self.high
        return grad * inside

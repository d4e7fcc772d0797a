"""Elementwise ops. Binary ops broadcast like NumPy; their backward sums the
gradient back to each input's shape with ``unbroadcast`` and casts it to the
input's dtype (``x + y`` with float32 x and float64 y is float64, but x's
gradient must be float32)."""
from __future__ import annotations

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
    """z = x / y.   dz/dx = 1/y,  dz/dy = -x/y^2."""

    def forward(self, x, y):
        self.save_for_backward(x, y)
        return x / y

    def backward(self, grad):
        x, y = self.saved_tensors
        tx, ty = self.parents
        grad_x = reduce_to(grad / y, tx) if self.needs_input_grad[0] else None
        grad_y = reduce_to(-grad * x / (y * y), ty) if self.needs_input_grad[1] else None
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

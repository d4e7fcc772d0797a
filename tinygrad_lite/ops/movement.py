"""Ops that move, copy or select elements without arithmetic.

Their backward routes each gradient element back to where its value came from.
"""
from __future__ import annotations

from ..autograd import Function, unbroadcast
from ..backend import scatter_add, to_device, xp_of


class Reshape(Function):
    """z = x viewed with a new shape.   dL/dx = dL/dz reshaped back."""

    def forward(self, x, shape):
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape tensor of shape {x.shape} ({x.size} elements) "
                             f"into shape {tuple(shape)}") from None

    def backward(self, grad):
        return grad.reshape(self.parents[0].shape)


class Permute(Function):
    """z = x with its axes reordered.   dL/dx = dL/dz with the inverse order."""

    def forward(self, x, axes):
        if sorted(a % max(x.ndim, 1) for a in axes) != list(range(x.ndim)):
            raise ValueError(f"permute: {tuple(axes)} is not a permutation of the {x.ndim} axes of shape {x.shape}")
        self.axes = tuple(a % x.ndim for a in axes)
        return x.transpose(self.axes)

    def backward(self, grad):
        inverse = [0] * len(self.axes)
        for position, axis in enumerate(self.axes):
            inverse[axis] = position
        return grad.transpose(inverse)


class Expand(Function):
    """z = x broadcast to a larger shape (a view: nothing is copied).

    Each x element feeds many z elements, so dL/dx sums their gradients.
    """

    def forward(self, x, shape):
        try:
            return xp_of(x).broadcast_to(x, shape)
        except ValueError:
            raise ValueError(f"expand: cannot expand shape {x.shape} to {tuple(shape)}") from None

    def backward(self, grad):
        return unbroadcast(grad, self.parents[0].shape)


def _has_integer_array(index) -> bool:
    """True if the index holds an integer array (which can pick an element twice)."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(hasattr(part, "dtype") and part.dtype.kind in "iu" for part in parts)


class GetItem(Function):
    """z = x[index] (ints, slices, None, Ellipsis, integer arrays, boolean masks).

    dL/dx is zero except at the selected places, which get dL/dz. An integer
    array can pick the same element twice, so that case uses scatter-*add*.
    """

    def forward(self, x, index):
        self.index = index
        try:
            return x[index]
        except IndexError as error:
            raise IndexError(f"getitem: {error} (tensor of shape {x.shape})") from None

    def backward(self, grad):
        (x,) = self.parents
        grad_x = xp_of(grad).zeros(x.shape, dtype=x.dtype)
        if _has_integer_array(self.index):
            scatter_add(grad_x, self.index, grad)
        else:
            grad_x[self.index] = grad
        return grad_x


class Split(Function):
    """z_1, ..., z_n = consecutive pieces of x along ``axis`` (views: no copy).

    dL/dx = the pieces' gradients side by side again (zeros for a piece the
    loss does not use). One op with several outputs: taking each piece as its
    own slice ``x[..., a:b]`` would give every piece's backward a zero array
    the size of x, and the engine would then add those up.
    """

    def forward(self, x, sizes, axis):
        self.shape, self.dtype, self.axis = x.shape, x.dtype, axis
        self.bounds, start = [], 0
        for size in sizes:
            self.bounds.append((start, start + size))
            start += size
        return tuple(x[(slice(None),) * axis + (slice(a, b),)] for a, b in self.bounds)

    def backward(self, *grads):
        xp = xp_of(next(g for g in grads if g is not None))
        grad_x = xp.empty(self.shape, dtype=self.dtype)
        for (a, b), grad in zip(self.bounds, grads):
            piece = grad_x[(slice(None),) * self.axis + (slice(a, b),)]
            if grad is None:
                piece[...] = 0
            else:
                piece[...] = grad
        return grad_x


class Cat(Function):
    """z = the inputs joined along ``axis``.   dL/dinput_i = its slice of dL/dz."""

    def forward(self, *arrays, axis=0):
        first = arrays[0]
        for i, a in enumerate(arrays[1:], 1):
            if a.ndim != first.ndim or any(n != m for d, (n, m) in enumerate(zip(a.shape, first.shape))
                                           if d != axis % first.ndim):
                raise ValueError(f"cat: tensor {i} has shape {a.shape}, incompatible with {first.shape} "
                                 f"for joining along axis {axis}")
        self.axis = axis % first.ndim
        return xp_of(first).concatenate(arrays, axis=self.axis)

    def backward(self, grad):
        xp = xp_of(grad)
        sizes = [t.shape[self.axis] for t in self.parents]
        bounds = [sum(sizes[:i + 1]) for i in range(len(sizes) - 1)]
        return tuple(xp.split(grad, bounds, axis=self.axis))


class Copy(Function):
    """z = a copy of x in new memory (``clone``).   dL/dx = dL/dz."""

    def forward(self, x):
        return x.copy()

    def backward(self, grad):
        return grad


class Roll(Function):
    """z = x shifted cyclically by ``shifts`` along ``axes`` (None: over the flattened x).

    Element i moves to i + shift (mod n), so dL/dx is dL/dz rolled back by -shift.
    """

    def forward(self, x, shifts, axes=None):
        self.shifts, self.axes = shifts, axes
        try:
            return xp_of(x).roll(x, shifts, axis=axes)
        except (ValueError, IndexError) as error:
            raise ValueError(f"roll: shifts {shifts} and dims {axes} do not fit shape {x.shape} ({error})") from None

    def backward(self, grad):
        back = tuple(-s for s in self.shifts) if isinstance(self.shifts, tuple) else -self.shifts
        return xp_of(grad).roll(grad, back, axis=self.axes)


class ToDevice(Function):
    """z = x copied to another device.   dL/dx = dL/dz copied back."""

    def forward(self, x, device):
        return to_device(x, device)

    def backward(self, grad):
        return to_device(grad, self.parents[0].device)

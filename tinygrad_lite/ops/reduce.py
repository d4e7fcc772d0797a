"""Reductions. Their backward "un-reduces": the gradient of the (smaller)
output is broadcast back over the axes that were reduced."""
from __future__ import annotations

from ..backend import xp_of
from ..autograd import Function


def normalize_axis(axis, ndim: int, op: str):
    """``None`` -> all axes; ints (negative allowed) -> a sorted tuple of positive axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    result = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dimensions")
        result.append(a % max(ndim, 1))
    if len(set(result)) != len(result):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(result))


def expand_reduced(grad, input_shape, axes, keepdims: bool):
    """Give ``grad`` back the reduced axes (size 1) so it broadcasts against the input."""
    if not keepdims:
        shape = list(input_shape)
        for a in axes:
            shape[a] = 1
        grad = grad.reshape(shape)
    return grad


class Sum(Function):
    """z = sum of x over ``axis``.   dz/dx_i = 1 for every summed element."""

    def forward(self, x, axis=None, keepdims=False):
        self.axes, self.keepdims = normalize_axis(axis, x.ndim, "sum"), keepdims
        return x.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, grad):
        (x,) = self.parents
        grad = expand_reduced(grad, x.shape, self.axes, self.keepdims)
        return xp_of(grad).broadcast_to(grad, x.shape)


class Mean(Function):
    """z = sum of x over ``axis`` / n (n = how many elements each output averages).   dz/dx_i = 1/n."""

    def forward(self, x, axis=None, keepdims=False):
        self.axes, self.keepdims = normalize_axis(axis, x.ndim, "mean"), keepdims
        self.count = _count(x.shape, self.axes)
        return x.sum(axis=self.axes, keepdims=keepdims) / x.dtype.type(self.count)

    def backward(self, grad):
        (x,) = self.parents
        grad = expand_reduced(grad, x.shape, self.axes, self.keepdims) / grad.dtype.type(self.count)
        return xp_of(grad).broadcast_to(grad, x.shape)


class Var(Function):
    """z = sum((x - mean)^2) / (n - correction) over ``axis`` (correction 1: the unbiased estimate).

    dz/dx_i = 2 (x_i - mean) / (n - correction): the path through the mean adds
    -2/n sum_j (x_j - mean) / (n - correction), and the deviations sum to zero.
    """

    def forward(self, x, axis=None, keepdims=False, correction=1):
        self.axes, self.keepdims = normalize_axis(axis, x.ndim, "var"), keepdims
        self.divisor = x.dtype.type(max(_count(x.shape, self.axes) - correction, 0))
        centered = x - x.mean(axis=self.axes, keepdims=True)
        self.save_for_backward(centered)
        return (centered * centered).sum(axis=self.axes, keepdims=keepdims) / self.divisor

    def backward(self, grad):
        (centered,) = self.saved_tensors
        grad = expand_reduced(grad, centered.shape, self.axes, self.keepdims)
        return centered * (grad * (2 / self.divisor))


def _count(shape: tuple, axes: tuple) -> int:
    count = 1
    for a in axes:
        count *= shape[a]
    return count


class Max(Function):
    """z = max of x over ``axis``.

    dz/dx_i = 1/k if x_i is one of the k elements equal to the max, else 0:
    ties split the gradient evenly (like ``torch.amax``).
    """

    def forward(self, x, axis=None, keepdims=False):
        self.axes, self.keepdims = normalize_axis(axis, x.ndim, "max"), keepdims
        if x.size == 0:
            raise ValueError(f"max: cannot reduce an empty tensor of shape {x.shape}")
        out = x.max(axis=self.axes, keepdims=True)
        self.save_for_backward(x, out)
        return out if keepdims else out.reshape([n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, grad):
        x, out = self.saved_tensors
        is_max = x == out
        count = is_max.sum(axis=self.axes, keepdims=True)
        grad = expand_reduced(grad, x.shape, self.axes, self.keepdims)
        return (is_max * (grad / count)).astype(x.dtype, copy=False)

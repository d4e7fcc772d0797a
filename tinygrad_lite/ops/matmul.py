"""Matrix multiplication, the op that does nearly all of a transformer's work."""
from __future__ import annotations

from ..autograd import Function, unbroadcast
from ..backend import xp_of
from ..cpu_kernels import memory


class MatMul(Function):
    """Z = X @ Y for (..., n, k) @ (..., k, m) -> (..., n, m); batch dims broadcast.

    dL/dX = dL/dZ @ Y^T   and   dL/dY = X^T @ dL/dZ   (transposing the last
    two axes), each summed over any batch dims that were broadcast.
    """

    def forward(self, x, y):
        if x.ndim < 2 or y.ndim < 2:
            raise ValueError(f"MatMul: both operands need >= 2 dims, got {x.shape} and {y.shape}")
        if x.shape[-1] != y.shape[-2]:
            raise ValueError(f"MatMul: shapes {x.shape} and {y.shape} do not match "
                             f"(inner sizes {x.shape[-1]} != {y.shape[-2]})")
        self.save_for_backward(x, y)
        xp = xp_of(x)
        if y.ndim == 2 and x.ndim > 2:
            # (..., n, k) @ (k, m): every row meets the same matrix, so fold the leading axes
            # into rows and make one 2-D BLAS call (NumPy's batched loop is far slower,
            # especially when y is a transposed view).
            return xp.matmul(x.reshape(-1, x.shape[-1]), y).reshape(x.shape[:-1] + (y.shape[1],))
        return xp.matmul(x, y)

    def backward(self, grad):
        x, y = self.saved_tensors
        xp = xp_of(x)
        grad_x = grad_y = None
        if y.ndim == 2 and x.ndim > 2:  # the folded 2-D case of forward
            rows, grad_rows = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
            if self.needs_input_grad[0]:
                grad_x = xp.matmul(grad_rows, y.T).reshape(x.shape).astype(x.dtype, copy=False)
            if self.needs_input_grad[1]:
                grad_y = xp.matmul(rows.T, grad_rows).astype(y.dtype, copy=False)
            return grad_x, grad_y
        if self.needs_input_grad[0]:
            grad_x = unbroadcast(xp.matmul(grad, y.swapaxes(-1, -2)), x.shape).astype(x.dtype, copy=False)
        if self.needs_input_grad[1]:
            grad_y = unbroadcast(xp.matmul(x.swapaxes(-1, -2), grad), y.shape).astype(y.dtype, copy=False)
        return grad_x, grad_y


class Linear(Function):
    """y = x W^T + b  for x (..., in), W (out, in), b (out,) -- a whole Linear layer in one op.

    dL/dx = g W,   dL/dW = g^T x,   dL/db = sum of g over every leading position
    (with g = dL/dy and the leading axes of x and g flattened into rows).

    The composition ``x @ W.transpose(0, 1) + b`` gives the same numbers (it is
    ``F.linear_reference``), but costs a transpose op, a separate bias add with
    its own temporary, and an un-broadcasting sum in backward; here the bias is
    added in place and all of x's leading axes go through one 2-D BLAS call.
    """

    def forward(self, x, weight, *bias):
        if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
            raise ValueError(f"Linear: input of shape {x.shape} does not fit weight of shape {weight.shape} "
                             f"(expected input (..., {weight.shape[1] if weight.ndim == 2 else '?'}))")
        if bias and bias[0].shape != (weight.shape[0],):
            raise ValueError(f"Linear: bias has shape {bias[0].shape}, expected ({weight.shape[0]},)")
        xp = xp_of(x)
        self.save_for_backward(x, weight)
        rows = x.reshape(-1, x.shape[-1])
        out = xp.matmul(rows, weight.T, out=memory.empty((rows.shape[0], weight.shape[0]),
                                                           xp.result_type(x.dtype, weight.dtype), xp))
        # (weight.T is a view: BLAS reads it transposed; out is 64-byte aligned for the passes after)
        if bias:
            out += bias[0]
        return out.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, grad):
        x, weight = self.saved_tensors
        xp = xp_of(x)
        rows = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_weight = grad_bias = None
        if self.needs_input_grad[0]:
            grad_x = xp.matmul(rows, weight).reshape(x.shape).astype(x.dtype, copy=False)
        if self.needs_input_grad[1]:
            grad_weight = xp.matmul(rows.T, x.reshape(-1, x.shape[-1])).astype(weight.dtype, copy=False)
        if len(self.parents) == 3 and self.needs_input_grad[2]:
            # the column sums as ones @ rows: a BLAS matrix-vector product, faster than sum(axis=0)
            grad_bias = (xp.ones(rows.shape[0], dtype=rows.dtype) @ rows).astype(self.parents[2].dtype, copy=False)
        return (grad_x, grad_weight) if len(self.parents) == 2 else (grad_x, grad_weight, grad_bias)

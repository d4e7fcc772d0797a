"""Matrix multiplication, the op that does nearly all of a transformer's work."""
from __future__ import annotations

from ..autograd import Function, unbroadcast
from ..backend import xp_of


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

"""Fused fast paths: composite ops as one ``Function`` with a hand-written backward.

``nn/functional.py`` builds softmax, cross-entropy, layer norm, GELU and attention
from primitive ops, so autograd differentiates them for free -- but every
primitive allocates its own output and saves its own inputs, and the graph has
a dozen nodes per call. Each class here computes the same thing in one node:

* forward works on raw backend arrays (``xp`` is numpy or cupy), reuses the
  arrays it allocated (``out=`` and in-place ops) and saves only what the
  backward formula needs;
* backward applies the derivative worked out on paper (in each docstring).

Everything is computed in the input dtype: float32 in, float32 out and float32
gradients. ``backward`` never writes into the arrays it saved (a graph kept
with ``retain_graph=True`` may be walked twice) nor into the incoming ``grad``.
The reference versions in ``nn/functional.py`` are the specification; the tests
check that both agree.

The array code of each op here is its math, plainly. Where a faster way
exists, one line hands the work to it: on the CPU ``cpu_kernels/`` (GELU,
layer norm and attention split into chunks that run on all cores at once;
``CPU_KERNELS = False`` runs the plain code instead, and the tests compare
the two), on the GPU a fused CUDA kernel from ``cuda_kernels`` (one
``if backend.is_cuda(x) and cuda_kernels.supports(...)`` per op): the array
code is then the kernel's *twin*, which the GPU tests compare it against.
What a kernel path saves for backward may differ from its twin's (e.g. the
GPU cross-entropy keeps the log-sum-exp instead of the probabilities), so
forward records the path it took and backward follows it.
"""
from __future__ import annotations

import math

import numpy

from . import backend, cuda_kernels
from .autograd import Function, unbroadcast
from .backend import xp_of
from .cpu_kernels import attention as cpu_attention
from .cpu_kernels import gelu as cpu_gelu
from .cpu_kernels import layer_norm as cpu_layer_norm
from .cpu_kernels import memory
from .ops.elementwise import erf_array
from .ops.reduce import normalize_axis


# The CPU fast paths (cpu_kernels/) for the ops that have one. False runs the plain array code of
# each op on the CPU too: the tests compare the two.
CPU_KERNELS = True


def _require_float(op: str, *arrays) -> None:
    """Fused ops compute in their input's float dtype; ints and mixed dtypes are caller bugs."""
    for array in arrays:
        if array.dtype.kind != "f":
            raise TypeError(f"{op}: expected floating point inputs, got dtype {array.dtype}")
    if len({array.dtype for array in arrays}) > 1:
        raise TypeError(f"{op}: inputs have different dtypes ({', '.join(str(a.dtype) for a in arrays)}); "
                        "cast them to one dtype first")


# ------------------------------------------------------------------ linear


class Linear(Function):
    """y = x W^T + b  for x (..., in), W (out, in), b (out,) -- a whole Linear layer in one op.

    dL/dx = g W,   dL/dW = g^T x,   dL/db = sum of g over every leading position
    (with g = dL/dy and the leading axes of x and g flattened into rows).

    The composition ``x @ W.transpose(0, 1) + b`` gives the same numbers (it is
    ``F.linear_reference``, the twin), but costs a transpose op, a separate bias add with
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


# ------------------------------------------------------------------ softmax


class Softmax(Function):
    """y = softmax(x) along ``axis``:  y_i = e^(x_i - m) / sum_j e^(x_j - m),  m = max_j x_j.

    Subtracting m changes nothing mathematically but keeps e^... <= 1, so
    large logits cannot overflow.

    Backward: dy_i/dx_k = y_i (delta_ik - y_k), so for an upstream gradient g

        dx = y * (g - sum(g * y))        (the sum along ``axis``, kept for broadcasting)
    """

    def forward(self, x, axis=-1):
        _require_float("softmax", x)
        xp = xp_of(x)
        self.axis = normalize_axis(axis, x.ndim, "softmax")
        self.on_gpu = backend.is_cuda(x) and cuda_kernels.supports(x, last_axis=self.axis)
        if self.on_gpu:
            y = cuda_kernels.softmax_forward(x, log=False)
            self.save_for_backward(y)
            return y
        if x.size == 0:  # nothing to normalise (and max() over an empty axis has no answer)
            self.save_for_backward(x)
            return x.copy()
        y = x - x.max(axis=self.axis, keepdims=True)
        xp.exp(y, out=y)
        y /= y.sum(axis=self.axis, keepdims=True)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        (y,) = self.saved_tensors
        if self.on_gpu:
            return cuda_kernels.softmax_backward(y, grad, log=False)
        xp = xp_of(y)
        dx = grad * y
        weighted_sum = dx.sum(axis=self.axis, keepdims=True)
        xp.subtract(grad, weighted_sum, out=dx)
        dx *= y
        return dx


class LogSoftmax(Function):
    """y = log softmax(x) along ``axis``:  y_i = (x_i - m) - log sum_j e^(x_j - m),  m = max_j x_j.

    Backward: dy_i/dx_k = delta_ik - softmax(x)_k, and softmax(x) = e^y, so

        dx = g - e^y * sum(g)            (the sum along ``axis``)
    """

    def forward(self, x, axis=-1):
        _require_float("log_softmax", x)
        xp = xp_of(x)
        self.axis = normalize_axis(axis, x.ndim, "log_softmax")
        self.on_gpu = backend.is_cuda(x) and cuda_kernels.supports(x, last_axis=self.axis)
        if self.on_gpu:
            y = cuda_kernels.softmax_forward(x, log=True)
            self.save_for_backward(y)
            return y
        if x.size == 0:  # nothing to normalise (and max() over an empty axis has no answer)
            self.save_for_backward(x)
            return x.copy()
        y = x - x.max(axis=self.axis, keepdims=True)
        log_sum_exp = xp.log(xp.exp(y).sum(axis=self.axis, keepdims=True))
        y -= log_sum_exp
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        (y,) = self.saved_tensors
        if self.on_gpu:
            return cuda_kernels.softmax_backward(y, grad, log=True)
        xp = xp_of(y)
        dx = xp.exp(y)
        dx *= grad.sum(axis=self.axis, keepdims=True)
        xp.subtract(grad, dx, out=dx)
        return dx


# ------------------------------------------------------------ cross-entropy


class CrossEntropy(Function):
    """Cross-entropy of logits (N, C) against integer targets (N,).

    Per row n with target t_n (rows with t_n == ``ignore_index`` are skipped):

        loss_n = -log softmax(x_n)[t_n] = logsumexp(x_n) - x_n[t_n],
        logsumexp(x_n) = m_n + log sum_c e^(x_nc - m_n),   m_n = max_c x_nc

    With label smoothing e the target is (1 - e) onehot(t_n) + e / C instead of onehot(t_n)
    (as in torch), and since the target sums to 1:

        loss_n = logsumexp(x_n) - (1 - e) x_n[t_n] - (e / C) sum_c x_nc

    reduced by ``reduction``: "none" (loss_n, 0 for skipped rows), "sum", or
    "mean" (sum / number of kept rows; nan when every row is skipped, as in torch).

    Backward: d loss_n / d x_nc = softmax(x_n)_c - [c == t_n], so

        dx_n = (softmax(x_n) - onehot(t_n)) * w_n      (- ((1 - e) onehot(t_n) + e / C) with smoothing)

    with w_n = g (sum), g / count (mean) or g_n (none) for kept rows and
    w_n = 0 for skipped ones (so with every row skipped the gradient is 0, as in torch).
    Forward keeps the softmax it computes on the way to the log-sum-exp.

    Called as ``CrossEntropy.apply(logits, targets=..., ignore_index=..., reduction=..., label_smoothing=...)``
    with targets an integer array already checked to be in range (see
    ``functional.cross_entropy``); targets get no gradient, so they are no input.
    """

    def forward(self, logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        _require_float("cross_entropy", logits)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"cross_entropy: unknown reduction {reduction!r} (expected 'mean', 'sum' or 'none')")
        self.smoothing = label_smoothing  # the CUDA kernel knows no smoothing: the array code below does it
        self.on_gpu = backend.is_cuda(logits) and cuda_kernels.supports(logits) and label_smoothing == 0.0
        if self.on_gpu:
            return self._forward_gpu(logits, targets, ignore_index, reduction)
        xp = xp_of(logits)
        rows = xp.arange(logits.shape[0])
        keep = targets != ignore_index
        safe_targets = xp.where(keep, targets, 0)  # any valid class id: those rows are zeroed below

        row_max = logits.max(axis=1, keepdims=True)
        probs = logits - row_max
        xp.exp(probs, out=probs)
        sum_exp = probs.sum(axis=1, keepdims=True)
        probs /= sum_exp
        log_sum_exp = (xp.log(sum_exp) + row_max).reshape(-1)
        losses = log_sum_exp - (1.0 - label_smoothing) * logits[rows, safe_targets]
        if label_smoothing:
            losses -= (label_smoothing / logits.shape[1]) * logits.sum(axis=1)
        losses *= keep

        self.reduction = reduction
        self.count = int(keep.sum()) if reduction == "mean" else None
        self.save_for_backward(probs, rows, safe_targets, keep)
        if reduction == "none":
            return losses
        total = losses.sum()
        if reduction == "sum":
            return total
        if self.count == 0:  # 0/0 without numpy's divide warning
            return xp.full((), xp.nan, dtype=logits.dtype)
        return total / xp.asarray(self.count, dtype=logits.dtype)

    def backward(self, grad):
        if self.on_gpu:
            return self._backward_gpu(grad)
        probs, rows, safe_targets, keep = self.saved_tensors
        row_weight = keep.astype(probs.dtype)  # w_n before the upstream gradient
        if self.reduction == "mean":
            row_weight *= grad / max(self.count, 1)
        else:
            row_weight *= grad  # a scalar for "sum", one value per row for "none"
        dx = probs * row_weight[:, None]
        dx[rows, safe_targets] -= (1.0 - self.smoothing) * row_weight  # each row once: no repeated indices
        if self.smoothing:
            dx -= (self.smoothing / dx.shape[1]) * row_weight[:, None]
        return dx

    def _forward_gpu(self, logits, targets, ignore_index, reduction):
        """``cuda_kernels.cross_entropy_forward``: per-row losses and log-sum-exps, no (N, C) probabilities."""
        xp = xp_of(logits)
        logits = xp.ascontiguousarray(logits)
        targets = xp.ascontiguousarray(targets, dtype=xp.int64)
        keep = targets != ignore_index
        losses, log_sum_exp = cuda_kernels.cross_entropy_forward(logits, targets, ignore_index)
        self.reduction = reduction
        self.count = keep.sum().astype(logits.dtype)  # stays on the GPU: int() would wait for it
        self.save_for_backward(logits, targets, log_sum_exp, keep)
        if reduction == "none":
            return losses
        total = losses.sum()
        if reduction == "sum":
            return total
        return total / self.count  # 0/0 = nan when every row is skipped, as in torch (CuPy does not warn)

    def _backward_gpu(self, grad):
        """``cuda_kernels.cross_entropy_backward``: dx = (e^(x - lse) - onehot) * w in one pass."""
        logits, targets, log_sum_exp, keep = self.saved_tensors
        xp = xp_of(logits)
        row_weight = keep.astype(logits.dtype)
        if self.reduction == "mean":
            row_weight *= grad / xp.maximum(self.count, 1)
        else:
            row_weight *= grad
        return cuda_kernels.cross_entropy_backward(logits, targets, log_sum_exp, row_weight)


# --------------------------------------------------------------- layer norm


class LayerNorm(Function):
    """y = xhat * w + b over the last axis (size D), with

        mean = sum(x) / D,   var = sum((x - mean)^2) / D,   rstd = 1 / sqrt(var + eps),
        xhat = (x - mean) * rstd.

    Called as ``LayerNorm.apply(x, [weight], [bias], has_weight=..., has_bias=...)``:
    only the parameters that exist are passed, so a missing one costs nothing.

    Backward, with gw = g * w (just g without a weight) and means over the last axis:

        dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat))
        dw = sum(g * xhat),   db = sum(g)    (sums over every leading axis)

    (the two means come from differentiating through mean and rstd). Forward
    saves xhat, rstd and the weight; x itself is not needed again.
    """

    def forward(self, x, *params, has_weight=False, has_bias=False, eps=1e-5):
        _require_float("layer_norm", x, *params)
        xp = xp_of(x)
        params = list(params)
        weight = params.pop(0) if has_weight else None
        bias = params.pop(0) if has_bias else None
        self.has_weight, self.has_bias = has_weight, has_bias
        self.on_gpu = backend.is_cuda(x) and cuda_kernels.supports(x, weight, bias, last_axis=(x.ndim - 1,))
        if self.on_gpu:  # cuda_kernels.layer_norm_forward; saves x, mean, rstd (no (N, D) xhat)
            rows = xp.ascontiguousarray(x).reshape(-1, x.shape[-1])
            out, mean, rstd = cuda_kernels.layer_norm_forward(rows, weight, bias, eps)
            self.save_for_backward(rows, mean, rstd, weight)
            return out.reshape(x.shape)

        self.cpu_kernel = xp is numpy and CPU_KERNELS  # backward takes the same path
        if self.cpu_kernel:  # cpu_kernels/layer_norm.py: the same math, chunks of rows on the cores
            out, (xhat, rstd) = cpu_layer_norm.forward(x, weight, bias, eps)
            self.save_for_backward(xhat, rstd, weight)
            return out
        mean = x.mean(axis=-1, keepdims=True)
        rstd = 1.0 / xp.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + eps)
        xhat = (x - mean) * rstd
        out = xhat * weight if weight is not None else xhat.copy()
        if bias is not None:
            out += bias
        self.save_for_backward(xhat, rstd, weight)
        return out

    def backward(self, grad):
        if self.on_gpu:
            rows, mean, rstd, weight = self.saved_tensors
            grad_rows = xp_of(grad).ascontiguousarray(grad).reshape(rows.shape)
            grad_x, grad_weight, grad_bias = cuda_kernels.layer_norm_backward(
                rows, grad_rows, mean, rstd, weight, need_x=self.needs_input_grad[0],
                need_weight=self.has_weight and self.needs_input_grad[1],
                need_bias=self.has_bias and self.needs_input_grad[-1])
            grad_x = grad_x.reshape(grad.shape) if grad_x is not None else None
            return (grad_x,) + ((grad_weight,) if self.has_weight else ()) + ((grad_bias,) if self.has_bias else ())
        xhat, rstd, weight = self.saved_tensors
        # inputs are (x, [weight], [bias]): the weight, when there is one, is second, the bias last.
        need_x = self.needs_input_grad[0]
        need_weight = self.has_weight and self.needs_input_grad[1]
        need_bias = self.has_bias and self.needs_input_grad[-1]
        if self.cpu_kernel:  # xhat (rows, D) and rstd (rows, 1), as the CPU kernel saved them
            grad_x, grad_weight, grad_bias = cpu_layer_norm.backward(xhat, rstd, weight, grad,
                                                                     need_x, need_weight, need_bias)
        else:
            leading = tuple(range(grad.ndim - 1))
            grad_weight = (grad * xhat).sum(axis=leading) if need_weight else None   # dw = sum(g * xhat)
            grad_bias = grad.sum(axis=leading) if need_bias else None                 # db = sum(g)
            gw = grad * weight if weight is not None else grad
            grad_x = (rstd * (gw - gw.mean(axis=-1, keepdims=True)
                              - xhat * (gw * xhat).mean(axis=-1, keepdims=True))) if need_x else None
        return (grad_x,) + ((grad_weight,) if self.has_weight else ()) + ((grad_bias,) if self.has_bias else ())


# --------------------------------------------------------------- batch norm


class BatchNorm(Function):
    """Training-mode batch norm: y = xhat * w + b per channel (axis 1), with the statistics over the
    other ``axes`` (n values per channel: the batch, and L for (N, C, L)):

        mean = sum(x) / n,   var = sum((x - mean)^2) / n,   rstd = 1 / sqrt(var + eps),
        xhat = (x - mean) * rstd.

    Called as ``BatchNorm.apply(x, [weight], [bias], axes=..., has_weight=..., has_bias=...)``;
    returns ``(y, mean, var)``: the (C,) batch statistics come out too, so that ``F.batch_norm``
    can move the running statistics (they are outputs for that only; they carry no gradient).

    Backward: layer norm's formula with the means taken over ``axes`` instead of the last axis
    (makemore part 4 derives it by hand). With gw = g * w and means over ``axes``,

        dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat))
        dw = sum(g * xhat),   db = sum(g)    (sums over ``axes``)
    """

    def forward(self, x, *params, axes=(0,), has_weight=False, has_bias=False, eps=1e-5):
        _require_float("batch_norm", x, *params)
        params = list(params)
        weight = params.pop(0) if has_weight else None
        bias = params.pop(0) if has_bias else None
        self.has_weight, self.has_bias, self.axes = has_weight, has_bias, tuple(axes)
        per_channel = (1, x.shape[1]) + (1,) * (x.ndim - 2)  # (C,) arrays broadcast against x
        mean = x.mean(axis=self.axes, keepdims=True)
        centered = x - mean
        var = (centered * centered).mean(axis=self.axes, keepdims=True)
        rstd = 1.0 / xp_of(x).sqrt(var + eps)
        xhat = centered * rstd
        weight = None if weight is None else weight.reshape(per_channel)
        out = xhat * weight if weight is not None else xhat.copy()
        if bias is not None:
            out += bias.reshape(per_channel)
        self.save_for_backward(xhat, rstd, weight)
        return out, mean.reshape(-1), var.reshape(-1)

    def backward(self, grad, grad_mean=None, grad_var=None):
        if grad_mean is not None or grad_var is not None:
            raise RuntimeError("batch_norm: the batch statistics it returns are not differentiable; "
                               "compute x.mean() / x.var() yourself to backpropagate through them")
        xhat, rstd, weight = self.saved_tensors
        need_x = self.needs_input_grad[0]
        need_weight = self.has_weight and self.needs_input_grad[1]
        need_bias = self.has_bias and self.needs_input_grad[-1]
        grad_weight = (grad * xhat).sum(axis=self.axes) if need_weight else None   # dw = sum(g * xhat)
        grad_bias = grad.sum(axis=self.axes) if need_bias else None                 # db = sum(g)
        gw = grad * weight if weight is not None else grad
        grad_x = (rstd * (gw - gw.mean(axis=self.axes, keepdims=True)
                          - xhat * (gw * xhat).mean(axis=self.axes, keepdims=True))) if need_x else None
        return (grad_x,) + ((grad_weight,) if self.has_weight else ()) + ((grad_bias,) if self.has_bias else ())


# --------------------------------------------------------------------- GELU

GELU_C = math.sqrt(2.0 / math.pi)  # GELU's constants, for every twin (nn/functional.py, gpt/generation.py)
GELU_K = 0.044715


class Gelu(Function):
    """GELU, tanh approximation (GPT-2's; torch's ``gelu(approximate="tanh")``):

        y = x s,   s = (1 + t) / 2,   t = tanh(u),   u = c (x + k x^3),   c = sqrt(2/pi),  k = 0.044715

    Backward, with du/dx = c (1 + 3 k x^2) and dtanh(u)/du = 1 - t^2 = 4 s (1 - s):

        dy/dx = s + x ds/dx = s + s (1 - s) (2 c x + 6 c k x^3)

    Forward saves x and s, so backward needs no second tanh; written in s,
    the derivative takes two passes over the data fewer than written in t.
    """

    def forward(self, x):
        _require_float("gelu", x)
        self.on_gpu = backend.is_cuda(x) and cuda_kernels.supports(x)
        if self.on_gpu:  # cuda_kernels.gelu_forward; saves only x (backward recomputes the tanh)
            self.save_for_backward(x)
            return cuda_kernels.gelu_forward(x)
        xp = xp_of(x)
        self.cpu_kernel = xp is numpy and CPU_KERNELS  # backward takes the same path
        if self.cpu_kernel:  # cpu_kernels/gelu.py: the same passes, in chunks on the cores
            out, s = cpu_gelu.forward(x, GELU_C, GELU_K)
        else:
            s = 0.5 * (1.0 + xp.tanh(GELU_C * (x + GELU_K * x * x * x)))
            out = x * s
        self.save_for_backward(x, s)
        return out

    def backward(self, grad):
        if self.on_gpu:
            (x,) = self.saved_tensors
            return cuda_kernels.gelu_backward(x, grad)
        x, s = self.saved_tensors
        if self.cpu_kernel:
            return cpu_gelu.backward(x, s, grad, GELU_C, GELU_K)
        return grad * (s + s * (1.0 - s) * (2.0 * GELU_C * x + 6.0 * GELU_C * GELU_K * x * x * x))


SQRT_HALF = math.sqrt(0.5)  # exact GELU's constants (for its twin in nn/functional.py too)
ONE_OVER_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GeluErf(Function):
    """GELU, exact (torch's default ``gelu``): y = x Phi(x), with Phi the standard normal CDF,

        Phi(x) = (1 + erf(x / sqrt(2))) / 2,   phi(x) = Phi'(x) = e^(-x^2 / 2) / sqrt(2 pi)

    Backward: dy/dx = Phi(x) + x phi(x). Forward saves x and Phi; erf is ``ops.elementwise.erf_array``.
    """

    def forward(self, x):
        _require_float("gelu", x)
        cdf = (0.5 * (1.0 + erf_array(x * SQRT_HALF))).astype(x.dtype, copy=False)
        self.save_for_backward(x, cdf)
        return x * cdf

    def backward(self, grad):
        x, cdf = self.saved_tensors
        density = xp_of(x).exp(-0.5 * x * x) * ONE_OVER_SQRT_2PI
        return grad * (cdf + x * density)


# ---------------------------------------------------------------- attention


class SplitHeads(Function):
    """q, k, v = the attention projection split into queries, keys and values, each as heads.

    qkv is (B, T, 3C): for every position the C query features, then the C key
    features, then the C value features, each C = n_head x head_size. Forward
    returns three views (no copy), each (B, n_head, T, head_size): the heads
    become a batch axis, as attention wants them.

    Backward is the same bookkeeping in reverse: each piece's gradient goes back
    to its place in a (B, T, 3C) array (zeros for a piece the loss does not use).
    Attention's CPU kernel already writes dQ, dK and dV into one such array, so
    there the array is returned as it is and nothing is copied.
    """

    def forward(self, qkv, n_head):
        B, T, three_c = qkv.shape
        if three_c % (3 * n_head):
            raise ValueError(f"split_heads: last axis {three_c} of shape {qkv.shape} is not 3 x n_head ({n_head}) "
                             "x head_size")
        self.shape, self.dtype, self.n_head = qkv.shape, qkv.dtype, n_head
        heads = qkv.reshape(B, T, 3, n_head, three_c // (3 * n_head))    # (B, T, 3, nh, hs)
        return tuple(heads[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # 3 x (B, nh, T, hs)

    def backward(self, grad_q, grad_k, grad_v):
        grads = (grad_q, grad_k, grad_v)
        if CPU_KERNELS and all(g is not None and g.__class__ is numpy.ndarray for g in grads):
            packed = cpu_attention.packed_qkv_gradient(grads, self.shape)  # None unless already side by side
            if packed is not None:
                return packed
        B, T, three_c = self.shape
        xp = xp_of(next(g for g in grads if g is not None))
        grad_qkv = xp.empty(self.shape, dtype=self.dtype)
        heads = grad_qkv.reshape(B, T, 3, self.n_head, three_c // (3 * self.n_head))
        for i, grad in enumerate(grads):
            heads[:, :, i] = 0 if grad is None else grad.transpose(0, 2, 1, 3)  # (B, nh, T, hs) -> (B, T, nh, hs)
        return grad_qkv



class ScaledDotProductAttention(Function):
    """out = P V  with  P = softmax(S),  S = Q K^T * s (+ causal mask),  s = 1/sqrt(D).

    Q is (..., Tq, D), K is (..., Tk, D), V is (..., Tk, Dv); batch dims
    broadcast as in matmul. With ``is_causal`` query i sees keys 0..i only
    (top-left aligned, as in torch): S_ij = -inf for j > i, so P_ij = 0.

    Backward, for an upstream gradient G = dL/dout (..., Tq, Dv):

        dV = P^T G
        dP = G V^T
        dS = P * (dP - rowsum(dP * P))          (softmax backward, row by row)
        dQ = dS K s,   dK = dS^T Q s

    rowsum(dP * P)_i = sum_j (G_i . V_j) P_ij = G_i . out_i, so it is computed
    from G and the output (Tq x Dv) instead of from the bigger Tq x Tk dP.

    The code below is that math on arrays. Fast paths do the same work: on the
    CPU ``cpu_kernels/attention.py`` (the work split over the cores, the masked
    triangle skipped), on the GPU the kernels of ``cuda_kernels`` (flash
    attention, or cuBLAS with one fused softmax kernel).
    """

    def forward(self, q, k, v, is_causal=False):
        _require_float("scaled_dot_product_attention", q, k, v)
        xp = xp_of(q)
        self.scale, self.is_causal = 1.0 / math.sqrt(q.shape[-1]), is_causal
        self.algorithm = attention_algorithm(q, k, v)
        if self.algorithm == "cpu":
            out, self.cpu_state = cpu_attention.forward(q, k, v, self.scale, is_causal)
            return out
        if self.algorithm == "flash":  # tiled kernels, no Tq x Tk matrix
            out, log_sum_exp = cuda_kernels.flash_attention_forward(q, k, v, self.scale, is_causal)
            self.save_for_backward(q, k, v, out, log_sum_exp)
            return out
        scores = xp.matmul(q, k.swapaxes(-1, -2))                 # S / s, (..., Tq, Tk)
        if self.algorithm == "fused_softmax":  # scale, mask and softmax in one kernel, in place
            cuda_kernels.attention_softmax_forward(scores, self.scale, is_causal)
            probs = scores
        else:
            scores *= self.scale
            if is_causal:  # -inf where key j comes after query i
                scores[..., xp.triu(xp.ones(scores.shape[-2:], dtype=bool), k=1)] = -xp.inf
            probs = xp.exp(scores - scores.max(axis=-1, keepdims=True))
            probs /= probs.sum(axis=-1, keepdims=True)            # P = softmax(S)
        out = xp.matmul(probs, v)                                   # (..., Tq, Dv)
        self.save_for_backward(q, k, v, probs, out)
        return out

    def backward(self, grad):
        needs = self.needs_input_grad
        if self.algorithm == "cpu":
            return cpu_attention.backward(self.cpu_state, grad, needs, self.scale)
        if self.algorithm == "flash":  # P is recomputed tile by tile from q, k and the log-sum-exp
            q, k, v, out, log_sum_exp = self.saved_tensors
            grads = cuda_kernels.flash_attention_backward(q, k, v, out, log_sum_exp, grad, self.scale, self.is_causal)
            return tuple(g if need else None for g, need in zip(grads, needs))
        q, k, v, probs, out = self.saved_tensors
        xp = xp_of(q)
        grad_v = unbroadcast(xp.matmul(probs.swapaxes(-1, -2), grad), v.shape) if needs[2] else None  # P^T G
        if not (needs[0] or needs[1]):
            return None, None, grad_v
        d_scores = xp.matmul(grad, v.swapaxes(-1, -2))                          # dP = G V^T
        row_sums = (grad * out).sum(axis=-1)                                    # rowsum(dP * P) = G . out
        if self.algorithm == "fused_softmax":  # dS * s, in place
            cuda_kernels.attention_softmax_backward(d_scores, probs, row_sums, self.scale)
        else:
            d_scores = probs * (d_scores - row_sums[..., None]) * self.scale   # dS * s
        grad_q = unbroadcast(xp.matmul(d_scores, k), q.shape) if needs[0] else None                 # dS K s
        grad_k = unbroadcast(xp.matmul(d_scores.swapaxes(-1, -2), q), k.shape) if needs[1] else None  # dS^T Q s
        return grad_q, grad_k, grad_v


def attention_algorithm(q, k, v) -> str:
    """Which path attention takes: "cpu" (cpu_kernels/attention.py) for NumPy arrays; on the GPU
    "flash" or "fused_softmax" (see cuda_kernels), or "plain" (the code above, on CuPy arrays).
    One query per row (a KV-cache decode step) takes the plain code: too little work to share out."""
    if not backend.is_cuda(q):
        return "cpu" if CPU_KERNELS and q.shape[-2] > 1 else "plain"
    return cuda_kernels.attention_algorithm(q, k, v) or "plain"


# ------------------------------------------------- flash attention, tiled twin
# Not used by the CPU path (ScaledDotProductAttention above is faster there):
# this is the NumPy twin of the CUDA flash kernels, the same algorithm written
# with array ops, so that CPU CI checks the algorithm and a learner can read it.


def flash_attention_tiled(q, k, v, is_causal: bool = False, tile: int = 16):
    """Attention the way ``cuda_kernels.flash_attention_forward`` computes it: key tiles, online softmax.

    q (..., Tq, D), k (..., Tk, D), v (..., Tk, Dv) with equal leading dims.
    Only a (Tq x tile) block of scores exists at a time. For each tile of keys
    K_t, V_t (the kernel runs one thread per query; here all queries advance
    together):

        S = Q K_t^T * s              (s = 1/sqrt(D); S_ij = -inf for j > i when causal)
        m_new = max(m, rowmax(S)),   c = e^(m - m_new)          (c = 0 on the first tile: m = -inf)
        l   = l * c + rowsum(e^(S - m_new))
        acc = acc * c + e^(S - m_new) V_t,    m = m_new

    and finally out = acc / l, lse = m + log l. (Key 0 is in the first tile and
    every query sees it, so m is finite from then on.) Returns (out, lse).
    """
    xp = xp_of(q)
    scale = 1.0 / math.sqrt(q.shape[-1])
    queries, keys = q.shape[-2], k.shape[-2]
    m = xp.full(q.shape[:-1] + (1,), -xp.inf, dtype=q.dtype)
    total = xp.zeros_like(m)
    acc = xp.zeros(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)
    for start in range(0, keys, tile):
        stop = min(start + tile, keys)
        scores = xp.matmul(q, k[..., start:stop, :].swapaxes(-1, -2)) * scale
        if is_causal:
            future = xp.arange(start, stop)[None, :] > xp.arange(queries)[:, None]
            scores = xp.where(future, -xp.inf, scores).astype(q.dtype, copy=False)
        m_new = xp.maximum(m, scores.max(axis=-1, keepdims=True))
        correction = xp.exp(m - m_new)
        p = xp.exp(scores - m_new)
        total = total * correction + p.sum(axis=-1, keepdims=True)
        acc = acc * correction + xp.matmul(p, v[..., start:stop, :])
        m = m_new
    return acc / total, (m + xp.log(total))[..., 0]


def flash_attention_tiled_backward(q, k, v, out, lse, grad, is_causal: bool = False, tile: int = 16):
    """dQ, dK, dV from the saved lse, recomputing P one key tile at a time (twin of ``flash_attention_backward``).

        delta = rowsum(dO * out)
        for each key tile t:   P   = e^(Q K_t^T s - lse)      (0 where masked)
                               dV_t = P^T dO,   dP = dO V_t^T,   dS = P (dP - delta) s
                               dK_t = dS^T Q,   dQ += dS K_t

    (The CUDA version computes dK, dV with one thread per key and dQ with one
    thread per query, so it needs no atomics; the sums are the same.)
    """
    xp = xp_of(q)
    scale = 1.0 / math.sqrt(q.shape[-1])
    queries, keys = q.shape[-2], k.shape[-2]
    delta = (grad * out).sum(axis=-1, keepdims=True)
    grad_q, grad_k, grad_v = xp.zeros_like(q), xp.zeros_like(k), xp.zeros_like(v)
    for start in range(0, keys, tile):
        stop = min(start + tile, keys)
        k_tile, v_tile = k[..., start:stop, :], v[..., start:stop, :]
        probs = xp.exp(xp.matmul(q, k_tile.swapaxes(-1, -2)) * scale - lse[..., None])
        if is_causal:
            probs = xp.where(xp.arange(start, stop)[None, :] > xp.arange(queries)[:, None], 0.0, probs)
            probs = probs.astype(q.dtype, copy=False)
        grad_v[..., start:stop, :] = xp.matmul(probs.swapaxes(-1, -2), grad)
        grad_scores = probs * (xp.matmul(grad, v_tile.swapaxes(-1, -2)) - delta) * scale
        grad_k[..., start:stop, :] = xp.matmul(grad_scores.swapaxes(-1, -2), q)
        grad_q += xp.matmul(grad_scores, k_tile)
    return grad_q, grad_k, grad_v

"""Fused fast paths: composite ops as one ``Function`` with a hand-written backward.

``functional.py`` builds softmax, cross-entropy, layer norm, GELU and attention
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
The reference versions in ``functional.py`` are the specification; the tests
check that both agree.
"""
from __future__ import annotations

import math

from .autograd import Function, unbroadcast
from .backend import xp_of
from .ops.reduce import normalize_axis


def _require_float(op: str, *arrays) -> None:
    """Fused ops compute in their input's float dtype; ints and mixed dtypes are caller bugs."""
    for array in arrays:
        if array.dtype.kind != "f":
            raise TypeError(f"{op}: expected floating point inputs, got dtype {array.dtype}")
    if len({array.dtype for array in arrays}) > 1:
        raise TypeError(f"{op}: inputs have different dtypes ({', '.join(str(a.dtype) for a in arrays)}); "
                        "cast them to one dtype first")


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
        y = x - x.max(axis=self.axis, keepdims=True)
        xp.exp(y, out=y)
        y /= y.sum(axis=self.axis, keepdims=True)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        (y,) = self.saved_tensors
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
        y = x - x.max(axis=self.axis, keepdims=True)
        log_sum_exp = xp.log(xp.exp(y).sum(axis=self.axis, keepdims=True))
        y -= log_sum_exp
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        (y,) = self.saved_tensors
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

    reduced by ``reduction``: "none" (loss_n, 0 for skipped rows), "sum", or
    "mean" (sum / number of kept rows; nan when every row is skipped, as in torch).

    Backward: d loss_n / d x_nc = softmax(x_n)_c - [c == t_n], so

        dx_n = (softmax(x_n) - onehot(t_n)) * w_n

    with w_n = g (sum), g / count (mean) or g_n (none) for kept rows and
    w_n = 0 for skipped ones (so with every row skipped the gradient is 0, as in torch).
    Forward keeps the softmax it computes on the way to the log-sum-exp.

    Called as ``CrossEntropy.apply(logits, targets=..., ignore_index=..., reduction=...)``
    with targets an integer array already checked to be in range (see
    ``functional.cross_entropy``); targets get no gradient, so they are no input.
    """

    def forward(self, logits, targets, ignore_index=-100, reduction="mean"):
        _require_float("cross_entropy", logits)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"cross_entropy: unknown reduction {reduction!r} (expected 'mean', 'sum' or 'none')")
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
        losses = log_sum_exp - logits[rows, safe_targets]
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
        probs, rows, safe_targets, keep = self.saved_tensors
        xp = xp_of(probs)
        row_weight = keep.astype(probs.dtype)  # w_n before the upstream gradient
        if self.reduction == "mean":
            row_weight *= grad / max(self.count, 1)
        else:
            row_weight *= grad  # a scalar for "sum", one value per row for "none"
        dx = probs * row_weight[:, None]
        dx[rows, safe_targets] -= row_weight  # each row once: no repeated indices
        return dx


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

        xhat = x - x.mean(axis=-1, keepdims=True)
        out = xp.multiply(xhat, xhat)  # scratch for the variance; becomes the output below
        rstd = out.mean(axis=-1, keepdims=True)
        rstd += eps
        xp.sqrt(rstd, out=rstd)
        xp.reciprocal(rstd, out=rstd)
        xhat *= rstd
        if weight is not None:
            xp.multiply(xhat, weight, out=out)
        else:
            out[...] = xhat  # a copy: the output must not alias the saved xhat
        if bias is not None:
            out += bias
        self.save_for_backward(xhat, rstd, weight)
        return out

    def backward(self, grad):
        xhat, rstd, weight = self.saved_tensors
        xp = xp_of(xhat)
        size = xhat.shape[-1]
        g_xhat = grad * xhat
        # inputs are (x, [weight], [bias]): the weight, when there is one, is second, the bias last
        grad_weight = g_xhat.reshape(-1, size).sum(axis=0) if self.has_weight and self.needs_input_grad[1] else None
        grad_bias = grad.reshape(-1, size).sum(axis=0) if self.has_bias and self.needs_input_grad[-1] else None
        grad_x = self._grad_x(xp, grad, g_xhat, xhat, rstd, weight) if self.needs_input_grad[0] else None
        return (grad_x,) + ((grad_weight,) if self.has_weight else ()) + ((grad_bias,) if self.has_bias else ())

    @staticmethod
    def _grad_x(xp, grad, g_xhat, xhat, rstd, weight):
        """dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)); overwrites g_xhat."""
        size = xhat.shape[-1]
        if weight is not None:
            # sum_i a_i w_i is the matrix-vector product a @ w: BLAS does it with no temporary a * w
            mean_gw = (grad @ weight)[..., None] / size
            mean_gw_xhat = (g_xhat @ weight)[..., None] / size
        else:
            mean_gw = grad.mean(axis=-1, keepdims=True)
            mean_gw_xhat = g_xhat.mean(axis=-1, keepdims=True)
        correction = xhat * mean_gw_xhat
        correction += mean_gw
        dx = g_xhat  # reuse its memory: g * xhat is not needed any more
        if weight is not None:
            xp.multiply(grad, weight, out=dx)
        else:
            dx[...] = grad
        dx -= correction
        dx *= rstd
        return dx


# --------------------------------------------------------------------- GELU

_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_K = 0.044715


class Gelu(Function):
    """GELU, tanh approximation (GPT-2's; torch's ``gelu(approximate="tanh")``):

        y = 0.5 x (1 + t),   t = tanh(u),   u = c (x + k x^3),   c = sqrt(2/pi),  k = 0.044715

    Backward, with du/dx = c (1 + 3 k x^2) and dtanh(u)/du = 1 - t^2:

        dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 k x^2)

    Forward saves x and t, so backward needs no second tanh.
    """

    def forward(self, x):
        _require_float("gelu", x)
        xp = xp_of(x)
        shape = x.shape
        if x.ndim == 0:  # numpy turns 0-d results into scalars, which take no out=: use a 1-element view
            x = x.reshape(1)
        t = x * x
        t *= _GELU_K
        t += 1.0
        t *= x
        t *= _GELU_C  # u = c x (1 + k x^2)
        xp.tanh(t, out=t)
        out = t + 1.0
        out *= x
        out *= 0.5
        self.save_for_backward(x, t)
        return out.reshape(shape)

    def backward(self, grad):
        x, t = self.saved_tensors
        xp = xp_of(x)
        dx = x * x
        dx *= 3.0 * _GELU_K
        dx += 1.0
        dx *= x
        dx *= _GELU_C  # x du/dx
        one_minus_t2 = t * t
        xp.subtract(1.0, one_minus_t2, out=one_minus_t2)
        dx *= one_minus_t2
        dx += t
        dx += 1.0
        dx *= 0.5
        dx *= grad
        return dx.reshape(grad.shape)


# ---------------------------------------------------------------- attention


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
    Forward saves Q, K, V, P and the output.
    """

    def forward(self, q, k, v, is_causal=False):
        _require_float("scaled_dot_product_attention", q, k, v)
        xp = xp_of(q)
        self.scale = 1.0 / math.sqrt(q.shape[-1])
        scores = xp.matmul(q, k.swapaxes(-1, -2))
        scores *= self.scale
        if is_causal:
            queries, keys = scores.shape[-2:]
            future = xp.triu(xp.ones((queries, keys), dtype=bool), k=1)  # key j > query i
            scores += xp.where(future, -xp.inf, 0.0).astype(scores.dtype)  # one pass, broadcast over batch
        # softmax over the keys, in place: scores becomes P
        probs = scores
        probs -= probs.max(axis=-1, keepdims=True)  # key 0 is always visible: the max is finite
        xp.exp(probs, out=probs)
        probs /= probs.sum(axis=-1, keepdims=True)
        out = xp.matmul(probs, v)
        self.save_for_backward(q, k, v, probs, out)
        return out

    def backward(self, grad):
        q, k, v, probs, out = self.saved_tensors
        xp = xp_of(q)
        need_q, need_k, need_v = self.needs_input_grad
        grad_v = unbroadcast(xp.matmul(probs.swapaxes(-1, -2), grad), v.shape) if need_v else None
        if not (need_q or need_k):
            return None, None, grad_v

        grad_scores = xp.matmul(grad, v.swapaxes(-1, -2))  # dP, turned into dS * s in place
        grad_scores -= (grad * out).sum(axis=-1, keepdims=True)
        grad_scores *= probs
        grad_scores *= self.scale
        grad_q = unbroadcast(xp.matmul(grad_scores, k), q.shape) if need_q else None
        grad_k = unbroadcast(xp.matmul(grad_scores.swapaxes(-1, -2), q), k.shape) if need_k else None
        return grad_q, grad_k, grad_v

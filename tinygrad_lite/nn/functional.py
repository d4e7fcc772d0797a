"""Composite ops: softmax, cross-entropy, layer norm, GELU, attention, dropout, embedding.

Each op comes twice, side by side:

* ``<name>_reference`` -- plain Tensor code built only from primitive ops, so
  autograd differentiates it for free and a learner can read the math directly;
* ``<name>`` -- the public function: the same checks, then the fused fast path
  from ``tinygrad_lite.fused`` (one Function with a hand-written backward).

The tests check that the two agree, forward and backward. Under ``tl.reference_mode()`` the
public functions run the reference twins, so every backward is a primitive op's.
"""
from __future__ import annotations

import math

import numpy

from .. import backend, fused
from ..autograd import is_reference_mode
from ..ops.matmul import Linear as LinearFunction
from ..tensor import Tensor, embedding_lookup, where


def softmax_reference(x: Tensor, axis: int = -1) -> Tensor:
    """softmax(x)_i = e^(x_i - m) / sum_j e^(x_j - m), with m = max(x) for stability."""
    shifted = x - x.amax(axis, keepdim=True).detach()
    e = shifted.exp()
    return e / e.sum(axis=axis, keepdims=True)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """softmax along ``axis`` (fused: ``fused.Softmax``)."""
    if is_reference_mode():
        return softmax_reference(x, axis)
    return fused.Softmax.apply(x, axis=axis)


def log_softmax_reference(x: Tensor, axis: int = -1) -> Tensor:
    """log softmax(x)_i = (x_i - m) - log sum_j e^(x_j - m)."""
    shifted = x - x.amax(axis, keepdim=True).detach()
    return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """log softmax along ``axis`` (fused: ``fused.LogSoftmax``)."""
    if is_reference_mode():
        return log_softmax_reference(x, axis)
    return fused.LogSoftmax.apply(x, axis=axis)


def _target_array(targets, logits: Tensor):
    targets = targets.data if isinstance(targets, Tensor) else logits.xp.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integers, got dtype {targets.dtype}")
    if logits.ndim != 2 or targets.shape != (logits.shape[0],):
        raise ValueError(f"cross_entropy: expected logits (N, C) and targets (N,), "
                         f"got {logits.shape} and {tuple(targets.shape)}")
    return targets


def check_targets(targets, num_classes: int, ignore_index: int) -> None:
    """Targets must be class ids in [0, C) (or ``ignore_index``): anything else is a bug."""
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= num_classes))
    if bool(bad.any()):  # one check (one GPU sync); find the culprit only when there is one
        culprit = int(targets[bad][0])
        raise IndexError(f"cross_entropy: target {culprit} is out of range for {num_classes} classes "
                         f"(targets must be in [0, {num_classes}) or ignore_index={ignore_index})")


def cross_entropy_reference(logits: Tensor, targets, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """loss_n = -log softmax(logits_n)[target_n], averaged over targets != ignore_index."""
    targets = _target_array(targets, logits)
    check_targets(targets, logits.shape[1], ignore_index)
    xp = logits.xp
    keep = targets != ignore_index
    rows = xp.arange(logits.shape[0])
    picked = log_softmax_reference(logits, axis=-1)[rows, xp.where(keep, targets, 0)]
    losses = -picked * Tensor(keep.astype(logits.dtype))
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.sum() / int(keep.sum())  # 0/0 = nan when every target is ignored, as in torch
    raise ValueError(f"cross_entropy: unknown reduction {reduction!r} (expected 'mean', 'sum' or 'none')")


def cross_entropy(logits: Tensor, targets, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Cross-entropy of logits (N, C) and integer targets (N,) (fused: ``fused.CrossEntropy``)."""
    if is_reference_mode():
        return cross_entropy_reference(logits, targets, ignore_index, reduction)
    targets = _target_array(targets, logits)
    check_targets(targets, logits.shape[1], ignore_index)
    return fused.CrossEntropy.apply(logits, targets=targets, ignore_index=ignore_index, reduction=reduction)


def layer_norm_reference(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5) -> Tensor:
    """y = (x - mean) / sqrt(var + eps) * weight + bias, over the last axis (biased var)."""
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=-1, keepdims=True)
    y = centered / (var + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def layer_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Layer norm over the last axis, weight and bias of shape (D,) optional (fused: ``fused.LayerNorm``)."""
    if x.ndim == 0:
        raise ValueError("layer_norm: input must have at least one axis (it normalizes the last), got a 0-d tensor")
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and param.shape != x.shape[-1:]:
            raise ValueError(f"layer_norm: {name} has shape {param.shape}, expected {x.shape[-1:]} "
                             f"(the last axis of the input of shape {x.shape})")
    if is_reference_mode():
        return layer_norm_reference(x, weight, bias, eps)
    # Only the parameters that exist become inputs of the op (a None is not a Tensor).
    params = [p for p in (weight, bias) if p is not None]
    return fused.LayerNorm.apply(x, *params, has_weight=weight is not None, has_bias=bias is not None, eps=eps)


def gelu_reference(x: Tensor) -> Tensor:
    """GELU, tanh approximation (GPT-2's): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + (fused.GELU_C * (x + fused.GELU_K * x * x * x)).tanh())


def gelu(x: Tensor) -> Tensor:
    """GELU, tanh approximation (fused: ``fused.Gelu``)."""
    if is_reference_mode():
        return gelu_reference(x)
    return fused.Gelu.apply(x)


def split_heads_reference(qkv: Tensor, n_head: int) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v, each (B, n_head, T, head_size), from the (B, T, 3C) attention projection."""
    B, T, three_c = qkv.shape
    q, k, v = qkv.split(three_c // 3, axis=2)                     # 3 x (B, T, C)
    # (B, T, C) -> (B, T, n_head, head_size) -> (B, n_head, T, head_size): the heads become a batch axis
    return tuple(t.reshape(B, T, n_head, three_c // (3 * n_head)).transpose(1, 2) for t in (q, k, v))


def split_heads(qkv: Tensor, n_head: int) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v as heads from one (B, T, 3C) projection (fused: ``fused.SplitHeads``, no copy either way)."""
    if qkv.ndim != 3 or qkv.shape[2] % (3 * n_head):
        raise ValueError(f"split_heads: expected (B, T, 3 * C) with C divisible by n_head={n_head}, "
                         f"got shape {qkv.shape}")
    if is_reference_mode():
        return split_heads_reference(qkv, n_head)
    return fused.SplitHeads.apply(qkv, n_head=n_head)


def scaled_dot_product_attention_reference(q: Tensor, k: Tensor, v: Tensor, is_causal: bool = False) -> Tensor:
    """softmax(q k^T / sqrt(D) [+ causal mask]) v on (..., T, D) tensors.

    The causal mask lets query i see keys 0..i (top-left aligned, as in torch).
    """
    _check_attention_shapes(q, k, v)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if is_causal:
        allowed = q.xp.tril(q.xp.ones(scores.shape[-2:], dtype=bool))
        scores = scores.masked_fill(~allowed, -math.inf)
    return softmax_reference(scores, axis=-1) @ v


def _check_attention_shapes(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.ndim < 2 or k.ndim < 2 or k.shape[-1] != q.shape[-1] or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"scaled_dot_product_attention: incompatible shapes q {q.shape}, k {k.shape}, v {v.shape} "
                         "(expected (..., Tq, D), (..., Tk, D), (..., Tk, Dv))")
    if k.shape[-2] == 0:
        raise ValueError(f"scaled_dot_product_attention: no keys (k {k.shape}, v {v.shape}): "
                         "a softmax over zero keys is undefined")
    try:
        numpy.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    except ValueError:
        raise ValueError(f"scaled_dot_product_attention: batch dims of q {q.shape} and k {k.shape} "
                         "cannot be broadcast together") from None


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, is_causal: bool = False) -> Tensor:
    """softmax(q k^T / sqrt(D) [+ causal mask]) v (fused: ``fused.ScaledDotProductAttention``)."""
    if is_reference_mode():
        return scaled_dot_product_attention_reference(q, k, v, is_causal)
    _check_attention_shapes(q, k, v)
    return fused.ScaledDotProductAttention.apply(q, k, v, is_causal=is_causal)


# ------------------------------------------------------- no fused version
# (one elementwise multiply or one gather already is a single fast op)

def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (identity when not training)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = backend.generator(x.device).random(x.shape, dtype=numpy.float32) >= p
    return x * Tensor(keep.astype(x.dtype) * x.xp.asarray(1.0 / (1.0 - p), dtype=x.dtype))


def linear_reference(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, composed from primitives (the twin of the fused ``linear``)."""
    y = x @ weight.transpose(0, 1)
    return y if bias is None else y + bias


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b for x (..., in), weight (out, in), bias (out,) or None: one fused op."""
    if is_reference_mode():
        return linear_reference(x, weight, bias)
    if bias is None:
        return LinearFunction.apply(x, weight)
    return LinearFunction.apply(x, weight, bias)


def embedding(indices, weight: Tensor) -> Tensor:
    """Rows of ``weight`` (num_embeddings, dim) picked by integer ``indices``."""
    return embedding_lookup(indices, weight)


__all__ = ["softmax", "log_softmax", "cross_entropy", "layer_norm", "gelu", "dropout", "embedding", "linear",
           "scaled_dot_product_attention", "where"]

"""Composite ops: softmax, cross-entropy, layer norm, GELU, attention, dropout, embedding, batch norm.

This is ``tinygrad_lite.nn.functional``, spelled as ``torch.nn.functional`` (``F.softmax(x, dim=-1)``,
``F.cross_entropy(logits, targets, ignore_index=-1)``); ``tinygrad_lite.functional`` is the same module.

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

from .. import amp, backend, fused
from ..autograd import is_reference_mode, no_grad
from ..ops.elementwise import Erf
from ..tensor import Tensor, _numpy_spellings, cat, embedding_lookup, where


def softmax_reference(x: Tensor, dim: int = -1, **numpy_names) -> Tensor:
    """softmax(x)_i = e^(x_i - m) / sum_j e^(x_j - m), with m = max(x) for stability."""
    dim, _ = _numpy_spellings("softmax", numpy_names, dim, -1)
    shifted = x - x.amax(dim, keepdim=True).detach()
    e = shifted.exp()
    return e / e.sum(dim, keepdim=True)


def softmax(x: Tensor, dim: int = -1, dtype=None, **numpy_names) -> Tensor:
    """softmax along ``dim`` (``axis=`` also works), in ``dtype`` if given (fused: ``fused.Softmax``)."""
    dim, _ = _numpy_spellings("softmax", numpy_names, dim, -1)
    x = x if dtype is None else x.astype(dtype)
    x, = amp.float32_inputs(x)  # under autocast: float16 in, float32 out (a sum of exps needs the range)
    if is_reference_mode():
        return softmax_reference(x, dim)
    return fused.Softmax.apply(x, axis=dim)


def log_softmax_reference(x: Tensor, dim: int = -1, **numpy_names) -> Tensor:
    """log softmax(x)_i = (x_i - m) - log sum_j e^(x_j - m)."""
    dim, _ = _numpy_spellings("log_softmax", numpy_names, dim, -1)
    shifted = x - x.amax(dim, keepdim=True).detach()
    return shifted - shifted.exp().sum(dim, keepdim=True).log()


def log_softmax(x: Tensor, dim: int = -1, dtype=None, **numpy_names) -> Tensor:
    """log softmax along ``dim`` (``axis=`` also works) (fused: ``fused.LogSoftmax``)."""
    dim, _ = _numpy_spellings("log_softmax", numpy_names, dim, -1)
    x = x if dtype is None else x.astype(dtype)
    x, = amp.float32_inputs(x)  # under autocast: float16 in, float32 out
    if is_reference_mode():
        return log_softmax_reference(x, dim)
    return fused.LogSoftmax.apply(x, axis=dim)


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


def cross_entropy_reference(logits: Tensor, targets, ignore_index: int = -100, reduction: str = "mean",
                            label_smoothing: float = 0.0) -> Tensor:
    """loss_n = -sum_c q_nc log softmax(logits_n)_c, averaged over targets != ignore_index, with
    q_n = onehot(target_n) (1 - label_smoothing) + label_smoothing / C."""
    targets = _target_array(targets, logits)
    check_targets(targets, logits.shape[1], ignore_index)
    xp = logits.xp
    keep = targets != ignore_index
    rows = xp.arange(logits.shape[0])
    log_probs = log_softmax_reference(logits, dim=-1)
    picked = log_probs[rows, xp.where(keep, targets, 0)]
    if label_smoothing:
        picked = (1.0 - label_smoothing) * picked + (label_smoothing / logits.shape[1]) * log_probs.sum(dim=1)
    losses = -picked * Tensor(keep.astype(logits.dtype))
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.sum() / int(keep.sum())  # 0/0 = nan when every target is ignored, as in torch
    raise ValueError(f"cross_entropy: unknown reduction {reduction!r} (expected 'mean', 'sum' or 'none')")


def cross_entropy(logits: Tensor, targets, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits (N, C) and integer targets (N,) (fused: ``fused.CrossEntropy``), as torch's.

    Logits (N, C, d1, ...) with targets (N, d1, ...) work too (C is moved last and the rest
    flattened). Class weights (``weight``) and probability targets are not implemented.
    """
    if weight is not None:
        raise NotImplementedError("cross_entropy: class weights (weight=) are not implemented")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if logits.ndim > 2:  # (N, C, d1, ...) -> (N * d1 * ..., C), the losses back to (N, d1, ...) at the end
        spatial = (logits.shape[0],) + logits.shape[2:]
        moved = logits.permute(0, *range(2, logits.ndim), 1).reshape(-1, logits.shape[1])
        flat_targets = (targets if isinstance(targets, Tensor) else Tensor(logits.xp.asarray(targets))).reshape(-1)
        loss = cross_entropy(moved, flat_targets, None, ignore_index, reduction, label_smoothing)
        return loss.reshape(spatial) if reduction == "none" else loss
    logits, = amp.float32_inputs(logits)  # under autocast: the loss from float32 logits
    if is_reference_mode():
        return cross_entropy_reference(logits, targets, ignore_index, reduction, label_smoothing)
    targets = _target_array(targets, logits)
    check_targets(targets, logits.shape[1], ignore_index)
    return fused.CrossEntropy.apply(logits, targets=targets, ignore_index=ignore_index, reduction=reduction,
                                    label_smoothing=float(label_smoothing))


def layer_norm_reference(x: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
                         eps: float = 1e-5) -> Tensor:
    """y = (x - mean) / sqrt(var + eps) * weight + bias, over the last len(normalized_shape) dims (biased var)."""
    dims = tuple(range(-len(_shape_tuple(normalized_shape)), 0))
    mean = x.mean(dims, keepdim=True)
    centered = x - mean
    var = (centered * centered).mean(dims, keepdim=True)
    y = centered / (var + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _shape_tuple(shape) -> tuple:
    return (int(shape),) if isinstance(shape, int) else tuple(int(side) for side in shape)


def layer_norm(x: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Layer norm over the last dims, ``normalized_shape`` (an int or a tuple: ``x.shape[-k:]``), as torch's;
    weight and bias of that shape, optional (fused: ``fused.LayerNorm``, over one flattened last axis)."""
    normalized_shape = _shape_tuple(normalized_shape)
    if x.ndim < len(normalized_shape) or x.shape[x.ndim - len(normalized_shape):] != normalized_shape \
            or not normalized_shape:
        raise ValueError(f"layer_norm: normalized_shape {normalized_shape} must be the last dims of the input, "
                         f"which has shape {x.shape}")
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and param.shape != normalized_shape:
            raise ValueError(f"layer_norm: {name} has shape {param.shape}, expected {normalized_shape} "
                             f"(the last dims of the input of shape {x.shape})")
    x, weight, bias = amp.float32_inputs(x, weight, bias)  # under autocast: mean and variance in float32
    if is_reference_mode():
        return layer_norm_reference(x, normalized_shape, weight, bias, eps)
    if len(normalized_shape) > 1:  # the fused op normalizes one last axis: flatten those dims into it
        size = math.prod(normalized_shape)
        leading = x.shape[:x.ndim - len(normalized_shape)]
        flat_params = [None if p is None else p.reshape(size) for p in (weight, bias)]
        return layer_norm(x.reshape(*leading, size), size, *flat_params, eps=eps).reshape(x.shape)
    # Only the parameters that exist become inputs of the op (a None is not a Tensor).
    params = [p for p in (weight, bias) if p is not None]
    return fused.LayerNorm.apply(x, *params, has_weight=weight is not None, has_bias=bias is not None, eps=eps)


def gelu_reference(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU: exact x Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), or with ``approximate="tanh"`` (GPT-2's)
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if _gelu_form(approximate) == "tanh":
        return 0.5 * x * (1.0 + (fused.GELU_C * (x + fused.GELU_K * x * x * x)).tanh())
    return 0.5 * x * (1.0 + Erf.apply(x * fused.SQRT_HALF))


def _gelu_form(approximate: str) -> str:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return approximate


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU, exact by default as in torch (fused: ``fused.GeluErf``); ``approximate="tanh"`` is
    GPT-2's tanh form (fused: ``fused.Gelu``)."""
    if is_reference_mode():
        return gelu_reference(x, approximate)
    if _gelu_form(approximate) == "tanh":
        return fused.Gelu.apply(x)
    return fused.GeluErf.apply(x)


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


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask=None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None) -> Tensor:
    """softmax(q k^T / sqrt(D) [+ causal mask]) v (fused: ``fused.ScaledDotProductAttention``), torch's signature.

    The fused op has no mask, dropout or other scale: with any of those the spelled-out form runs.
    """
    if attn_mask is not None or dropout_p or scale is not None:
        return _attention_spelled_out(q, k, v, attn_mask, dropout_p, is_causal, scale)
    q, k, v = amp.autocast_inputs(q, k, v)  # under autocast: attention in float16 (its matmuls, its softmax)
    if is_reference_mode():
        return scaled_dot_product_attention_reference(q, k, v, is_causal)
    _check_attention_shapes(q, k, v)
    return fused.ScaledDotProductAttention.apply(q, k, v, is_causal=is_causal)


def _attention_spelled_out(q: Tensor, k: Tensor, v: Tensor, attn_mask, dropout_p: float, is_causal: bool,
                           scale: float | None) -> Tensor:
    """dropout(softmax(q k^T * scale + mask)) v; a bool ``attn_mask`` is True where attending is allowed."""
    _check_attention_shapes(q, k, v)
    if attn_mask is not None and is_causal:
        raise ValueError("scaled_dot_product_attention: pass attn_mask or is_causal=True, not both (as torch)")
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if is_causal:
        attn_mask = q.xp.tril(q.xp.ones(scores.shape[-2:], dtype=bool))
    if attn_mask is not None:
        mask_array = attn_mask.data if isinstance(attn_mask, Tensor) else q.xp.asarray(attn_mask)
        if mask_array.dtype == bool:
            scores = scores.masked_fill(~mask_array, -math.inf)
        else:  # a float mask is added to the scores
            scores = scores + (attn_mask if isinstance(attn_mask, Tensor) else Tensor(mask_array))
    return dropout(softmax_reference(scores, dim=-1), dropout_p) @ v


# ------------------------------------------------------- no fused version
# (one elementwise multiply or one gather already is a single fast op)

def dropout(x: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (identity when not training).

    ``inplace=True`` is accepted for torch code and computes the same values into a new tensor.
    """
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
    x, weight, bias = amp.autocast_inputs(x, weight, bias)  # under autocast: float16 copies (grads cast back)
    if is_reference_mode():
        return linear_reference(x, weight, bias)
    if bias is None:
        return fused.Linear.apply(x, weight)
    return fused.Linear.apply(x, weight, bias)


def lora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor, scaling: float,
                dropout_p: float = 0.0, training: bool = True) -> Tensor:
    """A Linear with a low-rank update (LoRA, Hu et al. 2021), as Hugging Face peft computes it:

        y = x W^T + b  +  scaling * dropout(x) A^T B^T

    for x (..., in), weight W (out, in), lora_A (r, in), lora_B (out, r). The update B A (out, in)
    has rank <= r, and is never formed: dropout(x) A^T is (..., r), then (..., r) B^T is (..., out).
    Dropout touches only the LoRA branch's input. Gradients reach A and B through two ``linear`` ops.
    """
    r, in_features = lora_A.shape if lora_A.ndim == 2 else (None, None)
    if (lora_A.ndim != 2 or lora_B.ndim != 2 or in_features != weight.shape[1]
            or lora_B.shape != (weight.shape[0], r)):
        raise ValueError(f"lora_linear: with weight {weight.shape} (out, in), lora_A must be (r, in) and lora_B "
                         f"(out, r); got lora_A {lora_A.shape}, lora_B {lora_B.shape}")
    update = linear(linear(dropout(x, dropout_p, training), lora_A), lora_B)
    return linear(x, weight, bias) + update * scaling


def embedding(indices, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of ``weight`` (num_embeddings, dim) picked by integer ``indices``.

    Lookups of ``padding_idx`` give its row but send it no gradient (they read a detached copy), as torch.
    """
    rows = embedding_lookup(indices, weight)
    if padding_idx is None:
        return rows
    padding_idx = padding_idx % weight.shape[0]
    is_padding = (indices.data if isinstance(indices, Tensor) else weight.xp.asarray(indices)) == padding_idx
    return where(Tensor(is_padding[..., None]), rows.detach(), rows)


def _check_batch_norm_inputs(x: Tensor, running_mean, running_var, weight, bias, training: bool) -> None:
    if x.ndim < 2:
        raise ValueError(f"batch_norm: expected input (N, C) or (N, C, L), got shape {x.shape}")
    channels = x.shape[1]
    for name, tensor in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                         ("bias", bias)):
        if tensor is not None and tensor.shape != (channels,):
            raise ValueError(f"batch_norm: {name} has shape {tensor.shape}, expected ({channels},) "
                             f"for input of shape {x.shape}")
    if training and x.numel() // channels <= 1:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input "
                         f"of shape {x.shape}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: evaluation (training=False) needs running_mean and running_var")


def batch_norm_reference(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                         weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
                         momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """y = (x - mean) / sqrt(var + eps) * weight + bias per channel C of x (N, C) or (N, C, L), as torch's.

    Training: mean and (biased) var over the batch (and L); the running statistics, when given,
    move towards them in place: r = (1 - momentum) r + momentum s, with the *unbiased* var.
    Evaluation: the running statistics normalise.
    """
    _check_batch_norm_inputs(x, running_mean, running_var, weight, bias, training)
    channels = x.shape[1]
    dims = (0,) + tuple(range(2, x.ndim))  # every dim but the channels
    per_channel = (1, channels) + (1,) * (x.ndim - 2)  # (C,) statistics broadcast against x
    if training:
        count = x.numel() // channels
        mean = x.mean(dims, keepdim=True)
        var = ((x - mean) * (x - mean)).mean(dims, keepdim=True)
        if running_mean is not None:
            with no_grad():  # the running statistics are buffers, outside the graph
                running_mean.mul_(1.0 - momentum).add_(momentum * mean.data.reshape(channels))
                running_var.mul_(1.0 - momentum).add_(momentum * var.data.reshape(channels) * (count / (count - 1)))
    else:
        mean, var = running_mean.reshape(per_channel), running_var.reshape(per_channel)
    y = (x - mean) / (var + eps).sqrt()
    if weight is not None:
        y = y * weight.reshape(per_channel)
    if bias is not None:
        y = y + bias.reshape(per_channel)
    return y


def batch_norm(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:
    """Batch norm per channel C of x (N, C) or (N, C, L), as torch's (``batch_norm_reference`` is the math).

    Training runs ``fused.BatchNorm`` (one op, forward and backward) and moves the running
    statistics with the batch's; evaluation normalises with the running statistics, an affine map.
    """
    _check_batch_norm_inputs(x, running_mean, running_var, weight, bias, training)
    if is_reference_mode() or not training:
        return batch_norm_reference(x, running_mean, running_var, weight, bias, training, momentum, eps)
    channels = x.shape[1]
    params = [p for p in (weight, bias) if p is not None]
    y, mean, var = fused.BatchNorm.apply(x, *params, axes=(0,) + tuple(range(2, x.ndim)),
                                         has_weight=weight is not None, has_bias=bias is not None, eps=eps)
    if running_mean is not None:
        count = x.numel() // channels
        with no_grad():  # the running statistics are buffers, outside the graph; var unbiased, as torch
            running_mean.mul_(1.0 - momentum).add_(momentum * mean.data)
            running_var.mul_(1.0 - momentum).add_(momentum * var.data * (count / (count - 1)))
    return y


def relu(x: Tensor, inplace: bool = False) -> Tensor:
    """max(x, 0) (``inplace=True`` is accepted and computes a new tensor)."""
    return x.relu()


def sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid()


def tanh(x: Tensor) -> Tensor:
    return x.tanh()


def silu(x: Tensor, inplace: bool = False) -> Tensor:
    """SiLU (swish): x sigmoid(x)."""
    return x * x.sigmoid()


def mse_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:
    """Mean squared error (x - y)^2, averaged, summed or per element. The shapes must match
    (torch would broadcast them with a warning; here that is an error, since it is nearly always a bug)."""
    target = target if isinstance(target, Tensor) else Tensor(input.xp.asarray(target, dtype=input.dtype))
    if target.shape != input.shape:
        raise ValueError(f"mse_loss: input has shape {input.shape} but target has shape {target.shape}")
    squared = (input - target) * (input - target)
    if reduction == "mean":
        return squared.mean()
    if reduction == "sum":
        return squared.sum()
    if reduction == "none":
        return squared
    raise ValueError(f"mse_loss: unknown reduction {reduction!r} (expected 'mean', 'sum' or 'none')")


def pad(x: Tensor, pad: tuple, mode: str = "constant", value: float | None = None) -> Tensor:
    """Pad with a constant, as torch: ``pad = (last_before, last_after, second_last_before, ...)``.

    Built from ``cat`` with constant blocks, so the gradient is the matching slice of the upstream one.
    """
    if mode != "constant":
        raise NotImplementedError(f"pad: only mode='constant' is implemented, got {mode!r}")
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: expected pairs (before, after) for at most {x.ndim} dims, got {tuple(pad)}")
    if any(int(amount) < 0 for amount in pad):
        raise NotImplementedError(f"pad: negative padding (cropping) is not implemented, got {tuple(pad)}")
    for pair in range(len(pad) // 2):
        dim = x.ndim - 1 - pair  # the first pair pads the last dim
        blocks = []
        for amount in (int(pad[2 * pair]), int(pad[2 * pair + 1])):
            shape = x.shape[:dim] + (amount,) + x.shape[dim + 1:]
            blocks.append(Tensor(x.xp.full(shape, 0.0 if value is None else value, dtype=x.dtype)))
        x = cat([block for block in (blocks[0], x, blocks[1]) if block.shape[dim] > 0], dim=dim)
    return x


def one_hot(indices, num_classes: int = -1) -> Tensor:
    """int64 (..., num_classes) with a 1 at each index; ``num_classes=-1`` takes max + 1, as torch."""
    ids = indices.data if isinstance(indices, Tensor) else numpy.asarray(indices)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"one_hot: indices must be integers, got dtype {ids.dtype}")
    xp = backend.xp_of(ids)
    num_classes = int(ids.max()) + 1 if num_classes == -1 else num_classes
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
        raise ValueError(f"one_hot: indices must be in [0, {num_classes}), got values from {int(ids.min())} "
                         f"to {int(ids.max())}")
    return Tensor((ids[..., None] == xp.arange(num_classes)).astype(numpy.int64))


__all__ = ["softmax", "log_softmax", "cross_entropy", "layer_norm", "gelu", "dropout", "embedding", "linear",
           "scaled_dot_product_attention", "batch_norm", "relu", "sigmoid", "tanh", "silu", "mse_loss", "one_hot",
           "pad", "where"]

"""int8 weight-only quantization for inference: every Linear keeps its weight as int8.

    from gpt.quantize import int8, weight_bytes
    small = int8(model)             # a copy; ``model`` is unchanged
    small.generate(idx, 100)        # generation and evaluation take it as they take the model
    weight_bytes(small) / weight_bytes(model)   # about 0.27 for the Shakespeare model

**The recipe (symmetric, per output channel).** Row o of a Linear's weight W (out, in) gets its
own scale s_o = max_i |W_oi| / 127, and is stored as q_oi = round(W_oi / s_o), an integer in
[-127, 127] (one byte, "symmetric": no zero point, 0.0 is exactly 0). Each weight is off by at
most s_o / 2. One scale per row rather than per matrix, because rows differ in size: a single
scale would be set by the largest weight of the whole matrix, and the small rows would get
only a few of the 255 levels.

**The matmul.** x W^T with W = diag(s) q is (x q^T) diag(s): the per-row scale of W becomes a
per-column scale of the output. So forward multiplies x by the int8 matrix (converted to x's
float dtype for the product: NumPy and cuBLAS have no int8 x float kernel) and then scales the
output's columns, one multiply per output element instead of one per weight.

Only the Linear weights are quantized; embeddings, layer norms and biases stay float32 (they
are a few percent of a GPT's weights). GPT-2's lm_head shares its matrix with the token
embedding: the quantized lm_head gets an int8 copy of it, and the embedding lookup keeps the
float32 original. ``generate`` with ``decoder="folded"`` reads float weights and does not take a
quantized model; the default decoder does.
"""
from __future__ import annotations

import copy

import numpy

import tinygrad_lite as tl
from tinygrad_lite import functional as F
from tinygrad_lite import nn

INT8_MAX = 127  # symmetric: -127..127 (int8's -128 is left unused, so that q and -q both fit)


def quantize_per_channel(weight) -> tuple:
    """(q int8 (out, in), scale float32 (out,)) with weight ~ q * scale[:, None], |error| <= scale / 2.

    An all-zero row gets scale 1 (any scale represents it exactly) instead of a division by zero.
    """
    xp = tl.backend.xp_of(weight)
    if weight.ndim != 2 or weight.dtype.kind != "f":
        raise ValueError(f"quantize_per_channel: expected a 2-D float weight (out, in), got shape "
                         f"{tuple(weight.shape)} of dtype {weight.dtype}")
    largest = xp.abs(weight).max(axis=1)
    scale = xp.where(largest > 0, largest / INT8_MAX, 1.0).astype(numpy.float32)
    q = xp.clip(xp.rint(weight / scale[:, None]), -INT8_MAX, INT8_MAX).astype(numpy.int8)
    return q, scale


def dequantize_per_channel(q, scale):
    """The float32 weight that ``q`` and ``scale`` stand for: q * scale[:, None]."""
    return q.astype(numpy.float32) * scale[:, None]


class QuantizedLinear(nn.Module):
    """y = (x q^T) * s + b: a Linear whose weight is int8 ``weight_int8`` (out, in) and float32 ``scale`` (out,)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, scale = quantize_per_channel(linear.weight.data)
        self.register_buffer("weight_int8", tl.Tensor(q))
        self.register_buffer("scale", tl.Tensor(scale))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.data.copy())

    def forward(self, x: tl.Tensor) -> tl.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"QuantizedLinear({self.in_features}, {self.out_features}): input has shape {x.shape}, "
                             f"its last axis should be {self.in_features}")
        y = F.linear(x, tl.Tensor(self.weight_int8.data.astype(x.dtype)))  # x q^T, in float
        y = y * self.scale.astype(x.dtype)  # = x W^T: row o's scale applied to output column o
        return y if self.bias is None else y + self.bias

    @property
    def weight(self):
        raise AttributeError("QuantizedLinear has no float weight: it stores weight_int8 and scale "
                             "(dequantized_weight() rebuilds the float matrix); code that reads Linear weights, "
                             "like generate's decoder='folded', needs the float model (use decoder='modules')")

    def dequantized_weight(self) -> tl.Tensor:
        return tl.Tensor(dequantize_per_channel(self.weight_int8.data, self.scale.data))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


def int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every ``nn.Linear`` replaced by a ``QuantizedLinear``."""
    quantized = copy.deepcopy(model)
    for module in list(quantized.modules()):
        for name, child in list(vars(module).items()):
            if isinstance(child, nn.Linear):
                setattr(module, name, QuantizedLinear(child))
    quantized.eval()
    return quantized


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer, each array counted once (a tied matrix once)."""
    arrays = {id(tensor.data): tensor.data.nbytes for tensor in list(model.parameters()) + list(model.buffers())}
    return sum(arrays.values())

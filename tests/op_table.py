"""The table of differentiable ops that drives the property tests.

One row per op: how to call ours, how to call torch's, and a hypothesis
strategy for its inputs. ``test_ops_property.py`` runs every row through
(1) ``tl.gradcheck`` in float64 and (2) forward + backward against PyTorch in
float64 (tight) and float32 (loose). Adding an op means adding one row here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.utils.checkpoint
import torch.nn.functional as TF
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_lite as tl
from tinygrad_lite import functional as F
from tinygrad_lite.ops.elementwise import Erf
from tinygrad_lite.utils.checkpoint import checkpoint


@dataclass
class Case:
    """One drawn example: the differentiable inputs and any fixed extras."""
    arrays: list  # float64 numpy arrays; each becomes a requires_grad tensor
    extra: dict = field(default_factory=dict)  # non-differentiable arguments (axes, targets, masks)


@dataclass
class OpRow:
    name: str
    ours: Callable  # (*tl.Tensor, **extra) -> tl.Tensor
    theirs: Callable  # (*torch.Tensor, **extra) -> torch.Tensor
    inputs: st.SearchStrategy  # draws a Case
    rtol32: float = 1e-4
    atol32: float = 1e-5


# ------------------------------------------------------------ strategies

def shapes(min_dims=1, max_dims=3, max_side=4, min_side=1):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def floats(low=-3.0, high=3.0):
    return st.floats(low, high, allow_nan=False, allow_infinity=False, width=64)


def array(shape, low=-3.0, high=3.0):
    return hnp.arrays(np.float64, shape, elements=floats(low, high))


def away_from_zero(a, margin=0.1):
    """Keep finite differences off the kink at 0 (relu, abs)."""
    return np.where(a >= 0, a + margin, a - margin)


@st.composite
def unary(draw, low=-3.0, high=3.0, transform=None, min_dims=0):
    shape = draw(shapes(min_dims=min_dims))
    a = draw(array(shape, low, high))
    return Case([transform(a) if transform else a])


@st.composite
def broadcast_pair(draw, low=-3.0, high=3.0, second_low=None, second_high=None):
    """Two shapes that broadcast together (either side may be the smaller one)."""
    shape_a, shape_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4)).input_shapes
    a = draw(array(shape_a, low, high))
    b = draw(array(shape_b, second_low if second_low is not None else low,
                   second_high if second_high is not None else high))
    return Case([a, b])


@st.composite
def with_axis(draw, distinct=False, min_dims=1):
    """An array, an axis (None, an int, or a tuple) and keepdims."""
    shape = draw(shapes(min_dims=min_dims))
    if distinct:  # no ties: finite differences of max/min need a unique winner
        order = draw(st.permutations(range(int(np.prod(shape)))))
        a = (np.array(order, dtype=np.float64) * 0.3 - 1.0).reshape(shape)
    else:
        a = draw(array(shape))
    ndim = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1),
                          st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)))
    return Case([a], {"axis": axis, "keepdims": draw(st.booleans())})


@st.composite
def apart_pair(draw):
    """Two broadcasting arrays whose values differ by at least 0.15 (no near-ties for maximum/minimum)."""
    shape_a, shape_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4)).input_shapes
    steps = st.integers(-10, 10)
    a = draw(hnp.arrays(np.int64, shape_a, elements=steps)) * 0.3
    b = draw(hnp.arrays(np.int64, shape_b, elements=steps)) * 0.3 + 0.15
    return Case([a, b])


@st.composite
def with_dim(draw):
    """Distinct values (a unique winner for max/min), one int dim and keepdim."""
    case = draw(distinct_along_dim())
    return Case(case.arrays, {**case.extra, "keepdim": draw(st.booleans())})


def torch_axis(axis, ndim):
    return tuple(range(ndim)) if axis is None else axis


@st.composite
def reshape_case(draw):
    shape = draw(shapes())
    size = int(np.prod(shape))
    divisors = [d for d in range(1, size + 1) if size % d == 0]
    first = draw(st.sampled_from(divisors))
    return Case([draw(array(shape))], {"shape": (first, -1)})


@st.composite
def permute_case(draw):
    shape = draw(shapes(min_dims=1))
    axes = tuple(draw(st.permutations(range(len(shape)))))
    return Case([draw(array(shape))], {"axes": axes})


@st.composite
def transpose_case(draw):
    shape = draw(shapes(min_dims=2))
    a0, a1 = draw(st.integers(0, len(shape) - 1)), draw(st.integers(0, len(shape) - 1))
    return Case([draw(array(shape))], {"a": a0, "b": a1})


@st.composite
def unsqueeze_case(draw):
    shape = draw(shapes(min_dims=0))
    return Case([draw(array(shape))], {"axis": draw(st.integers(-len(shape) - 1, len(shape)))})


@st.composite
def squeeze_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=2))
    ones = [i for i, n in enumerate(shape) if n == 1]
    axis = draw(st.one_of(st.none(), st.sampled_from(ones))) if ones else None
    return Case([draw(array(shape))], {"axis": axis})


@st.composite
def expand_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3))
    target = tuple(n if n != 1 else draw(st.integers(1, 3)) for n in shape)
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=1)))
    return Case([draw(array(shape))], {"shape": lead + target})


@st.composite
def flatten_case(draw):
    shape = draw(shapes(min_dims=1, max_dims=4, max_side=3))
    start = draw(st.integers(0, len(shape) - 1))
    end = draw(st.integers(start, len(shape) - 1))
    return Case([draw(array(shape))], {"start": start, "end": end})


@st.composite
def slice_case(draw):
    """Basic indexing: ints, slices with steps (also negative), None, Ellipsis."""
    shape = draw(shapes(min_dims=1, max_dims=3, max_side=5))
    index = []
    for n in shape:
        kind = draw(st.sampled_from(["int", "slice", "full"]))
        if kind == "int":
            index.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            step = draw(st.sampled_from([1, 2, -1, 3]))
            index.append(slice(draw(st.one_of(st.none(), st.integers(-n, n))),
                               draw(st.one_of(st.none(), st.integers(-n, n))), step))
        else:
            index.append(slice(None))
    if draw(st.booleans()):
        index.insert(draw(st.integers(0, len(index))), None)
    if draw(st.booleans()) and len(index) > 1:
        index = [Ellipsis] + index[1:]
    return Case([draw(array(shape))], {"index": tuple(index)})


@st.composite
def int_array_index_case(draw):
    """Integer-array indexing; repeated indices must accumulate gradient."""
    shape = draw(shapes(min_dims=1, max_dims=3, max_side=4))
    picks = draw(st.lists(st.integers(-shape[0], shape[0] - 1), min_size=1, max_size=6))
    index = np.array(picks)
    if len(shape) > 1 and draw(st.booleans()):
        cols = np.array(draw(st.lists(st.integers(0, shape[1] - 1), min_size=len(picks), max_size=len(picks))))
        return Case([draw(array(shape))], {"index": (index, cols)})
    return Case([draw(array(shape))], {"index": index})


@st.composite
def bool_mask_case(draw):
    shape = draw(shapes(min_dims=1, max_dims=2))
    mask = draw(hnp.arrays(np.bool_, shape))
    return Case([draw(array(shape))], {"mask": mask})


@st.composite
def matmul_case(draw, batched=False, vector=False, folded=False):
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if vector:  # 1-D on one side or both (numpy's rules)
        left_vec, right_vec = draw(st.sampled_from([(True, False), (False, True), (True, True)]))
        a_shape = (k,) if left_vec else (n, k)
        b_shape = (k,) if right_vec else (k, m)
    elif folded:  # (..., n, k) @ (k, m): the leading axes fold into rows
        lead = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
        a_shape, b_shape = lead + (n, k), (k, m)
    elif batched:  # batch dims broadcast against each other
        batch_a, batch_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=2,
                                                                   max_side=3)).input_shapes
        a_shape, b_shape = batch_a + (n, k), batch_b + (k, m)
    else:
        a_shape, b_shape = (n, k), (k, m)
    return Case([draw(array(a_shape, -2, 2)), draw(array(b_shape, -2, 2))])


@st.composite
def linear_case(draw):
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    n_in, n_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    arrays = [draw(array(lead + (n_in,), -2, 2)), draw(array((n_out, n_in), -2, 2))]
    if draw(st.booleans()):
        arrays.append(draw(array((n_out,))))
    return Case(arrays)


@st.composite
def lora_linear_case(draw):
    """x (..., in), W (out, in), lora_A (r, in), lora_B (out, r), maybe a bias; B is drawn non-zero
    (a fresh LoRA layer's zero B would leave A's gradient at zero, untested)."""
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    n_in, n_out, r = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    arrays = [draw(array(lead + (n_in,), -2, 2)), draw(array((n_out, n_in), -2, 2)),
              draw(array((r, n_in), -2, 2)), draw(array((n_out, r), -2, 2))]
    if draw(st.booleans()):
        arrays.append(draw(array((n_out,))))
    return Case(arrays, {"scaling": draw(st.sampled_from([0.5, 1.0, 2.0]))})


def _torch_lora_linear(x, w, a, b, *bias, scaling):
    return TF.linear(x, w, *bias) + TF.linear(TF.linear(x, a), b) * scaling


@st.composite
def softmax_case(draw):
    shape = draw(shapes(min_dims=1))
    return Case([draw(array(shape, -5, 5))], {"axis": draw(st.integers(-len(shape), len(shape) - 1))})


@st.composite
def cross_entropy_case(draw):
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    targets = np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    ignored = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    if not all(ignored):  # keep at least one target (the mean over zero targets is nan)
        targets = np.where(ignored, -100, targets)
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    return Case([draw(array((n, c), -4, 4))], {"targets": targets, "reduction": reduction})


@st.composite
def layer_norm_case(draw):
    shape = draw(shapes(min_dims=1, max_side=5))
    shape = shape[:-1] + (max(2, shape[-1]),)  # over one element x - mean is exactly 0: degenerate
    dim = shape[-1]
    assume_spread = draw(array(shape, -3, 3)) + np.arange(dim) * 0.5  # variance well above 0
    weight, bias = draw(array((dim,), 0.5, 2.0)), draw(array((dim,)))
    return Case([assume_spread, weight, bias])


@st.composite
def batch_norm_case(draw, training: bool):
    """x (N, C) or (N, C, L) with spread in every channel, affine weight and bias, running statistics."""
    n, c, length = draw(st.integers(2, 4)), draw(st.integers(1, 3)), draw(st.integers(0, 3))
    shape = (n, c) if length == 0 else (n, c, length)
    ramp = (np.arange(n) * 0.7).reshape((n,) + (1,) * (len(shape) - 1))  # variance well above 0
    x = draw(array(shape, -2, 2)) + ramp
    extra = {"running_mean": draw(array((c,), -1, 1)), "running_var": draw(array((c,), 0.5, 2.0)),
             "training": training}
    return Case([x, draw(array((c,), 0.5, 2.0)), draw(array((c,)))], extra)


def batch_norm_ours(x, weight, bias, running_mean, running_var, training):
    """F.batch_norm with fresh running statistics of x's dtype (training updates them in place)."""
    stats = [tl.Tensor(a.astype(x.dtype)) for a in (running_mean, running_var)]
    return F.batch_norm(x, *stats, weight, bias, training=training, momentum=0.1, eps=1e-5)


def batch_norm_theirs(x, weight, bias, running_mean, running_var, training):
    stats = [torch.from_numpy(a.astype(str(x.dtype).split(".")[-1])) for a in (running_mean, running_var)]
    return TF.batch_norm(x, *stats, weight, bias, training=training, momentum=0.1, eps=1e-5)


@st.composite
def smoothed_cross_entropy_case(draw):
    case = draw(cross_entropy_case())
    return Case(case.arrays, {**case.extra, "label_smoothing": draw(st.sampled_from([0.1, 0.5, 1.0]))})


@st.composite
def pad_case(draw):
    a = draw(unary(min_dims=1)).arrays[0]
    pad = tuple(draw(st.lists(st.integers(0, 2), min_size=1, max_size=2 * min(a.ndim, 2)).filter(
        lambda p: len(p) % 2 == 0)))
    return Case([a], {"pad": pad, "value": draw(st.sampled_from([None, 1.5]))})


@st.composite
def mse_case(draw):
    shape = draw(shapes(min_dims=0))
    return Case([draw(array(shape)), draw(array(shape))], {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))})


@st.composite
def attention_case(draw):
    batch = tuple(draw(st.lists(st.integers(1, 2), max_size=2)))
    tq, tk, d = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    causal = draw(st.booleans())
    if causal:
        tk = max(tk, tq)  # every query must see at least one key
    return Case([draw(array(batch + (tq, d), -2, 2)), draw(array(batch + (tk, d), -2, 2)),
                 draw(array(batch + (tk, d), -2, 2))], {"is_causal": causal})


@st.composite
def embedding_case(draw):
    vocab, dim = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    idx_shape = draw(shapes(min_dims=1, max_dims=2, max_side=4))
    idx = draw(hnp.arrays(np.int64, idx_shape, elements=st.integers(0, vocab - 1)))
    return Case([draw(array((vocab, dim)))], {"idx": idx})


@st.composite
def cat_case(draw, new_axis=False):
    base = draw(shapes(min_dims=1, max_dims=3, max_side=3))
    count = draw(st.integers(1, 3))
    axis = draw(st.integers(0, len(base) - (0 if new_axis else 1)))
    arrays = []
    for _ in range(count):
        shape = list(base)
        if not new_axis:
            shape[axis] = draw(st.integers(1, 3))
        arrays.append(draw(array(tuple(shape))))
    return Case(arrays, {"axis": axis})


@st.composite
def where_case(draw):
    shape_c, shape_a, shape_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3,
                                                                      max_side=3)).input_shapes
    cond = draw(hnp.arrays(np.bool_, shape_c))
    return Case([draw(array(shape_a)), draw(array(shape_b))], {"cond": cond})


@st.composite
def split_case(draw):
    shape = draw(shapes(min_dims=1, max_side=5))
    axis = draw(st.integers(0, len(shape) - 1))
    return Case([draw(array(shape))], {"size": draw(st.integers(1, shape[axis])), "axis": axis})


@st.composite
def split_heads_case(draw):
    batch, time, heads, head_size = (draw(st.integers(1, 3)) for _ in range(4))
    return Case([draw(array((batch, time, 3 * heads * head_size)))], {"heads": heads})


def _torch_split_heads(qkv, heads):  # nanoGPT's lines
    B, T, three_c = qkv.shape
    return [t.view(B, T, heads, three_c // (3 * heads)).transpose(1, 2) for t in qkv.split(three_c // 3, dim=2)]


@st.composite
def tril_case(draw):
    shape = draw(shapes(min_dims=2))
    return Case([draw(array(shape))], {"k": draw(st.integers(-2, 2))})


@st.composite
def clamp_case(draw):
    """Bounds -1 and/or 1; values within 0.1 of a bound are pushed 0.2 outward, off the kinks."""
    a = draw(unary()).arrays[0]
    a = np.where(np.abs(a - 1) < 0.1, a + 0.2, a)
    a = np.where(np.abs(a + 1) < 0.1, a - 0.2, a)
    low, high = draw(st.sampled_from([(-1.0, 1.0), (-1.0, None), (None, 1.0)]))
    return Case([a], {"low": low, "high": high})


@st.composite
def pow_exponent_case(draw):
    """Positive bases, so non-integer and negative exponents are defined."""
    a = draw(unary(0.5, 3.0)).arrays[0]
    return Case([a], {"exponent": draw(st.sampled_from([2, 3.0, 0.5, -1.5, 1]))})


@st.composite
def roll_case(draw):
    shape = draw(shapes(min_dims=1))
    if draw(st.booleans()):  # one shift over the flattened tensor
        return Case([draw(array(shape))], {"shifts": draw(st.integers(-5, 5)), "dims": None})
    dims = tuple(draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1, max_size=2,
                               unique_by=lambda d: d % len(shape))))
    shifts = tuple(draw(st.integers(-5, 5)) for _ in dims)
    return Case([draw(array(shape))], {"shifts": shifts, "dims": dims})


@st.composite
def distinct_along_dim(draw):
    """Distinct values (no ties for sort/topk) and one dim."""
    shape = draw(shapes(min_dims=1))
    order = draw(st.permutations(range(int(np.prod(shape)))))
    a = (np.array(order, dtype=np.float64) * 0.3 - 1.0).reshape(shape)
    return Case([a], {"dim": draw(st.integers(-len(shape), len(shape) - 1))})


@st.composite
def topk_case(draw):
    case = draw(distinct_along_dim())
    length = case.arrays[0].shape[case.extra["dim"]]
    return Case(case.arrays, {**case.extra, "k": draw(st.integers(1, length)), "largest": draw(st.booleans())})


@st.composite
def gather_case(draw):
    shape = draw(shapes(min_dims=1))
    dim = draw(st.integers(0, len(shape) - 1))
    index_shape = tuple(draw(st.integers(1, 4)) if d == dim else draw(st.integers(1, n)) for d, n in enumerate(shape))
    index = draw(hnp.arrays(np.int64, index_shape, elements=st.integers(0, shape[dim] - 1)))
    return Case([draw(array(shape))], {"dim": dim, "index": index})


@st.composite
def repeat_case(draw):
    shape = draw(shapes(min_dims=1, max_side=3))
    lead = tuple(draw(st.lists(st.integers(1, 2), max_size=1)))
    return Case([draw(array(shape))], {"sizes": lead + tuple(draw(st.integers(1, 3)) for _ in shape)})


# ------------------------------------------------------------------ table
# Multi-output ops (split/chunk) are summed with fixed weights into one tensor.

def _weighted(pieces):
    return sum((p * (i + 1.0)).sum() for i, p in enumerate(pieces))


OPS: list[OpRow] = [
    OpRow("add", lambda a, b: a + b, lambda a, b: a + b, broadcast_pair()),
    OpRow("sub", lambda a, b: a - b, lambda a, b: a - b, broadcast_pair()),
    OpRow("mul", lambda a, b: a * b, lambda a, b: a * b, broadcast_pair()),
    OpRow("div", lambda a, b: a / b, lambda a, b: a / b, broadcast_pair(second_low=0.5, second_high=3.0)),
    OpRow("pow", lambda a, b: a ** b, lambda a, b: a ** b, broadcast_pair(low=0.5, high=2.0)),
    OpRow("pow_scalar", lambda a: a ** 3, lambda a: a ** 3, unary()),
    OpRow("rsub_scalar", lambda a: 2.0 - a, lambda a: 2.0 - a, unary()),
    OpRow("rdiv_scalar", lambda a: 1.5 / a, lambda a: 1.5 / a, unary(0.5, 3.0)),
    OpRow("neg", lambda a: -a, lambda a: -a, unary()),
    OpRow("exp", lambda a: a.exp(), torch.exp, unary()),
    OpRow("log", lambda a: a.log(), torch.log, unary(0.1, 5.0)),
    OpRow("log10", lambda a: a.log10(), torch.log10, unary(0.1, 5.0)),
    OpRow("sqrt", lambda a: a.sqrt(), torch.sqrt, unary(0.1, 5.0)),
    OpRow("tanh", lambda a: a.tanh(), torch.tanh, unary()),
    OpRow("sigmoid", lambda a: a.sigmoid(), torch.sigmoid, unary(-8, 8)),
    OpRow("relu", lambda a: a.relu(), torch.relu, unary(transform=away_from_zero)),
    OpRow("abs", lambda a: a.abs(), torch.abs, unary(transform=away_from_zero)),
    OpRow("gelu", lambda a: a.gelu(approximate="tanh"), lambda a: TF.gelu(a, approximate="tanh"), unary(-4, 4)),
    OpRow("gelu_exact", lambda a: F.gelu(a), TF.gelu, unary(-4, 4)),
    # activation checkpointing (tinygrad_lite/utils/checkpoint.py): backward reruns the function's forward
    OpRow("checkpoint", lambda a, b: checkpoint(lambda x, y: (x * y).tanh() * x, a, b),
          lambda a, b: torch.utils.checkpoint.checkpoint(lambda x, y: (x * y).tanh() * x, a, b, use_reentrant=False),
          broadcast_pair()),
    OpRow("sum", lambda a, axis, keepdims: a.sum(axis=axis, keepdims=keepdims),
          lambda a, axis, keepdims: a.sum(dim=torch_axis(axis, a.ndim), keepdim=keepdims), with_axis()),
    OpRow("mean", lambda a, axis, keepdims: a.mean(axis=axis, keepdims=keepdims),
          lambda a, axis, keepdims: a.mean(dim=torch_axis(axis, a.ndim), keepdim=keepdims), with_axis()),
    OpRow("var", lambda a, axis, keepdims: a.var(axis=axis, keepdims=keepdims),
          lambda a, axis, keepdims: a.var(dim=torch_axis(axis, a.ndim), keepdim=keepdims),
          with_axis().filter(lambda c: _axis_count(c) > 1)),
    OpRow("amax", lambda a, axis, keepdims: a.amax(axis=axis, keepdims=keepdims),
          lambda a, axis, keepdims: torch.amax(a, dim=torch_axis(axis, a.ndim), keepdim=keepdims),
          with_axis(distinct=True)),
    OpRow("amin", lambda a, axis, keepdims: a.amin(axis=axis, keepdims=keepdims),
          lambda a, axis, keepdims: torch.amin(a, dim=torch_axis(axis, a.ndim), keepdim=keepdims),
          with_axis(distinct=True)),
    OpRow("max", lambda a, dim, keepdim: a.max(dim, keepdim).values,
          lambda a, dim, keepdim: a.max(dim, keepdim).values, with_dim()),
    OpRow("min", lambda a, dim, keepdim: a.min(dim=dim, keepdim=keepdim).values,
          lambda a, dim, keepdim: a.min(dim=dim, keepdim=keepdim).values, with_dim()),
    OpRow("maximum", lambda a, b: a.max(b), torch.maximum, apart_pair()),
    OpRow("minimum", lambda a, b: a.min(b), torch.minimum, apart_pair()),
    OpRow("reshape", lambda a, shape: a.reshape(shape), lambda a, shape: a.reshape(shape), reshape_case()),
    OpRow("permute", lambda a, axes: a.permute(*axes), lambda a, axes: a.permute(*axes), permute_case()),
    OpRow("transpose", lambda x, a, b: x.transpose(a, b), lambda x, a, b: x.transpose(a, b), transpose_case()),
    OpRow("unsqueeze", lambda a, axis: a.unsqueeze(axis), lambda a, axis: a.unsqueeze(axis), unsqueeze_case()),
    OpRow("squeeze", lambda a, axis: a.squeeze(axis),
          lambda a, axis: a.squeeze() if axis is None else a.squeeze(axis), squeeze_case()),
    OpRow("expand", lambda a, shape: a.expand(*shape), lambda a, shape: a.expand(*shape), expand_case()),
    OpRow("flatten", lambda a, start, end: a.flatten(start, end), lambda a, start, end: a.flatten(start, end),
          flatten_case()),
    OpRow("getitem_basic", lambda a, index: a[index], lambda a, index: _index_via_gather(a, index), slice_case()),
    OpRow("getitem_int_array", lambda a, index: a[index],
          lambda a, index: a[tuple(torch.from_numpy(i) for i in index) if isinstance(index, tuple)
                             else torch.from_numpy(index)], int_array_index_case()),
    OpRow("getitem_bool_mask", lambda a, mask: a[mask], lambda a, mask: a[torch.from_numpy(mask)],
          bool_mask_case()),
    OpRow("matmul", lambda a, b: a @ b, lambda a, b: a @ b, matmul_case()),
    OpRow("matmul_batched", lambda a, b: a @ b, lambda a, b: a @ b, matmul_case(batched=True)),
    OpRow("matmul_folded", lambda a, b: a @ b, lambda a, b: a @ b, matmul_case(folded=True)),
    OpRow("matmul_vector", lambda a, b: a @ b, lambda a, b: a @ b, matmul_case(vector=True)),
    OpRow("linear", lambda x, w, *b: F.linear(x, w, *b), lambda x, w, *b: TF.linear(x, w, *b), linear_case()),
    OpRow("lora_linear", lambda x, w, a, b, *bias, scaling: F.lora_linear(x, w, (bias or [None])[0], a, b, scaling),
          _torch_lora_linear, lora_linear_case()),
    OpRow("softmax", lambda a, axis: a.softmax(axis), lambda a, axis: torch.softmax(a, dim=axis), softmax_case()),
    OpRow("log_softmax", lambda a, axis: F.log_softmax(a, axis=axis),
          lambda a, axis: torch.log_softmax(a, dim=axis), softmax_case()),
    OpRow("cross_entropy", lambda a, targets, reduction: F.cross_entropy(a, targets, reduction=reduction),
          lambda a, targets, reduction: TF.cross_entropy(a, torch.from_numpy(targets), reduction=reduction),
          cross_entropy_case()),
    OpRow("layer_norm", lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b),
          lambda x, w, b: TF.layer_norm(x, (x.shape[-1],), w, b), layer_norm_case(), rtol32=1e-3, atol32=1e-4),
    OpRow("batch_norm_train", batch_norm_ours, batch_norm_theirs, batch_norm_case(training=True)),
    OpRow("batch_norm_eval", batch_norm_ours, batch_norm_theirs, batch_norm_case(training=False)),
    OpRow("cross_entropy_label_smoothing",
          lambda a, targets, reduction, label_smoothing: F.cross_entropy(a, targets, reduction=reduction,
                                                                         label_smoothing=label_smoothing),
          lambda a, targets, reduction, label_smoothing: TF.cross_entropy(a, torch.from_numpy(targets),
                                                                          reduction=reduction,
                                                                          label_smoothing=label_smoothing),
          smoothed_cross_entropy_case()),
    OpRow("mse_loss", lambda a, b, reduction: F.mse_loss(a, b, reduction=reduction),
          lambda a, b, reduction: TF.mse_loss(a, b, reduction=reduction), mse_case()),
    OpRow("silu", F.silu, TF.silu, unary()),
    OpRow("pad", lambda a, pad, value: F.pad(a, pad, value=value), lambda a, pad, value: TF.pad(a, pad, value=value),
          pad_case()),
    OpRow("erf", lambda a: Erf.apply(a), torch.erf, unary()),
    OpRow("layer_norm_2d_shape", lambda x, w, b: F.layer_norm(x.reshape(-1, 2, 2), (2, 2), w.reshape(2, 2),
                                                              b.reshape(2, 2)),
          lambda x, w, b: TF.layer_norm(x.reshape(-1, 2, 2), (2, 2), w.reshape(2, 2), b.reshape(2, 2)),
          st.builds(lambda x, w, b: Case([x, w, b]), array((3, 4), -3, 3).map(lambda a: a + np.arange(4) * 0.5),
                    array((4,), 0.5, 2.0), array((4,)))),
    OpRow("scaled_dot_product_attention",
          lambda q, k, v, is_causal: F.scaled_dot_product_attention(q, k, v, is_causal=is_causal),
          lambda q, k, v, is_causal: TF.scaled_dot_product_attention(q, k, v, is_causal=is_causal), attention_case()),
    OpRow("embedding", lambda w, idx: F.embedding(idx, w), lambda w, idx: TF.embedding(torch.from_numpy(idx), w),
          embedding_case()),
    OpRow("cat", lambda *xs, axis: tl.cat(xs, axis=axis), lambda *xs, axis: torch.cat(xs, dim=axis), cat_case()),
    OpRow("stack", lambda *xs, axis: tl.stack(xs, axis=axis), lambda *xs, axis: torch.stack(xs, dim=axis),
          cat_case(new_axis=True)),
    OpRow("where", lambda a, b, cond: tl.where(cond, a, b),
          lambda a, b, cond: torch.where(torch.from_numpy(cond), a, b), where_case()),
    OpRow("masked_fill", lambda a, mask: a.masked_fill(mask, -2.5),
          lambda a, mask: a.masked_fill(torch.from_numpy(mask), -2.5), bool_mask_case()),
    OpRow("tril", lambda a, k: tl.tril(a, k), lambda a, k: torch.tril(a, k), tril_case()),
    OpRow("split_heads", lambda a, heads: _weighted(F.split_heads(a, heads)),
          lambda a, heads: _weighted(_torch_split_heads(a, heads)), split_heads_case()),
    OpRow("split_heads_then_attention",
          lambda a, heads: F.scaled_dot_product_attention(*F.split_heads(a, heads), is_causal=True),
          lambda a, heads: TF.scaled_dot_product_attention(*_torch_split_heads(a, heads), is_causal=True),
          split_heads_case()),
    OpRow("split", lambda a, size, axis: _weighted(a.split(size, axis=axis)),
          lambda a, size, axis: _weighted(torch.split(a, size, dim=axis)), split_case()),
    OpRow("chunk", lambda a, size, axis: _weighted(a.chunk(size, axis=axis)),
          lambda a, size, axis: _weighted(torch.chunk(a, size, dim=axis)), split_case()),
    # torch methods and functions (issue 14)
    OpRow("clamp", lambda a, low, high: a.clamp(low, high), lambda a, low, high: a.clamp(low, high), clamp_case()),
    OpRow("pow_method", lambda a, exponent: a.pow(exponent), lambda a, exponent: a.pow(exponent),
          pow_exponent_case()),
    OpRow("std", lambda a, axis, keepdims: a.std(axis, keepdims),
          lambda a, axis, keepdims: a.std(dim=torch_axis(axis, a.ndim), keepdim=keepdims),
          with_axis(distinct=True).filter(lambda c: _axis_count(c) > 1)),  # distinct: std > 0, sqrt differentiable
    OpRow("roll", lambda a, shifts, dims: a.roll(shifts, dims), lambda a, shifts, dims: a.roll(shifts, dims),
          roll_case()),
    OpRow("topk", lambda a, dim, k, largest: a.topk(k, dim, largest).values,
          lambda a, dim, k, largest: a.topk(k, dim, largest).values, topk_case()),
    OpRow("sort", lambda a, dim: a.sort(dim, descending=True).values,
          lambda a, dim: a.sort(dim, descending=True).values, distinct_along_dim()),
    OpRow("gather", lambda a, dim, index: a.gather(dim, tl.from_numpy(index)),
          lambda a, dim, index: a.gather(dim, torch.from_numpy(index)), gather_case()),
    OpRow("tril_method", lambda a, k: a.tril(k), lambda a, k: a.tril(k), tril_case()),
    OpRow("triu", lambda a, k: tl.triu(a, k), lambda a, k: torch.triu(a, k), tril_case()),
    OpRow("triu_method", lambda a, k: a.triu(k), lambda a, k: a.triu(k), tril_case()),
    OpRow("clone", lambda a: a.clone(), lambda a: a.clone(), unary()),
    OpRow("contiguous", lambda a: a.contiguous() * 1.0, lambda a: a.contiguous() * 1.0, unary()),
    OpRow("mT", lambda a: a.mT, lambda a: a.mT, unary(min_dims=2)),
    OpRow("expand_as", lambda a, shape: a.expand_as(tl.zeros(shape)), lambda a, shape: a.expand_as(torch.zeros(shape)),
          expand_case()),
    OpRow("repeat", lambda a, sizes: a.repeat(*sizes), lambda a, sizes: a.repeat(*sizes), repeat_case()),
]


def _axis_count(case: Case) -> int:
    """How many elements each var() reduces over (var needs at least 2)."""
    a, axis = case.arrays[0], case.extra["axis"]
    axes = range(a.ndim) if axis is None else ((axis,) if isinstance(axis, int) else axis)
    return int(np.prod([a.shape[i] for i in axes])) if a.ndim else 1


def _index_via_gather(a, index):
    """Apply a numpy basic index (negative steps too, which torch rejects) to a torch
    tensor: index an array of flat positions with numpy, then gather those positions."""
    positions = np.arange(a.numel()).reshape(a.shape)[index]
    return a.reshape(-1)[torch.from_numpy(np.array(positions))]



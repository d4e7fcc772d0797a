"""Property tests for every differentiable op, driven by the table in op_table.py.

1. ``tl.gradcheck`` in float64: the analytic backward equals central differences.
2. Against PyTorch: forward and backward (with a random upstream gradient)
   agree in float64 (tightly) and in float32 (loosely), and keep the dtype.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import tinygrad_lite as tl
from op_table import OPS, OpRow

ROWS = {row.name: row for row in OPS}


@pytest.mark.parametrize("name", ROWS)
@given(data=st.data())
def test_gradcheck_float64(name: str, data) -> None:
    row: OpRow = ROWS[name]
    case = data.draw(row.inputs)
    inputs = [tl.Tensor(a.copy(), requires_grad=True) for a in case.arrays]
    assert tl.gradcheck(lambda *xs: row.ours(*xs, **case.extra), inputs)


def _run_both(row: OpRow, case, dtype: str):
    ours_inputs = [tl.Tensor(a.astype(dtype), requires_grad=True) for a in case.arrays]
    torch_inputs = [torch.tensor(a.astype(dtype), requires_grad=True) for a in case.arrays]
    ours_out = row.ours(*ours_inputs, **case.extra)
    torch_out = row.theirs(*torch_inputs, **case.extra)
    upstream = np.random.default_rng(0).standard_normal(torch_out.shape).astype(dtype)
    ours_out.backward(upstream)
    torch_out.backward(torch.from_numpy(upstream))
    return ours_inputs, ours_out, torch_inputs, torch_out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ROWS)
@given(data=st.data())
def test_matches_torch(name: str, dtype: str, data) -> None:
    row = ROWS[name]
    case = data.draw(row.inputs)
    ours_inputs, ours_out, torch_inputs, torch_out = _run_both(row, case, dtype)
    rtol, atol = (1e-9, 1e-11) if dtype == "float64" else (row.rtol32, row.atol32)

    assert ours_out.dtype == np.dtype(dtype), f"{name}: output dtype {ours_out.dtype}, expected {dtype}"
    assert ours_out.shape == tuple(torch_out.shape)
    np.testing.assert_allclose(ours_out.numpy(), torch_out.detach().numpy(), rtol=rtol, atol=atol,
                               err_msg=f"{name} forward ({dtype})")
    for i, (ours, theirs) in enumerate(zip(ours_inputs, torch_inputs)):
        expected = np.zeros(ours.shape, dtype) if theirs.grad is None else theirs.grad.numpy()
        assert ours.grad is not None, f"{name}: input {i} got no gradient"
        assert ours.grad.dtype == np.dtype(dtype), f"{name}: grad dtype {ours.grad.dtype}"
        np.testing.assert_allclose(ours.grad.numpy(), expected, rtol=rtol, atol=atol,
                                   err_msg=f"{name} gradient of input {i} ({dtype})")


def test_table_covers_the_api() -> None:
    """A guard: the table must keep a row for every differentiable op of the API."""
    expected = {"add", "sub", "mul", "div", "pow", "neg", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs",
                "gelu", "sum", "mean", "var", "max", "min", "reshape", "permute", "transpose", "unsqueeze",
                "squeeze", "expand", "flatten", "getitem_basic", "getitem_int_array", "getitem_bool_mask",
                "matmul", "matmul_batched", "linear", "softmax", "log_softmax", "cross_entropy", "layer_norm",
                "scaled_dot_product_attention", "embedding", "cat", "stack", "where", "masked_fill", "tril",
                "split", "chunk",
                # the PyTorch-compatible API (issue 14)
                "clamp", "pow_method", "std", "roll", "topk", "sort", "gather", "triu", "clone", "contiguous",
                "mT", "expand_as", "repeat", "maximum", "minimum", "amax", "amin", "batch_norm_train",
                "batch_norm_eval", "gelu_exact", "erf", "cross_entropy_label_smoothing", "mse_loss", "silu", "pad",
                "layer_norm_2d_shape", "split_heads", "split_heads_then_attention",
                # the lessons (issue 15)
                "log10"}
    assert expected <= set(ROWS), f"missing rows: {expected - set(ROWS)}"

"""Tensor's torch-style API, checked against PyTorch: dim=/keepdim= (with NumPy's axis=/keepdims=
as aliases), size()/numel(), max/min returning (values, indices), iteration and unpacking,
tl.tensor's dtypes, grad_fn, and dtype conversions."""
import numpy as np
import pytest
import torch

import tinygrad_lite as tl
from tinygrad_lite.tensor import Size, ValuesIndices, maximum, minimum

VALUES = np.array([[1.0, 5.0, 2.0, 0.5], [3.0, -1.0, 4.0, 4.5], [0.0, 2.5, -3.0, 1.5]])


def pair():
    return tl.Tensor(VALUES, requires_grad=True), torch.tensor(VALUES, requires_grad=True)


def same(ours, theirs):
    """Same values, shape and dtype."""
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-12)


# ------------------------------------------------------ dim= / keepdim=

@pytest.mark.parametrize("name", ["sum", "mean", "var", "amax", "amin"])
@pytest.mark.parametrize("dim,keepdim", [(0, False), (1, True), (-1, False), ((0, 1), True)])
def test_reductions_take_dim_and_keepdim_like_torch(name, dim, keepdim):
    x, t = pair()
    out, expected = getattr(x, name)(dim=dim, keepdim=keepdim), getattr(t, name)(dim=dim, keepdim=keepdim)
    same(out, expected)
    out.sum().backward()
    expected.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12)
    same(getattr(tl.Tensor(VALUES), name)(axis=dim, keepdims=keepdim), expected)  # NumPy's spelling


def test_var_takes_unbiased_and_correction_like_torch():
    x, t = pair()
    same(x.var(-1, keepdim=True, unbiased=False), t.var(-1, keepdim=True, unbiased=False))
    same(x.var(0, correction=0), t.var(0, correction=0))


@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin_are_int64_like_torch(name):
    x, t = pair()
    same(getattr(x, name)(), getattr(t, name)())
    same(getattr(x, name)(dim=1, keepdim=True), getattr(t, name)(dim=1, keepdim=True))
    same(getattr(x, name)(axis=0), getattr(t, name)(dim=0))


def test_shape_methods_take_torch_keywords():
    x, t = pair()
    same(x.softmax(dim=0), t.softmax(dim=0))
    same(x.log_softmax(dim=-1), t.log_softmax(dim=-1))
    same(x.softmax(axis=0), t.softmax(dim=0))
    same(x.unsqueeze(dim=1), t.unsqueeze(dim=1))
    same(x.unsqueeze(axis=0), t.unsqueeze(0))
    same(x.unsqueeze(1).squeeze(dim=1), t.unsqueeze(1).squeeze(dim=1))
    same(x.transpose(dim0=0, dim1=1), t.transpose(dim0=0, dim1=1))
    same(x.reshape(3, 2, 2).flatten(start_dim=1, end_dim=2), t.reshape(3, 2, 2).flatten(start_dim=1, end_dim=2))
    same(x.permute(1, 0), t.permute(1, 0))
    for ours, theirs in zip(x.split(2, dim=1), t.split(2, dim=1)):
        same(ours, theirs)
    for ours, theirs in zip(x.chunk(2, dim=0), t.chunk(2, dim=0)):
        same(ours, theirs)
    assert [p.shape for p in x.split([1, 3], axis=1)] == [(3, 1), (3, 3)]
    same(tl.cat([x, x], dim=1), torch.cat([t, t], dim=1))
    same(tl.stack([x, x], dim=1), torch.stack([t, t], dim=1))
    same(tl.cat([x, x], axis=0), torch.cat([t, t], dim=0))
    same(tl.stack([x, x], axis=-1), torch.stack([t, t], dim=-1))


@pytest.mark.parametrize("call,wrong,right", [
    (lambda x: x.sum(dims=1), "dims", "dim"),
    (lambda x: x.mean(keep_dim=True), "keep_dim", "keepdim"),
    (lambda x: x.max(dimm=0), "dimm", "dim"),
    (lambda x: x.argmax(axes=0), "axes", "dim"),
    (lambda x: x.softmax(dims=0), "dims", "dim"),
    (lambda x: x.split(2, dims=1), "dims", "dim"),
    (lambda x: tl.cat([x, x], dims=0), "dims", "dim"),
    (lambda x: tl.stack([x, x], dims=0), "dims", "dim"),
    (lambda x: x.var(keepdimss=True), "keepdimss", "keepdim"),
])
def test_a_wrong_keyword_names_the_right_one(call, wrong, right):
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{wrong}'; did you mean '{right}'\?"):
        call(tl.Tensor(VALUES))


def test_keywords_an_op_does_not_take_are_refused():
    x = tl.Tensor(VALUES)
    with pytest.raises(TypeError, match=r"softmax\(\) got an unexpected keyword argument 'keepdims'$"):
        x.softmax(0, keepdims=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        x.sum(colour=1)


def test_dim_and_axis_together_is_an_error():
    x = tl.Tensor(VALUES)
    with pytest.raises(TypeError, match=r"sum\(\) got both dim=1 and axis=0"):
        x.sum(dim=1, axis=0)
    with pytest.raises(TypeError, match="keepdim and keepdims"):
        x.mean(0, keepdim=True, keepdims=True)
    with pytest.raises(TypeError, match=r"cat\(\) got both dim=1 and axis=0"):
        tl.cat([x, x], dim=1, axis=0)


# ------------------------------------------------------ size() and numel()

def test_size_is_a_method_returning_a_tuple_like_torch_size():
    x, t = tl.zeros(2, 3, 4), torch.zeros(2, 3, 4)
    assert isinstance(x.size(), Size) and isinstance(x.size(), tuple)
    assert x.size() == t.size() == (2, 3, 4)
    B, T, C = x.size()  # nanoGPT's first line
    assert (B, T, C) == (2, 3, 4)
    assert [x.size(d) for d in (0, 1, 2, -1, -3)] == [t.size(d) for d in (0, 1, 2, -1, -3)]
    assert x.numel() == t.numel() == 24 and x.size().numel() == 24
    assert repr(x.size()) == "tl.Size([2, 3, 4])"
    assert tl.tensor(3.0).size() == () and tl.tensor(3.0).numel() == 1
    with pytest.raises(IndexError, match="dim 3 is out of range for a tensor with 3 dimensions"):
        x.size(3)


# ------------------------------------------------------ max / min

@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("dim,keepdim", [(0, False), (1, False), (-1, True)])
def test_max_min_with_dim_return_values_and_indices_like_torch(name, dim, keepdim):
    x, t = pair()
    ours, theirs = getattr(x, name)(dim, keepdim=keepdim), getattr(t, name)(dim, keepdim=keepdim)
    assert isinstance(ours, ValuesIndices) and ours._fields == ("values", "indices")
    values, indices = ours  # unpacks as torch's return_types
    same(values, theirs.values)
    same(indices, theirs.indices)
    assert ours.indices is indices and ours[0] is values
    (values * tl.Tensor(np.arange(1.0, 1 + values.numel()).reshape(values.shape))).sum().backward()
    (theirs.values * torch.arange(1.0, 1 + theirs.values.numel()).reshape(theirs.values.shape)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy())
    same(getattr(x, name)(axis=dim, keepdims=keepdim).values, theirs.values)


def test_max_with_dim_sends_the_gradient_to_the_chosen_index_on_ties_like_torch():
    values = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    x, t = tl.Tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)
    x.max(1).values.sum().backward()
    t.max(1).values.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy())
    assert x.max(1).indices.tolist() == t.max(1).indices.tolist() == [1, 0]


def test_max_min_without_dim_return_one_tensor():
    x, t = pair()
    same(x.max(), t.max())
    same(x.min(), t.min())
    same(tl.tensor(2.5).max(0).values, torch.tensor(2.5).max(0).values)  # 0-d with dim 0, as torch
    with pytest.raises(TypeError, match="amax"):
        x.max((0, 1))


@pytest.mark.parametrize("ours_fn,theirs_fn", [(lambda a, b: a.max(b), torch.maximum),
                                               (lambda a, b: a.min(b), torch.minimum),
                                               (maximum, torch.max), (minimum, torch.min)])
def test_elementwise_maximum_minimum_share_gradient_on_ties_like_torch(ours_fn, theirs_fn):
    a_values, b_values = np.array([[1.0, 2.0, 3.0], [4.0, -1.0, np.nan]]), np.array([2.0, 2.0, 1.0])
    a, b = tl.Tensor(a_values, requires_grad=True), tl.Tensor(b_values, requires_grad=True)
    ta, tb = torch.tensor(a_values, requires_grad=True), torch.tensor(b_values, requires_grad=True)
    ours, theirs = ours_fn(a, b), theirs_fn(ta, tb)
    same(ours, theirs)
    ours[0].sum().backward()
    theirs[0].sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy())
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy())


# ------------------------------------------------------ iteration and unpacking

def test_iterating_yields_rows_that_carry_gradient_like_torch():
    x, t = pair()
    rows, torch_rows = list(x), list(t)
    assert len(rows) == len(torch_rows) == 3
    for ours, theirs in zip(rows, torch_rows):
        same(ours, theirs)
    first, second, third = x  # unpacking, as torch
    (first * 1 + second * 2 + third * 3).sum().backward()
    a, b, c = t
    (a * 1 + b * 2 + c * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy())
    assert [v.item() for v in tl.tensor([1, 2, 3])] == [v.item() for v in torch.tensor([1, 2, 3])]


def test_zero_d_tensors_refuse_len_and_iteration_like_torch():
    for make in (torch.tensor, tl.tensor):
        scalar = make(3.0)
        with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
            len(scalar)
        with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
            iter(scalar)
        with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
            a, b = scalar
    with pytest.raises(ValueError, match="too many values to unpack"):
        v, i = tl.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # 3 rows, as torch: no silent pair


# ------------------------------------------------------ tl.tensor and dtypes

@pytest.mark.parametrize("data", [[1, 2, 3], [1.5, 2], [True, False], 3, 2.5, True, [[1, 2], [3, 4]],
                                  [[True, 1], [0, 2]], np.arange(3.0), np.arange(3, dtype=np.int32),
                                  np.float64(2.0), np.array([1.0], dtype=np.float16)])
def test_tensor_picks_dtypes_like_torch_tensor(data):
    same(tl.tensor(data), torch.tensor(data))


def test_tensor_copies_and_tensor_constructor_keeps_float32():
    array = np.zeros(2)
    copied = tl.tensor(array)
    array[0] = 5.0
    assert copied.tolist() == [0.0, 0.0]
    assert tl.Tensor([1, 2]).dtype == torch.Tensor([1, 2]).numpy().dtype == np.float32
    assert tl.tensor([1, 2], dtype=tl.float64).dtype == tl.float64
    with pytest.raises(TypeError, match="cannot make a tensor from"):
        tl.tensor(["a", "b"])


def test_dtype_names_match_torch():
    pairs = [("long", "int64"), ("int64", "int64"), ("int32", "int32"), ("bool", "bool"), ("float", "float32"),
             ("float32", "float32"), ("float64", "float64"), ("double", "float64"), ("half", "float16"),
             ("float16", "float16")]
    for name, numpy_name in pairs:
        assert np.dtype(getattr(tl, name)) == np.dtype(numpy_name), name
        assert str(getattr(torch, name)) == f"torch.{numpy_name}"


def test_conversions_like_torch():
    x, t = pair()
    for name in ("bool", "int", "long", "float", "double", "half"):
        same(getattr(x, name)(), getattr(t, name)())
    same(x.to(tl.float32), t.to(torch.float32))
    same(x.to("cpu", tl.long), t.to("cpu", torch.long))
    same(x.to(dtype=tl.int32), t.to(dtype=torch.int32))
    same(x.to(device="cpu"), t.to(device="cpu"))
    same(x.to(tl.tensor([1, 2])), t.to(torch.tensor([1, 2])))
    same(x.type_as(tl.tensor([True])), t.type_as(torch.tensor([True])))
    assert x.to("cpu") is x and x.to(tl.float64) is x
    assert x.float().dtype == tl.float32 and x.long().dtype == tl.long
    assert not x.long().requires_grad and x.float().requires_grad  # casts to ints leave the graph
    x.float().sum().backward()
    assert x.grad.dtype == tl.float64
    with pytest.raises(TypeError, match="is not a dtype"):
        x.to(3.5)


# ------------------------------------------------------ grad_fn

def test_grad_fn_is_the_creating_function_and_the_repr_agrees():
    x, t = pair()
    assert x.grad_fn is None and t.grad_fn is None
    y = x * 2
    assert y.grad_fn is y._ctx and type(y.grad_fn).__name__ == "Mul" and y.grad_fn.parents[0] is x
    assert f"grad_fn={y.grad_fn!r}" in repr(y) and "grad_fn=<Mul>" in repr(y)
    with tl.no_grad():
        assert (x * 2).grad_fn is None
    assert x.detach().grad_fn is None


def test_int_and_float_of_a_one_element_tensor_like_torch():
    for make in (torch.tensor, tl.tensor):
        assert int(make([[7]])) == 7 and float(make(2.5)) == 2.5 and int(make(3.9)) == 3
        with pytest.raises((ValueError, RuntimeError)):
            int(make([1, 2]))

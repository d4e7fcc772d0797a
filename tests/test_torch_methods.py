"""The torch-named Tensor methods (topk, sort, gather, clamp, roll, repeat, ...) beyond their
gradients, which the rows in op_table.py check: indices, bounds, copies and errors, against PyTorch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tinygrad_lite as tl


@pytest.mark.parametrize("diagonal", [-1, 0, 2])
def test_triu_and_tril_match_torch(diagonal):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    for ours, theirs in [(tl.triu(tl.Tensor(x), diagonal), torch.triu(torch.from_numpy(x), diagonal)),
                         (tl.Tensor(x).triu(diagonal), torch.from_numpy(x).triu(diagonal)),
                         (tl.Tensor(x).tril(diagonal), torch.from_numpy(x).tril(diagonal))]:
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_small_methods_match_torch():
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    ours, theirs = tl.Tensor(x), torch.from_numpy(x)
    assert ours.dim() == theirs.dim() == 3
    assert ours.contiguous() is ours
    copy = ours.clone()
    copy.data[0, 0, 0] = 100.0
    assert ours.numpy()[0, 0, 0] == x[0, 0, 0] != 100.0  # clone owns its memory
    np.testing.assert_array_equal(ours.mT.numpy(), theirs.mT.numpy())
    np.testing.assert_array_equal(ours.roll(2).numpy(), theirs.roll(2).numpy())
    np.testing.assert_array_equal(ours.roll((1, -1), (0, 2)).numpy(), theirs.roll((1, -1), (0, 2)).numpy())
    np.testing.assert_array_equal(ours.repeat(2, 1, 1, 3).numpy(), theirs.repeat(2, 1, 1, 3).numpy())
    np.testing.assert_allclose(ours.std(1, unbiased=False).numpy(), theirs.std(1, unbiased=False).numpy())
    np.testing.assert_allclose(ours.clip(-0.5, 0.5).numpy(), theirs.clip(-0.5, 0.5).numpy())
    np.testing.assert_allclose(ours.clamp_min(0.1).numpy(), theirs.clamp_min(0.1).numpy())
    np.testing.assert_allclose(ours.clamp_max(0.1).numpy(), theirs.clamp_max(0.1).numpy())


def test_clamp_gradient_passes_at_the_bounds_as_torch():
    values = [-2.0, -1.0, 0.0, 1.0, 2.0]
    ours, theirs = tl.Tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)
    ours.clamp(-1.0, 1.0).sum().backward()
    theirs.clamp(-1.0, 1.0).sum().backward()
    np.testing.assert_array_equal(ours.grad.numpy(), theirs.grad.numpy())
    with pytest.raises(ValueError, match="clamp"):
        ours.clamp()


@pytest.mark.parametrize("largest", [True, False])
def test_topk_sort_argsort_indices_match_torch(largest):
    x = np.random.default_rng(1).permutation(24).reshape(4, 6).astype(np.float32)  # distinct: no ties
    ours, theirs = tl.Tensor(x), torch.from_numpy(x)
    for dim in (0, 1, -1):
        values, indices = ours.topk(3, dim=dim, largest=largest)
        expected = theirs.topk(3, dim=dim, largest=largest)
        assert indices.dtype == np.int64
        np.testing.assert_array_equal(values.numpy(), expected.values.numpy())
        np.testing.assert_array_equal(indices.numpy(), expected.indices.numpy())
        result = ours.sort(dim, descending=largest)
        np.testing.assert_array_equal(result.indices.numpy(), theirs.sort(dim, descending=largest).indices.numpy())
        np.testing.assert_array_equal(ours.argsort(dim, descending=largest).numpy(),
                                      theirs.argsort(dim, descending=largest).numpy())
    with pytest.raises(ValueError, match="topk"):
        ours.topk(7, dim=1)


def test_gather_matches_torch_and_checks_the_index():
    x = np.arange(12.0).reshape(3, 4)
    index = np.array([[0, 3], [2, 2], [1, 0]])
    np.testing.assert_array_equal(tl.Tensor(x).gather(1, tl.from_numpy(index)).numpy(),
                                  torch.from_numpy(x).gather(1, torch.from_numpy(index)).numpy())
    with pytest.raises(ValueError, match="gather"):
        tl.Tensor(x).gather(1, tl.tensor([0, 1]))


@pytest.mark.parametrize("density", [False, True])
def test_histogram_matches_torch(density):
    x = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    for kwargs in ({}, {"bins": 7}, {"bins": 5, "range": (-1.0, 1.0)}):
        ours, theirs = tl.Tensor(x).histogram(density=density, **kwargs), torch.histogram(
            torch.from_numpy(x), density=density, **kwargs)
        np.testing.assert_allclose(ours.hist.numpy(), theirs.hist.numpy(), rtol=1e-5)
        np.testing.assert_allclose(ours.bin_edges.numpy(), theirs.bin_edges.numpy(), rtol=1e-6, atol=1e-6)
        hist, bin_edges = tl.histogram(tl.Tensor(x), density=density, **kwargs)  # unpacks as torch's
        assert hist.dtype == bin_edges.dtype == np.float32 and hist.shape == (kwargs.get("bins", 100),)
    assert tl.Tensor(x).nelement() == torch.from_numpy(x).nelement() == 400
    with pytest.raises(TypeError, match="histogram: expected a floating point tensor, got dtype int64"):
        tl.tensor([1, 2, 3]).histogram()
    with pytest.raises(ValueError, match="histogram: bins must be a positive int, got 0"):
        tl.Tensor(x).histogram(0)

"""Creation and utility functions (eye, linspace, triu, randint, multinomial, Generator, ...).

Deterministic values are compared with PyTorch; random ones are checked by their statistics,
since our generator is NumPy's, not torch's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tinygrad_lite as tl


# ------------------------------------------------------------ deterministic values

@pytest.mark.parametrize("n, m", [(3, None), (2, 4), (4, 2), (0, None)])
def test_eye_matches_torch(n, m):
    ours = tl.eye(n, m)
    theirs = torch.eye(n) if m is None else torch.eye(n, m)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert tl.eye(2, dtype=tl.float64).dtype == np.float64


@pytest.mark.parametrize("start, end, steps", [(0, 1, 5), (-2.5, 3.0, 7), (1, 1, 3), (0, 10, 1)])
def test_linspace_matches_torch(start, end, steps):
    ours = tl.linspace(start, end, steps)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours.numpy(), torch.linspace(start, end, steps).numpy(), rtol=1e-6, atol=1e-7)


def test_empty_and_like_functions_keep_shape_dtype_device():
    t = tl.Tensor(np.ones((2, 3), dtype=np.float64))
    assert tl.empty(2, 3).shape == (2, 3) and tl.empty((4,), dtype=tl.int64).dtype == np.int64
    for made in [tl.empty_like(t), tl.rand_like(t), tl.randn_like(t), tl.full_like(t, 7.0), tl.zeros_like(t)]:
        assert made.shape == (2, 3) and made.dtype == np.float64 and made.device == "cpu"
    np.testing.assert_array_equal(tl.full_like(t, 7.0).numpy(), np.full((2, 3), 7.0))
    assert tl.full_like(t, 2, dtype=tl.int64).dtype == np.int64
    assert tl.ones_like(t, dtype=tl.float32).dtype == np.float32
    ints = tl.randint_like(tl.zeros(100, dtype=tl.int64), 3, 6)
    assert ints.dtype == np.int64 and 3 <= ints.numpy().min() and ints.numpy().max() < 6
    assert tl.randint_like(tl.zeros(50, dtype=tl.int64), 2).numpy().max() < 2


def test_from_numpy_shares_memory_and_keeps_dtype():
    for dtype in (np.float64, np.int32, np.int64, np.float16):
        array = np.arange(6, dtype=dtype).reshape(2, 3)
        t = tl.from_numpy(array)
        assert t.dtype == dtype and t.shape == (2, 3)
        array[0, 0] = 5
        assert t.numpy()[0, 0] == 5  # the same memory, as torch.from_numpy
    with pytest.raises(TypeError, match="from_numpy"):
        tl.from_numpy([1, 2, 3])


def test_allclose_matches_torch():
    a, b = np.array([1.0, 2.0, np.nan]), np.array([1.0 + 1e-6, 2.0, np.nan])
    for rtol, atol, equal_nan in [(1e-5, 1e-8, True), (1e-5, 1e-8, False), (1e-9, 0.0, True)]:
        expected = torch.allclose(torch.from_numpy(a), torch.from_numpy(b), rtol, atol, equal_nan)
        assert tl.allclose(tl.Tensor(a), tl.Tensor(b), rtol, atol, equal_nan) == expected
    assert tl.allclose(tl.ones(2, 3), tl.ones(3))  # broadcasts, as torch


def test_inference_mode_is_no_grad_as_context_and_decorator():
    x = tl.ones(2, requires_grad=True)
    with tl.inference_mode():
        assert not (x * 2).requires_grad
    with tl.inference_mode(False):
        assert (x * 2).requires_grad

    @tl.inference_mode()
    def predict(v):
        return v * 2

    assert not predict(x).requires_grad and tl.is_grad_enabled()


# ----------------------------------------------------------------- random numbers

def test_randint_range_shape_dtype_and_both_call_forms():
    values = tl.randint(-3, 4, (2000,))
    assert values.dtype == np.int64 and values.shape == (2000,)
    assert set(values.numpy().tolist()) == set(range(-3, 4))  # every value in [low, high), none outside
    assert tl.randint(5, (3, 4)).shape == (3, 4) and tl.randint(5, (100,)).numpy().max() < 5
    assert tl.randint(0, 2, (3,), dtype=tl.int32).dtype == np.int32
    with pytest.raises(ValueError, match="randint"):
        tl.randint(3, 3, (2,))


def test_randperm_is_a_permutation():
    perm = tl.randperm(50)
    assert perm.dtype == np.int64
    assert sorted(perm.numpy().tolist()) == list(range(50))


def test_manual_seed_makes_every_random_function_reproducible():
    def draw():
        return [tl.randn(3).numpy(), tl.rand(3).numpy(), tl.randint(0, 10, (5,)).numpy(), tl.randperm(6).numpy(),
                tl.multinomial(tl.ones(10), 3).numpy(), tl.multinomial(tl.ones(10), 3, replacement=True).numpy()]
    tl.manual_seed(123)
    first = draw()
    tl.manual_seed(123)
    second = draw()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_generator_is_reproducible_and_independent_of_the_global_one():
    def draw(g):
        return [tl.randn(4, generator=g).numpy(), tl.rand(2, generator=g).numpy(),
                tl.randint(0, 100, (4,), generator=g).numpy(), tl.randperm(5, generator=g).numpy(),
                tl.multinomial(tl.ones(8), 2, generator=g).numpy()]
    g = tl.Generator().manual_seed(42)
    assert isinstance(g, tl.Generator) and g.initial_seed() == 42
    first = draw(g)
    tl.randn(10)  # draws from the global generator do not touch g's stream
    second = draw(tl.Generator().manual_seed(42))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(draw(tl.Generator().manual_seed(43))[0], first[0])
    with pytest.raises(TypeError, match="generator"):
        tl.randn(2, generator=np.random.default_rng(0))


def test_multinomial_with_replacement_follows_the_probabilities():
    probs = tl.tensor([[0.1, 0.0, 0.6, 0.3], [1.0, 1.0, 2.0, 0.0]])  # rows need not sum to 1
    samples = tl.multinomial(probs, 20000, replacement=True, generator=tl.Generator().manual_seed(0))
    assert samples.dtype == np.int64 and samples.shape == (2, 20000)
    for row, expected in zip(samples.numpy(), [[0.1, 0.0, 0.6, 0.3], [0.25, 0.25, 0.5, 0.0]]):
        frequencies = np.bincount(row, minlength=4) / row.size
        np.testing.assert_allclose(frequencies, expected, atol=0.015)
    assert tl.multinomial(tl.tensor([0.2, 0.8]), 1).shape == (1,)


def test_multinomial_without_replacement_never_repeats_and_matches_sequential_draws():
    rng = tl.Generator().manual_seed(1)
    weights = np.array([1.0, 2.0, 3.0, 0.0, 4.0])
    draws = tl.multinomial(tl.Tensor(np.tile(weights, (20000, 1))), 2, generator=rng).numpy()
    assert all(len(set(row)) == 2 for row in draws) and not (draws == 3).any()  # no repeats, weight 0 never
    p = weights / weights.sum()
    np.testing.assert_allclose(np.bincount(draws[:, 0], minlength=5) / len(draws), p, atol=0.015)
    # second draw without putting the first back: P(second = j) = sum_i p_i p_j / (1 - p_i)
    second = np.array([sum(p[i] * p[j] / (1 - p[i]) for i in range(5) if i != j) for j in range(5)])
    np.testing.assert_allclose(np.bincount(draws[:, 1], minlength=5) / len(draws), second, atol=0.015)
    full = tl.multinomial(tl.Tensor(weights), 4).numpy()  # every nonzero category, each once
    assert sorted(full.tolist()) == [0, 1, 2, 4]


def test_multinomial_rejects_bad_probabilities():
    for bad in ([0.5, -0.1], [0.0, 0.0], [np.nan, 1.0]):
        with pytest.raises(ValueError, match="multinomial"):
            tl.multinomial(tl.Tensor(bad), 1, replacement=True)
    with pytest.raises(ValueError, match="without replacement"):
        tl.multinomial(tl.tensor([0.5, 0.5, 0.0]), 3)

"""The fused fast paths (``tinygrad_lite.fused``) against their plain-Tensor twins and torch.

For every fused op: forward values and gradients (with a random upstream
gradient) agree with ``functional.<name>_reference`` -- to 1e-10 in float64,
loosely in float32 -- and with ``torch.nn.functional``; gradcheck passes in
float64; float32 stays float32; huge logits stay finite; backward leaves its
saved arrays and the upstream gradient alone (so retain_graph works).
"""
from __future__ import annotations

import functools
import math

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_lite as tl
import tinygrad_lite.functional as F
from tinygrad_lite import backend, fused
from tinygrad_lite.cpu_kernels import attention as cpu_attention
from tinygrad_lite.cpu_kernels import threads

# GPT-2's tanh GELU, the one with CPU and CUDA kernels (F.gelu's default is torch's exact erf form)
gelu_tanh = functools.partial(F.gelu, approximate="tanh")
gelu_tanh_reference = functools.partial(F.gelu_reference, approximate="tanh")

DTYPES = [np.float64, np.float32]
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}

seeds = st.integers(0, 2**32 - 1)
shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5)


# ---------------------------------------------------------------- helpers


def random_arrays(seed: int, *shapes, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) * scale for shape in shapes]


def upstream_for(shape, dtype, seed: int = 1234) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def run_tl(fn, arrays, dtype, creator: list | None = None):
    """Forward and backward (random upstream gradient) in tinygrad_lite: (output, grads).

    ``creator``, if given, receives the output's Function (backward frees it).
    """
    tensors = [tl.Tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    if creator is not None:
        creator.append(out._ctx)
    out.backward(upstream_for(out.shape, dtype))
    return out, [t.grad for t in tensors]


def run_torch(fn, arrays, dtype):
    tensors = [torch.tensor(a, dtype=TORCH_DTYPE[dtype], requires_grad=True) for a in arrays]
    out = fn(*tensors)
    out.backward(torch.from_numpy(upstream_for(tuple(out.shape), dtype)))
    return out.detach().numpy(), [t.grad.numpy() for t in tensors]


def assert_close(actual, desired, dtype, atol32: float = 0.0) -> None:
    """Tight in float64; loose in float32, with an absolute part scaled to the largest element.

    float32 results carry rounding errors of about 1e-7 times the size of the
    terms that cancel on the way (``atol32`` adds an op-specific bound for
    that): GELU's 1 + tanh(u) for very negative u, or layer norm of a row
    whose values nearly agree, are all noise on every side.
    """
    if dtype == np.float64:
        np.testing.assert_allclose(actual, desired, rtol=1e-10, atol=1e-10)
    else:
        scale = float(np.abs(desired).max()) if np.size(desired) else 0.0
        np.testing.assert_allclose(actual, desired, rtol=2e-4, atol=2e-4 * scale + 1e-5 + atol32)


def assert_same_dtypes(out, grads, dtype):
    assert out.dtype == dtype, f"output is {out.dtype}, input was {np.dtype(dtype)}"
    for grad in grads:
        assert grad.dtype == dtype, f"gradient is {grad.dtype}, input was {np.dtype(dtype)}"


def assert_fused_matches_reference(fused_fn, reference_fn, arrays, dtype, fused_class, atol32=0.0):
    creator = []
    out, grads = run_tl(fused_fn, arrays, dtype, creator)
    assert isinstance(creator[0], fused_class), f"the public function made a {type(creator[0]).__name__}"
    ref_out, ref_grads = run_tl(reference_fn, arrays, dtype)
    assert_same_dtypes(out, grads, dtype)
    assert_close(out.numpy(), ref_out.numpy(), dtype, atol32)
    for grad, ref_grad in zip(grads, ref_grads):
        assert_close(grad.numpy(), ref_grad.numpy(), dtype, atol32)


def assert_fused_matches_torch(fused_fn, torch_fn, arrays, dtype, atol32=0.0):
    out, grads = run_tl(fused_fn, arrays, dtype)
    torch_out, torch_grads = run_torch(torch_fn, arrays, dtype)
    assert_same_dtypes(out, grads, dtype)
    assert_close(out.numpy(), torch_out, dtype, atol32)
    for grad, torch_grad in zip(grads, torch_grads):
        assert_close(grad.numpy(), torch_grad, dtype, atol32)


def pick_axis(choice: int, ndim: int) -> int:
    """Map any int to a valid axis, keeping its sign (both -1 and ndim-1 styles get tested)."""
    return choice % ndim if choice >= 0 else -1 - (-1 - choice) % ndim


# ---------------------------------------------------------- softmax family

SOFTMAXES = [
    (F.softmax, F.softmax_reference, fused.Softmax, TF.softmax),
    (F.log_softmax, F.log_softmax_reference, fused.LogSoftmax, TF.log_softmax),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("public, reference, fused_class, torch_fn", SOFTMAXES, ids=["softmax", "log_softmax"])
@given(shape=shapes, seed=seeds, axis_choice=st.integers(-4, 3))
@example(shape=(1, 7), seed=0, axis_choice=-1)   # one row
@example(shape=(4, 1), seed=0, axis_choice=-1)   # size-1 axis: softmax is 1, log softmax 0
def test_softmax_family_matches_reference_and_torch(public, reference, fused_class, torch_fn, dtype, shape, seed,
                                                    axis_choice):
    axis = pick_axis(axis_choice, len(shape))
    (x,) = random_arrays(seed, shape, scale=3.0)
    assert_fused_matches_reference(lambda t: public(t, axis=axis), lambda t: reference(t, axis=axis),
                                   [x], dtype, fused_class)
    assert_fused_matches_torch(lambda t: public(t, axis=axis), lambda t: torch_fn(t, dim=axis), [x], dtype)


@pytest.mark.parametrize("public", [F.softmax, F.log_softmax], ids=["softmax", "log_softmax"])
def test_softmax_family_gradcheck(public):
    (x,) = random_arrays(0, (2, 3, 4))
    for axis in (0, 1, -1):
        assert tl.gradcheck(lambda t: public(t, axis=axis), [tl.Tensor(x, dtype=np.float64, requires_grad=True)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("public, torch_fn", [(F.softmax, TF.softmax), (F.log_softmax, TF.log_softmax)],
                         ids=["softmax", "log_softmax"])
def test_softmax_family_extreme_logits_stay_finite(public, torch_fn, dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 3.0]])
    out, grads = run_tl(lambda t: public(t, axis=-1), [x], dtype)
    assert np.isfinite(out.numpy()).all() and np.isfinite(grads[0].numpy()).all()
    assert_fused_matches_torch(lambda t: public(t, axis=-1), lambda t: torch_fn(t, dim=-1), [x], dtype)


def test_softmax_rows_sum_to_one_and_log_softmax_is_its_log():
    (x,) = random_arrays(3, (5, 6), scale=10.0)
    probs = F.softmax(tl.Tensor(x, dtype=np.float64), axis=1).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(F.log_softmax(tl.Tensor(x, dtype=np.float64), axis=1).numpy(), np.log(probs),
                               rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------ cross-entropy

REDUCTIONS = ["mean", "sum", "none"]


@st.composite
def cross_entropy_cases(draw):
    """(logits, targets) with some rows set to ignore_index (but at least one kept)."""
    rows = draw(st.integers(1, 6), label="N")
    classes = draw(st.integers(1, 6), label="C")
    (logits,) = random_arrays(draw(seeds), (rows, classes), scale=3.0)
    targets = np.array(draw(st.lists(st.integers(0, classes - 1), min_size=rows, max_size=rows)), dtype=np.int64)
    ignored = np.array(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)))
    ignored[draw(st.integers(0, rows - 1))] = False
    targets[ignored] = -100
    return logits, targets


def cross_entropy_public(targets, reduction, ignore_index=-100):
    return lambda t: F.cross_entropy(t, targets, ignore_index=ignore_index, reduction=reduction)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(case=cross_entropy_cases())
@example(case=(np.array([[0.5, -1.0, 2.0]]), np.array([2])))  # one row
@example(case=(np.array([[0.5], [1.5]]), np.array([0, -100])))  # one class: loss 0
def test_cross_entropy_matches_reference_and_torch(reduction, dtype, case):
    logits, targets = case
    assert_fused_matches_reference(
        cross_entropy_public(targets, reduction),
        lambda t: F.cross_entropy_reference(t, targets, reduction=reduction), [logits], dtype, fused.CrossEntropy)
    assert_fused_matches_torch(
        cross_entropy_public(targets, reduction),
        lambda t: TF.cross_entropy(t, torch.from_numpy(targets), reduction=reduction), [logits], dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_gradcheck(reduction):
    (logits,) = random_arrays(0, (4, 5))
    targets = np.array([1, 0, 4, 4])
    assert tl.gradcheck(cross_entropy_public(targets, reduction, ignore_index=0),
                        [tl.Tensor(logits, dtype=np.float64, requires_grad=True)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_extreme_logits_stay_finite(reduction, dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [-1e4, -1e4, -1e4]])
    targets = np.array([1, 1, 2])
    out, grads = run_tl(cross_entropy_public(targets, reduction), [logits], dtype)
    assert np.isfinite(out.numpy()).all() and np.isfinite(grads[0].numpy()).all()
    assert_fused_matches_torch(cross_entropy_public(targets, reduction),
                               lambda t: TF.cross_entropy(t, torch.from_numpy(targets), reduction=reduction),
                               [logits], dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_every_target_ignored_is_like_torch(reduction):
    """mean: 0/0 = nan loss, but a zero gradient (torch's behaviour); sum and none: 0."""
    (logits,) = random_arrays(0, (3, 4))
    targets = np.full(3, -100)
    with np.errstate(all="raise"):  # no divide-by-zero warning on the way
        out, grads = run_tl(cross_entropy_public(targets, reduction), [logits], np.float64)
    torch_out, torch_grads = run_torch(
        lambda t: TF.cross_entropy(t, torch.from_numpy(targets), reduction=reduction), [logits], np.float64)
    np.testing.assert_array_equal(out.numpy(), torch_out)  # nan == nan for assert_array_equal
    np.testing.assert_array_equal(grads[0].numpy(), torch_grads[0])


def test_cross_entropy_checks_its_inputs():
    logits = tl.Tensor(np.zeros((2, 3)), requires_grad=True)
    with pytest.raises(IndexError, match="cross_entropy: target 3 is out of range for 3 classes"):
        F.cross_entropy(logits, [0, 3])
    with pytest.raises(IndexError, match="out of range"):
        F.cross_entropy(logits, [-1, 0])
    with pytest.raises(TypeError, match="cross_entropy: targets must be integers"):
        F.cross_entropy(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"cross_entropy: expected logits \(N, C\) and targets \(N,\)"):
        F.cross_entropy(logits, [0, 1, 2])
    with pytest.raises(ValueError, match="cross_entropy: unknown reduction 'avg'"):
        F.cross_entropy(logits, [0, 1], reduction="avg")
    assert np.isfinite(F.cross_entropy(logits, [0, 7], ignore_index=7).item())  # the ignored id may be any int


# --------------------------------------------------------------- layer norm


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", ["weight+bias", "weight", "bias", "none"])
@given(shape=shapes, seed=seeds)
@example(shape=(1, 6), seed=0)   # one row
@example(shape=(3, 1), seed=0)   # D = 1: xhat is 0, only the bias survives
def test_layer_norm_matches_reference_and_torch(affine, dtype, shape, seed):
    x, weight, bias = random_arrays(seed, shape, shape[-1:], shape[-1:])
    x = x * 2.0 + 0.5
    arrays = [x] + ([weight] if "weight" in affine else []) + ([bias] if "bias" in affine else [])

    def split(params):
        params = list(params)
        return (params.pop(0) if "weight" in affine else None), (params.pop(0) if "bias" in affine else None)

    # dx = rstd (g w - ...) cancels down to noise of size ~1e-7 rstd |g w| when a row's values nearly agree
    rstd = 1 / np.sqrt(x.var(axis=-1) + 1e-5)
    atol32 = 1e-4 * float(rstd.max()) * (1 + float(np.abs(weight).max()))
    assert_fused_matches_reference(lambda t, *p: F.layer_norm(t, t.shape[-1:], *split(p)),
                                   lambda t, *p: F.layer_norm_reference(t, t.shape[-1:], *split(p)), arrays, dtype,
                                   fused.LayerNorm,
                                   atol32)
    if shape[-1] == 1 and dtype == np.float32:
        return  # D = 1: xhat is exactly 0 here; torch's is float32 rounding noise times 1/sqrt(eps)
    assert_fused_matches_torch(lambda t, *p: F.layer_norm(t, t.shape[-1:], *split(p)),
                               lambda t, *p: TF.layer_norm(t, t.shape[-1:], *split(p)), arrays, dtype, atol32)


def test_layer_norm_gradcheck():
    x, weight, bias = random_arrays(0, (2, 2, 4), (4,), (4,))
    x64 = [tl.Tensor(a, dtype=np.float64, requires_grad=True) for a in (x, weight, bias)]
    assert tl.gradcheck(lambda t, w, b: F.layer_norm(t, (4,), w, b, eps=1e-3), x64)
    assert tl.gradcheck(lambda t: F.layer_norm(t, (4,)), x64[:1])
    assert tl.gradcheck(lambda t, b: F.layer_norm(t, (4,), None, b), [x64[0], x64[2]])


def test_layer_norm_gradient_only_for_some_inputs():
    """Parameters frozen, or input constant: the grads that are asked for still match the reference."""
    x, weight, bias = random_arrays(5, (3, 4), (4,), (4,))
    for needs in [(True, False, False), (False, True, True), (False, False, True)]:
        results = []
        for fn in (F.layer_norm, F.layer_norm_reference):
            tensors = [tl.Tensor(a, dtype=np.float64, requires_grad=r) for a, r in zip((x, weight, bias), needs)]
            fn(tensors[0], (4,), *tensors[1:]).backward(upstream_for((3, 4), np.float64))
            results.append([t.grad.numpy() if t.grad is not None else None for t in tensors])
        for got, want, needed in zip(*results, needs):
            assert (got is None) == (not needed)
            if needed:
                np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_layer_norm_checks_its_inputs():
    x = tl.Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"layer_norm: weight has shape \(4,\), expected \(3,\)"):
        F.layer_norm(x, (3,), tl.Tensor(np.ones(4)))
    with pytest.raises(ValueError, match=r"layer_norm: bias has shape \(1, 3\)"):
        F.layer_norm(x, (3,), None, tl.Tensor(np.ones((1, 3))))
    with pytest.raises(TypeError, match="layer_norm: inputs have different dtypes"):
        F.layer_norm(x.float(), (3,), tl.Tensor(np.ones(3), dtype=np.float64))


# --------------------------------------------------------------- batch norm


def batch_norm_of(fn, affine: str, momentum: float = 0.1):
    """fn(x, [weight], [bias]) in training mode with fresh running statistics, which are kept in ``stats``."""
    stats = []

    def run(t, *params):
        params = list(params)
        weight = params.pop(0) if "weight" in affine else None
        bias = params.pop(0) if "bias" in affine else None
        running = [tl.zeros(t.shape[1], dtype=t.dtype), tl.ones(t.shape[1], dtype=t.dtype)]
        stats.append(running)
        return fn(t, *running, weight, bias, training=True, momentum=momentum)
    return run, stats


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", ["weight+bias", "weight", "none"])
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 6), (2, 1, 1)])
def test_batch_norm_matches_reference(affine, dtype, shape):
    x, weight, bias = random_arrays(3, shape, shape[1:2], shape[1:2])
    arrays = [x * 2.0 + 0.5] + ([weight] if "weight" in affine else []) + ([bias] if "bias" in affine else [])
    fused_fn, fused_stats = batch_norm_of(F.batch_norm, affine)
    reference_fn, reference_stats = batch_norm_of(F.batch_norm_reference, affine)
    assert_fused_matches_reference(fused_fn, reference_fn, arrays, dtype, fused.BatchNorm, atol32=1e-4)
    for fused_stat, reference_stat in zip(fused_stats[0], reference_stats[0]):  # the running mean and var
        assert_close(fused_stat.numpy(), reference_stat.numpy(), dtype)
        assert fused_stat.dtype == dtype


def test_batch_norm_statistics_carry_no_gradient():
    x = tl.Tensor(random_arrays(0, (4, 3))[0], requires_grad=True)
    y, mean, var = fused.BatchNorm.apply(x, axes=(0,))
    np.testing.assert_allclose(mean.numpy(), x.numpy().mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(var.numpy(), x.numpy().var(axis=0), rtol=1e-5)
    with pytest.raises(RuntimeError, match="batch_norm: the batch statistics it returns are not differentiable"):
        (y.sum() + mean.sum()).backward()


# --------------------------------------------------------------------- GELU


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes, seed=seeds)
@example(shape=(), seed=0)  # a 0-d tensor
def test_gelu_matches_reference_and_torch(dtype, shape, seed):
    (x,) = random_arrays(seed, shape, scale=3.0)
    assert_fused_matches_reference(gelu_tanh, gelu_tanh_reference, [x], dtype, fused.Gelu)
    assert_fused_matches_torch(gelu_tanh, lambda t: TF.gelu(t, approximate="tanh"), [x], dtype)
    assert_fused_matches_reference(F.gelu, F.gelu_reference, [x], dtype, fused.GeluErf)  # exact, the default
    assert_fused_matches_torch(F.gelu, TF.gelu, [x], dtype)


def test_gelu_gradcheck_and_large_inputs():
    (x,) = random_arrays(0, (3, 5), scale=3.0)
    for gelu in (gelu_tanh, F.gelu):
        assert tl.gradcheck(gelu, [tl.Tensor(x, dtype=np.float64, requires_grad=True)])
    big = np.array([-1e4, -30.0, 0.0, 30.0, 1e4])
    for dtype in DTYPES:
        assert_fused_matches_torch(gelu_tanh, lambda t: TF.gelu(t, approximate="tanh"), [big], dtype)
        assert_fused_matches_torch(F.gelu, TF.gelu, [big], dtype)


# ---------------------------------------------------------------- attention


@st.composite
def attention_cases(draw):
    """q (..., Tq, D), k (..., Tk, D), v (..., Tk, Dv) with batch dims that may broadcast."""
    batch = draw(st.lists(st.integers(1, 3), max_size=2), label="batch")
    kv_batch = [draw(st.sampled_from([n, 1])) for n in batch]  # k/v may share a head across the batch
    tq, tk = draw(st.integers(1, 5), label="Tq"), draw(st.integers(1, 5), label="Tk")
    d, dv = draw(st.integers(1, 4), label="D"), draw(st.integers(1, 4), label="Dv")
    return random_arrays(draw(seeds), (*batch, tq, d), (*kv_batch, tk, d), (*kv_batch, tk, dv), scale=1.5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@given(case=attention_cases())
@example(case=random_arrays(0, (2, 1, 3), (2, 1, 3), (2, 1, 2)))   # T = 1
@example(case=random_arrays(0, (1, 4, 2), (1, 2, 2), (1, 2, 3)))   # Tq > Tk
@example(case=random_arrays(0, (2, 5), (3, 2, 4, 5), (3, 2, 4, 1)))  # q has fewer batch dims
def test_attention_matches_reference_and_torch(is_causal, dtype, case):
    assert_fused_matches_reference(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=is_causal),
        lambda q, k, v: F.scaled_dot_product_attention_reference(q, k, v, is_causal=is_causal),
        case, dtype, fused.ScaledDotProductAttention)
    q, k, v = case
    if q.ndim == k.ndim:  # torch's math kernel wants equal ranks
        assert_fused_matches_torch(
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=is_causal),
            lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=is_causal), case, dtype)


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_attention_gradcheck(is_causal):
    arrays = random_arrays(0, (2, 3, 2), (1, 4, 2), (1, 4, 3))
    tensors = [tl.Tensor(a, dtype=np.float64, requires_grad=True) for a in arrays]
    assert tl.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), tensors)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("thread_count", [1, 2])
@pytest.mark.parametrize("queries", [4, 7])
def test_long_causal_attention_in_blocks_of_rows_matches_torch(queries, thread_count, dtype, monkeypatch):
    """Causal attention over >= 2 blocks of queries keeps P as blocks (rows a:b hold keys :b only);
    blocks of 2 rows make that happen on small inputs (7 rows: 2 + 2 + 2 + 1), one thread or two."""
    monkeypatch.setattr(cpu_attention, "_CAUSAL_BLOCK_ROWS", 2)
    monkeypatch.setattr(cpu_attention, "_ONE_CORE_PRODUCT", 6)  # and cut the products into row blocks too
    monkeypatch.setenv("TINYGRAD_LITE_CPU_THREADS", str(thread_count))
    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 1)
    case = random_arrays(queries, (3, 2, queries, 3), (3, 2, queries, 3), (3, 2, queries, 2), scale=1.5)
    assert_fused_matches_reference(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                   lambda q, k, v: F.scaled_dot_product_attention_reference(q, k, v, is_causal=True),
                                   case, dtype, fused.ScaledDotProductAttention)
    assert_fused_matches_torch(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                               lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True), case, dtype)
    out = F.scaled_dot_product_attention(*(tl.Tensor(a, dtype=dtype, requires_grad=True) for a in case), is_causal=True)
    expected_blocks = [(slice(a, min(a + 2, queries)), min(a + 2, queries)) for a in range(0, queries, 2)]
    _, _, _, blocks, probs, _, _ = out._ctx.cpu_state
    assert blocks == expected_blocks
    assert [block.shape[-2:] for block in probs] == [(b.stop - b.start, seen) for b, seen in expected_blocks]
    tensors = [tl.Tensor(a, dtype=np.float64, requires_grad=True) for a in case]
    assert tl.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), tensors)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_rows", [64, 2], ids=["one-block", "blocks-of-2"])
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["overflow", "underflow"])
def test_attention_with_huge_scores_falls_back_to_the_row_max(sign, block_rows, dtype, monkeypatch):
    """The array path first tries exp(S) unshifted; scores in the thousands must take the textbook path
    (for every block of P when causal attention keeps it in blocks of rows)."""
    monkeypatch.setattr(cpu_attention, "_CAUSAL_BLOCK_ROWS", block_rows)
    fallbacks = []
    textbook = cpu_attention._softmax_shifted_by_max
    monkeypatch.setattr(cpu_attention, "_softmax_shifted_by_max", lambda *a: fallbacks.append(1) or textbook(*a))
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 3, 6, 4)) * 30.0
    case = [q, sign * q, rng.standard_normal((2, 3, 6, 5))]  # diagonal scores of about +-1800, exp(1800) = inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the expected overflow must not leak a RuntimeWarning
        for is_causal in (False, True):
            assert_fused_matches_torch(
                lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=is_causal),
                lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=is_causal), case, dtype,
                atol32=1e-4)  # float32 gradients: terms of size ~30 cancel in dS
    assert len(fallbacks) == (2 if block_rows == 64 else 1 + 3)  # full: one block; causal: 6 rows in 3 blocks


def test_attention_causal_mask_is_top_left_aligned():
    """Query i sees keys 0..i: query 0's output is exactly v[0], whatever Tq and Tk are."""
    q, k, v = random_arrays(1, (3, 2), (5, 2), (5, 4))
    out = F.scaled_dot_product_attention(*(tl.Tensor(a, dtype=np.float64) for a in (q, k, v)), is_causal=True)
    np.testing.assert_allclose(out.numpy()[0], v[0], rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("tile", [1, 3, 16])
@given(seed=seeds, tq=st.integers(1, 9), tk=st.integers(1, 9), d=st.integers(1, 4), dv=st.integers(1, 4))
def test_tiled_flash_attention_twin_matches_the_fused_op(tile, is_causal, dtype, seed, tq, tk, d, dv):
    """The NumPy twin of the CUDA flash kernels (key tiles, online softmax, P recomputed in the
    backward) gives the output and the gradients of ScaledDotProductAttention."""
    q, k, v = (a.astype(dtype) for a in random_arrays(seed, (2, tq, d), (2, tk, d), (2, tk, dv), scale=1.5))
    grad = upstream_for((2, tq, dv), dtype)
    out, lse = fused.flash_attention_tiled(q, k, v, is_causal=is_causal, tile=tile)
    expected, expected_grads = run_tl(lambda *t: F.scaled_dot_product_attention(*t, is_causal=is_causal),
                                      [q, k, v], dtype)
    assert out.dtype == dtype and lse.shape == (2, tq)
    assert_close(out, expected.numpy(), dtype)
    grads = fused.flash_attention_tiled_backward(q, k, v, out, lse, grad, is_causal=is_causal, tile=tile)
    for actual, desired in zip(grads, expected_grads):
        assert actual.dtype == dtype
        assert_close(actual, desired.numpy(), dtype)


def test_cpu_fused_ops_never_take_the_cuda_kernel_paths():
    x = tl.Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    for out in (F.softmax(x), F.log_softmax(x), gelu_tanh(x), F.layer_norm(x, (3,)),
                F.cross_entropy(x, np.array([0, 1]))):
        assert out._ctx.on_gpu is False
    assert F.scaled_dot_product_attention(x, x, x)._ctx.algorithm == "cpu"


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("shapes", [((2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 6)), ((4, 130, 8), (4, 130, 8), (4, 130, 8)),
                                    ((2, 1, 6, 4), (3, 9, 4), (3, 9, 2))])
def test_attention_cpu_kernel_equals_the_plain_array_path(shapes, is_causal, monkeypatch):
    """cpu_kernels/attention.py (cores, causal blocks, unshifted softmax) against the plain math in fused.py."""
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(shape) for shape in shapes]  # float64

    def run():
        inputs = [tl.Tensor(a, requires_grad=True) for a in arrays]
        out = F.scaled_dot_product_attention(*inputs, is_causal=is_causal)
        algorithm = out._ctx.algorithm  # (backward frees the graph)
        (out * tl.Tensor(rng_grad)).sum().backward()
        return algorithm, out, [t.grad.numpy() for t in inputs]

    rng_grad = np.random.default_rng(6).standard_normal(np.broadcast_shapes(shapes[0][:-1], shapes[1][:-2] + (1,))
                                                        + (shapes[2][-1],))
    monkeypatch.setattr(cpu_attention, "_CAUSAL_BLOCK_ROWS", 16)  # several causal blocks for T = 130
    algorithm, fast_out, fast_grads = run()
    assert algorithm == "cpu"
    monkeypatch.setattr(fused, "CPU_KERNELS", False)
    algorithm, plain_out, plain_grads = run()
    assert algorithm == "plain"
    np.testing.assert_allclose(fast_out.numpy(), plain_out.numpy(), rtol=1e-10, atol=1e-12)
    for fast, plain in zip(fast_grads, plain_grads):
        np.testing.assert_allclose(fast, plain, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("use", ["qkv", "q and v", "not attention"])
def test_split_heads_matches_its_reference_and_torch(use):
    """fused.SplitHeads against split + view + transpose (the reference twin, and torch's nanoGPT lines)."""
    rng = np.random.default_rng(3)
    data, upstream = rng.standard_normal((2, 5, 3 * 8)), rng.standard_normal((2, 2, 5, 4))

    def loss_of(q, k, v, attention, up):
        if use == "qkv":
            return (attention(q, k, v, is_causal=True) * up).sum()
        if use == "q and v":
            return (q * v * up).sum()
        return (q * up).sum() + (k * k).sum()  # v unused: its gradient is zero

    grads = []
    for split in (F.split_heads, F.split_heads_reference):
        qkv = tl.Tensor(data, requires_grad=True)
        q, k, v = split(qkv, 2)
        assert q.shape == k.shape == v.shape == (2, 2, 5, 4)
        loss_of(q, k, v, F.scaled_dot_product_attention, tl.Tensor(upstream)).backward()
        grads.append(qkv.grad.numpy())
    qkv_t = torch.tensor(data, requires_grad=True)
    q_t, k_t, v_t = (t.view(2, 5, 2, 4).transpose(1, 2) for t in qkv_t.split(8, dim=2))
    loss_of(q_t, k_t, v_t, TF.scaled_dot_product_attention, torch.tensor(upstream)).backward()
    for grad in grads:
        np.testing.assert_allclose(grad, qkv_t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_attention_gradients_reach_split_heads_without_a_copy(monkeypatch):
    """The CPU attention kernel writes dQ, dK, dV side by side in one (B, T, 3C) buffer; SplitHeads hands
    it on as dL/dqkv (packed_qkv_gradient) -- and rejects pieces that only look alike."""
    handed_on = []
    real = cpu_attention.packed_qkv_gradient
    monkeypatch.setattr(cpu_attention, "packed_qkv_gradient", lambda *a: handed_on.append(real(*a)) or handed_on[-1])
    qkv = tl.Tensor(np.random.default_rng(0).standard_normal((2, 5, 24)), requires_grad=True)
    F.scaled_dot_product_attention(*F.split_heads(qkv, 2), is_causal=True).sum().backward()
    assert handed_on and handed_on[0] is not None and handed_on[0].shape == (2, 5, 24)

    buffer = np.zeros((2, 5, 3, 2, 4))
    pieces = [buffer[:, :, i].transpose(0, 2, 1, 3) for i in range(3)]
    assert np.shares_memory(real(pieces, (2, 5, 24)), buffer)
    assert real(pieces[::-1], (2, 5, 24)) is None                       # out of order
    assert real([p.copy() for p in pieces], (2, 5, 24)) is None         # three separate arrays
    other = np.zeros((2, 5, 3, 2, 4))[:, :, 0].transpose(0, 2, 1, 3)
    assert real([pieces[0], pieces[1], other], (2, 5, 24)) is None      # not one allocation


def test_split_heads_checks_its_input():
    with pytest.raises(ValueError, match=r"split_heads: expected \(B, T, 3 \* C\).*n_head=2.*\(2, 5, 10\)"):
        F.split_heads(tl.Tensor(np.zeros((2, 5, 10))), 2)


def test_attention_checks_shapes():
    q = tl.Tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention: incompatible shapes"):
        F.scaled_dot_product_attention(q, tl.Tensor(np.zeros((2, 3, 5))), tl.Tensor(np.zeros((2, 3, 5))))
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention: batch dims"):
        F.scaled_dot_product_attention(q, tl.Tensor(np.zeros((3, 3, 4))), tl.Tensor(np.zeros((3, 3, 4))))
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention: no keys"):
        F.scaled_dot_product_attention(q, tl.Tensor(np.zeros((2, 0, 4))), tl.Tensor(np.zeros((2, 0, 5))))
    no_queries = F.scaled_dot_product_attention(tl.Tensor(np.zeros((2, 0, 4))), q, q)
    assert no_queries.shape == (2, 0, 4)


# -------------------------------------------------- properties of every op

ALL_OPS = {  # name -> (fn, input shapes)
    "softmax": (lambda x: F.softmax(x, axis=0), [(3, 4)]),
    "log_softmax": (lambda x: F.log_softmax(x, axis=-1), [(3, 4)]),
    "cross_entropy": (lambda x: F.cross_entropy(x, [1, -100, 3], reduction="none"), [(3, 4)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (4,), w, b), [(2, 3, 4), (4,), (4,)]),
    "gelu": (gelu_tanh, [(3, 4)]),
    "gelu_exact": (F.gelu, [(3, 4)]),
    "attention": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                  [(2, 3, 4), (2, 5, 4), (2, 5, 3)]),
}


@pytest.mark.parametrize("name", ALL_OPS)
def test_float32_in_float32_out_and_grads(name):
    fn, input_shapes = ALL_OPS[name]
    out, grads = run_tl(fn, random_arrays(0, *input_shapes), np.float32)
    assert_same_dtypes(out, grads, np.float32)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "layer_norm", "gelu", "attention"])
def test_an_empty_batch_gives_empty_outputs_and_zero_parameter_grads(name):
    fn, input_shapes = ALL_OPS[name]
    shapes = [(0,) + shape[1:] if len(shape) > 1 else shape for shape in input_shapes]
    tensors = [tl.Tensor(np.ones(shape, dtype=np.float32), requires_grad=True) for shape in shapes]
    out = fn(*tensors)
    out.sum().backward()
    assert out.shape[0] == 0
    for tensor in tensors:
        assert tensor.grad.shape == tensor.shape and not np.any(tensor.grad.numpy())


@pytest.mark.parametrize("name", ALL_OPS)
def test_backward_twice_with_retain_graph_gives_the_same_grads(name):
    """backward must not overwrite what it saved, nor the upstream gradient it was given."""
    fn, input_shapes = ALL_OPS[name]
    tensors = [tl.Tensor(a, dtype=np.float64, requires_grad=True) for a in random_arrays(0, *input_shapes)]
    out = fn(*tensors)
    upstream = upstream_for(out.shape, np.float64)
    untouched = upstream.copy()
    out.backward(upstream, retain_graph=True)
    first = [t.grad.numpy().copy() for t in tensors]
    out.backward(upstream)
    np.testing.assert_array_equal(upstream, untouched)
    for t, grad in zip(tensors, first):
        np.testing.assert_allclose(t.grad.numpy(), 2 * grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ALL_OPS)
def test_no_grad_records_nothing(name):
    fn, input_shapes = ALL_OPS[name]
    tensors = [tl.Tensor(a, requires_grad=True) for a in random_arrays(0, *input_shapes)]
    with tl.no_grad():
        out = fn(*tensors)
    assert out._ctx is None and not out.requires_grad


@pytest.mark.parametrize("public", [F.softmax, F.log_softmax, F.gelu, gelu_tanh,
                                    lambda x: F.layer_norm(x, x.shape[-1:])])
def test_integer_inputs_are_rejected(public):
    with pytest.raises(TypeError, match="expected floating point inputs"):
        public(tl.Tensor(np.arange(6).reshape(2, 3)))


def test_attention_with_mixed_dtypes_is_rejected():
    q = tl.Tensor(np.zeros((2, 3)), dtype=np.float32)
    with pytest.raises(TypeError, match="scaled_dot_product_attention: inputs have different dtypes"):
        F.scaled_dot_product_attention(q, q, tl.Tensor(np.zeros((2, 3)), dtype=np.float64))


def test_softmax_axis_out_of_range_names_the_op():
    with pytest.raises(ValueError, match="softmax: axis 2 is out of range"):
        F.softmax(tl.Tensor(np.zeros((2, 3))), axis=2)


def test_tensor_methods_use_the_fused_ops():
    x = tl.Tensor(np.zeros((2, 3)), requires_grad=True)
    assert isinstance(x.softmax()._ctx, fused.Softmax)
    assert isinstance(x.log_softmax()._ctx, fused.LogSoftmax)
    assert isinstance(x.gelu(approximate="tanh")._ctx, fused.Gelu)
    assert isinstance(x.gelu()._ctx, fused.GeluErf)
    assert math.isclose(float(x.softmax().numpy()[0, 0]), 1 / 3)


@pytest.mark.parametrize("shape", [(), (7,), (3, 5000)])
def test_gelu_cpu_kernel_equals_the_plain_array_path(shape, monkeypatch):
    """cpu_kernels/gelu.py (chunks on the cores, in place passes) against the plain math in fused.py."""
    rng = np.random.default_rng(8)
    x, g = rng.standard_normal(shape) * 3, rng.standard_normal(shape)

    def run():
        t = tl.Tensor(x, requires_grad=True)
        out = gelu_tanh(t)
        (out * tl.Tensor(g)).sum().backward()
        return out.numpy(), t.grad.numpy()

    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 1)
    monkeypatch.setenv("TINYGRAD_LITE_CPU_THREADS", "2")
    fast = run()
    monkeypatch.setattr(fused, "CPU_KERNELS", False)
    for a, b in zip(fast, run()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("affine", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 300), (0, 4)])
def test_layer_norm_cpu_kernel_equals_the_plain_array_path(shape, affine, monkeypatch):
    """cpu_kernels/layer_norm.py (chunks on the cores, BLAS means) against the plain math in fused.py."""
    rng = np.random.default_rng(7)
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    params = [rng.standard_normal(shape[-1]) if want else None for want in affine]

    def run():
        inputs = [tl.Tensor(x, requires_grad=True)] + [None if p is None else tl.Tensor(p, requires_grad=True)
                                                       for p in params]
        out = F.layer_norm(inputs[0], shape[-1:], *inputs[1:])
        (out * tl.Tensor(g)).sum().backward()
        return [out.numpy()] + [t.grad.numpy() for t in inputs if t is not None]

    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 1)  # chunks on two threads even for small x
    monkeypatch.setenv("TINYGRAD_LITE_CPU_THREADS", "2")
    fast = run()
    monkeypatch.setattr(fused, "CPU_KERNELS", False)
    plain = run()
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_backward_follows_the_path_its_forward_took(monkeypatch):
    """Switching CPU_KERNELS between forward and backward changes nothing: each op recorded its path."""
    rng = np.random.default_rng(9)
    x = tl.Tensor(rng.standard_normal((4, 6)), requires_grad=True)
    g = tl.Tensor(rng.standard_normal((4, 6)))
    grads = []
    for switch_before_backward in (False, True):
        loss = (gelu_tanh(F.layer_norm(x, (6,))) * g).sum()  # forward on the CPU kernels
        if switch_before_backward:
            monkeypatch.setattr(fused, "CPU_KERNELS", False)
        loss.backward()
        grads.append(x.grad.numpy())
        x.grad = None
    np.testing.assert_array_equal(grads[1], grads[0])

"""The autograd engine's semantics, each with a test that fails when it breaks."""
from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

import tinygrad_lite as tl
from tinygrad_lite import Tensor, backend, no_grad
from tinygrad_lite import functional as F
from tinygrad_lite.autograd import Function


def randn(*shape, dtype=np.float64, requires_grad=True):
    return Tensor(np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype), requires_grad=requires_grad)


# ----------------------------------------------------------- construction

def test_dtype_follows_array_and_python_values_are_float32():
    assert Tensor(np.zeros(3)).dtype == np.float64
    assert Tensor(np.zeros(3, np.float32)).dtype == np.float32
    assert Tensor(np.arange(3)).dtype == np.int64
    assert Tensor([1, 2, 3]).dtype == np.float32
    assert Tensor(2.5).dtype == np.float32
    assert Tensor([1, 2], dtype=np.int64).dtype == np.int64


def test_basic_properties():
    x = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    assert x.shape == (2, 3) and x.ndim == 2 and x.device == "cpu" and x.is_leaf
    assert isinstance(x.numpy(), np.ndarray) and isinstance(x.data, np.ndarray)
    assert Tensor([[4.0]]).item() == 4.0
    assert x.to("cpu") is x
    with pytest.raises(ValueError, match="only one-element"):
        x.item()


def test_only_float_tensors_require_grad():
    with pytest.raises(TypeError, match="floating point"):
        Tensor(np.arange(3), requires_grad=True)


def test_creation_functions():
    assert tl.zeros(2, 3).shape == (2, 3) and tl.zeros((2, 3)).numpy().sum() == 0
    assert tl.ones(4, dtype=np.float64).dtype == np.float64
    assert tl.full((2,), 7.0).numpy().tolist() == [7.0, 7.0]
    assert tl.arange(5).dtype == np.int64 and tl.arange(0.0, 1.0, 0.5).dtype == np.float32
    assert tl.randn(3, 4, requires_grad=True).requires_grad
    tl.manual_seed(1)
    a = tl.randn(5).numpy()
    tl.manual_seed(1)
    assert np.array_equal(a, tl.randn(5).numpy())
    assert 0 <= tl.rand(100).numpy().min() and tl.rand(100).numpy().max() < 1


# ---------------------------------------------------------- backward pass

def test_simple_gradient_matches_calculus():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    (x * x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * x.numpy() ** 2)


def test_deep_chain_has_no_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 100_000], rtol=1e-9)


def test_diamond_sums_both_paths():
    x = Tensor(np.array([2.0]), requires_grad=True)
    a, b = x * 3.0, x * x
    (a + b).sum().backward()  # d/dx (3x + x^2) = 3 + 2x
    assert x.grad.numpy().tolist() == [7.0]


def test_leaves_accumulate_across_backward_calls():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    assert x.grad.numpy().tolist() == [5.0, 5.0]


def test_non_leaves_keep_grad_only_with_retain_grad():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    hidden = x * 2.0
    kept = x * 3.0
    kept.retain_grad()
    (hidden * kept).sum().backward()
    assert hidden.grad is None
    np.testing.assert_allclose(kept.grad.numpy(), hidden.numpy())
    assert x.grad.grad is None and x.grad._ctx is None  # grads never carry a graph


def test_second_backward_through_freed_graph_raises():
    x = Tensor(np.array([1.0]), requires_grad=True)
    loss = (x.exp() * 2.0).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_retain_graph_allows_second_backward():
    x = Tensor(np.array([1.0]), requires_grad=True)
    loss = (x.exp() * 2.0).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4 * np.e])


def test_graph_is_freed_after_backward():
    x = Tensor(np.ones(3), requires_grad=True)
    loss = (x.exp() * x).sum()
    refs = [weakref.ref(loss._ctx)]
    node = loss._ctx.parents[0]
    refs.append(weakref.ref(node._ctx))
    del node
    loss.backward()
    gc.collect()
    assert all(ref() is None for ref in refs), "Function objects survived backward"


def test_graph_kept_with_retain_graph():
    x = Tensor(np.ones(3), requires_grad=True)
    loss = (x.exp() * x).sum()
    ref = weakref.ref(loss._ctx)
    loss.backward(retain_graph=True)
    gc.collect()
    assert ref() is not None


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2.0
    assert not y.requires_grad and y._ctx is None
    z = x * 2.0
    assert z.requires_grad and z._ctx is not None


def test_detach_cuts_the_graph():
    x = Tensor(np.array([3.0]), requires_grad=True)
    y = x * x
    (y.detach() * x).sum().backward()  # d/dx (c * x) with c = 9
    assert x.grad.numpy().tolist() == [9.0]


def test_weight_tying_sums_both_gradients():
    w = Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True)
    idx = np.array([0, 1, 1])
    emb = F.embedding(idx, w)  # use 1: lookup
    logits = emb @ w.transpose(0, 1)  # use 2: output projection
    logits.sum().backward()

    tw = torch.tensor(w.numpy(), requires_grad=True)
    (torch.nn.functional.embedding(torch.from_numpy(idx), tw) @ tw.T).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy())


def test_backward_needs_gradient_for_non_scalars():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match=r"gradient has shape \(3,\)"):
        (x * 2.0).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(2)).sum().backward()


def test_broadcast_gradients_reduce_to_input_shape():
    x = Tensor(np.ones((3, 1)), requires_grad=True)
    y = Tensor(np.ones((2, 1, 4)), requires_grad=True)
    (x * y).sum().backward()
    assert x.grad.shape == (3, 1) and x.grad.numpy().tolist() == [[8.0]] * 3
    assert y.grad.shape == (2, 1, 4) and np.all(y.grad.numpy() == 3.0)


# ------------------------------------------------------------- dtypes

def test_python_scalars_do_not_upcast():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    y = x * 2.0 + 1 - 0.5
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_promotion_follows_numpy_and_grads_keep_input_dtype():
    a = Tensor(np.ones(2, np.float32), requires_grad=True)
    b = Tensor(np.ones(2, np.float64), requires_grad=True)
    c = a * b
    assert c.dtype == np.float64
    c.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64


def test_reflected_ops_with_numpy_arrays():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = np.array([3.0, 4.0]) - x
    assert isinstance(y, Tensor) and y.numpy().tolist() == [2.0, 2.0]
    z = np.array([[1.0, 0.0], [0.0, 1.0]]) @ x
    assert isinstance(z, Tensor) and z.numpy().tolist() == [1.0, 2.0]


def test_comparisons_return_bool_tensors_without_grad():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    mask = x > 1.5
    assert mask.dtype == np.bool_ and not mask.requires_grad
    assert mask.numpy().tolist() == [False, True, True]
    assert (x == 2.0).numpy().tolist() == [False, True, False]


# ------------------------------------------------------------ errors

def test_shape_errors_name_the_op_and_shapes():
    a, b = randn(2, 3), randn(4, 5)
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4, 5\)"):
        _ = a + b
    with pytest.raises(ValueError, match=r"MatMul: shapes \(2, 3\) and \(4, 5\)"):
        _ = a @ b
    with pytest.raises(ValueError, match=r"reshape: cannot reshape tensor of shape \(2, 3\)"):
        a.reshape(4, 2)
    with pytest.raises(IndexError, match=r"getitem: .*shape \(2, 3\)"):
        _ = a[5]


class WrongShapeBackward(Function):
    def forward(self, x):
        return x * 2

    def backward(self, grad):
        return grad.sum(axis=0)  # wrong: drops an axis


class WrongDtypeBackward(Function):
    def forward(self, x):
        return x * 2

    def backward(self, grad):
        return grad.astype(np.float32)


def test_backward_results_are_checked_for_shape_and_dtype():
    with pytest.raises(RuntimeError, match=r"WrongShapeBackward.backward returned a gradient of shape \(3,\)"):
        WrongShapeBackward.apply(randn(2, 3)).sum().backward()
    with pytest.raises(RuntimeError, match="WrongDtypeBackward.backward returned a gradient of dtype float32"):
        WrongDtypeBackward.apply(randn(2, 3)).sum().backward()


def test_custom_function_like_builtin_ops():
    class Cube(Function):
        """y = x^3,  dy/dx = 3x^2."""

        def forward(self, x):
            self.save_for_backward(x)
            return x ** 3

        def backward(self, grad):
            (x,) = self.saved_tensors
            return grad * 3 * x ** 2

    x = randn(4)
    assert tl.gradcheck(lambda t: Cube.apply(t), [x])


def test_gradcheck_catches_a_wrong_backward():
    class BadSin(Function):
        def forward(self, x):
            self.save_for_backward(x)
            return np.sin(x)

        def backward(self, grad):
            (x,) = self.saved_tensors
            return grad * np.sin(x)  # should be cos

    with pytest.raises(tl.GradcheckError, match=r"at index .* numeric .* vs analytic"):
        tl.gradcheck(lambda t: BadSin.apply(t), [randn(5)])


def test_gradcheck_wants_float64():
    with pytest.raises(TypeError, match="float64"):
        tl.gradcheck(lambda t: t * 2.0, [randn(3, dtype=np.float32)])


# ---------------------------------------------------- in-place changes

def test_inplace_change_of_saved_tensor_raises_at_backward():
    x = randn(3)
    y = x * 1.0  # a non-leaf
    with no_grad():
        pass
    z = y.exp()  # Exp saves its output z
    with no_grad():
        z.add_(1.0)
    with pytest.raises(RuntimeError, match=r"Exp: a tensor of shape \(3,\) that this op saved .* modified in place"):
        z.sum().backward()


def test_assigning_data_bumps_version_and_is_caught():
    x = randn(3)
    w = randn(3)
    y = x * w  # Mul saves x and w
    w.data = np.zeros(3)
    with pytest.raises(RuntimeError, match="Mul: .* modified in place"):
        y.sum().backward()


def test_setitem_bumps_version():
    x = Tensor(np.ones(3))
    version = x._version
    x[0] = 5.0
    assert x._version == version + 1 and x.numpy().tolist() == [5.0, 1.0, 1.0]


def test_inplace_on_leaf_needs_no_grad_like_an_optimizer_step():
    w = randn(3)
    with pytest.raises(RuntimeError, match="add_: in-place change of a leaf"):
        w.add_(1.0)
    with no_grad():
        w.sub_(Tensor(np.ones(3))).mul_(2.0)
        w.zero_()
    assert w.numpy().tolist() == [0.0, 0.0, 0.0]


# ------------------------------------------------------ numerics

def test_max_splits_gradient_among_ties_like_torch_amax():
    values = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    x = Tensor(values, requires_grad=True)
    x.amax(axis=1).sum().backward()
    t = torch.tensor(values, requires_grad=True)
    torch.amax(t, dim=1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy())
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0.5], [1 / 3] * 3])


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_stable_at_extreme_logits(scale):
    logits = Tensor(np.array([[scale, 0.0, -scale], [0.0, scale, 1.0]], np.float32), requires_grad=True)
    loss = F.cross_entropy(logits, np.array([2, 0]))
    loss.backward()
    assert np.isfinite(loss.item()) and np.all(np.isfinite(logits.grad.numpy()))
    s = Tensor(np.array([scale, -scale], np.float32), requires_grad=True)
    out = s.sigmoid() + F.log_softmax(s, axis=0)
    out.sum().backward()
    assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(s.grad.numpy()))


def test_cross_entropy_ignore_index_and_bad_targets():
    logits = randn(3, 4)
    loss = F.cross_entropy(logits, np.array([1, -100, 2]))
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits.numpy()), torch.tensor([1, -100, 2]))
    np.testing.assert_allclose(loss.item(), expected.item())
    with pytest.raises(IndexError, match="out of range"):
        F.cross_entropy(logits, np.array([1, 7, 2]))
    with pytest.raises(ValueError, match=r"expected logits \(N, C\) and targets \(N,\)"):
        F.cross_entropy(logits, np.array([1, 2]))


def test_embedding_rejects_bad_indices():
    w = randn(5, 2)
    with pytest.raises(IndexError, match=r"index out of range \[0, 5\)"):
        F.embedding(np.array([0, 5]), w)
    with pytest.raises(TypeError, match="integers"):
        F.embedding(np.array([0.5]), w)


# ---------------------------------------------------------- debug mode

def test_debug_mode_points_at_the_users_line_on_nan():
    x = Tensor(np.array([-1.0, 4.0]), requires_grad=True)
    with tl.debug_mode():
        with pytest.raises(FloatingPointError, match=r"(?s)Sqrt: forward output contains NaN .*test_engine.py:\d+ in test_debug"):
            with np.errstate(invalid="ignore"):
                x.sqrt()
    with np.errstate(invalid="ignore"):
        assert np.isnan(x.sqrt().numpy()[0])  # outside debug mode: no check


def test_debug_mode_checks_gradients():
    x = Tensor(np.array([0.0, 1.0]), requires_grad=True)
    tl.set_debug(True)
    try:
        y = x.sqrt()  # finite forward, infinite gradient at 0
        with pytest.raises(FloatingPointError, match="gradient for input 0 contains NaN or inf"):
            with np.errstate(divide="ignore"):
                y.sum().backward()
    finally:
        tl.set_debug(False)
    assert not tl.is_debug()


# ----------------------------------------------------------- shapes API

def test_shape_methods_accept_tuples_and_varargs():
    x = randn(2, 3, 4)
    assert x.reshape(6, 4).shape == x.reshape((6, 4)).shape == (6, 4)
    assert x.permute(2, 0, 1).shape == x.permute((2, 0, 1)).shape == (4, 2, 3)
    assert x.transpose(0, 2).shape == (4, 3, 2)
    assert x.unsqueeze(1).shape == (2, 1, 3, 4) and x.unsqueeze(-1).shape == (2, 3, 4, 1)
    assert x[:, :1].squeeze(1).shape == (2, 4)
    assert x[:1].expand(5, 3, 4).shape == (5, 3, 4) and x[:1].expand(-1, 3, 4).shape == (1, 3, 4)
    assert x.flatten().shape == (24,) and x.flatten(1).shape == (2, 12)
    assert [p.shape for p in x.split(2, axis=2)] == [(2, 3, 2), (2, 3, 2)]
    assert [p.shape for p in x.chunk(2, axis=1)] == [(2, 2, 4), (2, 1, 4)]
    assert tl.stack([x, x], axis=1).shape == (2, 2, 3, 4) and tl.cat([x, x], axis=-1).shape == (2, 3, 8)
    assert x.argmax(axis=-1).shape == (2, 3) and x.argmax(axis=-1).dtype == np.int64


def test_getitem_with_tensor_and_boolean_indices():
    x = Tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    picked = x[Tensor(np.array([2, 0, 2]))]
    assert picked.numpy()[:, 0].tolist() == [8.0, 0.0, 8.0]
    picked.sum().backward()
    assert x.grad.numpy()[:, 0].tolist() == [1.0, 0.0, 2.0]  # row 2 picked twice
    masked = x[x > 5.0]
    assert masked.numpy().tolist() == [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]


# ---------------------------------------------------------- fused linear

@pytest.mark.parametrize("with_bias", [True, False])
def test_fused_linear_equals_its_reference_twin(with_bias):
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((2, 5, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)]
    arrays = arrays if with_bias else arrays[:2]
    results = []
    for fn in (F.linear, F.linear_reference):
        tensors = [Tensor(a.copy(), requires_grad=True) for a in arrays]
        out = fn(*tensors)
        out.backward(np.ones(out.shape))
        results.append([out.numpy()] + [t.grad.numpy() for t in tensors])
    for fused, reference in zip(*results):
        np.testing.assert_allclose(fused, reference, rtol=1e-12, atol=1e-12)


def test_fused_linear_shape_errors():
    with pytest.raises(ValueError, match=r"Linear: input of shape \(2, 5\) does not fit weight of shape \(3, 4\)"):
        F.linear(randn(2, 5), randn(3, 4))
    with pytest.raises(ValueError, match=r"Linear: bias has shape \(4,\), expected \(3,\)"):
        F.linear(randn(2, 4), randn(3, 4), randn(4))


@pytest.mark.parametrize("case", ["rows", "rows-negative", "elements", "2-d-index"])
def test_scatter_add_sums_every_repeat(case):
    """backend.scatter_add (the backward of embedding and fancy indexing) against a plain Python loop."""
    rng = np.random.default_rng(0)
    target = rng.standard_normal((6, 3)).astype(np.float32)
    if case == "elements":
        target = target.reshape(-1)
    indices = rng.integers(0, len(target), size=40)
    if case == "rows-negative":
        indices = indices - len(target) * (rng.random(40) < 0.5)  # row r appears as r and as r - 6
    if case == "2-d-index":
        indices = indices.reshape(8, 5)
    values = rng.standard_normal(indices.shape + target.shape[1:]).astype(np.float32)
    expected = target.astype(np.float64)
    for position in np.ndindex(indices.shape):
        expected[indices[position]] += values[position]
    backend.scatter_add(target, indices, values)
    np.testing.assert_allclose(target, expected, rtol=1e-5, atol=1e-5)


def test_split_is_one_op_with_several_outputs_and_matches_torch():
    """Pieces used twice, one piece unused, pieces multiplied together: gradients as in torch."""
    data = np.random.default_rng(3).standard_normal((4, 9))
    x = Tensor(data, dtype=np.float64, requires_grad=True)
    a, b, unused = x.split([2, 3, 4], axis=1)
    assert type(a._ctx).__name__ == "Split" and a._ctx is b._ctx is unused._ctx
    loss = (a.sum(axis=1) * b.sum(axis=1)).sum() + (a * a).sum()
    loss.backward()

    xt = torch.tensor(data, requires_grad=True)
    at, bt, _ = xt.split([2, 3, 4], dim=1)
    ((at.sum(dim=1) * bt.sum(dim=1)).sum() + (at * at).sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-12)
    assert np.all(x.grad.numpy()[:, 5:] == 0)  # the unused piece


def test_split_backward_from_one_piece_twice_with_retain_graph():
    x = Tensor(np.arange(6.0), requires_grad=True)
    first, second = x.split(3)
    loss = (first * 2.0).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [4, 4, 4, 0, 0, 0])
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_split_under_no_grad_records_nothing_and_frees_its_graph():
    x = Tensor(np.ones((2, 4)), requires_grad=True)
    with no_grad():
        pieces = x.split(2, axis=1)
    assert all(p._ctx is None and not p.requires_grad for p in pieces)
    a, b = x.split(2, axis=1)
    creator = weakref.ref(a._ctx)
    (a * b).sum().backward()
    del a, b
    gc.collect()
    assert creator() is None  # the Split node went away with the graph


def test_reference_mode_runs_the_plain_twins_on_the_main_thread_with_the_same_numbers(monkeypatch):
    from gpt import GPT, GPTConfig
    from tinygrad_lite import fused
    from tinygrad_lite.cpu_kernels import threads

    def run_step(reference: bool):
        tl.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=True))
        optimizer = model.configure_optimizer(lr=1e-2, weight_decay=0.1)
        x = np.random.default_rng(1).integers(0, 11, (4, 16))
        with tl.reference_mode(reference):
            _, loss = model(x, np.roll(x, -1, axis=1))
            loss.backward()
            grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
            optimizer.step()
        return loss.item(), grads

    fast = run_step(False)
    used = []
    monkeypatch.setattr(threads, "parallel_rows", lambda *args, **kwargs: used.append("parallel_rows"))
    for op in (fused.Softmax, fused.LogSoftmax, fused.CrossEntropy, fused.LayerNorm, fused.Gelu,
               fused.ScaledDotProductAttention):
        monkeypatch.setattr(op, "apply", classmethod(lambda cls, *a, **k: used.append(cls.__name__)))
    reference = run_step(True)
    assert used == []  # no fused op and no worker thread was asked for
    assert abs(reference[0] - fast[0]) <= 1e-5 * abs(fast[0])
    for name, grad in fast[1].items():
        scale = np.abs(grad).max() + 1e-12
        assert np.abs(reference[1][name] - grad).max() <= 1e-4 * scale, name
    # (The weights after the step are not compared: Adam's first step is about lr * g / |g|, noise
    # where g is mathematically 0, like the key bias's. The per-parameter loop that reference mode
    # runs is checked against the flat step in test_optim.py.)
    assert not tl.is_reference_mode()


def test_the_breakpoint_line_shown_in_the_readme_is_the_call_of_each_backward(capsys):
    import re
    import runpy
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    autograd_lines = (root / "tinygrad_lite" / "autograd.py").read_text().splitlines()
    for document in (root / "README.md", root / "examples" / "step_through.py"):
        numbers = re.findall(r"b tinygrad_lite/autograd\.py:(\d+)", document.read_text())
        assert numbers, document
        for number in numbers:
            assert "fn.backward(*output_grads)" in autograd_lines[int(number) - 1], (document, number)
    runpy.run_path(str(root / "examples" / "step_through.py"), run_name="__main__")
    assert "gradient of the token embedding: (65, 16)" in capsys.readouterr().out

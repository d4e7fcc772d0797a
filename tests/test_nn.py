"""nn modules against torch.nn with copied weights, plus Module bookkeeping."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tinygrad_lite as tl
from tinygrad_lite import nn


def to_torch(module_tl: nn.Module, module_torch: torch.nn.Module) -> None:
    """Copy our parameters into the torch module (names must match)."""
    with torch.no_grad():
        for name, p in module_torch.named_parameters():
            p.copy_(torch.from_numpy(dict(module_tl.named_parameters())[name].numpy()))


def check_forward_backward(module_tl, module_torch, x: np.ndarray, atol: float = 1e-5) -> None:
    """Outputs and every parameter/input gradient agree (loss = sum(out * fixed weights))."""
    to_torch(module_tl, module_torch)
    xt = torch.tensor(x, requires_grad=True)
    xl = tl.Tensor(x, requires_grad=True)
    out_t = module_torch(xt)
    out_l = module_tl(xl)
    np.testing.assert_allclose(out_l.numpy(), out_t.detach().numpy(), atol=atol, rtol=1e-5)
    weights = np.random.default_rng(1).standard_normal(out_t.shape).astype(np.float32)
    (out_t * torch.from_numpy(weights)).sum().backward()
    (out_l * tl.Tensor(weights)).sum().backward()
    np.testing.assert_allclose(xl.grad.numpy(), xt.grad.numpy(), atol=atol, rtol=1e-5)
    torch_params = dict(module_torch.named_parameters())
    for name, p in module_tl.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), torch_params[name].grad.numpy(), atol=atol, rtol=1e-5,
                                   err_msg=name)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------- layers vs torch


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(bias):
    tl.manual_seed(0)
    layer = nn.Linear(5, 3, bias=bias)
    assert layer.weight.shape == (3, 5) and layer.weight.dtype == np.float32
    assert (layer.bias is not None) == bias
    check_forward_backward(layer, torch.nn.Linear(5, 3, bias=bias), randn(2, 4, 5))


def test_linear_init_is_pytorch_uniform_and_reproducible():
    tl.manual_seed(123)
    a = nn.Linear(64, 32)
    tl.manual_seed(123)
    b = nn.Linear(64, 32)
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    bound = 1 / np.sqrt(64)
    w = a.weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(a.bias.numpy()).max() <= bound
    assert w.std() == pytest.approx(bound / np.sqrt(3), rel=0.1)  # std of U(-b, b)


def test_linear_rejects_wrong_input_size():
    with pytest.raises(ValueError, match=r"Linear\(4, 2\).*\(3, 5\)"):
        nn.Linear(4, 2)(tl.randn(3, 5))


def test_embedding_matches_torch():
    tl.manual_seed(0)
    emb = nn.Embedding(10, 4)
    assert emb.weight.shape == (10, 4)
    assert abs(emb.weight.numpy().std() - 1.0) < 0.5  # N(0, 1) init
    emb_t = torch.nn.Embedding(10, 4)
    to_torch(emb, emb_t)
    ids = np.array([[1, 3, 3], [9, 0, 1]])
    out_t, out_l = emb_t(torch.from_numpy(ids)), emb(tl.Tensor(ids))
    np.testing.assert_allclose(out_l.numpy(), out_t.detach().numpy())
    weights = randn(2, 3, 4, seed=3)
    (out_t * torch.from_numpy(weights)).sum().backward()
    (out_l * tl.Tensor(weights)).sum().backward()
    np.testing.assert_allclose(emb.weight.grad.numpy(), emb_t.weight.grad.numpy(), atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_matches_torch(bias):
    ln = nn.LayerNorm(6, bias=bias)
    np.testing.assert_array_equal(ln.weight.numpy(), np.ones(6, np.float32))
    with tl.no_grad():  # non-trivial affine parameters, so their gradients are tested too
        ln.weight.copy_(randn(6, seed=5))
        if bias:
            np.testing.assert_array_equal(ln.bias.numpy(), np.zeros(6, np.float32))
            ln.bias.copy_(randn(6, seed=6))
    assert [name for name, _ in ln.named_parameters()] == (["weight", "bias"] if bias else ["weight"])
    check_forward_backward(ln, torch.nn.LayerNorm(6, bias=bias), randn(3, 4, 6) * 3 + 1)


def test_gelu_matches_torch_exact_by_default_and_tanh_approximation():
    assert nn.GELU().approximate == "none" and repr(nn.GELU()) == repr(torch.nn.GELU())
    check_forward_backward(nn.GELU(), torch.nn.GELU(), randn(4, 7) * 3)
    check_forward_backward(nn.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh"), randn(4, 7) * 3)
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("erf")


def test_relu_tanh_match_torch():
    check_forward_backward(nn.ReLU(), torch.nn.ReLU(), randn(4, 7))
    check_forward_backward(nn.Tanh(), torch.nn.Tanh(), randn(4, 7))


def test_sequential_matches_torch_and_is_indexable():
    tl.manual_seed(1)
    ours = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3), nn.Tanh())
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(),
                                 torch.nn.Linear(8, 3), torch.nn.Tanh())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert len(ours) == 4 and isinstance(ours[2], nn.Linear)
    assert isinstance(ours[:2], nn.Sequential) and len(ours[:2]) == 2
    check_forward_backward(ours, theirs, randn(5, 4))


def test_dropout_eval_is_identity_and_train_scales_kept_values():
    drop = nn.Dropout(0.25)
    x = tl.ones(200, 100)
    assert drop.eval()(x) is x
    tl.manual_seed(0)
    y = drop.train()(x).numpy()
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    assert kept.mean() == pytest.approx(0.75, abs=0.01)  # 20,000 samples: std of the fraction ~0.003


def test_dropout_gradient_uses_the_same_mask():
    tl.manual_seed(0)
    x = tl.ones(50, 40, requires_grad=True)
    y = nn.Dropout(0.5)(x)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), y.numpy())  # dy/dx = mask / (1 - p) = y for x = 1


def test_dropout_rejects_bad_p():
    with pytest.raises(ValueError, match="Dropout"):
        nn.Dropout(1.5)


# --------------------------------------------------------- Module bookkeeping


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        return x + self.drop(self.fc(self.ln(x)))


class TinyLM(nn.Module):
    """A GPT-shaped model: embeddings, a ModuleList of blocks, a head tied to the embedding."""

    def __init__(self, vocab=11, dim=4, layers=2):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.h = nn.ModuleList([Block(dim) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim, bias=False)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.scale = 2.0  # not a parameter
        self.mask = tl.ones(3, 3)  # a tensor without grad: not a parameter either

    def forward(self, ids):
        x = self.wte(ids)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def test_named_parameters_use_dotted_pytorch_names_in_definition_order():
    names = [name for name, _ in TinyLM().named_parameters()]
    assert names == ["wte.weight",
                     "h.0.ln.weight", "h.0.ln.bias", "h.0.fc.weight", "h.0.fc.bias",
                     "h.1.ln.weight", "h.1.ln.bias", "h.1.fc.weight", "h.1.fc.bias",
                     "ln_f.weight"]


def test_weight_tying_is_listed_once_but_saved_under_both_names():
    model = TinyLM()
    params = list(model.parameters())
    assert sum(p is model.wte.weight for p in params) == 1
    assert len(params) == 10
    assert model.num_parameters() == 11 * 4 + 2 * (4 + 4 + 16 + 4) + 4
    state = model.state_dict()
    assert list(state)[-1] == "lm_head.weight" and len(state) == 11
    np.testing.assert_array_equal(state["lm_head.weight"].numpy(), state["wte.weight"].numpy())
    assert not state["wte.weight"].requires_grad  # detached
    all_names = [name for name, _ in model.named_parameters(remove_duplicate=False)]
    assert "lm_head.weight" in all_names


def test_tied_weight_gets_the_sum_of_both_gradients():
    tl.manual_seed(0)
    model = TinyLM().eval()  # eval: no dropout, so both passes compute the same thing
    model(tl.Tensor(np.array([[1, 2, 3]]))).sum().backward()
    grad_tied = model.wte.weight.grad.numpy().copy()
    # Untie and compare: the tied grad must equal embedding grad + head grad.
    model.zero_grad()
    model.lm_head.weight = nn.Parameter(model.wte.weight.numpy().copy())
    model(tl.Tensor(np.array([[1, 2, 3]]))).sum().backward()
    np.testing.assert_allclose(grad_tied, model.wte.weight.grad.numpy() + model.lm_head.weight.grad.numpy(),
                               atol=1e-5)


def test_modules_children_and_named_modules():
    model = TinyLM()
    names = [name for name, _ in model.named_modules()]
    assert names[:5] == ["", "wte", "h", "h.0", "h.0.ln"]
    assert "h.1.drop" in names and names[-2:] == ["ln_f", "lm_head"]
    assert [type(c).__name__ for c in model.children()] == ["Embedding", "ModuleList", "LayerNorm", "Linear"]
    assert len(list(model.modules())) == len(names)


def test_plain_list_of_modules_is_an_error():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(2, 2)]
    with pytest.raises(TypeError, match="ModuleList"):
        list(Bad().parameters())


def test_module_list_operations():
    layers = nn.ModuleList()
    layers.append(nn.Linear(2, 3)).extend([nn.ReLU(), nn.Linear(3, 1)])
    assert len(layers) == 3 and isinstance(layers[-1], nn.Linear)
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Linear"]
    assert [n for n, _ in layers.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(TypeError, match="Module"):
        layers.append(3)


def test_train_eval_propagate_to_every_submodule():
    model = TinyLM()
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    model.h[0].eval()
    assert not model.h[0].drop.training and model.h[1].drop.training


def test_zero_grad_sets_grads_to_none():
    model = TinyLM()
    model(tl.Tensor(np.array([[0, 1]]))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=False)
    assert all(not p.grad.any() for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_state_dict_round_trip_through_save_and_load(tmp_path):
    tl.manual_seed(0)
    model = TinyLM().eval()
    path = tmp_path / "model.safetensors"
    tl.save(model.state_dict(), path)
    tl.manual_seed(1)
    fresh = TinyLM().eval()
    ids = tl.Tensor(np.array([[1, 5, 7, 2]]))
    assert not np.allclose(fresh(ids).numpy(), model(ids).numpy())
    result = fresh.load_state_dict(tl.load(path))
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(fresh(ids).numpy(), model(ids).numpy())
    assert fresh.lm_head.weight is fresh.wte.weight  # loading keeps the tie


def test_load_state_dict_accepts_numpy_arrays_and_bumps_versions():
    layer = nn.Linear(3, 2)
    version = layer.weight._version
    weight, bias = randn(2, 3), randn(2)
    layer.load_state_dict({"weight": weight, "bias": bias})
    np.testing.assert_array_equal(layer.weight.numpy(), weight)
    np.testing.assert_array_equal(layer.bias.numpy(), bias)
    assert layer.weight._version > version
    assert layer.weight.requires_grad


def test_load_state_dict_errors_name_keys_and_shapes():
    model = TinyLM()
    state = {name: t.numpy() for name, t in model.state_dict().items()}
    before = model.h[0].fc.weight.numpy().copy()

    missing = dict(state)
    del missing["h.1.fc.bias"]
    with pytest.raises(RuntimeError, match=r"(?s)TinyLM.*missing key\(s\): h\.1\.fc\.bias"):
        model.load_state_dict(missing)

    extra = dict(state, **{"h.2.fc.bias": np.zeros(4, np.float32)})
    with pytest.raises(RuntimeError, match=r"unexpected key\(s\): h\.2\.fc\.bias"):
        model.load_state_dict(extra)

    wrong = dict(state, **{"h.0.fc.weight": np.zeros((4, 5), np.float32)})
    with pytest.raises(RuntimeError, match=r"(?s)size mismatch for h\.0\.fc\.weight.*\(4, 5\).*\(4, 4\)"):
        model.load_state_dict(wrong)
    # nothing was copied by the failed loads
    np.testing.assert_array_equal(model.h[0].fc.weight.numpy(), before)


def test_load_state_dict_non_strict_reports_keys():
    model = TinyLM()
    state = {name: t.numpy() for name, t in model.state_dict().items()}
    del state["ln_f.weight"]
    state["extra"] = np.zeros(2, np.float32)
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["ln_f.weight"]
    assert result.unexpected_keys == ["extra"]
    bad = {"ln_f.weight": np.zeros(5, np.float32)}
    with pytest.raises(RuntimeError, match="size mismatch for ln_f.weight"):
        model.load_state_dict(bad, strict=False)


def test_to_cpu_keeps_the_same_tensor_objects():
    model = TinyLM()
    params = list(model.parameters())
    assert model.to("cpu") is model
    assert all(a is b for a, b in zip(params, model.parameters()))
    with pytest.raises(ValueError, match="unknown device"):
        model.to("tpu")


def test_parameter_is_a_leaf_tensor_that_requires_grad():
    p = nn.Parameter(np.zeros((2, 2), np.float32))
    assert isinstance(p, tl.Tensor) and p.requires_grad and p.is_leaf
    frozen = nn.Parameter(np.zeros(2, np.float32), requires_grad=False)

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = frozen

    assert [n for n, _ in Holder().named_parameters()] == ["w"]  # a frozen Parameter is still listed


@pytest.mark.gpu
def test_module_to_cuda_trains_saves_and_comes_back(tmp_path):
    tl.manual_seed(0)
    model = TinyLM().eval()
    ids = np.array([[1, 5, 7, 2]])
    expected = model(tl.Tensor(ids)).numpy()
    params = list(model.parameters())
    optimizer = tl.optim.Adam(model.parameters(), lr=0.01)  # built before the move: must still work

    assert model.to("cuda") is model
    assert all(p.device == "cuda" for p in model.parameters()) and model.mask.device == "cuda"
    out = model(tl.Tensor(ids, device="cuda"))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)
    out.sum().backward()
    optimizer.step()
    assert all(a is b and a.device == "cuda" for a, b in zip(params, model.parameters()))
    assert not np.allclose(model(tl.Tensor(ids, device="cuda")).numpy(), expected)

    path = tmp_path / "cuda.safetensors"
    tl.save(model.state_dict(), path)
    fresh = TinyLM().eval().to("cuda")
    fresh.load_state_dict(tl.load(path))  # CPU tensors into CUDA parameters
    np.testing.assert_array_equal(fresh(tl.Tensor(ids, device="cuda")).numpy(),
                                  model(tl.Tensor(ids, device="cuda")).numpy())
    model.to("cpu")
    assert all(p.device == "cpu" and p.grad.device == "cpu" for p in model.parameters())

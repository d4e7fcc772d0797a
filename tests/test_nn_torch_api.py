"""nn and nn.functional spelled as torch's: modules, init, buffers, repr, against PyTorch itself.

Each module test builds the torch module, copies its weights into ours (or ours into it), and
compares outputs and gradients; init tests compare shapes, bounds and spreads.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tinygrad_lite as tl
import tinygrad_lite.nn as nn
from tinygrad_lite.nn import functional as F
from tinygrad_lite.ops.elementwise import erf_array


def randn(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def copy_weights(ours: nn.Module, theirs: torch.nn.Module) -> None:
    """torch's parameters and buffers into ours (same names)."""
    ours.load_state_dict({name: tl.Tensor(value.detach().numpy().copy()) for name, value in theirs.state_dict().items()})


def compare(ours: nn.Module, theirs: torch.nn.Module, x: np.ndarray, atol: float = 1e-5) -> None:
    """Forward, input gradient and parameter gradients agree (with a random upstream gradient)."""
    xt, xl = torch.tensor(x, requires_grad=True), tl.Tensor(x, requires_grad=True)
    out_t, out_l = theirs(xt), ours(xl)
    np.testing.assert_allclose(out_l.numpy(), out_t.detach().numpy(), atol=atol, rtol=1e-5)
    upstream = randn(*out_t.shape, seed=9)
    out_t.backward(torch.from_numpy(upstream))
    out_l.backward(upstream)
    np.testing.assert_allclose(xl.grad.numpy(), xt.grad.numpy(), atol=atol, rtol=1e-5)
    torch_params = dict(theirs.named_parameters())
    assert sorted(torch_params) == sorted(name for name, _ in ours.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), torch_params[name].grad.numpy(), atol=atol, rtol=1e-5)


# ------------------------------------------------------------------ the package and its alias


def test_functional_lives_in_nn_and_the_old_name_is_the_same_module():
    import tinygrad_lite.functional as old_name  # noqa: PLC0415

    assert tl.nn.functional is F is old_name is tl.functional
    assert F.softmax_reference is tl.functional.softmax_reference
    assert tl.nn.init.normal_ is nn.init.normal_


# ------------------------------------------------------------------ erf and GELU


def test_erf_is_accurate_to_float64_rounding():
    x = np.concatenate([np.linspace(-7, 7, 20001), np.geomspace(1e-300, 0.5, 200), [0.0, 30.0, -np.inf, np.inf]])
    expected = np.array([math.erf(v) for v in x])
    relative = np.abs(erf_array(x) - expected) / np.maximum(np.abs(expected), 1e-300)
    assert relative.max() < 2e-15
    assert np.isnan(erf_array(np.array([np.nan]))).all()


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_both_forms_match_torch_fused_and_reference(approximate, dtype):
    x = randn(5, 7, dtype=dtype) * 3
    expected = torch.nn.functional.gelu(torch.from_numpy(x), approximate=approximate).numpy()
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(F.gelu(tl.Tensor(x), approximate=approximate).numpy(), expected, rtol=tol, atol=tol)
    with tl.reference_mode():
        np.testing.assert_allclose(F.gelu(tl.Tensor(x), approximate).numpy(), expected, rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        F.gelu(tl.Tensor(x), approximate="erf")


# ------------------------------------------------------------------ functional spellings


def test_softmax_takes_dim_and_the_numpy_axis_and_names_a_wrong_keyword():
    x = randn(3, 4)
    expected = torch.softmax(torch.from_numpy(x), dim=0).numpy()
    np.testing.assert_allclose(F.softmax(tl.Tensor(x), dim=0).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(F.softmax(tl.Tensor(x), axis=0).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(F.log_softmax(tl.Tensor(x), dim=0).numpy(), np.log(expected), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="did you mean 'dim'"):
        F.softmax(tl.Tensor(x), axes=0)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.7])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_label_smoothing_fused_reference_and_torch_agree(label_smoothing, reduction):
    logits, targets = randn(6, 5, dtype=np.float64), np.array([0, 4, -1, 2, 2, 1])
    lt = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(lt, torch.from_numpy(targets), ignore_index=-1,
                                                 reduction=reduction, label_smoothing=label_smoothing)
    expected.sum().backward()
    for mode in (False, True):
        x = tl.Tensor(logits, requires_grad=True)
        with tl.reference_mode(mode):
            loss = F.cross_entropy(x, targets, ignore_index=-1, reduction=reduction, label_smoothing=label_smoothing)
        loss.sum().backward()
        np.testing.assert_allclose(loss.numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(x.grad.numpy(), lt.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_cross_entropy_takes_class_dim_second_like_torch():
    logits, targets = randn(2, 5, 3, dtype=np.float64), np.random.default_rng(1).integers(0, 5, (2, 3))
    for reduction in ("mean", "none"):
        expected = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets),
                                                     reduction=reduction)
        ours = F.cross_entropy(tl.Tensor(logits), tl.tensor(targets), reduction=reduction)
        np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-12)
    with pytest.raises(NotImplementedError, match="class weights"):
        F.cross_entropy(tl.Tensor(logits[:, :, 0]), targets[:, 0], weight=tl.ones(5))


def test_small_functions_match_torch():
    x, y = randn(4, 3), randn(4, 3, seed=1)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    for ours, theirs in [(F.silu, torch.nn.functional.silu), (F.relu, torch.relu), (F.sigmoid, torch.sigmoid),
                         (F.tanh, torch.tanh)]:
        np.testing.assert_allclose(ours(tl.Tensor(x)).numpy(), theirs(tx).numpy(), rtol=1e-6, atol=1e-7)
    for reduction in ("mean", "sum", "none"):
        np.testing.assert_allclose(F.mse_loss(tl.Tensor(x), tl.Tensor(y), reduction=reduction).numpy(),
                                   torch.nn.functional.mse_loss(tx, ty, reduction=reduction).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"mse_loss: input has shape \(4, 3\) but target has shape \(3,\)"):
        F.mse_loss(tl.Tensor(x), tl.Tensor(y[0]))
    ids = np.array([[0, 3], [2, 1]])
    np.testing.assert_array_equal(F.one_hot(tl.tensor(ids)).numpy(), torch.nn.functional.one_hot(
        torch.from_numpy(ids)).numpy())
    assert F.one_hot(tl.tensor(ids), num_classes=6).shape == (2, 2, 6)


def test_layer_norm_takes_torch_arguments_and_shapes():
    x = randn(2, 3, 4) * 2 + 1
    expected = torch.nn.functional.layer_norm(torch.from_numpy(x), (3, 4))
    np.testing.assert_allclose(F.layer_norm(tl.Tensor(x), (3, 4)).numpy(), expected.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match=r"normalized_shape \(5,\) must be the last dims"):
        F.layer_norm(tl.Tensor(x), 5)


def test_attention_with_a_mask_dropout_off_and_a_scale_matches_torch():
    q, k, v = (randn(2, 3, 4, seed=s, dtype=np.float64) for s in range(3))
    mask = np.tril(np.ones((3, 3), bool))
    mask[2, 0] = False
    args = [torch.from_numpy(a) for a in (q, k, v)]
    for kwargs in ({"attn_mask": mask}, {"scale": 0.3, "is_causal": True}, {"attn_mask": np.where(mask, 0.0, -1.5)}):
        theirs = {key: torch.from_numpy(value) if isinstance(value, np.ndarray) else value
                  for key, value in kwargs.items()}
        expected = torch.nn.functional.scaled_dot_product_attention(*args, **theirs)
        ours = F.scaled_dot_product_attention(*(tl.Tensor(a) for a in (q, k, v)), dropout_p=0.0, **kwargs)
        np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ modules against torch


@pytest.mark.parametrize("shape", [(6, 4), (5, 4, 3)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm1d_trains_updates_running_stats_and_evaluates_like_torch(shape, momentum):
    torch.manual_seed(0)
    theirs, ours = torch.nn.BatchNorm1d(4, momentum=momentum), nn.BatchNorm1d(4, momentum=momentum)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.uniform_(-0.5, 0.5)
    copy_weights(ours, theirs)
    for step in range(3):  # train mode: batch statistics, running statistics move
        compare(ours, theirs, randn(*shape, seed=step) * 2 + 1)
    for name, buffer in theirs.named_buffers():
        np.testing.assert_allclose(dict(ours.named_buffers())[name].numpy(), buffer.numpy(), rtol=1e-5, atol=1e-6)
    ours.eval(), theirs.eval()
    compare(ours, theirs, randn(*shape, seed=7))
    assert int(ours.num_batches_tracked.item()) == 3  # eval leaves the statistics alone


def test_batchnorm1d_flags_and_errors():
    frozen = nn.BatchNorm1d(3, affine=False, track_running_stats=False)
    assert list(frozen.named_parameters()) == [] and list(frozen.named_buffers()) == []
    x = randn(5, 3)
    expected = torch.nn.BatchNorm1d(3, affine=False, track_running_stats=False).eval()(torch.from_numpy(x))
    np.testing.assert_allclose(frozen.eval()(tl.Tensor(x)).numpy(), expected.numpy(), atol=1e-5)  # batch stats
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(tl.Tensor(randn(1, 3)))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\): expected input \(N, 3\)"):
        nn.BatchNorm1d(3)(tl.Tensor(randn(4, 2)))
    assert repr(nn.BatchNorm1d(8)) == repr(torch.nn.BatchNorm1d(8))
    assert repr(nn.BatchNorm1d(8, momentum=None, affine=False)) == repr(
        torch.nn.BatchNorm1d(8, momentum=None, affine=False))


def test_embedding_padding_row_starts_at_zero_and_gets_no_gradient():
    theirs, ours = torch.nn.Embedding(6, 3, padding_idx=2), nn.Embedding(6, 3, padding_idx=2)
    assert not ours.weight.numpy()[2].any()
    copy_weights(ours, theirs)
    ids = np.array([[2, 1, 2], [5, 2, 0]])
    out_t, out_l = theirs(torch.from_numpy(ids)), ours(tl.tensor(ids))
    np.testing.assert_allclose(out_l.numpy(), out_t.detach().numpy())
    upstream = randn(2, 3, 3)
    out_t.backward(torch.from_numpy(upstream))
    out_l.backward(upstream)
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), atol=1e-6)
    assert not ours.weight.grad.numpy()[2].any()
    assert repr(ours) == repr(theirs) == "Embedding(6, 3, padding_idx=2)"


@pytest.mark.parametrize("kwargs", [{}, {"elementwise_affine": False}, {"bias": False}])
def test_layernorm_with_a_tuple_shape_matches_torch(kwargs):
    theirs, ours = torch.nn.LayerNorm((3, 4), **kwargs), nn.LayerNorm((3, 4), **kwargs)
    with torch.no_grad():
        for p in theirs.parameters():
            p.uniform_(0.5, 1.5)
    copy_weights(ours, theirs)
    compare(ours, theirs, randn(2, 3, 4) * 2 + 1)
    assert repr(ours) == repr(theirs)


def test_small_modules_match_torch():
    x = randn(3, 2, 4)
    for ours, theirs in [(nn.SiLU(), torch.nn.SiLU()), (nn.Sigmoid(), torch.nn.Sigmoid()), (nn.Tanh(), torch.nn.Tanh()),
                         (nn.ReLU(), torch.nn.ReLU()), (nn.Identity(54, unused=1), torch.nn.Identity(54, unused=1)),
                         (nn.Flatten(), torch.nn.Flatten()), (nn.Flatten(0, 1), torch.nn.Flatten(0, 1)),
                         (nn.GELU(), torch.nn.GELU()), (nn.Dropout(0.2).eval(), torch.nn.Dropout(0.2).eval())]:
        compare(ours, theirs, x)
        assert repr(ours) == repr(theirs)


def test_loss_modules_match_torch():
    logits, targets = randn(4, 5), np.array([1, 0, 4, 2])
    for kwargs in ({}, {"label_smoothing": 0.2, "reduction": "sum"}, {"ignore_index": 1, "reduction": "none"}):
        expected = torch.nn.CrossEntropyLoss(**kwargs)(torch.from_numpy(logits), torch.from_numpy(targets))
        ours = nn.CrossEntropyLoss(**kwargs)(tl.Tensor(logits), targets)
        np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-6)
    y = randn(4, 5, seed=2)
    np.testing.assert_allclose(nn.MSELoss()(tl.Tensor(logits), tl.Tensor(y)).numpy(),
                               torch.nn.MSELoss()(torch.from_numpy(logits), torch.from_numpy(y)).numpy(), rtol=1e-6)
    assert repr(nn.CrossEntropyLoss()) == repr(torch.nn.CrossEntropyLoss())


# ------------------------------------------------------------------ nn.init


def test_init_functions_fill_in_place_with_torch_statistics():
    w = tl.zeros(400, 300, requires_grad=True)  # fan_in 300, fan_out 400
    fan_in, fan_out = 300, 400
    assert nn.init.normal_(w, mean=1.0, std=0.02) is w and w.requires_grad and w.is_leaf
    assert w.numpy().mean() == pytest.approx(1.0, abs=1e-3) and w.numpy().std() == pytest.approx(0.02, rel=0.02)

    def bound_and_std(init, expected_bound, **kwargs):
        values = init(w, **kwargs).numpy()
        assert np.abs(values).max() <= expected_bound and np.abs(values).max() > 0.99 * expected_bound
        assert values.std() == pytest.approx(expected_bound / math.sqrt(3), rel=0.02)

    bound_and_std(nn.init.uniform_, 0.5, a=-0.5, b=0.5)
    bound_and_std(nn.init.xavier_uniform_, math.sqrt(6 / (fan_in + fan_out)))
    bound_and_std(nn.init.kaiming_uniform_, math.sqrt(3) * math.sqrt(2) / math.sqrt(fan_in), nonlinearity="relu")
    bound_and_std(nn.init.kaiming_uniform_, 1 / math.sqrt(fan_in), a=math.sqrt(5))  # nn.Linear's own init
    assert nn.init.xavier_normal_(w, gain=2.0).numpy().std() == pytest.approx(
        2.0 * math.sqrt(2 / (fan_in + fan_out)), rel=0.02)
    assert nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="tanh").numpy().std() == pytest.approx(
        5 / 3 / math.sqrt(fan_out), rel=0.02)
    truncated = nn.init.trunc_normal_(w, std=1.0, a=-0.5, b=1.0).numpy()
    assert truncated.min() >= -0.5 and truncated.max() <= 1.0
    assert not nn.init.zeros_(w).numpy().any() and (nn.init.ones_(w).numpy() == 1).all()
    assert (nn.init.constant_(w, 0.3).numpy() == np.float32(0.3)).all()


def test_calculate_gain_and_fans_follow_torch():
    for name, param in [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None), ("leaky_relu", None),
                        ("leaky_relu", 0.2), ("selu", None), ("conv2d", None)]:
        assert nn.init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))
    conv_like = tl.zeros(8, 4, 3)  # fan_in = 4 * 3, fan_out = 8 * 3
    assert nn.init.kaiming_normal_(conv_like).numpy().std() == pytest.approx(math.sqrt(2 / 12), rel=0.25)
    with pytest.raises(ValueError, match="at least 2 dims"):
        nn.init.xavier_uniform_(tl.zeros(5))


# ------------------------------------------------------------------ Module


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Dropout(0.1))
        self.heads = nn.ModuleDict({"a": nn.Linear(8, 2, bias=False), "b": nn.LayerNorm(8)})
        self.norm = nn.BatchNorm1d(8)
        self.register_buffer("scale", tl.ones(8))
        self.register_buffer("cache", tl.zeros(2), persistent=False)

    def forward(self, x):
        h = self.norm(self.body(x)) * self.scale
        return self.heads["a"](self.heads.b(h))


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Dropout(0.1))
        self.heads = torch.nn.ModuleDict({"a": torch.nn.Linear(8, 2, bias=False), "b": torch.nn.LayerNorm(8)})
        self.norm = torch.nn.BatchNorm1d(8)
        self.register_buffer("scale", torch.ones(8))
        self.register_buffer("cache", torch.zeros(2), persistent=False)

    def forward(self, x):
        h = self.norm(self.body(x)) * self.scale
        return self.heads["a"](self.heads.b(h))


def test_repr_state_dict_buffers_and_names_are_torch_s():
    ours, theirs = Net(), TorchNet()
    assert repr(ours) == repr(theirs).replace("TorchNet", "Net", 1)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert [n for n, _ in ours.named_parameters(recurse=False)] == []
    assert len(list(ours.buffers())) == len(list(theirs.buffers())) == 5
    assert list(ours.heads.keys()) == ["a", "b"] and "a" in ours.heads and len(ours.heads) == 2
    copy_weights(ours, theirs)
    ours.eval(), theirs.eval()
    x = randn(3, 4)
    np.testing.assert_allclose(ours(tl.Tensor(x)).numpy(), theirs(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_state_dict_round_trip_keeps_buffers(tmp_path):
    tl.manual_seed(0)
    model = Net()
    model(tl.Tensor(randn(5, 4)))  # train mode: running statistics move away from 0 and 1
    tl.save(model.state_dict(), tmp_path / "net.safetensors")
    fresh = Net()
    fresh.load_state_dict(tl.load(tmp_path / "net.safetensors"))
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    assert fresh.norm.num_batches_tracked.dtype == np.int64 and int(fresh.norm.num_batches_tracked.item()) == 1
    assert "cache" not in fresh.state_dict()  # not persistent
    assert all(p.requires_grad for p in fresh.parameters()) and not fresh.norm.running_mean.requires_grad


def test_apply_visits_children_first_then_self_like_torch():
    seen, seen_torch = [], []
    Net().apply(lambda m: seen.append(type(m).__name__))
    TorchNet().apply(lambda m: seen_torch.append(type(m).__name__.replace("TorchNet", "Net")))
    assert seen == seen_torch and seen[-1] == "Net"


def test_requires_grad_freezes_a_subtree_and_optimizers_skip_it():
    model = Net()
    assert model.body.requires_grad_(False) is model.body
    assert not any(p.requires_grad for p in model.body.parameters())
    assert all(p.requires_grad for p in model.heads.parameters())
    assert len(list(model.parameters())) == 7  # frozen parameters are still parameters, as in torch
    model(tl.Tensor(randn(3, 4))).sum().backward()
    assert all(p.grad is None for p in model.body.parameters())
    model.requires_grad_()
    assert all(p.requires_grad for p in model.parameters())


def test_train_eval_and_zero_grad_reach_module_dicts():
    model = Net()
    model.eval()
    assert not model.heads.b.training and not model.norm.training
    model(tl.Tensor(randn(3, 4))).sum().backward()
    assert model.heads["a"].weight.grad is not None
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("container, wrapper", [(list, "ModuleList"), (tuple, "ModuleList"), (dict, "ModuleDict")])
def test_assigning_a_plain_container_of_modules_names_the_wrapper(container, wrapper):
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            layers = [nn.Linear(2, 2), nn.ReLU()]
            self.layers = dict(enumerate(layers)) if container is dict else container(layers)

    with pytest.raises(TypeError, match=rf"Bad.layers is a plain {container.__name__} of modules; wrap it in "
                                        rf"nn.{wrapper}"):
        Bad()


def test_a_list_filled_after_assignment_is_caught_when_listing_parameters():
    class Late(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = []
            self.layers.append(nn.Linear(2, 2))

    with pytest.raises(TypeError, match="ModuleList"):
        list(Late().parameters())


def test_register_buffer_checks_its_value_and_module_dict_its_items():
    with pytest.raises(TypeError, match=r"register_buffer\('x'\): expected a Tensor or None"):
        nn.Module().register_buffer("x", [1.0])
    with pytest.raises(TypeError, match=r"ModuleDict\['x'\]: expected a Module"):
        nn.ModuleDict({"x": 3})
    with pytest.raises(AttributeError, match="no attribute or key 'missing'"):
        nn.ModuleDict().missing


def test_buffers_stay_the_same_objects_through_to_and_pad_checks_its_arguments():
    model = Net()
    buffers = list(model.buffers())
    assert model.to("cpu") is model and all(a is b for a, b in zip(buffers, model.buffers()))
    with pytest.raises(NotImplementedError, match="only mode='constant'"):
        F.pad(tl.ones(2, 2), (1, 1), mode="reflect")
    with pytest.raises(ValueError, match=r"pad: expected pairs \(before, after\) for at most 1 dims"):
        F.pad(tl.ones(2), (1, 1, 1, 1))


def test_module_to_dtype_casts_float_tensors_like_torch():
    """model.double() / to(dtype) cast float parameters, grads and buffers; integer buffers keep their dtype."""
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).double()
    ours = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ours.load_state_dict({k: tl.tensor(v.numpy().astype(np.float32) if v.dtype.is_floating_point else v.numpy())
                          for k, v in theirs.state_dict().items()})
    params = list(ours.parameters())
    assert ours.double() is ours and all(a is b for a, b in zip(params, ours.parameters()))
    for key, value in ours.state_dict().items():
        assert value.dtype == (np.int64 if key.endswith("num_batches_tracked") else np.float64), key
    x = np.random.default_rng(0).standard_normal((5, 3))
    np.testing.assert_allclose(ours(tl.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-6)
    assert ours.to("cpu", tl.float32).float() is ours and ours[0].weight.dtype == np.float32
    with pytest.raises(TypeError, match="Module.to: only floating dtypes"):
        ours.to(tl.int64)


def test_replacing_a_parameter_with_a_plain_tensor_raises():
    """`layer.weight *= 0.1` makes a new tensor here (no in-place operators): it must not silently
    drop the weight from the parameters, as makemore part 5's init would."""
    layer = nn.Linear(3, 4)
    with tl.no_grad():
        with pytest.raises(TypeError, match=r"Linear.weight is a parameter; .* `weight.mul_\(c\)` under no_grad"):
            layer.weight *= 0.1
        layer.weight.mul_(0.1)  # the in-place spelling works, as does a new Parameter
    layer.weight = nn.Parameter(layer.weight.data * 2)
    assert len(list(layer.parameters())) == 2

"""Optimizers against torch.optim: 20-step trajectories on the same float64 problem."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import tinygrad_lite as tl
from tinygrad_lite import optim
from tinygrad_lite.optim import flat_adam, lr_scheduler

# ------------------------------------------------------------------ problem
# A two-layer tanh MLP fitting fixed random targets: small, but with
# non-trivial curvature so that every optimizer term (momentum, moments,
# decay) changes the trajectory.

RNG = np.random.default_rng(0)
X = RNG.standard_normal((16, 5))
Y = RNG.standard_normal((16, 2))
INITIAL = [RNG.standard_normal((8, 5)) * 0.5, RNG.standard_normal(8) * 0.1,
           RNG.standard_normal((2, 8)) * 0.5, RNG.standard_normal(2) * 0.1]


def tl_params():
    return [tl.Tensor(w.copy(), requires_grad=True) for w in INITIAL]


def torch_params():
    return [torch.tensor(w.copy(), requires_grad=True) for w in INITIAL]


def tl_loss(p):
    hidden = (tl.Tensor(X) @ p[0].transpose(0, 1) + p[1]).tanh()
    return ((hidden @ p[2].transpose(0, 1) + p[3] - tl.Tensor(Y)) ** 2).mean()


def torch_loss(p):
    hidden = torch.tanh(torch.from_numpy(X) @ p[0].T + p[1])
    return ((hidden @ p[2].T + p[3] - torch.from_numpy(Y)) ** 2).mean()


def run_tl(make_optimizer, steps=20, max_norm=None, params=None, optimizer=None):
    """Train with tinygrad_lite; returns (params, optimizer, gradient norms before clipping)."""
    params = tl_params() if params is None else params
    optimizer = make_optimizer(optim, params) if optimizer is None else optimizer
    norms = []
    for _ in range(steps):
        optimizer.zero_grad()
        tl_loss(params).backward()
        if max_norm is not None:
            norms.append(optim.clip_grad_norm_(params, max_norm))
        optimizer.step()
    return params, optimizer, norms


def run_torch(make_optimizer, steps=20, max_norm=None):
    params = torch_params()
    optimizer = make_optimizer(torch.optim, params)
    norms = []
    for _ in range(steps):
        optimizer.zero_grad()
        torch_loss(params).backward()
        if max_norm is not None:
            norms.append(torch.nn.utils.clip_grad_norm_(params, max_norm).item())
        optimizer.step()
    return params, norms


def assert_same_params(ours, theirs, atol=1e-10):
    for index, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), atol=atol, rtol=1e-10, err_msg=f"param {index}")


TRAJECTORIES = {
    "sgd": lambda o, p: o.SGD(p, lr=0.1),
    "sgd_momentum": lambda o, p: o.SGD(p, lr=0.05, momentum=0.9),
    "sgd_nesterov_weight_decay": lambda o, p: o.SGD(p, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
    "sgd_dampening": lambda o, p: o.SGD(p, lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.02),
    "sgd_default_lr": lambda o, p: o.SGD(p),
    "rmsprop": lambda o, p: o.RMSprop(p),
    "rmsprop_momentum_weight_decay": lambda o, p: o.RMSprop(p, lr=0.005, alpha=0.9, momentum=0.8, weight_decay=0.1),
    "rmsprop_centered": lambda o, p: o.RMSprop(p, lr=0.003, eps=1e-6, centered=True),
    "rmsprop_centered_momentum_groups": lambda o, p: o.RMSprop([{"params": p[:2], "lr": 0.002, "momentum": 0.5},
                                                                {"params": p[2:], "centered": True}],
                                                               lr=0.004, momentum=0.9, centered=False),
    "adam": lambda o, p: o.Adam(p, lr=0.01),
    "adam_weight_decay": lambda o, p: o.Adam(p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
    "adamw_two_groups": lambda o, p: o.AdamW([{"params": [p[0], p[2]], "lr": 0.02, "weight_decay": 0.1},
                                              {"params": [p[1], p[3]], "weight_decay": 0.0}], lr=0.005),
}


@pytest.mark.parametrize("name", list(TRAJECTORIES))
def test_trajectory_matches_torch(name):
    ours, _, _ = run_tl(TRAJECTORIES[name])
    theirs, _ = run_torch(TRAJECTORIES[name])
    assert not np.allclose(ours[0].numpy(), INITIAL[0])  # it really moved
    assert_same_params(ours, theirs)


def test_adamw_default_weight_decay_matches_torch():
    make = lambda o, p: o.AdamW(p)  # noqa: E731
    ours, optimizer, _ = run_tl(make)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    assert_same_params(ours, run_torch(make)[0])


@pytest.mark.parametrize("name", ["sgd_momentum", "adamw_two_groups"])
def test_clip_grad_norm_inside_the_loop_matches_torch(name):
    ours, _, our_norms = run_tl(TRAJECTORIES[name], max_norm=0.5)
    theirs, their_norms = run_torch(TRAJECTORIES[name], max_norm=0.5)
    assert all(isinstance(n, float) for n in our_norms)
    assert max(our_norms) > 0.5  # clipping really happened
    np.testing.assert_allclose(our_norms, their_norms, rtol=1e-10)
    assert_same_params(ours, theirs)


def test_clip_grad_norm_scales_to_max_norm_and_leaves_small_grads_alone():
    p = tl.Tensor([3.0, 4.0], dtype=np.float64, requires_grad=True)
    q = tl.Tensor([0.0], dtype=np.float64, requires_grad=True)
    p.grad = tl.Tensor(np.array([3.0, 4.0]))
    q.grad = tl.Tensor(np.array([12.0]))
    assert optim.clip_grad_norm_([p, q], 1.0) == pytest.approx(13.0)
    np.testing.assert_allclose(p.grad.numpy(), np.array([3.0, 4.0]) / (13.0 + 1e-6))
    assert optim.clip_grad_norm_(p, 10.0) == pytest.approx(5.0 / (13.0 + 1e-6))  # small: unchanged
    np.testing.assert_allclose(p.grad.numpy(), np.array([3.0, 4.0]) / (13.0 + 1e-6))
    assert optim.clip_grad_norm_([tl.Tensor([1.0], requires_grad=True)], 1.0) == 0.0  # no grads at all


# --------------------------------------------------------------- behaviour


def test_step_updates_in_place_bumps_version_and_skips_params_without_grad():
    params = tl_params()
    unused = tl.Tensor(np.ones(3), requires_grad=True)
    optimizer = optim.Adam(params + [unused], lr=0.1)
    arrays_before = [p.data for p in params]
    versions_before = [p._version for p in params]
    tl_loss(params).backward()
    optimizer.step()
    assert all(p.data is array for p, array in zip(params, arrays_before))  # same arrays, changed in place
    assert all(p._version > v for p, v in zip(params, versions_before))
    np.testing.assert_array_equal(unused.numpy(), np.ones(3))
    assert unused not in optimizer.state


def test_float32_params_stay_float32():
    p = tl.Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    optimizer = optim.AdamW([p], lr=0.1)
    (p * p).sum().backward()
    optimizer.step()
    assert p.dtype == np.float32 and optimizer.state[p]["exp_avg"].dtype == np.float32


def test_zero_grad():
    params = tl_params()
    optimizer = optim.SGD(params, lr=0.1)
    tl_loss(params).backward()
    optimizer.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in params)
    optimizer.zero_grad()
    assert all(p.grad is None for p in params)


def test_group_options_override_defaults():
    params = tl_params()
    optimizer = optim.AdamW([{"params": params[:2], "lr": 0.5}, {"params": params[2:]}], lr=0.1, weight_decay=0.2)
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 0.1]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.2, 0.2]
    assert optimizer.param_groups[1]["betas"] == (0.9, 0.999)


# ------------------------------------------------------------ state dicts


def save_optimizer(optimizer, directory):
    """Save an optimizer state the way a checkpoint would: arrays in safetensors, the rest in JSON."""
    state = optimizer.state_dict()
    arrays = {f"{index}.{name}": value for index, values in state["state"].items() for name, value in values.items()}
    tl.save(arrays, directory / "optimizer.safetensors")
    (directory / "optimizer.json").write_text(json.dumps(state["param_groups"]))


def load_optimizer_state(directory):
    state = {}
    for key, tensor in tl.load(directory / "optimizer.safetensors").items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor.numpy()
    return {"state": state, "param_groups": json.loads((directory / "optimizer.json").read_text())}


@pytest.mark.parametrize("name", ["sgd_momentum", "adam_weight_decay", "adamw_two_groups",
                                  "rmsprop_centered_momentum_groups"])
def test_state_dict_resume_equals_uninterrupted_run(name, tmp_path):
    uninterrupted, _, _ = run_tl(TRAJECTORIES[name], steps=20)

    first_half, optimizer, _ = run_tl(TRAJECTORIES[name], steps=10)
    save_optimizer(optimizer, tmp_path)
    resumed_params = [tl.Tensor(p.numpy().copy(), requires_grad=True) for p in first_half]
    # a fresh optimizer with other hyperparameters: loading must restore them
    fresh = TRAJECTORIES[name](optim, resumed_params)
    for group in fresh.param_groups:
        group["lr"] = 123.0
    fresh.load_state_dict(load_optimizer_state(tmp_path))
    resumed, _, _ = run_tl(None, steps=10, params=resumed_params, optimizer=fresh)

    for a, b in zip(resumed, uninterrupted):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_state_dict_layout_is_like_torch():
    params = tl_params()
    optimizer = optim.Adam([{"params": params[:3]}, {"params": params[3:], "lr": 0.5}], lr=0.1)
    tl_loss(params).backward()
    optimizer.step()
    state = optimizer.state_dict()
    assert [g["params"] for g in state["param_groups"]] == [[0, 1, 2], [3]]
    assert state["param_groups"][1]["lr"] == 0.5
    assert sorted(state["state"]) == [0, 1, 2, 3]
    assert set(state["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert state["state"][0]["step"].shape == () and int(state["state"][0]["step"]) == 1
    assert isinstance(state["state"][2]["exp_avg"], np.ndarray)
    state["state"][0]["exp_avg"][...] = 99.0  # a copy: changing it does not touch the optimizer
    assert not (optimizer.state[params[0]]["exp_avg"] == 99.0).any()
    json.dumps(state["param_groups"])  # hyperparameters are JSON-able


def test_load_state_dict_rejects_mismatched_shapes_and_groups():
    params = tl_params()
    optimizer = optim.SGD(params, lr=0.1, momentum=0.9)
    tl_loss(params).backward()
    optimizer.step()
    state = optimizer.state_dict()
    other = optim.SGD(tl_params()[:2], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="4 parameters in the saved state and 2 here"):
        other.load_state_dict(state)
    state["state"][0]["momentum_buffer"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"momentum_buffer.*\(3, 3\).*\(8, 5\)"):
        optim.SGD(tl_params(), lr=0.1, momentum=0.9).load_state_dict(state)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.SGD(p, lr=-0.1), "learning rate"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-1), "momentum"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "nesterov"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening"),
    (lambda p: optim.RMSprop(p, alpha=-0.5), "alpha"),
    (lambda p: optim.RMSprop(p, momentum=-0.5), "momentum"),
    (lambda p: optim.SGD(p, lr=0.1, weight_decay=-1), "weight_decay"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.999)), "beta1"),
    (lambda p: optim.Adam(p, betas=(0.9, -0.1)), "beta2"),
    (lambda p: optim.AdamW(p, eps=-1e-8), "eps"),
    (lambda p: optim.AdamW([{"params": p, "lr": -1.0}]), "learning rate"),
    (lambda p: optim.Adam([]), "empty"),
    (lambda p: optim.Adam(p + p[:1]), "more than one"),
    (lambda p: optim.Adam([p[0] * 2]), "not a leaf"),
])
def test_bad_hyperparameters_and_params_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make(tl_params())


# ---------------------------------------------------------------- schedule


def nanogpt_get_lr(it, warmup_iters, lr_decay_iters, learning_rate, min_lr):
    """Copied from nanoGPT's train.py."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def test_get_lr_key_points():
    lr = lambda it: optim.get_lr(it, warmup_iters=10, lr_decay_iters=110, max_lr=1.0, min_lr=0.1)  # noqa: E731
    assert lr(0) == pytest.approx(1 / 11)  # warmup start
    assert lr(9) == pytest.approx(10 / 11)
    assert lr(10) == pytest.approx(1.0)  # peak
    assert lr(60) == pytest.approx(0.55)  # cosine midpoint: halfway between max and min
    assert lr(110) == pytest.approx(0.1)  # floor
    assert lr(111) == lr(10_000) == 0.1
    for it in range(0, 130):
        assert lr(it) == nanogpt_get_lr(it, 10, 110, 1.0, 0.1)
    short = [optim.get_lr(it, warmup_iters=4, lr_decay_iters=3, max_lr=1.0, min_lr=0.1) for it in range(7)]
    assert short == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0]  # too short to decay: warmup, then max_lr


def test_warmup_cosine_schedule_sets_group_lrs():
    params = tl_params()
    optimizer = optim.AdamW([{"params": params[:2]}, {"params": params[2:]}], lr=5.0)
    schedule = optim.WarmupCosineSchedule(optimizer, warmup_iters=4, max_iters=20, max_lr=6e-4, min_lr=6e-5)
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(6e-4 / 5)] * 2  # iteration 0 set at once
    seen = []
    for _ in range(24):
        schedule.step()
        seen.append(schedule.get_last_lr())
    expected = [nanogpt_get_lr(it, 4, 20, 6e-4, 6e-5) for it in range(1, 25)]
    assert seen == [[lr, lr] for lr in expected]  # bit for bit: the group at the largest lr follows get_lr exactly
    assert schedule.lr_at(12) == [nanogpt_get_lr(12, 4, 20, 6e-4, 6e-5)] * 2
    assert all(g["lr"] == 6e-5 for g in optimizer.param_groups)
    assert schedule.set_iteration(4) == [6e-4, 6e-4] and optimizer.param_groups[0]["lr"] == 6e-4
    short = optim.WarmupCosineSchedule(optimizer, warmup_iters=10, max_iters=10, max_lr=1.0, min_lr=0.1)
    assert short.set_iteration(20) == [1.0, 1.0]  # too short to decay: warmup, then max_lr (as get_lr)
    with pytest.raises(ValueError, match="must be >= 0"):
        optim.WarmupCosineSchedule(optimizer, warmup_iters=-1, max_iters=10, max_lr=1.0, min_lr=0.1)


def test_warmup_cosine_schedule_scales_each_groups_own_lr():
    params = tl_params()
    optimizer = optim.AdamW([{"params": params[:2], "lr": 1e-3}, {"params": params[2:], "lr": 2.5e-4}])
    schedule = optim.WarmupCosineSchedule(optimizer, warmup_iters=3, max_iters=12, min_lr=1e-4)  # max_lr: 1e-3
    for it in range(16):
        big, small = schedule.get_last_lr()
        assert big == nanogpt_get_lr(it, 3, 12, 1e-3, 1e-4)
        assert small == pytest.approx(nanogpt_get_lr(it, 3, 12, 2.5e-4, 2.5e-5), rel=1e-12)  # a quarter, always
        assert [g["lr"] for g in optimizer.param_groups] == [big, small]
        schedule.step()
    resumed = optim.WarmupCosineSchedule(optimizer, warmup_iters=3, max_iters=12, min_lr=1e-4)
    resumed.load_state_dict(schedule.state_dict())
    assert resumed.base_lrs == [1e-3, 2.5e-4] and resumed.get_last_lr() == schedule.get_last_lr()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["sgd_nesterov_weight_decay", "adamw_two_groups"])
def test_cuda_steps_match_cpu_steps(name):
    target = np.linspace(-1.0, 1.0, 8)

    def train(device):
        params = [tl.Tensor(w.copy(), requires_grad=True, device=device) for w in INITIAL]
        optimizer = TRAJECTORIES[name](optim, params)
        norms = []
        for _ in range(5):
            optimizer.zero_grad()
            loss = ((params[0].tanh().sum(axis=1) - tl.Tensor(target, device=device)) ** 2).sum()
            loss = loss + (params[1] * params[1]).sum() + (params[2] ** 2).sum() + params[3].sum()
            loss.backward()
            norms.append(optim.clip_grad_norm_(params, 1.0))
            optimizer.step()
        return params, optimizer, norms

    cpu_params, _, cpu_norms = train("cpu")
    cuda_params, cuda_optimizer, cuda_norms = train("cuda")
    np.testing.assert_allclose(cuda_norms, cpu_norms, rtol=1e-9)
    for a, b in zip(cuda_params, cpu_params):
        assert a.device == "cuda"
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-9)
    state = cuda_optimizer.state_dict()  # plain numpy arrays even from the GPU
    assert all(isinstance(v, np.ndarray) for s in state["state"].values() for v in s.values())


# -------------------------------------------------------------- fused Adam
# Adam/AdamW update all parameters of a group at once by default (flat moment
# buffers, whole-buffer array ops; one CUDA kernel on the GPU). The per-parameter
# loop (fused=False) is the reference: both must agree bit for bit.

FUSED_CASES = {
    "adamw_two_groups": lambda o, p, fused: o.AdamW([{"params": [p[0], p[2]], "lr": 0.02, "weight_decay": 0.1},
                                                     {"params": [p[1], p[3]], "weight_decay": 0.0}], lr=0.005,
                                                    fused=fused),
    "adam_l2": lambda o, p, fused: o.Adam(p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, fused=fused),
    "adamw_default": lambda o, p, fused: o.AdamW(p, fused=fused),
}


def run_pair(make, dtype, steps=12, max_norm=None, skip=None):
    """Train the MLP with fused and with loop optimizers side by side; returns both params lists."""
    runs = []
    for fused in (True, False):
        params = [tl.Tensor(w.astype(dtype), requires_grad=True) for w in INITIAL]
        optimizer = make(optim, params, fused)
        for step in range(steps):
            optimizer.zero_grad()
            tl_loss(params).backward()
            if skip is not None and step in skip:
                params[skip[step]].grad = None  # unused this step: its state must not move
            if max_norm is not None:
                optim.clip_grad_norm_(params, max_norm)
            optimizer.step()
        runs.append((params, optimizer))
    return runs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(FUSED_CASES))
def test_fused_adam_is_bit_identical_to_the_loop(name, dtype):
    (fused, fused_opt), (loop, loop_opt) = run_pair(FUSED_CASES[name], dtype, max_norm=0.5)
    assert fused_opt.fused and not loop_opt.fused and fused_opt._flat  # the fused path really ran
    for a, b in zip(fused, loop):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    fused_state, loop_state = fused_opt.state_dict(), loop_opt.state_dict()
    assert fused_state["param_groups"] == loop_state["param_groups"]
    for index, values in loop_state["state"].items():
        assert set(fused_state["state"][index]) == {"step", "exp_avg", "exp_avg_sq"}
        for key, value in values.items():
            np.testing.assert_array_equal(fused_state["state"][index][key], value)


@pytest.mark.parametrize("name", ["adam_weight_decay", "adamw_two_groups"])
def test_fused_and_loop_adam_both_match_torch(name):
    make = TRAJECTORIES[name]
    theirs, _ = run_torch(make)
    for fused in (True, False):
        params = tl_params()
        optimizer = make(optim, params)
        optimizer.fused = fused
        ours, _, _ = run_tl(None, params=params, optimizer=optimizer)
        assert_same_params(ours, theirs)


def test_fused_adam_state_is_views_into_one_flat_buffer_per_group():
    params = tl_params()
    optimizer = optim.AdamW([{"params": params[:2]}, {"params": params[2:]}], lr=0.01)
    arrays = [p.data for p in params]
    tl_loss(params).backward()
    optimizer.step()
    assert all(p.data is a for p, a in zip(params, arrays))  # parameters updated in place
    flat = optimizer._flat[0]
    assert flat.exp_avg.shape == (8 * 5 + 8,)
    for param in params[:2]:
        state = optimizer.state[param]
        assert state["exp_avg"].shape == param.shape and np.shares_memory(state["exp_avg"], flat.exp_avg)
        assert np.shares_memory(state["exp_avg_sq"], flat.exp_avg_sq) and state["step"] == 1


def test_fused_adam_survives_unused_parameters_reloads_and_tiny_chunks(monkeypatch, tmp_path):
    monkeypatch.setattr(flat_adam, "CPU_CHUNK_ELEMENTS", 7)  # tensors spanning several chunks, chunks several tensors
    skip = {3: 1, 4: 1, 7: 2}  # param 1 unused at steps 3 and 4, param 2 at step 7: step counts then differ
    for make in FUSED_CASES.values():
        (fused, fused_opt), (loop, _) = run_pair(make, np.float32, steps=10, skip=skip)
        for a, b in zip(fused, loop):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    # a state loaded from disk is copied into fresh flat buffers and continues exactly
    (params, optimizer), (loop, loop_opt) = run_pair(FUSED_CASES["adamw_two_groups"], np.float32, steps=5)
    save_optimizer(optimizer, tmp_path)
    optimizer.load_state_dict(load_optimizer_state(tmp_path))
    for opt, ps in ((optimizer, params), (loop_opt, loop)):
        for _ in range(3):
            opt.zero_grad()
            tl_loss(ps).backward()
            opt.step()
    for a, b in zip(params, loop):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_fused_adam_falls_back_to_the_loop_for_mixed_dtypes():
    params = [tl.Tensor(np.ones(3, np.float32), requires_grad=True), tl.Tensor(np.ones(2), requires_grad=True)]
    optimizer = optim.Adam(params, lr=0.1)
    for p in params:
        p.grad = tl.Tensor(np.ones(p.shape, p.dtype))
    optimizer.step()
    assert not optimizer._flat and all(optimizer.state[p]["step"] == 1 for p in params)
    np.testing.assert_allclose(params[0].numpy(), 0.9, rtol=1e-6)


def test_chunk_plan_covers_every_element_once_in_order():
    sizes = [5, 0, 12, 1, 3]
    for chunk in (1, 4, 7, 100):
        plan = flat_adam.chunk_plan(sizes, chunk)
        assert all(0 < end - start <= chunk for start, end, _ in plan)
        assert [start for start, _, _ in plan] == [0] + [end for _, end, _ in plan[:-1]]
        covered = [(i, e) for _, _, pieces in plan for i, lo, hi in pieces for e in range(lo, hi)]
        assert covered == [(i, e) for i, n in enumerate(sizes) for e in range(n)]
        for start, end, pieces in plan:
            assert sum(hi - lo for _, lo, hi in pieces) == end - start


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_frozen_parameters_are_accepted_left_alone_and_train_once_unfrozen(name):
    import torch

    def make(module, params):
        options = {"lr": 0.1} if name == "SGD" else {"lr": 0.1, "weight_decay": 0.1}
        return getattr(module, name)(params, **options)

    def loss_of(params):  # the frozen one takes no part in the loss, as in fine-tuning
        return sum((p * p).sum() for p in params if p.requires_grad)

    start = [np.arange(3.0), np.ones(2)]
    ours = [tl.Tensor(a.copy(), requires_grad=True) for a in start]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in start]
    ours[1].requires_grad_(False)
    theirs[1].requires_grad_(False)
    ours_opt, theirs_opt = make(optim, ours), make(torch.optim, theirs)
    for step in range(6):
        if step == 3:  # unfreeze
            ours[1].requires_grad_(True)
            theirs[1].requires_grad_(True)
        for params, optimizer in ((ours, ours_opt), (theirs, theirs_opt)):
            loss_of(params).backward()
            optimizer.step()
            optimizer.zero_grad()
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert not np.array_equal(ours[1].numpy(), start[1])  # it trained once unfrozen


def test_gpt_configure_optimizer_with_a_frozen_embedding():
    from gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=8))
    model.wpe.weight.requires_grad = False
    before = model.wpe.weight.numpy().copy()
    optimizer = model.configure_optimizer(lr=1e-2, weight_decay=0.1)
    _, loss = model(np.zeros((1, 4), dtype=np.int64), targets=np.ones((1, 4), dtype=np.int64))
    loss.backward()
    optimizer.step()
    assert np.array_equal(model.wpe.weight.numpy(), before)
    assert model.wpe.weight.grad is None


@pytest.mark.parametrize("name", ["AdamW", "RMSprop"])
def test_gpt_configure_optimizer_skips_a_frozen_block(name):
    from gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=2, n_head=1, n_embd=8))
    frozen = list(model.h[0].parameters())
    for param in frozen:
        param.requires_grad = False
    before = [p.numpy().copy() for p in frozen]
    optimizer = model.configure_optimizer(lr=1e-2, weight_decay=0.1)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in in_optimizer for p in frozen)
    assert len(in_optimizer) == len([p for p in model.parameters() if p.requires_grad])
    trained_before = model.h[1].mlp.c_fc.weight.numpy().copy()
    for _ in range(2):
        _, loss = model(np.zeros((1, 4), dtype=np.int64), targets=np.ones((1, 4), dtype=np.int64))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(np.array_equal(p.numpy(), b) for p, b in zip(frozen, before))
    assert not np.array_equal(model.h[1].mlp.c_fc.weight.numpy(), trained_before)
    for param in model.parameters():
        param.requires_grad = False
    with pytest.raises(ValueError, match="every parameter is frozen"):
        model.configure_optimizer(lr=1e-2, weight_decay=0.1)


def test_add_param_group_mid_run_matches_torch():
    def make(module, params):
        return module.AdamW([{"params": params[:2]}], lr=0.01, weight_decay=0.05)

    ours, theirs = tl_params(), torch_params()
    optimizers = (make(optim, ours), make(torch.optim, theirs))
    for step in range(8):
        if step == 3:
            optimizers[0].add_param_group({"params": ours[2:], "lr": 0.03, "betas": (0.5, 0.9)})
            optimizers[1].add_param_group({"params": theirs[2:], "lr": 0.03, "betas": (0.5, 0.9)})
        for params, optimizer, loss in ((ours, optimizers[0], tl_loss), (theirs, optimizers[1], torch_loss)):
            optimizer.zero_grad(set_to_none=True)
            loss(params).backward()
            optimizer.step()
    assert optimizers[0].param_groups[1]["weight_decay"] == 0.05  # options left out take the defaults
    assert_same_params(ours, theirs)
    with pytest.raises(ValueError, match="more than one"):
        optimizers[0].add_param_group({"params": ours[:1]})


# ------------------------------------------------- flat AdamW vs its twin
# The flat path (flat_adam.py) and the per-parameter reference loop that tl.reference_mode()
# runs must agree; the bit-for-bit tests above compare fused=True with fused=False.


@pytest.mark.parametrize("make", [
    lambda p: optim.AdamW([{"params": p[:3], "weight_decay": 0.1}, {"params": p[3:], "weight_decay": 0.0}], lr=0.01),
    lambda p: optim.Adam(p, lr=0.02, betas=(0.8, 0.95), weight_decay=0.05),
])
def test_flat_adamw_agrees_with_the_reference_mode_loop(make):
    rng = np.random.default_rng(5)
    shapes = [(40, 30), (30,), (7, 1, 5), (3,), (900,)]
    start = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    grads = [[rng.standard_normal(shape).astype(np.float32) for shape in shapes] for _ in range(6)]
    results = []
    for reference in (False, True):
        params = [tl.Tensor(a.copy(), requires_grad=True) for a in start]
        params[2].requires_grad_(False)  # frozen: in a group, never a gradient
        optimizer = make(params)
        with tl.reference_mode() if reference else tl.no_grad():
            for step_grads in grads:
                for param, grad in zip(params, step_grads):
                    param.grad = tl.Tensor(grad) if param.requires_grad else None
                optimizer.step()
        assert bool(optimizer._flat) is not reference  # each mode took its own path
        results.append(params)
    for fast, plain in zip(*results):
        np.testing.assert_allclose(fast.numpy(), plain.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(results[0][2].numpy(), start[2])  # the frozen one did not move
    assert not np.allclose(results[0][0].numpy(), start[0])


# ------------------------------------------------------------- schedulers
# Each against torch.optim.lr_scheduler on the same optimizer config: 30 steps, every group's lr
# (and the momentum OneCycleLR cycles) step by step.

SCHEDULERS = {
    "LambdaLR": lambda s, o: s.LambdaLR(o, lambda epoch: 0.95 ** epoch),
    "LambdaLR_per_group": lambda s, o: s.LambdaLR(o, [lambda epoch: 1 / (epoch + 1), lambda epoch: 0.9 ** epoch]),
    "StepLR": lambda s, o: s.StepLR(o, step_size=7, gamma=0.5),
    "MultiStepLR": lambda s, o: s.MultiStepLR(o, milestones=[3, 10, 10, 20], gamma=0.3),
    "ConstantLR": lambda s, o: s.ConstantLR(o, factor=0.25, total_iters=6),
    "ExponentialLR": lambda s, o: s.ExponentialLR(o, gamma=0.9),
    "CosineAnnealingLR": lambda s, o: s.CosineAnnealingLR(o, T_max=12, eta_min=0.001),  # past T_max: back up
    "LinearLR": lambda s, o: s.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=8),
    "SequentialLR": lambda s, o: s.SequentialLR(o, [s.LinearLR(o, start_factor=0.1, total_iters=5),
                                                    s.CosineAnnealingLR(o, T_max=25, eta_min=1e-4)], milestones=[5]),
    "SequentialLR_three": lambda s, o: s.SequentialLR(o, [s.ConstantLR(o, factor=0.1, total_iters=3),
                                                          s.ExponentialLR(o, gamma=0.9), s.StepLR(o, 4, 0.5)],
                                                      milestones=[4, 12]),
    "OneCycleLR": lambda s, o: s.OneCycleLR(o, max_lr=[0.5, 0.2], total_steps=30),
    "OneCycleLR_three_phase_linear": lambda s, o: s.OneCycleLR(o, max_lr=0.5, epochs=3, steps_per_epoch=10,
                                                               three_phase=True, anneal_strategy="linear"),
}

SCHEDULED_OPTIMIZERS = {
    "SGD": lambda o, p: o.SGD([{"params": p[:2], "lr": 0.1}, {"params": p[2:], "lr": 0.03}], momentum=0.9),
    "AdamW": lambda o, p: o.AdamW([{"params": p[:2], "lr": 0.01}, {"params": p[2:], "lr": 0.003}]),
}


def momentum_of(group):
    return group["betas"][0] if "betas" in group else group["momentum"]


@pytest.mark.parametrize("optimizer_name", list(SCHEDULED_OPTIMIZERS))
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_matches_torch_step_by_step(name, optimizer_name):
    import warnings

    ours, theirs = tl_params(), torch_params()
    our_optimizer = SCHEDULED_OPTIMIZERS[optimizer_name](optim, ours)
    their_optimizer = SCHEDULED_OPTIMIZERS[optimizer_name](torch.optim, theirs)
    our_scheduler = SCHEDULERS[name](lr_scheduler, our_optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes about step order and deprecations
        their_scheduler = SCHEDULERS[name](torch.optim.lr_scheduler, their_optimizer)
        for _ in range(30):
            np.testing.assert_allclose(our_scheduler.get_last_lr(), their_scheduler.get_last_lr(), rtol=1e-14)
            assert [g["lr"] for g in our_optimizer.param_groups] == our_scheduler.get_last_lr()
            np.testing.assert_allclose([momentum_of(g) for g in our_optimizer.param_groups],
                                       [momentum_of(g) for g in their_optimizer.param_groups], rtol=1e-14)
            for params, optimizer, loss in ((ours, our_optimizer, tl_loss), (theirs, their_optimizer, torch_loss)):
                optimizer.zero_grad()
                loss(params).backward()
                optimizer.step()
            our_scheduler.step()
            their_scheduler.step()
    assert_same_params(ours, theirs, atol=1e-9)
    assert our_scheduler.last_epoch == their_scheduler.last_epoch == 30


@pytest.mark.parametrize("name", ["StepLR", "SequentialLR", "OneCycleLR", "LambdaLR"])
def test_scheduler_state_dict_resumes_exactly(name):
    def run(steps, optimizer, scheduler):
        lrs = []
        for _ in range(steps):
            lrs.append(scheduler.get_last_lr())
            optimizer.step()
            scheduler.step()
        return lrs

    params = tl_params()
    optimizer = SCHEDULED_OPTIMIZERS["AdamW"](optim, params)
    scheduler = SCHEDULERS[name](lr_scheduler, optimizer)
    uninterrupted = run(20, optimizer, scheduler)

    optimizer = SCHEDULED_OPTIMIZERS["AdamW"](optim, tl_params())
    scheduler = SCHEDULERS[name](lr_scheduler, optimizer)
    first = run(8, optimizer, scheduler)
    saved_optimizer, saved_scheduler = optimizer.state_dict(), scheduler.state_dict()
    assert saved_scheduler["last_epoch"] == 8 and "optimizer" not in saved_scheduler
    fresh_optimizer = SCHEDULED_OPTIMIZERS["AdamW"](optim, tl_params())
    fresh = SCHEDULERS[name](lr_scheduler, fresh_optimizer)
    fresh_optimizer.load_state_dict(saved_optimizer)
    fresh.load_state_dict(saved_scheduler)
    assert first + run(12, fresh_optimizer, fresh) == uninterrupted


def test_schedulers_refuse_to_stack_and_check_their_settings():
    optimizer = SCHEDULED_OPTIMIZERS["SGD"](optim, tl_params())
    first = lr_scheduler.StepLR(optimizer, step_size=2)
    lr_scheduler.ExponentialLR(optimizer, gamma=0.5).step()  # torch would multiply the two; here: an error
    with pytest.raises(ValueError, match="something else changed it"):
        first.step()
    with pytest.raises(ValueError, match="2 lr_lambdas for 1 parameter groups"):
        lr_scheduler.LambdaLR(optim.SGD(tl_params()), [abs, abs])
    with pytest.raises(ValueError, match="2 schedulers need 1 milestones"):
        lr_scheduler.SequentialLR(optimizer, [first, lr_scheduler.StepLR(optimizer, 3)], milestones=[])
    with pytest.raises(ValueError, match="total_steps is 3"):
        scheduler = lr_scheduler.OneCycleLR(optim.SGD(tl_params(), momentum=0.9), max_lr=0.1, total_steps=3)
        for _ in range(4):
            scheduler.step()
    with pytest.raises(ValueError, match="momentum or betas"):
        lr_scheduler.OneCycleLR(optim.Optimizer(tl_params(), {"lr": 0.1}), max_lr=0.1, total_steps=3)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(optim.SGD(tl_params()), step_size=2, last_epoch=4)

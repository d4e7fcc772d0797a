"""Optimizers (SGD, RMSprop, Adam, AdamW) and gradient clipping; schedules are in ``optim.lr_scheduler``.

An optimizer holds ``param_groups``: a list of dicts, each with its
``"params"`` (a list of Tensors) and its hyperparameters (``lr``,
``weight_decay``, ...). ``step()`` walks every parameter that has a gradient
and changes ``param.data`` in place, using the per-parameter ``state``
(momentum buffers, Adam's moment estimates). The update formulas are
PyTorch's, written out one line per equation, so trajectories match torch.

Adam and AdamW also have a *fused* step (the default, ``fused=True``): the
same equations for all parameters of a group at once, over one flat buffer
of moments, in ``flat_adam.py`` (CPU chunks on the cores, one CUDA kernel on
the GPU). The per-parameter ``update_parameter`` here is its reference twin:
``tl.reference_mode()`` and ``fused=False`` run it, and both give the same numbers.

    optimizer = optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5000)
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy

from .. import backend, cuda_kernels
from ..autograd import enable_grad, is_reference_mode, no_grad
from ..tensor import Tensor
from . import flat_adam


class Optimizer:
    """Base class: parameter groups, ``zero_grad``, ``state_dict`` and the loop of ``step``.

    A subclass passes its hyperparameter defaults to ``__init__``, checks them
    in ``check_hyperparameters`` and writes the math for one parameter in
    ``update_parameter``.
    """

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        # Per-parameter state (e.g. {"momentum_buffer": array}), keyed by the
        # parameter itself (Tensors hash by identity).
        self.state: dict[Tensor, dict] = {}
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        """Add ``{"params": [...], **options}``; options left out take the defaults.

        A frozen parameter (``requires_grad=False``) is welcome, as in PyTorch: it has no gradient,
        so ``step`` leaves it alone until it is unfrozen.
        """
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{type(self).__name__}: a parameter group must be a dict with a 'params' key")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        already_seen = {id(p) for existing in self.param_groups for p in existing["params"]}
        for index, param in enumerate(params):
            if not isinstance(param, Tensor):
                raise TypeError(f"{type(self).__name__}: parameter {index} is a {type(param).__name__}, "
                                "expected a Tensor")
            if not param.is_leaf:
                raise ValueError(f"{type(self).__name__}: parameter {index} (shape {param.shape}) is not a leaf "
                                 "(it was computed from other tensors); optimize the tensors it came from")
            if id(param) in already_seen:
                raise ValueError(f"{type(self).__name__}: parameter {index} (shape {param.shape}) "
                                 "appears in more than one parameter group (or twice in one)")
            already_seen.add(id(param))
        full_group = {**self.defaults, **group, "params": params}
        self.check_hyperparameters(full_group)
        self.param_groups.append(full_group)

    def check_hyperparameters(self, group: dict) -> None:
        """Raise ValueError for a nonsensical setting (a subclass adds its own checks)."""
        if group["lr"] < 0.0:
            raise ValueError(f"{type(self).__name__}: invalid learning rate {group['lr']} (must be >= 0)")
        if group.get("weight_decay", 0.0) < 0.0:
            raise ValueError(f"{type(self).__name__}: invalid weight_decay {group['weight_decay']} (must be >= 0)")

    # ----------------------------------------------------------------- step
    def step(self, closure=None):
        """Update every parameter that has a gradient (``closure``, if given, recomputes the loss)."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():  # the update itself must not be recorded in any graph
            for index, group in enumerate(self.param_groups):
                self.step_group(index, group)
        return loss

    def step_group(self, index: int, group: dict) -> None:
        """Update one group: ``update_parameter`` for each parameter that has a gradient."""
        for param in group["params"]:
            if param.grad is None:
                continue  # unused this step (e.g. frozen, or not in the loss)
            state = self.state.setdefault(param, {})
            if state:
                _move_state_to(state, param.device)
            self.update_parameter(param, param.grad.data, group, state)

    def update_parameter(self, param: Tensor, grad, group: dict, state: dict) -> None:
        """Change ``param`` in place given its gradient array; written by each optimizer."""
        raise NotImplementedError(f"{type(self).__name__} does not define update_parameter")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients before the next backward (which adds into ``.grad``)."""
        for group in self.param_groups:
            for param in group["params"]:
                if set_to_none:
                    param.grad = None
                elif param.grad is not None:
                    param.grad.zero_()

    # ----------------------------------------------------------- state dict
    def state_dict(self) -> dict:
        """The optimizer's state in a form that safetensors + JSON can store.

        ``{"state": {index: {name: numpy array}}, "param_groups": [{..., "params": [indices]}]}``
        where a parameter's index is its position counting through all groups
        (as in PyTorch). Arrays are copies on the CPU; numbers in the state
        (the step count) become 0-d arrays.
        """
        groups, state = [], {}
        index = 0
        for group in self.param_groups:
            indices = []
            for param in group["params"]:
                if param in self.state:
                    state[index] = {name: _numpy_copy(value) for name, value in self.state[param].items()}
                indices.append(index)
                index += 1
            hyperparameters = {key: value for key, value in group.items() if key != "params"}
            groups.append({**hyperparameters, "params": indices})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what ``state_dict`` saved into this optimizer (built on the same parameters).

        Hyperparameters come from the saved groups; state arrays are moved to
        each parameter's device and dtype; 0-d arrays become numbers again.
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved state has {len(saved_groups)} "
                             f"parameter groups, this optimizer has {len(self.param_groups)}")
        params_by_index = {}
        for group_index, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{type(self).__name__}.load_state_dict: group {group_index} has "
                                 f"{len(saved['params'])} parameters in the saved state and "
                                 f"{len(group['params'])} here")
            for index, param in zip(saved["params"], group["params"]):
                params_by_index[int(index)] = param

        new_state = {}
        for index, saved_param_state in state_dict["state"].items():
            if int(index) not in params_by_index:
                raise ValueError(f"{type(self).__name__}.load_state_dict: state for parameter {index}, "
                                 "which no saved group lists")
            param = params_by_index[int(index)]
            param_state = {}
            for name, value in saved_param_state.items():
                value = _numpy_copy(value)
                if value.ndim == 0:  # a count such as Adam's step
                    param_state[name] = value.item()
                    continue
                if tuple(value.shape) != param.shape:
                    raise ValueError(f"{type(self).__name__}.load_state_dict: state '{name}' of parameter {index} "
                                     f"has shape {tuple(value.shape)}, the parameter has shape {param.shape}")
                param_state[name] = backend.to_device(value.astype(param.dtype), param.device)
            new_state[param] = param_state

        for saved, group in zip(saved_groups, self.param_groups):
            for key, value in saved.items():
                if key == "params":
                    continue
                # JSON turns tuples (Adam's betas) into lists: give them back their type.
                group[key] = tuple(value) if isinstance(group.get(key), tuple) else value
        self.state = new_state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for index, group in enumerate(self.param_groups):
            options = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {index}: {len(group['params'])} tensors, {options}")
        return "\n".join(lines + [")"])


def _move_state_to(state: dict, device: str) -> None:
    """Keep optimizer state on its parameter's device (the model may have been moved with ``Module.to``)."""
    for name, value in state.items():
        if hasattr(value, "shape") and backend.device_of(value) != device:
            state[name] = backend.to_device(value, device)


def _numpy_copy(value) -> numpy.ndarray:
    """A numpy copy of a Tensor, a numpy/cupy array or a number (numbers become 0-d arrays)."""
    if isinstance(value, Tensor):
        return value.numpy().copy()
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return numpy.array(backend.to_numpy(value))
    return numpy.array(value)


# ------------------------------------------------------------------- SGD


class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum, dampening and L2 weight decay.

    For each parameter p with gradient g (PyTorch's formulas):

        g = g + weight_decay * p                              (if weight_decay != 0)
        b = g                                   at the first step (if momentum != 0)
        b = momentum * b + (1 - dampening) * g  afterwards
        g = g + momentum * b   (nesterov)   or   g = b   (plain momentum)
        p = p - lr * g
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))

    def check_hyperparameters(self, group: dict) -> None:
        super().check_hyperparameters(group)
        if group["momentum"] < 0.0:
            raise ValueError(f"SGD: invalid momentum {group['momentum']} (must be >= 0)")
        if group["nesterov"] and (group["momentum"] <= 0.0 or group["dampening"] != 0.0):
            raise ValueError(f"SGD: nesterov=True needs a momentum > 0 and dampening 0, got momentum "
                             f"{group['momentum']} and dampening {group['dampening']}")

    def update_parameter(self, param: Tensor, grad, group: dict, state: dict) -> None:
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        if weight_decay != 0.0:
            grad = grad + weight_decay * param.data
        if momentum != 0.0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.copy()
            else:
                state["momentum_buffer"] = momentum * state["momentum_buffer"] + (1.0 - group["dampening"]) * grad
            buffer = state["momentum_buffer"]
            grad = grad + momentum * buffer if group["nesterov"] else buffer
        param.sub_(lr * grad)


# --------------------------------------------------------------- RMSprop


class RMSprop(Optimizer):
    """Divide each gradient by a running root mean square of its recent values (Hinton; PyTorch's ``RMSprop``).

        g = g + weight_decay * p                       (if weight_decay != 0)
        s = alpha * s + (1 - alpha) * g^2              (running mean of g^2, from s = 0)
        centered:  a = a + (1 - alpha) * (g - a)       (running mean of g, from a = 0)
                   d = sqrt(s - a^2) + eps             (so d estimates the standard deviation)
        otherwise: d = sqrt(s) + eps
        momentum:  b = momentum * b + g / d,  p = p - lr * b       (from b = 0)
        otherwise: p = p - lr * g / d
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered))

    def check_hyperparameters(self, group: dict) -> None:
        super().check_hyperparameters(group)
        for name in ("alpha", "eps", "momentum"):
            if group[name] < 0.0:
                raise ValueError(f"RMSprop: invalid {name} {group[name]} (must be >= 0)")

    def update_parameter(self, param: Tensor, grad, group: dict, state: dict) -> None:
        alpha, xp = group["alpha"], param.xp
        if "step" not in state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(param.data)
            if group["momentum"] > 0.0:
                state["momentum_buffer"] = xp.zeros_like(param.data)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(param.data)
        state["step"] += 1
        if group["weight_decay"] != 0.0:
            grad = grad + group["weight_decay"] * param.data
        state["square_avg"] = alpha * state["square_avg"] + (1.0 - alpha) * grad * grad
        if group["centered"]:
            state["grad_avg"] = state["grad_avg"] + (1.0 - alpha) * (grad - state["grad_avg"])
            denominator = xp.sqrt(state["square_avg"] - state["grad_avg"] * state["grad_avg"]) + group["eps"]
        else:
            denominator = xp.sqrt(state["square_avg"]) + group["eps"]
        if group["momentum"] > 0.0:
            state["momentum_buffer"] = group["momentum"] * state["momentum_buffer"] + grad / denominator
            param.sub_(group["lr"] * state["momentum_buffer"])
        else:
            param.sub_(group["lr"] * (grad / denominator))


# ------------------------------------------------------------------ Adam


def _adam_update(param: Tensor, grad, group: dict, state: dict) -> None:
    """The Adam step shared by Adam and AdamW (``grad`` already includes any L2 term).

        t = t + 1
        m = beta1 * m + (1 - beta1) * g                 (running mean of g)
        v = beta2 * v + (1 - beta2) * g^2               (running mean of g^2)
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)   (undo the bias of starting at 0)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)
    """
    beta1, beta2 = group["betas"]
    xp = param.xp
    if "step" not in state:
        state["step"] = 0
        state["exp_avg"] = xp.zeros_like(param.data)
        state["exp_avg_sq"] = xp.zeros_like(param.data)
    state["step"] += 1
    step = state["step"]
    state["exp_avg"] = beta1 * state["exp_avg"] + (1.0 - beta1) * grad
    state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1.0 - beta2) * grad * grad
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    # Written as torch writes it (eps is added after the sqrt(v) correction):
    denominator = xp.sqrt(state["exp_avg_sq"]) / math.sqrt(bias_correction2) + group["eps"]
    param.sub_((group["lr"] / bias_correction1) * state["exp_avg"] / denominator)


def _check_adam_hyperparameters(name: str, group: dict) -> None:
    beta1, beta2 = group["betas"]
    if not 0.0 <= beta1 < 1.0:
        raise ValueError(f"{name}: invalid beta1 {beta1} (must be in [0, 1))")
    if not 0.0 <= beta2 < 1.0:
        raise ValueError(f"{name}: invalid beta2 {beta2} (must be in [0, 1))")
    if group["eps"] < 0.0:
        raise ValueError(f"{name}: invalid eps {group['eps']} (must be >= 0)")


class _AdamBase(Optimizer):
    """What Adam and AdamW share: hyperparameters, checks, and the fused step.

    ``fused=True`` (the default) updates all parameters of a group at once
    (``flat_adam.fused_step``); ``fused=False`` and ``tl.reference_mode()`` run the
    per-parameter reference loop (``update_parameter``). Both give the same numbers,
    rounding for rounding.
    """

    decoupled_weight_decay = False  # AdamW: True

    def __init__(self, params, lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
                 fused: bool = True):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.fused = bool(fused)
        self._flat: dict[int, flat_adam.FlatMoments] = {}  # group index -> its flat moment buffers (fast path)

    def check_hyperparameters(self, group: dict) -> None:
        super().check_hyperparameters(group)
        _check_adam_hyperparameters(type(self).__name__, group)

    def step_group(self, index: int, group: dict) -> None:
        if self.fused and not is_reference_mode() and flat_adam.fused_step(self, index, group):
            return  # the fast path did the whole group (flat_adam.py); else the loop below
        super().step_group(index, group)


class Adam(_AdamBase):
    """Adam with L2 weight decay added to the gradient (PyTorch's ``Adam``).

        g = g + weight_decay * p        (if weight_decay != 0; this decay is scaled by Adam's 1/sqrt(v))
        then the Adam step (see ``_adam_update``):
        m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
        p = p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, fused: bool = True):
        super().__init__(params, lr, betas, eps, weight_decay, fused)

    def update_parameter(self, param: Tensor, grad, group: dict, state: dict) -> None:
        if group["weight_decay"] != 0.0:
            grad = grad + group["weight_decay"] * param.data
        _adam_update(param, grad, group, state)


class AdamW(_AdamBase):
    """Adam with *decoupled* weight decay (Loshchilov & Hutter; PyTorch's ``AdamW``).

        p = p - lr * weight_decay * p    (shrink the weights directly, not through the gradient)
        then the Adam step on the plain gradient:
        m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
        p = p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, fused: bool = True):
        super().__init__(params, lr, betas, eps, weight_decay, fused)

    def update_parameter(self, param: Tensor, grad, group: dict, state: dict) -> None:
        if group["weight_decay"] != 0.0:
            param.mul_(1.0 - group["lr"] * group["weight_decay"])
        _adam_update(param, grad, group, state)


# ------------------------------------------------------- gradient clipping


def clip_grad_norm_(params: Iterable[Tensor] | Tensor, max_norm: float) -> float:
    """Scale all gradients together so that their joint L2 norm is at most ``max_norm``.

        total_norm = sqrt(sum over every gradient element of g^2)
        if total_norm + 1e-6 > max_norm:   g = g * max_norm / (total_norm + 1e-6)

    (PyTorch's formula; the 1e-6 avoids dividing by zero.) Returns the norm
    *before* clipping, a Python float, which is worth logging: spikes warn of
    instability.
    """
    if max_norm < 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    params = [params] if isinstance(params, Tensor) else list(params)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    sum_of_squares = 0.0
    fused = []  # GPU float32 gradients: one kernel for all of them (cuda_kernels.sum_of_squares / scale_)
    for grad in grads:
        if backend.is_cuda(grad.data) and cuda_kernels.supports(grad.data) and grad.data.flags.c_contiguous:
            fused.append(grad)
        else:
            flat = grad.data.reshape(-1)
            if flat.dtype.kind == "f" and flat.dtype.itemsize >= 4:  # a BLAS dot: one pass, no temporary
                sum_of_squares += float(flat @ flat)
            else:  # (half precision would overflow its own accumulator)
                sum_of_squares += float((flat.astype("float64") ** 2).sum())
    if fused:
        sum_of_squares += cuda_kernels.sum_of_squares([grad.data for grad in fused])
    total_norm = math.sqrt(sum_of_squares)
    clip_coefficient = max_norm / (total_norm + 1e-6)
    if clip_coefficient < 1.0:
        fused_ids = {id(grad) for grad in fused}
        for grad in grads:
            if id(grad) not in fused_ids:
                grad.mul_(clip_coefficient)
        if fused:
            cuda_kernels.scale_([grad.data for grad in fused], clip_coefficient)
            for grad in fused:
                grad._version += 1  # changed in place, as mul_ records
    return total_norm


# The schedules live in their own module, as torch.optim.lr_scheduler; the two gpt/train.py uses are also here.
from . import lr_scheduler  # noqa: E402
from .lr_scheduler import WarmupCosineSchedule, get_lr  # noqa: E402

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "AdamW", "clip_grad_norm_", "lr_scheduler", "get_lr",
           "WarmupCosineSchedule"]

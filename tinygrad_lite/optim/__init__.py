"""Optimizers (SGD, Adam, AdamW), gradient clipping and the warmup + cosine schedule.

An optimizer holds ``param_groups``: a list of dicts, each with its
``"params"`` (a list of Tensors) and its hyperparameters (``lr``,
``weight_decay``, ...). ``step()`` walks every parameter that has a gradient
and changes ``param.data`` in place, using the per-parameter ``state``
(momentum buffers, Adam's moment estimates). The update formulas are
PyTorch's, written out one line per equation, so trajectories match torch.

Adam and AdamW also have a *fused* step (the default, ``fused=True``): all
parameters of a group are updated together, with a few large array
operations over one flat buffer of moments instead of a dozen small ones per
parameter (see ``_FlatMoments``), and on the GPU with one CUDA kernel
(``cuda_kernels.adam_update``). The per-parameter ``update_parameter`` is the
reference it is tested against: both give bit-identical trajectories.

    optimizer = optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy

from .. import backend, cuda_kernels
from ..autograd import enable_grad, is_reference_mode, no_grad
from ..cpu_kernels import threads
from ..tensor import Tensor


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
    """Stochastic gradient descent, with optional momentum and L2 weight decay.

    For each parameter p with gradient g (PyTorch's formulas, dampening = 0):

        g = g + weight_decay * p                 (if weight_decay != 0)
        b = g                  at the first step (if momentum != 0)
        b = momentum * b + g   afterwards
        g = g + momentum * b   (nesterov)   or   g = b   (plain momentum)
        p = p - lr * g
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    def check_hyperparameters(self, group: dict) -> None:
        super().check_hyperparameters(group)
        if group["momentum"] < 0.0:
            raise ValueError(f"SGD: invalid momentum {group['momentum']} (must be >= 0)")
        if group["nesterov"] and group["momentum"] <= 0.0:
            raise ValueError("SGD: nesterov=True needs a momentum > 0")

    def update_parameter(self, param: Tensor, grad, group: dict, state: dict) -> None:
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        if weight_decay != 0.0:
            grad = grad + weight_decay * param.data
        if momentum != 0.0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.copy()
            else:
                state["momentum_buffer"] = momentum * state["momentum_buffer"] + grad
            buffer = state["momentum_buffer"]
            grad = grad + momentum * buffer if group["nesterov"] else buffer
        param.sub_(lr * grad)


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
    (``_fused_adam_step``); ``fused=False`` runs the per-parameter reference
    loop (``update_parameter``). Both give the same numbers, rounding for rounding.
    """

    decoupled_weight_decay = False  # AdamW: True

    def __init__(self, params, lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
                 fused: bool = True):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.fused = bool(fused)
        self._flat: dict[int, _FlatMoments] = {}  # group index -> its flat moment buffers

    def check_hyperparameters(self, group: dict) -> None:
        super().check_hyperparameters(group)
        _check_adam_hyperparameters(type(self).__name__, group)

    def step_group(self, index: int, group: dict) -> None:
        if not (self.fused and not is_reference_mode() and _fused_adam_step(self, index, group)):
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


# ------------------------------------------------------------- fused Adam


class _FlatMoments:
    """One group's Adam moments in two flat buffers; each parameter's state holds *views* into them.

    Parameter i owns elements ``offsets[i]:offsets[i+1]``, and
    ``state[p]["exp_avg"]`` is that slice reshaped to p's shape -- so
    ``state_dict``/``load_state_dict`` still see one array per parameter,
    while a step can update every parameter with whole-buffer operations.

    Made on the first fused step, and made again (copying the moments in)
    whenever the per-parameter state stopped being these views: after
    ``load_state_dict``, a step of the reference loop, a different set of
    parameters with gradients, or a move to another device.
    """

    def __init__(self, params: list, states: list, device: str):
        xp = backend.get_xp(device)
        self.params, self.device = list(params), device
        sizes = [p.size for p in params]
        self.offsets = numpy.concatenate([[0], numpy.cumsum(sizes)]).astype(numpy.int64)
        total, dtype = int(self.offsets[-1]), params[0].dtype
        self.exp_avg = xp.zeros(total, dtype=dtype)
        self.exp_avg_sq = xp.zeros(total, dtype=dtype)
        self.views = []
        for param, state, start, end in zip(params, states, self.offsets[:-1], self.offsets[1:]):
            m = self.exp_avg[start:end].reshape(param.shape)
            v = self.exp_avg_sq[start:end].reshape(param.shape)
            if "exp_avg" in state:  # carry on from the existing moments
                m[...] = backend.to_device(state["exp_avg"], device)
                v[...] = backend.to_device(state["exp_avg_sq"], device)
            state["exp_avg"], state["exp_avg_sq"] = m, v
            self.views.append((m, v))
        # The CPU twin works through the buffer in cache-sized chunks (see _adam_update_flat);
        # on the GPU the whole buffer is one chunk.
        self.chunks = _chunk_plan(sizes, _CPU_CHUNK_ELEMENTS if device == "cpu" else max(total, 1))
        self.device_offsets = None  # int64 offsets on the GPU, for cuda_kernels.adam_update

    def holds(self, params: list, states: list, device: str) -> bool:
        """True if these parameters' states still are this buffer's views."""
        return (device == self.device and len(params) == len(self.params)
                and all(a is b for a, b in zip(params, self.params))
                and all(state.get("exp_avg") is m and state.get("exp_avg_sq") is v
                        for state, (m, v) in zip(states, self.views)))


# Elements per chunk of the CPU update: the ~6 arrays a chunk touches (moments,
# gradient, scratch) then stay in the CPU's cache across the dozen operations.
_CPU_CHUNK_ELEMENTS = 1 << 15


def _chunk_plan(sizes: list[int], chunk: int) -> list[tuple[int, int, list]]:
    """Cut the flat range of the tensors into chunks of at most ``chunk`` elements.

    Each chunk is ``(start, end, pieces)`` with pieces ``(tensor index, lo, hi)``:
    elements lo:hi of that (flattened) tensor, in order. Big tensors span
    several chunks; small ones share one.
    """
    plan, pieces, chunk_start, position = [], [], 0, 0
    for index, size in enumerate(sizes):
        lo = 0
        while lo < size:
            take = min(size - lo, chunk - (position - chunk_start))
            pieces.append((index, lo, lo + take))
            lo += take
            position += take
            if position - chunk_start == chunk:
                plan.append((chunk_start, position, pieces))
                pieces, chunk_start = [], position
    if pieces:
        plan.append((chunk_start, position, pieces))
    return plan


def _fused_adam_step(optimizer: _AdamBase, index: int, group: dict) -> bool:
    """Update every parameter of the group that has a gradient at once; False if the group does not fit.

    It fits when those parameters share a device and a float dtype (their
    gradients too), are contiguous, and are at the same step count (they are,
    unless some went unused for a while); otherwise the reference loop runs.
    """
    params = [p for p in group["params"] if p.grad is not None]
    if not params:
        return True
    device, dtype = params[0].device, params[0].dtype
    if dtype.kind != "f" or any(p.device != device or p.dtype != dtype or p.grad.device != device
                                or p.grad.dtype != dtype or not p.data.flags.c_contiguous for p in params):
        return False
    states = [optimizer.state.setdefault(p, {}) for p in params]
    steps = {state.get("step", 0) for state in states}
    if len(steps) != 1:
        return False
    flat = optimizer._flat.get(index)
    if flat is None or not flat.holds(params, states, device):
        flat = optimizer._flat[index] = _FlatMoments(params, states, device)
    step = steps.pop() + 1
    for state in states:
        state["step"] = step

    beta1, beta2 = group["betas"]
    weight_decay = group["weight_decay"]
    decoupled = optimizer.decoupled_weight_decay and weight_decay != 0.0
    hyper = dict(use_l2=not optimizer.decoupled_weight_decay and weight_decay != 0.0, weight_decay=weight_decay,
                 decay=1.0 - group["lr"] * weight_decay if decoupled else 1.0, beta1=beta1, beta2=beta2,
                 bias_correction1=1.0 - beta1 ** step, bias_correction2=1.0 - beta2 ** step, lr=group["lr"],
                 eps=group["eps"])
    data = [p.data for p in params]
    grads = [p.grad.data for p in params]
    if backend.is_cuda(flat.exp_avg) and cuda_kernels.supports(flat.exp_avg) \
            and all(g.flags.c_contiguous for g in grads):
        if flat.device_offsets is None:
            flat.device_offsets = backend.to_device(flat.offsets, "cuda")
        cuda_kernels.adam_update(data, grads, flat.exp_avg, flat.exp_avg_sq, flat.device_offsets, **hyper)
    else:
        _adam_update_flat(flat, data, grads, **hyper)
    for param in params:
        param._version += 1  # changed in place (as ``sub_`` would record)
    return True


def _adam_update_flat(flat: _FlatMoments, params: list, grads: list, *, use_l2: bool, weight_decay: float,
                      decay: float, beta1: float, beta2: float, bias_correction1: float, bias_correction2: float,
                      lr: float, eps: float) -> None:
    """The Adam step (see ``_adam_update``) for all tensors at once, chunk by chunk of the flat buffers.

    Per chunk: gather the gradients (one ``concatenate``), then every equation
    is one in-place array operation over the chunk, and each parameter gets
    one subtraction of its slice of the update. The operations, their order
    and their float32 rounding are exactly those of ``_adam_update`` (and of
    ``Adam``'s L2 term and ``AdamW``'s decay), so the results are identical;
    the CUDA kernel ``cuda_kernels.adam_update`` does the same per element.
    """
    xp = backend.get_xp(flat.device)
    largest = max((end - start for start, end, _ in flat.chunks), default=0)
    step_size = lr / bias_correction1
    sqrt_bias_correction2 = math.sqrt(bias_correction2)
    flat_params = [p.reshape(-1) for p in params]  # views: the parameters are contiguous
    flat_grads = [g.reshape(-1) for g in grads]

    def update_chunks(first: int, last: int) -> None:
        """Chunks first..last-1; each call has its own scratch, so calls can run in parallel threads."""
        g_buffer, scratch_buffer, update_buffer = (xp.empty(largest, dtype=flat.exp_avg.dtype) for _ in range(3))
        for start, end, pieces in flat.chunks[first:last]:
            size = end - start
            m, v = flat.exp_avg[start:end], flat.exp_avg_sq[start:end]
            g, scratch, update = g_buffer[:size], scratch_buffer[:size], update_buffer[:size]
            xp.concatenate([flat_grads[i][lo:hi] for i, lo, hi in pieces], out=g)
            if use_l2:  # Adam: g = g + wd * p
                xp.concatenate([flat_params[i][lo:hi] for i, lo, hi in pieces], out=scratch)
                scratch *= weight_decay
                g += scratch
            m *= beta1  # m = beta1 m + (1 - beta1) g
            xp.multiply(g, 1.0 - beta1, out=scratch)
            m += scratch
            v *= beta2  # v = beta2 v + (1 - beta2) g^2
            xp.multiply(g, 1.0 - beta2, out=scratch)
            scratch *= g
            v += scratch
            xp.sqrt(v, out=scratch)  # denominator = sqrt(v) / sqrt(bc2) + eps
            scratch /= sqrt_bias_correction2
            scratch += eps
            xp.multiply(m, step_size, out=update)  # update = (lr / bc1) m / denominator
            update /= scratch
            offset = 0
            for i, lo, hi in pieces:
                piece = flat_params[i][lo:hi]
                if decay != 1.0:  # AdamW: p = p (1 - lr wd)
                    piece *= decay
                piece -= update[offset:offset + hi - lo]
                offset += hi - lo

    if flat.device == "cpu":  # chunks touch disjoint memory: spread them over the CPU cores
        threads.parallel_rows(update_chunks, len(flat.chunks), largest)
    else:
        update_chunks(0, len(flat.chunks))


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


# ---------------------------------------------------------------- schedule


def get_lr(it: int, *, warmup_iters: int, lr_decay_iters: int, max_lr: float, min_lr: float) -> float:
    """The learning rate at iteration ``it`` (nanoGPT's schedule).

        it < warmup_iters:         max_lr * (it + 1) / (warmup_iters + 1)      (linear warmup)
        it > lr_decay_iters:       min_lr                                      (the floor)
        otherwise, with r = (it - warmup_iters) / (lr_decay_iters - warmup_iters) in [0, 1]:
                                   min_lr + 0.5 * (1 + cos(pi * r)) * (max_lr - min_lr)   (cosine decay)

    A schedule too short to decay (lr_decay_iters <= warmup_iters, say a quick test run) warms
    up and then stays at max_lr.
    """
    if it < warmup_iters:
        return max_lr * (it + 1) / (warmup_iters + 1)
    if lr_decay_iters <= warmup_iters:
        return max_lr
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coefficient = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # goes from 1 down to 0
    return min_lr + coefficient * (max_lr - min_lr)


class WarmupCosineSchedule:
    """Sets every group's ``lr`` from ``get_lr`` (warmup, then cosine decay to min_lr at max_iters).

    It sets the lr for iteration 0 when made; call ``step()`` after each
    ``optimizer.step()`` to move to the next iteration:

        schedule = WarmupCosineSchedule(optimizer, warmup_iters=100, max_iters=5000, max_lr=6e-4, min_lr=6e-5)
        for it in range(5000):
            ...; optimizer.step(); schedule.step()
    """

    def __init__(self, optimizer: Optimizer, warmup_iters: int, max_iters: int, max_lr: float, min_lr: float):
        if max_lr < 0 or min_lr < 0:
            raise ValueError(f"WarmupCosineSchedule: learning rates must be >= 0, got max_lr={max_lr}, min_lr={min_lr}")
        if warmup_iters < 0:
            raise ValueError(f"WarmupCosineSchedule: warmup_iters must be >= 0, got {warmup_iters}")
        if max_iters <= warmup_iters:
            raise ValueError(f"WarmupCosineSchedule: max_iters ({max_iters}) must be greater than "
                             f"warmup_iters ({warmup_iters})")
        self.optimizer = optimizer
        self.warmup_iters, self.max_iters = warmup_iters, max_iters
        self.max_lr, self.min_lr = max_lr, min_lr
        self.iteration = 0
        self._apply(self.lr_at(0))

    def lr_at(self, it: int) -> float:
        """The learning rate of iteration ``it`` (does not change the optimizer)."""
        return get_lr(it, warmup_iters=self.warmup_iters, lr_decay_iters=self.max_iters,
                      max_lr=self.max_lr, min_lr=self.min_lr)

    def step(self) -> float:
        """Advance one iteration and set the optimizer's lr for it; returns that lr."""
        self.iteration += 1
        lr = self.lr_at(self.iteration)
        self._apply(lr)
        return lr

    def set_iteration(self, it: int) -> float:
        """Jump to iteration ``it`` (e.g. when resuming from a checkpoint)."""
        self.iteration = it
        lr = self.lr_at(it)
        self._apply(lr)
        return lr

    def _apply(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict:
        return {"iteration": self.iteration}

    def load_state_dict(self, state_dict: dict) -> None:
        self.set_iteration(int(state_dict["iteration"]))


__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm_", "get_lr", "WarmupCosineSchedule"]

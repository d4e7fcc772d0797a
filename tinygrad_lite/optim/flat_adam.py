"""The flat fused Adam/AdamW step: the speed machinery behind ``optim.Adam``/``optim.AdamW`` (``fused=True``).

The math is ``optim._adam_update``, one parameter at a time (the reference
twin, which ``tl.reference_mode()`` and ``fused=False`` run). Here the same
equations update every parameter of a group at once:

* the group's moments live in two flat buffers (``FlatMoments``); each
  parameter's ``state["exp_avg"]`` is a view into them, so ``state_dict`` is
  unchanged;
* on the CPU the buffers are worked through in cache-sized chunks, spread
  over the cores (``cpu_kernels.threads.parallel_rows``), each equation one
  in-place array operation per chunk (``update_flat``);
* on the GPU one CUDA kernel does the whole group (``cuda_kernels.adam_update``);
  where it does not apply (float64) ``update_flat`` runs on CuPy as one chunk.

The operations, their order and their rounding are those of the reference,
so the results are identical (tests/test_optim.py checks it bit for bit).
The reasons and the measurements are in docs/performance.md.
"""
from __future__ import annotations

import math

import numpy

from .. import backend, cuda_kernels
from ..cpu_kernels import threads

# Elements per chunk of the CPU update: the ~6 arrays a chunk touches (moments,
# gradient, scratch) then stay in the CPU's cache across the dozen operations.
CPU_CHUNK_ELEMENTS = 1 << 15


class FlatMoments:
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
        sizes = [p.numel() for p in params]
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
        # The CPU works through the buffer in cache-sized chunks (see update_flat);
        # on the GPU the whole buffer is one chunk.
        self.chunks = chunk_plan(sizes, CPU_CHUNK_ELEMENTS if device == "cpu" else max(total, 1))
        self.device_offsets = None  # int64 offsets on the GPU, for cuda_kernels.adam_update

    def holds(self, params: list, states: list, device: str) -> bool:
        """True if these parameters' states still are this buffer's views."""
        return (device == self.device and len(params) == len(self.params)
                and all(a is b for a, b in zip(params, self.params))
                and all(state.get("exp_avg") is m and state.get("exp_avg_sq") is v
                        for state, (m, v) in zip(states, self.views)))


def chunk_plan(sizes: list[int], chunk: int) -> list[tuple[int, int, list]]:
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


# ------------------------------------------------------------------ the step


def fused_step(optimizer, index: int, group: dict) -> bool:
    """Update every parameter of the group that has a gradient at once; False if the group does not fit.

    It fits when those parameters share a device and a float dtype (their
    gradients too), are contiguous, and are at the same step count (they are,
    unless some went unused for a while); otherwise the reference loop runs.
    ``optimizer._flat`` keeps each group's ``FlatMoments`` between steps.
    """
    params = [p for p in group["params"] if p.grad is not None]
    if not params:
        return True
    if not _fits(params):
        return False
    states = [optimizer.state.setdefault(p, {}) for p in params]
    steps = {state.get("step", 0) for state in states}
    if len(steps) != 1:
        return False
    device = params[0].device
    flat = optimizer._flat.get(index)
    if flat is None or not flat.holds(params, states, device):
        flat = optimizer._flat[index] = FlatMoments(params, states, device)
    step = steps.pop() + 1
    for state in states:
        state["step"] = step
    hyper = _hyperparameters(group, step, optimizer.decoupled_weight_decay)
    data, grads = [p.data for p in params], [p.grad.data for p in params]
    if backend.is_cuda(flat.exp_avg) and cuda_kernels.supports(flat.exp_avg) \
            and all(g.flags.c_contiguous for g in grads):
        if flat.device_offsets is None:
            flat.device_offsets = backend.to_device(flat.offsets, "cuda")
        cuda_kernels.adam_update(data, grads, flat.exp_avg, flat.exp_avg_sq, flat.device_offsets, **hyper)
    else:
        update_flat(flat, data, grads, **hyper)
    for param in params:
        param._version += 1  # changed in place (as ``sub_`` would record)
    return True


def _fits(params: list) -> bool:
    """One device, one float dtype (gradients too), contiguous data: what the flat buffers need."""
    device, dtype = params[0].device, params[0].dtype
    return dtype.kind == "f" and all(p.device == device and p.dtype == dtype and p.grad.device == device
                                     and p.grad.dtype == dtype and p.data.flags.c_contiguous for p in params)


def _hyperparameters(group: dict, step: int, decoupled_weight_decay: bool) -> dict:
    """The numbers of one step, as ``update_flat`` and ``cuda_kernels.adam_update`` take them."""
    beta1, beta2 = group["betas"]
    weight_decay = group["weight_decay"]
    decoupled = decoupled_weight_decay and weight_decay != 0.0
    return dict(use_l2=not decoupled_weight_decay and weight_decay != 0.0, weight_decay=weight_decay,
                decay=1.0 - group["lr"] * weight_decay if decoupled else 1.0, beta1=beta1, beta2=beta2,
                bias_correction1=1.0 - beta1 ** step, bias_correction2=1.0 - beta2 ** step, lr=group["lr"],
                eps=group["eps"])


def update_flat(flat: FlatMoments, params: list, grads: list, *, use_l2: bool, weight_decay: float,
                decay: float, beta1: float, beta2: float, bias_correction1: float, bias_correction2: float,
                lr: float, eps: float) -> None:
    """The Adam step (see ``optim._adam_update``) for all tensors at once, chunk by chunk of the flat buffers.

    Per chunk: gather the gradients (one ``concatenate``), then every equation
    is one in-place array operation over the chunk, and each parameter gets
    one subtraction of its slice of the update. The operations, their order
    and their float32 rounding are exactly those of ``optim._adam_update`` (and
    of ``Adam``'s L2 term and ``AdamW``'s decay), so the results are identical;
    the CUDA kernel ``cuda_kernels.adam_update`` does the same per element.
    """
    largest = max((end - start for start, end, _ in flat.chunks), default=0)
    flat_params = [p.reshape(-1) for p in params]  # views: the parameters are contiguous
    flat_grads = [g.reshape(-1) for g in grads]
    numbers = (use_l2, weight_decay, decay, beta1, beta2, lr / bias_correction1, math.sqrt(bias_correction2), eps)

    def update_chunks(first: int, last: int) -> None:
        _update_chunks(flat, flat.chunks[first:last], largest, flat_params, flat_grads, numbers)

    if flat.device == "cpu":  # chunks touch disjoint memory: spread them over the CPU cores
        threads.parallel_rows(update_chunks, len(flat.chunks), largest)
    else:
        update_chunks(0, len(flat.chunks))


def _update_chunks(flat: FlatMoments, chunks: list, largest: int, flat_params: list, flat_grads: list,
                   numbers: tuple) -> None:
    """The Adam equations over each chunk, each an in-place array operation. Every call has scratch
    of its own, so calls on different chunks can run in parallel threads."""
    xp = backend.get_xp(flat.device)
    use_l2, weight_decay, decay, beta1, beta2, step_size, sqrt_bias_correction2, eps = numbers
    g_buffer, scratch_buffer, update_buffer = (xp.empty(largest, dtype=flat.exp_avg.dtype) for _ in range(3))
    for start, end, pieces in chunks:
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

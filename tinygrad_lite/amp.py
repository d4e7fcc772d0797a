"""Mixed precision (torch.amp): ``autocast`` for the forward pass, ``GradScaler`` for the backward.

    model = GPT(config)                                  # float32 parameters: the master weights
    optimizer = model.configure_optimizer(...)           # float32 moments
    scaler = tl.amp.GradScaler()
    for x, y in batches:
        with tl.autocast(tl.float16):                    # matmuls and attention in float16
            logits, loss = model(x, y)                   # (the loss itself in float32)
        optimizer.zero_grad()
        scaler.scale(loss).backward()                    # loss * S: small gradients survive float16
        scaler.unscale_(optimizer)                       # grads / S, and a check for inf/nan
        tl.optim.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)                           # skipped if a gradient overflowed
        scaler.update()                                  # S / 2 after an overflow, S * 2 after N clean steps

**What autocast changes.** Nothing in the parameters. The ops whose work is matrix products
(``F.linear``, ``Tensor.matmul``/``@``, ``F.scaled_dot_product_attention``) start with one line,
``x, weight, bias = amp.autocast_inputs(x, weight, bias)``: inside ``autocast`` that casts their
float inputs to the autocast dtype, so the product runs in float16 (on a GPU, on tensor cores).
The cast is an ordinary op (``ops.elementwise.Cast``), so backward casts each gradient back:
a float32 parameter gets a float32 ``.grad``, and the optimizer updates float32 numbers.
The ops that need range or precision (cross-entropy, softmax, log-softmax, layer norm) start
with ``amp.float32_inputs(...)`` instead: float16 inputs are cast up to float32, as in torch's
autocast op lists. Everything else (GELU, adds, dropout) runs in the dtype it is given.

**Why the loss is scaled.** float16 has 10 mantissa bits and a smallest normal number of
6.1e-5 (subnormals down to 6e-8): many activation gradients are smaller than that and would
flush to zero. Multiplying the loss by S (2**16 to start) multiplies every gradient by S, which
lifts them into float16's range; the float32 parameter gradients are divided by S again before
the step. Too large an S makes some gradient overflow to inf: then that step is skipped and S
halved. After ``growth_interval`` clean steps S is doubled, to find the largest S that is safe.

bfloat16 (8 exponent bits, float32's range; 7 mantissa bits) needs no loss scaling. NumPy has no
bfloat16 type; ``autocast(tl.bfloat16)`` works when the ``ml_dtypes`` package is installed
(``tl.amp.bfloat16`` is its type) and raises a clear error otherwise.

On the CPU this is for learning and testing: NumPy's float16 matmul has no BLAS kernel and is
several times slower than float32. On the GPU it is the fast path (paths written via ``xp``;
see docs/scaling.md for what has been measured where).
"""
from __future__ import annotations

import contextlib
import math

import numpy

from . import backend

try:  # optional: NumPy's bfloat16 comes from ml_dtypes (JAX's package), not installed by default
    from ml_dtypes import bfloat16
except ImportError:
    bfloat16 = None


# ------------------------------------------------------------------ autocast

_autocast_dtype = None  # None: autocast is off


def get_autocast_dtype():
    """The dtype autocast casts matmul inputs to, or None outside ``autocast``."""
    return _autocast_dtype


def is_autocast_enabled() -> bool:
    return _autocast_dtype is not None


def _resolve_dtype(dtype) -> numpy.dtype:
    if (isinstance(dtype, str) and dtype in ("bfloat16", "bf16")) or (bfloat16 is not None and dtype is bfloat16):
        if bfloat16 is None:
            raise TypeError("autocast: bfloat16 on NumPy needs the ml_dtypes package (pip install ml_dtypes); "
                            "float16 needs nothing")
        return numpy.dtype(bfloat16)
    resolved = numpy.dtype(dtype)
    if resolved not in (numpy.dtype(numpy.float16), numpy.dtype(numpy.float32), numpy.dtype(numpy.float64)):
        raise TypeError(f"autocast: dtype must be float16 or bfloat16 (or float32/float64: no change), got {resolved}")
    return resolved


@contextlib.contextmanager
def autocast(device_type_or_dtype="cuda", dtype=None, enabled: bool = True):
    """``with tl.autocast(tl.float16):`` -- matmuls and attention in float16 inside the block.

    torch's spelling ``autocast("cuda", dtype=torch.float16)`` works too: a string first argument
    is the device type, accepted for torch code and otherwise unused (each op casts the arrays it
    gets, on whatever device they live). The default dtype is float16.
    """
    global _autocast_dtype
    if not isinstance(device_type_or_dtype, str) or device_type_or_dtype in ("float16", "bfloat16", "bf16"):
        dtype = device_type_or_dtype
    resolved = _resolve_dtype(numpy.float16 if dtype is None else dtype) if enabled else None
    previous, _autocast_dtype = _autocast_dtype, resolved
    try:
        yield
    finally:
        _autocast_dtype = previous


def autocast_inputs(*tensors):
    """The matmul-type ops' inputs, cast to the autocast dtype inside ``autocast`` (unchanged outside).

    None (a missing bias) and non-float tensors pass through. ``astype`` records a ``Cast`` op,
    whose backward casts the gradient back to the input's dtype (float32 for parameters).
    """
    if _autocast_dtype is None:
        return tensors
    return tuple(t if t is None or t.dtype.kind != "f" else t.astype(_autocast_dtype) for t in tensors)


def float32_inputs(*tensors):
    """The range-hungry ops' inputs (cross-entropy, softmax, layer norm): half precision cast up to
    float32 inside ``autocast`` (float32 and float64 unchanged; everything unchanged outside)."""
    if _autocast_dtype is None:
        return tensors
    return tuple(t if t is None or t.dtype.kind != "f" or t.dtype.itemsize >= 4 else t.astype(numpy.float32)
                 for t in tensors)


# ---------------------------------------------------------------- GradScaler


class GradScaler:
    """Dynamic loss scaling, with torch.amp.GradScaler's names and defaults.

    ``scale(loss)`` is loss * S; ``unscale_(optimizer)`` divides the optimizer's gradients by S and
    notes whether any is inf or nan; ``step(optimizer)`` unscales if that was not done yet and
    steps only if every gradient is finite; ``update()`` then halves S (``backoff_factor``) if a
    step was skipped, or doubles it (``growth_factor``) after ``growth_interval`` finite steps.
    ``enabled=False`` makes every method a no-op, so one training loop serves both precisions.
    """

    def __init__(self, device: str = "cuda", init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True):
        if not (growth_factor > 1.0 and 0.0 < backoff_factor < 1.0 and growth_interval >= 1 and init_scale > 0):
            raise ValueError(f"GradScaler: need growth_factor > 1 (got {growth_factor}), 0 < backoff_factor < 1 "
                             f"(got {backoff_factor}), growth_interval >= 1 (got {growth_interval}) "
                             f"and init_scale > 0 (got {init_scale})")
        self.enabled = enabled
        self._scale = float(init_scale)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self._growth_tracker = 0        # finite steps since the scale last changed
        self._per_optimizer: dict = {}  # id(optimizer) -> {"unscaled": bool, "found_inf": bool}, this step
        self.skipped_steps = 0          # how many steps overflowed so far (for logging)

    def is_enabled(self) -> bool:
        return self.enabled

    def get_scale(self) -> float:
        return self._scale if self.enabled else 1.0

    def scale(self, outputs):
        """loss * S (a Tensor, differentiable), to call ``.backward()`` on."""
        return outputs * self._scale if self.enabled else outputs

    def unscale_(self, optimizer) -> None:
        """Divide the gradients of ``optimizer``'s parameters by S in place (before clipping them)."""
        if not self.enabled:
            return
        state = self._per_optimizer.setdefault(id(optimizer), {"unscaled": False, "found_inf": False})
        if state["unscaled"]:
            raise RuntimeError("GradScaler.unscale_: already called for this optimizer since the last update()")
        inverse = 1.0 / self._scale
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad.data
                grad *= inverse  # in place: the optimizer reads param.grad
                param.grad._version += 1
                if not bool(backend.xp_of(grad).isfinite(grad).all()):
                    state["found_inf"] = True
        state["unscaled"] = True

    def step(self, optimizer, *args, **kwargs):
        """``optimizer.step()`` unless a gradient is inf or nan (then the parameters stay as they are)."""
        if not self.enabled:
            return optimizer.step(*args, **kwargs)
        state = self._per_optimizer.setdefault(id(optimizer), {"unscaled": False, "found_inf": False})
        if not state["unscaled"]:
            self.unscale_(optimizer)
        if state["found_inf"]:
            return None
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale: float | None = None) -> None:
        """Adjust S for the next step: backoff after an overflow, growth after ``growth_interval`` clean steps."""
        if not self.enabled:
            return
        found_inf = any(state["found_inf"] for state in self._per_optimizer.values())
        self._per_optimizer = {}
        if new_scale is not None:
            self._scale = float(new_scale)
            return
        if found_inf:
            self._scale *= self.backoff_factor
            self._growth_tracker = 0
            self.skipped_steps += 1
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                self._scale *= self.growth_factor
                self._growth_tracker = 0
        if not math.isfinite(self._scale) or self._scale == 0.0:
            raise FloatingPointError(f"GradScaler.update: the loss scale became {self._scale}; "
                                     "the gradients are inf or nan at every scale (check the model and data)")

    def state_dict(self) -> dict:
        return {"scale": self._scale, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state: dict) -> None:
        self._scale = float(state["scale"])
        self.growth_factor, self.backoff_factor = state["growth_factor"], state["backoff_factor"]
        self.growth_interval, self._growth_tracker = state["growth_interval"], state["_growth_tracker"]

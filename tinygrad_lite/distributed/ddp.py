"""DistributedDataParallel: one model per rank, kept identical by averaging the gradients.

Why it works. The loss of a global batch of B rows is the mean of per-row losses, so its
gradient is the mean of per-row gradients. Split the rows into N equal shares, one per
rank: rank r's gradient g_r is the mean over its B/N rows, and

    (g_0 + g_1 + ... + g_{N-1}) / N  =  the gradient of the whole batch.

So after each rank's backward on its share, an all-reduce (sum) divided by N gives every
rank the one-process gradient; the ranks then take the same optimizer step from the same
weights and stay identical. Only the order of the float additions differs.

Buckets. One all-reduce per parameter would pay MPI's fixed cost per message ~50 times
per step for the GPT; one message for everything would wait for the whole backward.
Torch's middle way, done here: parameters in reverse order (the order backward finishes
them) are packed into buckets of about ``bucket_cap_mb`` MB; each bucket is flattened
into one buffer and all-reduced in one message, started the moment the last of its
gradients is complete (``Tensor.register_post_accumulate_grad_hook``), so the
communication of the late layers' bucket can overlap the backward of the early layers.
When the last bucket has started, the hook waits for all of them, divides by N and
copies the averages back into ``.grad``, so ``loss.backward()`` returns with averaged
gradients, as in torch. (On the CPU with MPICH, a started all-reduce advances only while
MPI is called, so the overlap is small there; with NCCL it runs on the GPU beside the
backward. docs/scaling.md has the numbers.)

Gradient accumulation: inside ``with ddp.no_sync():`` gradients only add up locally;
the backward of the last micro-step (outside it) averages the sum. Gradient clipping
goes after backward, so it sees the averaged gradients, identical on every rank.
"""
from __future__ import annotations

import contextlib

from .. import backend
from ..autograd import no_grad
from ..nn import Module
from . import all_reduce, broadcast, world_size


class Bucket:
    """Some parameters whose gradients travel in one message: their flat buffer and readiness."""

    def __init__(self, params: list):
        self.params = params
        xp = params[0].xp
        self.offsets = [0]
        for param in params:
            self.offsets.append(self.offsets[-1] + param.numel())
        self.buffer = xp.empty(self.offsets[-1], dtype=params[0].dtype)  # one per bucket, reused every step
        self.ready: set[int] = set()  # ids of the parameters whose gradient is complete
        self.work = None              # the started all-reduce

    def views(self):
        """(parameter, its slice of the buffer shaped like it), in order."""
        for param, start, end in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            yield param, self.buffer[start:end].reshape(param.shape)


def make_buckets(params: list, cap_bytes: float) -> list[Bucket]:
    """Cut ``params`` (in the order their gradients finish) into buckets of at most ``cap_bytes``
    (a larger parameter gets a bucket of its own); one dtype and device per bucket."""
    buckets, current, current_bytes = [], [], 0
    for param in params:
        nbytes = param.numel() * param.dtype.itemsize
        mixes = current and (param.dtype != current[0].dtype or param.device != current[0].device)
        if current and (current_bytes + nbytes > cap_bytes or mixes):
            buckets.append(Bucket(current))
            current, current_bytes = [], 0
        current.append(param)
        current_bytes += nbytes
    if current:
        buckets.append(Bucket(current))
    return buckets


class DistributedDataParallel(Module):
    """Wrap ``module`` so that its training is data parallel over the ranks (torch's ``DDP``).

    Construction copies rank 0's weights (and buffers) to every rank; each backward then
    leaves the gradient averaged over the ranks in ``.grad``. Call it as the module itself;
    ``ddp.module`` is the model (save, evaluate and sample through it).

    Every parameter that requires grad must get a gradient in each synchronised backward
    (torch's ``find_unused_parameters=False``): a bucket left incomplete is an error at the
    next forward, naming the parameters that got none.
    """

    def __init__(self, module: Module, bucket_cap_mb: float = 25.0):
        super().__init__()
        self.module = module
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"DistributedDataParallel: {type(module).__name__} has no parameter that requires grad")
        self.bucket_cap_mb = bucket_cap_mb
        self.buckets = make_buckets(list(reversed(params)), bucket_cap_mb * 2 ** 20)
        self._bucket_of = {id(p): bucket for bucket in self.buckets for p in bucket.params}
        self._names = {id(p): name for name, p in module.named_parameters()}
        self.require_sync = True
        self._started = 0  # buckets whose all-reduce has started in this backward
        self._broadcast_from_rank0()
        self._hooks = [p.register_post_accumulate_grad_hook(self._gradient_ready) for p in params] \
            if world_size() > 1 else []

    def forward(self, *args, **kwargs):
        self._check_previous_backward()
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Gradients only accumulate locally inside (the micro-steps before the last one)."""
        previous, self.require_sync = self.require_sync, False
        try:
            yield
        finally:
            self.require_sync = previous

    # --------------------------------------------------------------- setup
    def _broadcast_from_rank0(self) -> None:
        """Every rank starts from rank 0's weights and buffers: one broadcast per bucket, flattened."""
        if world_size() == 1:
            return
        tensors = list(self.module.parameters()) + [b for b in self.module.buffers() if b is not None]
        with no_grad():
            for bucket in make_buckets(tensors, self.bucket_cap_mb * 2 ** 20):
                for tensor, view in bucket.views():
                    view[...] = tensor.data
                broadcast(bucket.buffer, src=0)
                for tensor, view in bucket.views():
                    tensor.data[...] = view
                    tensor._version += 1  # changed in place

    # ----------------------------------------------------------- the hooks
    def _gradient_ready(self, param) -> None:
        """Called by backward when ``param.grad`` is complete: start its bucket when the bucket is full."""
        if not self.require_sync:
            return
        bucket = self._bucket_of[id(param)]
        bucket.ready.add(id(param))
        if len(bucket.ready) < len(bucket.params):
            return
        for p, view in bucket.views():
            view[...] = p.grad.data  # flatten: the whole bucket becomes one message
        bucket.work = all_reduce(bucket.buffer, op="sum", async_op=True)
        self._started += 1
        if self._started == len(self.buckets):
            self._finish_all()

    def _finish_all(self) -> None:
        """Wait for every bucket, average, and write the averages back into each ``.grad``."""
        scale = 1.0 / world_size()
        for bucket in self.buckets:
            bucket.work.wait()
            bucket.buffer *= scale
            for param, view in bucket.views():
                param.grad.data[...] = view
            bucket.work, bucket.ready = None, set()
        self._started = 0
        backend.synchronize(self.buckets[0].params[0].device)

    def _check_previous_backward(self) -> None:
        waiting = [b for b in self.buckets if b.ready or b.work is not None]
        if waiting:
            missing = [self._names.get(id(p), f"shape {p.shape}") for b in waiting for p in b.params
                       if id(p) not in b.ready]
            for bucket in self.buckets:  # start over, so that the error does not repeat forever
                bucket.ready, bucket.work = set(), None
            self._started = 0
            raise RuntimeError("DistributedDataParallel: the previous backward left gradients un-averaged: "
                               f"these parameters got no gradient: {', '.join(missing[:8])}"
                               f"{' ...' if len(missing) > 8 else ''}. Every parameter that requires grad must "
                               "be used in the loss (or set requires_grad=False before wrapping)")

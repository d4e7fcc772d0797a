"""Training on several processes: the world, the collectives, DDP and the ZeRO-1 optimizer.

    mpiexec -n 2 python examples/train_shakespeare.py        # two processes, one model, half the batch each

    from tinygrad_lite import distributed as dist
    dist.init()                                  # under mpiexec: MPI's world; plain python: a world of 1
    model = dist.DistributedDataParallel(model)  # same weights everywhere, gradients averaged in backward
    optimizer = dist.ZeroRedundancyOptimizer(optimizer)   # optional: each rank keeps 1/N of AdamW's moments
    x, y = dist.local_rows(x, y)                 # this rank's rows of the global batch

Reading order: ``world.py`` (who is where, the collectives and their timeout), ``ddp.py``
(averaging gradients in buckets), ``zero.py`` (sharding the optimizer state). Why each
works, and what it costs in bytes per step: docs/scaling.md.

Every function here works in a plain ``python`` process too (a world of 1, where the
collectives change nothing), so code written for N processes runs unchanged on one.
"""
from __future__ import annotations

import importlib.util

import numpy

from .world import (CollectiveError, CommunicationStats, MPIWorld, NCCLWorld, SingleProcessWorld, default_timeout,
                    launcher_world)

_world = None


def init(device: str = "cpu", timeout: float | None = None):
    """Join the world the launcher started (idempotent); returns it.

    Under ``mpiexec -n N`` (N > 1) that is MPI's COMM_WORLD -- through NCCL when
    ``device`` is 'cuda' -- with ``timeout`` seconds for each collective (default
    ``TINYGRAD_LITE_DIST_TIMEOUT`` or 300). Plain ``python`` is a world of one process.
    """
    global _world
    wanted = "cuda" if str(device).startswith("cuda") else "cpu"
    if _world is not None and _world.device == wanted:
        return _world
    if launcher_world()[1] <= 1:
        _world = SingleProcessWorld(wanted)
        return _world
    if importlib.util.find_spec("mpi4py") is None:  # imported (in world.py) only when a launcher started several
        raise ImportError("this process was started by an MPI launcher (mpiexec), but mpi4py is not installed: "
                          "pip install -e \".[mpi]\"")
    timeout = default_timeout() if timeout is None else float(timeout)
    _world = NCCLWorld(timeout) if wanted == "cuda" else MPIWorld(timeout)
    return _world


def world():
    """The current world (``init()`` with the defaults if nobody called it yet)."""
    return _world if _world is not None else init()


def rank() -> int:
    """This process's number, 0 .. world_size() - 1; rank 0 prints, logs and saves."""
    return world().rank


def world_size() -> int:
    return world().world_size


def is_main_process() -> bool:
    return world().rank == 0


def barrier() -> None:
    """Wait until every rank got here."""
    world().barrier()


def all_reduce(array, op: str = "sum", async_op: bool = False):
    """Reduce ``array`` in place over the ranks (sum, mean, max or min); see ``world.MPIWorld.all_reduce``."""
    return world().all_reduce(array, op, async_op)


def broadcast(array, src: int = 0):
    """Copy rank ``src``'s ``array`` into every rank's ``array``, in place."""
    return world().broadcast(array, src)


def all_gather(array, out=None):
    """Every rank's ``array`` concatenated along axis 0 in rank order."""
    return world().all_gather(array, out)


def reduce_scatter(array, op: str = "sum", out=None):
    """Reduce ``array`` over the ranks and keep this rank's 1/N of the rows of the result."""
    return world().reduce_scatter(array, op, out)


def communication_stats() -> CommunicationStats:
    """Calls, bytes and seconds of this rank's collectives so far (``.reset()`` starts over)."""
    return world().stats


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (one tiny all-reduce): e.g. "Ctrl-C reached someone"."""
    if world_size() == 1:
        return bool(flag)
    return bool(all_reduce(numpy.array([1 if flag else 0], dtype=numpy.int64), op="max")[0])


def mean_over_ranks(value: float) -> float:
    """The mean of a Python number over the ranks (e.g. each rank's loss on its rows of the batch)."""
    if world_size() == 1:
        return float(value)
    return float(all_reduce(numpy.array([value], dtype=numpy.float64), op="mean")[0])


def local_rows(*arrays):
    """This rank's equal share of the rows of each array (a global batch): rows r*B/N to (r+1)*B/N.

    Every rank draws the same global batch (same seed, same generator), and each keeps
    its slice, so the N ranks together see exactly the batch one process would.
    """
    size, me = world_size(), rank()
    sliced = []
    for array in arrays:
        rows = array.shape[0]
        if rows % size:
            raise ValueError(f"local_rows: a batch of {rows} rows does not split evenly over {size} ranks; "
                             f"use a batch size that is a multiple of {size}")
        share = rows // size
        sliced.append(array[me * share:(me + 1) * share])
    return sliced[0] if len(sliced) == 1 else tuple(sliced)


def abort(code: int, message: str) -> None:
    """End every rank now (MPI_Abort), so that none waits forever for one that stopped; plain python: exit."""
    world().abort(code, message)


from .ddp import DistributedDataParallel  # noqa: E402  (needs the functions above)
from .zero import ZeroRedundancyOptimizer  # noqa: E402

__all__ = ["init", "world", "rank", "world_size", "is_main_process", "barrier", "all_reduce", "broadcast",
           "all_gather", "reduce_scatter", "communication_stats", "any_rank", "mean_over_ranks", "local_rows",
           "abort", "DistributedDataParallel", "ZeroRedundancyOptimizer", "CollectiveError", "CommunicationStats",
           "SingleProcessWorld", "MPIWorld", "NCCLWorld"]

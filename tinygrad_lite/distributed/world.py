"""The world of processes: who am I (``rank``), how many are we (``world_size``), and the collectives.

A launcher starts N copies of the same script and tells each its place through
environment variables, as torchrun does with RANK/WORLD_SIZE. MPI's ``mpiexec -n N``
sets PMI_RANK/PMI_SIZE (MPICH) or OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE (Open MPI).
``init()`` reads them and builds one of three worlds:

* ``SingleProcessWorld``: plain ``python``; every collective is the identity. Nothing
  beyond numpy is imported, so training on one process needs no MPI installed.
* ``MPIWorld``: under ``mpiexec``, on CPU arrays. mpi4py's uppercase methods
  (``Allreduce``, ``Bcast``, ...) hand MPI the array's memory directly: no pickling.
* ``NCCLWorld``: under ``mpiexec`` with ``device="cuda"``, on CuPy arrays, through
  CuPy's NCCL communicator (MPI only passes NCCL its id at start). Written, and not
  yet run on a GPU.

A collective waits for every rank. If one rank died or hangs, the others would wait
forever; so each collective runs under a deadline (``timeout``, default 300 s, or
``TINYGRAD_LITE_DIST_TIMEOUT``): a watchdog thread ends the whole job with MPI_Abort and
a message naming the collective, instead of a silent hang.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy

from .. import backend

# (rank, size) environment variables of the launchers we know: MPICH / Intel MPI, Open MPI, PMIx, Slurm.
LAUNCHER_VARIABLES = (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
                      ("PMIX_RANK", "PMIX_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS"))
DEFAULT_TIMEOUT_S = 300.0
ABORT_MESSAGE_GRACE_S = 1.0  # how long abort() waits between its message and MPI_Abort
OPS = ("sum", "mean", "max", "min")


class CollectiveError(RuntimeError):
    """A collective was called wrongly (an array that MPI cannot take, an unknown op, ...)."""


def launcher_world() -> tuple[int, int]:
    """(rank, world size) as the launcher's environment variables give them; (0, 1) for plain python."""
    for rank_name, size_name in LAUNCHER_VARIABLES:
        if size_name in os.environ and rank_name in os.environ:
            return int(os.environ[rank_name]), int(os.environ[size_name])
    return 0, 1


def default_timeout() -> float:
    value = os.environ.get("TINYGRAD_LITE_DIST_TIMEOUT")
    return float(value) if value else DEFAULT_TIMEOUT_S


@dataclass
class CommunicationStats:
    """What this rank's collectives moved: calls, bytes of the buffers handed to MPI/NCCL, seconds waited."""
    calls: dict = field(default_factory=dict)
    bytes: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    def record(self, name: str, nbytes: int, seconds: float) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        self.bytes[name] = self.bytes.get(name, 0) + int(nbytes)
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def reset(self) -> None:
        self.calls.clear(), self.bytes.clear(), self.seconds.clear()


# ------------------------------------------------------------ one process

class SingleProcessWorld:
    """A world of one process: each collective leaves its array as it is (the sum over one rank)."""
    rank, world_size, device = 0, 1, "cpu"

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.stats = CommunicationStats()

    def barrier(self) -> None:
        pass

    def all_reduce(self, array, op: str = "sum", async_op: bool = False):
        _check_op(op)
        return Done(array) if async_op else array

    def broadcast(self, array, src: int = 0):
        return array

    def all_gather(self, array, out=None):
        if out is None:
            return array.copy()
        out[...] = array
        return out

    def reduce_scatter(self, array, op: str = "sum", out=None):
        return self.all_gather(array, out)

    def abort(self, code: int, message: str) -> None:
        sys.stderr.write(message + "\n")
        sys.exit(code)


class Done:
    """The handle of an asynchronous collective that has already finished."""

    def __init__(self, array):
        self.array = array

    def wait(self):
        return self.array


# ------------------------------------------------------------------- MPI

class Watchdog:
    """A thread that ends the job if a collective runs past its deadline (a rank died or hangs).

    ``with watchdog.guard("all_reduce"):`` arms it around one collective. The thread wakes
    every ``check_every`` seconds; that costs nothing next to a training step.
    """

    def __init__(self, timeout: float, abort):
        self.timeout, self.abort = timeout, abort
        self.deadline, self.what = None, ""
        self.check_every = min(1.0, timeout / 4)
        threading.Thread(target=self._watch, name="tinygrad_lite-dist-watchdog", daemon=True).start()

    def guard(self, what: str) -> "Watchdog":
        self.what = what
        return self

    def __enter__(self):
        self.deadline = time.monotonic() + self.timeout
        return self

    def __exit__(self, *exc):
        self.deadline = None
        return False

    def _watch(self) -> None:
        while True:
            time.sleep(self.check_every)
            deadline = self.deadline
            if deadline is not None and time.monotonic() > deadline:
                self.abort(1, f"{self.what} did not complete within {self.timeout:g} s: another rank has probably "
                              "died, failed or hangs (see its messages above); ending every rank "
                              "(TINYGRAD_LITE_DIST_TIMEOUT sets the limit)")
                return


class MPIWorld:
    """The processes ``mpiexec`` started, talking through mpi4py's buffer interface (no pickling)."""
    device = "cpu"

    def __init__(self, timeout: float):
        from mpi4py import MPI  # noqa: PLC0415 -- only under a launcher: plain python needs no MPI
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        self.reduce_ops = {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
        self.stats = CommunicationStats()
        self.watchdog = Watchdog(timeout, self.abort)

    def barrier(self) -> None:
        with self.watchdog.guard("barrier"):
            self.comm.Barrier()

    def all_reduce(self, array, op: str = "sum", async_op: bool = False):
        """Reduce ``array`` over the ranks in place (``op``: sum, mean, max, min); every rank gets the result.
        ``async_op=True`` returns a handle at once: ``handle.wait()`` finishes it."""
        self._check(array, "all_reduce", op)
        start = time.perf_counter()
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.reduce_ops[op])
        work = MPIWork(self, request, array, "all_reduce", start, 1.0 / self.world_size if op == "mean" else None)
        return work if async_op else work.wait()

    def broadcast(self, array, src: int = 0):
        """Rank ``src``'s ``array`` into every rank's ``array`` (in place)."""
        self._check(array, "broadcast")
        with self.watchdog.guard(f"broadcast from rank {src}"):
            start = time.perf_counter()
            self.comm.Bcast(array, root=src)
        self.stats.record("broadcast", array.nbytes, time.perf_counter() - start)
        return array

    def all_gather(self, array, out=None):
        """Every rank's ``array``, concatenated along axis 0 in rank order (shape (N * n, ...))."""
        self._check(array, "all_gather")
        if out is None:
            out = numpy.empty((self.world_size * array.shape[0], *array.shape[1:]), dtype=array.dtype)
        _check_sizes("all_gather", out, array.size * self.world_size, array)
        with self.watchdog.guard("all_gather"):
            start = time.perf_counter()
            self.comm.Allgather(array, out)
        self.stats.record("all_gather", out.nbytes, time.perf_counter() - start)
        return out

    def reduce_scatter(self, array, op: str = "sum", out=None):
        """Reduce ``array`` (shape (N * n, ...)) over the ranks; rank r keeps rows r*n:(r+1)*n of the result."""
        self._check(array, "reduce_scatter", op)
        if array.shape[0] % self.world_size:
            raise CollectiveError(f"reduce_scatter: the first dimension ({array.shape}) must divide into "
                                  f"{self.world_size} equal parts")
        if out is None:
            out = numpy.empty((array.shape[0] // self.world_size, *array.shape[1:]), dtype=array.dtype)
        _check_sizes("reduce_scatter", out, array.size // self.world_size, array)
        with self.watchdog.guard("reduce_scatter"):
            start = time.perf_counter()
            self.comm.Reduce_scatter_block(array, out, op=self.reduce_ops[op])
        if op == "mean":
            out *= 1.0 / self.world_size
        self.stats.record("reduce_scatter", array.nbytes, time.perf_counter() - start)
        return out

    def abort(self, code: int, message: str) -> None:
        """End every rank of the job now, with ``message`` from this one."""
        sys.stderr.write(f"[rank {self.rank}] {message}\n")
        sys.stderr.flush()
        # mpiexec forwards our stderr through a pipe, and MPI_Abort tears those pipes down: on a
        # busy machine the message could be lost before mpiexec read it. A pause costs nothing
        # here (the job is ending) and lets the message reach the user.
        time.sleep(ABORT_MESSAGE_GRACE_S)
        self.comm.Abort(code)

    def _check(self, array, name: str, op: str = "sum") -> None:
        _check_op(op)
        if not isinstance(array, numpy.ndarray):
            raise CollectiveError(f"{name}: the MPI world takes numpy arrays, got {type(array).__name__}; for "
                                  "CuPy arrays use dist.init(device='cuda') (NCCL)")
        if not array.flags.c_contiguous:
            raise CollectiveError(f"{name}: the array (shape {array.shape}, {array.dtype}) must be contiguous: "
                                  "MPI reads its memory as one block")


class MPIWork:
    """A started MPI collective; ``wait()`` finishes it under the watchdog and returns its array."""

    def __init__(self, world: MPIWorld, request, array, name: str, start: float, scale: float | None):
        self.world, self.request, self.array, self.name, self.start, self.scale = world, request, array, name, start, scale

    def wait(self):
        if self.request is not None:
            with self.world.watchdog.guard(self.name):
                self.request.Wait()
            if self.scale is not None:  # "mean": the sum over ranks, divided by their number
                self.array *= self.scale
            self.world.stats.record(self.name, self.array.nbytes, time.perf_counter() - self.start)
            self.request = None
        return self.array


def _check_op(op: str) -> None:
    if op not in OPS:
        raise CollectiveError(f"unknown reduction op {op!r}; expected one of {', '.join(OPS)}")


def _check_sizes(name: str, out, expected: int, array) -> None:
    if out.size != expected or out.dtype != array.dtype:
        raise CollectiveError(f"{name}: out has shape {out.shape} and dtype {out.dtype}; expected {expected} "
                              f"elements of {array.dtype} (input shape {array.shape})")


# ------------------------------------------------------------------ NCCL

class NCCLWorld(MPIWorld):
    """GPU arrays through NCCL (``cupy.cuda.nccl``); MPI starts the processes and hands out NCCL's id.

    Each rank uses GPU ``local rank`` (one GPU per process, as torchrun does). NumPy arrays (a loss,
    a flag) still go through MPI, as torch's gloo side-channel would. NCCL queues
    the collective on the current CUDA stream; ``wait`` polls that stream until it is done
    or the deadline passes (then ``NcclCommunicator.abort`` and MPI_Abort). Not yet run on a GPU.
    """
    device = "cuda"

    def __init__(self, timeout: float):
        super().__init__(timeout)
        self.cupy = backend.get_xp("cuda")  # raises GPUUnavailableError with what is missing
        from cupy.cuda import nccl  # noqa: PLC0415
        local_rank = int(os.environ.get("MPI_LOCALRANKID", os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", self.rank)))
        self.cupy.cuda.Device(local_rank % self.cupy.cuda.runtime.getDeviceCount()).use()
        unique_id = nccl.get_unique_id() if self.rank == 0 else None
        unique_id = self.comm.bcast(unique_id, root=0)  # a tuple of bytes, once at start (pickled: not an array)
        self.nccl = nccl
        self.nccl_comm = nccl.NcclCommunicator(self.world_size, unique_id, self.rank)
        self.reduce_ops = {"sum": nccl.NCCL_SUM, "mean": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}

    def barrier(self) -> None:
        self.all_reduce(self.cupy.zeros(1, dtype=self.cupy.float32))

    def all_reduce(self, array, op: str = "sum", async_op: bool = False):
        if isinstance(array, numpy.ndarray):
            return super().all_reduce(array, op, async_op)
        self._check(array, "all_reduce", op)
        start, stream = time.perf_counter(), self.cupy.cuda.get_current_stream()
        self.nccl_comm.allReduce(array.data.ptr, array.data.ptr, array.size, _nccl_dtype(self.nccl, array),
                                 self.reduce_ops[op], stream.ptr)
        work = NCCLWork(self, stream, array, "all_reduce", start, 1.0 / self.world_size if op == "mean" else None)
        return work if async_op else work.wait()

    def broadcast(self, array, src: int = 0):
        if isinstance(array, numpy.ndarray):
            return super().broadcast(array, src)
        self._check(array, "broadcast")
        stream = self.cupy.cuda.get_current_stream()
        self.nccl_comm.bcast(array.data.ptr, array.size, _nccl_dtype(self.nccl, array), src, stream.ptr)
        return NCCLWork(self, stream, array, f"broadcast from rank {src}", time.perf_counter(), None).wait()

    def all_gather(self, array, out=None):
        if isinstance(array, numpy.ndarray):
            return super().all_gather(array, out)
        self._check(array, "all_gather")
        if out is None:
            out = self.cupy.empty((self.world_size * array.shape[0], *array.shape[1:]), dtype=array.dtype)
        _check_sizes("all_gather", out, array.size * self.world_size, array)
        stream = self.cupy.cuda.get_current_stream()
        self.nccl_comm.allGather(array.data.ptr, out.data.ptr, array.size, _nccl_dtype(self.nccl, array), stream.ptr)
        return NCCLWork(self, stream, out, "all_gather", time.perf_counter(), None).wait()

    def reduce_scatter(self, array, op: str = "sum", out=None):
        if isinstance(array, numpy.ndarray):
            return super().reduce_scatter(array, op, out)
        self._check(array, "reduce_scatter", op)
        if out is None:
            out = self.cupy.empty((array.shape[0] // self.world_size, *array.shape[1:]), dtype=array.dtype)
        _check_sizes("reduce_scatter", out, array.size // self.world_size, array)
        stream = self.cupy.cuda.get_current_stream()
        self.nccl_comm.reduceScatter(array.data.ptr, out.data.ptr, out.size, _nccl_dtype(self.nccl, array),
                                     self.reduce_ops[op], stream.ptr)
        return NCCLWork(self, stream, out, "reduce_scatter", time.perf_counter(),
                        1.0 / self.world_size if op == "mean" else None).wait()

    def _check(self, array, name: str, op: str = "sum") -> None:
        _check_op(op)
        if not backend.is_cuda(array) or not array.flags.c_contiguous:
            raise CollectiveError(f"{name}: the NCCL world takes contiguous CuPy arrays, got "
                                  f"{type(array).__name__} of shape {getattr(array, 'shape', None)}")


class NCCLWork(MPIWork):
    """A collective queued on a CUDA stream; ``wait`` polls the stream against the deadline."""

    def __init__(self, world: NCCLWorld, stream, array, name: str, start: float, scale: float | None):
        super().__init__(world, stream, array, name, start, scale)

    def wait(self):
        if self.request is not None:
            stream, deadline = self.request, time.monotonic() + self.world.watchdog.timeout
            while not stream.done:
                if time.monotonic() > deadline:
                    self.world.nccl_comm.abort()
                    self.world.abort(1, f"{self.name} (NCCL) did not complete within "
                                        f"{self.world.watchdog.timeout:g} s: another rank has probably died or hangs")
                time.sleep(1e-4)
            if self.scale is not None:
                self.array *= self.scale
            self.world.stats.record(self.name, self.array.nbytes, time.perf_counter() - self.start)
            self.request = None
        return self.array


def _nccl_dtype(nccl, array) -> int:
    names = {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
             "int32": nccl.NCCL_INT32, "int64": nccl.NCCL_INT64}
    if array.dtype.name not in names:
        raise CollectiveError(f"NCCL: no collective for dtype {array.dtype} (shape {array.shape})")
    return names[array.dtype.name]

"""A per-op profiler: where does the time of a training step go?

    with tl.profile() as prof:
        logits, loss = model(x, y)
        loss.backward()
    # prints a table: op class, forward/backward, calls, time, MB produced

Each op's forward and backward is timed separately (``Function.apply`` and
the backward pass call ``start``/``stop`` below). The "MB" column counts the
bytes of the arrays an op produced: large numbers point at temporaries worth
fusing away. On the GPU, call with ``synchronize=True`` so that each op's
queued kernels are waited for (slower, but honest per-op times).
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict

from . import backend

_active: "Profile | None" = None


class Profile:
    def __init__(self, synchronize: bool = False):
        self.synchronize = synchronize
        self.rows: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0, 0])  # calls, seconds, bytes
        self.started = time.perf_counter()
        self.wall_seconds = 0.0

    def record(self, op: str, phase: str, seconds: float, nbytes: int) -> None:
        row = self.rows[(op, phase)]
        row[0] += 1
        row[1] += seconds
        row[2] += nbytes

    def total_seconds(self) -> float:
        return sum(row[1] for row in self.rows.values())

    def table(self, limit: int = 30) -> str:
        total = self.total_seconds() or 1e-12
        lines = [f"{'op':<28}{'phase':<10}{'calls':>7}{'ms':>10}{'%':>7}{'MB':>10}"]
        ordered = sorted(self.rows.items(), key=lambda item: -item[1][1])
        for (op, phase), (calls, seconds, nbytes) in ordered[:limit]:
            lines.append(f"{op:<28}{phase:<10}{calls:>7}{seconds * 1e3:>10.2f}{100 * seconds / total:>7.1f}"
                         f"{nbytes / 2**20:>10.2f}")
        lines.append(f"ops total {total * 1e3:.2f} ms of {self.wall_seconds * 1e3:.2f} ms wall time "
                     "(the rest is Python outside ops, optimizer steps, data loading)")
        return "\n".join(lines)


def start():
    """A start time when profiling is on, else None (one cheap check per op)."""
    return time.perf_counter() if _active is not None else None


def stop(start_time, op: str, phase: str, arrays) -> None:
    if start_time is None or _active is None:
        return
    if _active.synchronize:
        backend.synchronize("cuda")
    seconds = time.perf_counter() - start_time
    if not isinstance(arrays, (tuple, list)):
        arrays = (arrays,)
    nbytes = sum(int(getattr(a, "nbytes", 0)) for a in arrays if a is not None)
    _active.record(op, phase, seconds, nbytes)


@contextlib.contextmanager
def profile(print_table: bool = True, synchronize: bool = False, limit: int = 30):
    """Profile every op run inside the ``with`` block; prints a table at the end."""
    global _active
    previous, _active = _active, Profile(synchronize=synchronize)
    prof = _active
    try:
        yield prof
    finally:
        prof.wall_seconds = time.perf_counter() - prof.started
        _active = previous
        if print_table:
            print(prof.table(limit=limit))

"""What a benchmark ran on: the CPU, and which BLAS kernels NumPy (and PyTorch) use.

Some machines set OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) to keep older OpenBLAS builds from
crashing on new processors. A current NumPy then runs kernels for an older core: on an AMD EPYC
the Haswell kernels gave a float32 GEMM peak of 242 GFLOP/s instead of 405, and the baby step
ratio read 1.06 instead of 0.78. Benchmarks run with both unset:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_train_step.py

Call `describe()` after numpy (and torch) are imported: threadpoolctl reports loaded libraries only.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import platform
from pathlib import Path
from typing import Callable

OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_lines() -> list[str]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["BLAS: unknown (pip install threadpoolctl, part of the test extras)"]
    lines = []
    for library in threadpool_info():
        if library.get("user_api") != "blas":
            continue
        owner = "torch" if "torch" in library["filepath"] else "numpy" if "numpy" in library["filepath"] else "other"
        lines.append(f"BLAS ({owner}): {library['internal_api']} {library.get('version')}, kernel "
                     f"{library.get('architecture', '?')}, {library['num_threads']} threads")
    return lines or ["BLAS: none loaded"]


def describe() -> str:
    """Lines to print at the top of a benchmark, with a warning if the kernel was forced."""
    lines = [f"CPU: {cpu_name()} ({os.cpu_count()} logical cores)"] + blas_lines()
    forced = [f"{name}={os.environ[name]}" for name in OVERRIDES if name in os.environ]
    if forced:
        lines.append(f"WARNING: {' '.join(forced)} is set, so OpenBLAS runs the kernels it names, not its "
                     "own choice for this CPU. Rerun with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`.")
    return "\n".join(lines)


def subprocess_env(threads: int) -> dict:
    """The environment for a benchmarked subprocess: ``threads`` for every BLAS, OpenMP and our own
    thread pool, and NumPy's own BLAS kernel (the OVERRIDES removed)."""
    env = {key: value for key, value in os.environ.items() if key not in OVERRIDES}
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TINYGRAD_LITE_CPU_THREADS"):
        env[name] = str(threads)
    return env


def run_and_append(jobs: int, runs: list[Callable[[], dict]], results: Path, describe_row: Callable[[dict], str]
                   ) -> list[dict]:
    """A sweep's runs, ``jobs`` at a time: each finished run's row is printed (``describe_row``) and
    appended to the JSON-lines file ``results`` at once, so an interrupted sweep keeps what it did."""
    rows = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for future in concurrent.futures.as_completed([pool.submit(run) for run in runs]):
            row = future.result()
            print(describe_row(row), flush=True)
            with results.open("a") as file:
                file.write(json.dumps(row) + "\n")
            rows.append(row)
    return rows

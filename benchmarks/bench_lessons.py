"""Each lesson in full, and the makemore lessons also in PyTorch: result lines, wall and CPU times.

The lessons are written in torch's spellings (``import tinygrad_lite as torch``), so the PyTorch
run is the lesson's own file with its three import lines switched to torch's, and nothing else
changed: the same recipe, step for step (the random numbers differ: NumPy's generator vs torch's).
A lesson that names tinygrad_lite anywhere else gets no PyTorch run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_lessons.py
    python benchmarks/bench_lessons.py --only 03,04 --threads 1
    python benchmarks/bench_lessons.py --quick --only 04   # check the plumbing in seconds

Each run is a subprocess, one after the other (ours, then PyTorch's, lesson by lesson). Wall time
on a shared machine is noisy; the CPU time (user + system, of the subprocess) is steadier and is
printed beside it, with both ratios ours/PyTorch.
"""
from __future__ import annotations

import argparse
import importlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (benchmarks/machine.py)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LESSONS_DIR = PROJECT_ROOT / "examples" / "lessons"
MAKEMORE_LESSONS = {"02", "03", "04", "05", "06"}  # the ones with a training recipe to compare
TORCH_IMPORTS = {  # the lesson's line -> PyTorch's
    "import tinygrad_lite as torch": "import torch",
    "import tinygrad_lite.nn as nn": "import torch.nn as nn",
    "from tinygrad_lite.nn import functional as F": "import torch.nn.functional as F",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated lesson numbers, e.g. 03,04 (default: all)")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads for both sides (default: each library's own choice)")
    parser.add_argument("--no-torch", action="store_true", help="run only our lessons")
    parser.add_argument("--quick", action="store_true", help="pass --quick to the lessons (a plumbing check)")
    parser.add_argument("--data", type=Path, default=None, help="names.txt (default: the lessons' own lookup)")
    return parser.parse_args()


def lessons(only: str) -> list[Path]:
    wanted = {number.strip().zfill(2) for number in only.split(",") if number.strip()}
    found = sorted(LESSONS_DIR.glob("[0-9][0-9]_*.py"))
    return [path for path in found if not wanted or path.name[:2] in wanted]


def torch_version(lesson: Path, folder: Path) -> Path | None:
    """The lesson with its imports switched to torch's, written in ``folder``; None if it needs more."""
    lines = lesson.read_text(encoding="utf-8").splitlines(keepends=True)
    switched = [TORCH_IMPORTS.get(line.rstrip("\n"), line.rstrip("\n")) + "\n" for line in lines]
    if "tinygrad_lite" in "".join(switched):
        return None
    path = folder / lesson.name
    path.write_text("".join(switched), encoding="utf-8")
    return path


def environment(threads: int | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in machine.OVERRIDES}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), str(LESSONS_DIR), env.get("PYTHONPATH", "")])
    env["MPLBACKEND"] = "Agg"
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    return env


def run(script: Path, extra: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run a lesson script to the end: (its result line, wall seconds, CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        completed = subprocess.run([sys.executable, str(script), "--out", out, *extra], env=env, cwd=out,
                                   capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if completed.returncode != 0:
        return f"FAILED (exit {completed.returncode}): {completed.stderr.strip().splitlines()[-1:]}", wall, cpu
    results = [line for line in completed.stdout.splitlines() if line.startswith("result: ")]
    return (results[-1] if results else "no result line"), wall, cpu


def load_average() -> str:
    try:
        return " ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "?"


def main() -> None:
    args = parse_args()
    for library in ["numpy"] + ([] if args.no_torch else ["torch"]):
        importlib.import_module(library)  # loaded, so that machine.describe() sees its BLAS
    print(machine.describe())
    print(f"threads: {args.threads if args.threads is not None else 'library defaults'}; "
          f"load average at start: {load_average()}\n")
    extra = (["--quick"] if args.quick else []) + (["--data", str(args.data)] if args.data else [])
    env = environment(args.threads)
    summary = []
    with tempfile.TemporaryDirectory() as folder:
        for lesson in lessons(args.only):
            result, wall, cpu = run(lesson, extra, env)
            print(f"{lesson.name}: {wall:7.1f} s wall, {cpu:7.1f} s CPU (load {load_average()})\n  ours:    {result}")
            row = [lesson.name, f"{wall:.1f}", "", ""]
            torch_script = None if args.no_torch or lesson.name[:2] not in MAKEMORE_LESSONS else \
                torch_version(lesson, Path(folder))
            if lesson.name[:2] in MAKEMORE_LESSONS and not args.no_torch and torch_script is None:
                print("  PyTorch: not run (the lesson uses tinygrad_lite beyond its imports)")
            if torch_script is not None:
                torch_result, torch_wall, torch_cpu = run(torch_script, extra, env)
                print(f"  PyTorch: {torch_result}\n  PyTorch: {torch_wall:7.1f} s wall, {torch_cpu:7.1f} s CPU; "
                      f"ours/PyTorch: wall {wall / torch_wall:.2f}, CPU {cpu / torch_cpu:.2f}")
                row[2:] = [f"{torch_wall:.1f}", f"{wall / torch_wall:.2f}"]
            summary.append(row)
    print("\nlesson            ours (s)  PyTorch (s)  ratio (wall)")
    for name, ours, theirs, ratio in summary:
        print(f"{name:<18}{ours:>8}  {theirs:>11}  {ratio:>12}")


if __name__ == "__main__":
    main()

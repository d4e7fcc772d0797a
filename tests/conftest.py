"""Shared test configuration: hypothesis profiles, data files, the gpu marker."""
from __future__ import annotations

import os
from pathlib import Path

# One BLAS thread per test worker: `pytest -n 2` already keeps both cores busy, and two
# OpenBLAS threads per worker on two cores spin against each other (20 ms for a 30 us matmul).
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import pytest
from hypothesis import HealthCheck, settings

# `ci` is deterministic (same examples every run) and has no per-example deadline
# (a shared 2-core machine has noisy timings); `dev` explores new examples each run.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Where the shared data lives: $TINYGRAD_LITE_DATA, else ../shared/data beside the project."""
    return Path(os.environ.get("TINYGRAD_LITE_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def require_data_file(relative: str) -> Path:
    """The path of a shared data file; a failure under CI when it is missing, a skip elsewhere."""
    path = data_dir() / relative
    if not path.is_file():
        message = (f"data file {path} is missing (set TINYGRAD_LITE_DATA to the folder holding "
                   "tinyshakespeare.txt and gpt2/)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def pytest_report_header(config):
    """The versions this run resolved: CI builds a fresh environment, so they move with releases."""
    from importlib import metadata
    names = ["numpy", "regex", "safetensors", "tqdm", "torch", "tiktoken", "tokenizers",
             "transformers", "hypothesis"]
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return "dependencies: " + ", ".join(versions)


def pytest_assertrepr_compare(op, left, right):
    """For long sequences, say where they first differ instead of letting pytest diff them
    whole (two lists of 300,000 token ids took pytest minutes to diff)."""
    long = 1000
    if op != "==" or not all(isinstance(x, (list, tuple, str, bytes)) for x in (left, right)):
        return None
    if max(len(left), len(right)) <= long:
        return None
    index = next((i for i, (a, b) in enumerate(zip(left, right)) if a != b), min(len(left), len(right)))
    return [f"{type(left).__name__} of {len(left):,} == {type(right).__name__} of {len(right):,}: "
            f"they first differ at index {index:,}",
            f"left[{index}:{index + 10}]  = {left[index:index + 10]!r}",
            f"right[{index}:{index + 10}] = {right[index:index + 10]!r}"]


def gpu_available() -> tuple[bool, str]:
    try:
        from tinygrad_lite import backend
        backend.get_xp("cuda")
        return True, ""
    except Exception as error:  # GPUUnavailableError, or a broken CuPy install
        return False, str(error)


def pytest_collection_modifyitems(config, items):
    if not any("gpu" in item.keywords for item in items):
        return
    ok, reason = gpu_available()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"needs a GPU: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def shakespeare_path() -> Path:
    return require_data_file("tinyshakespeare.txt")


@pytest.fixture
def gpt2_files() -> tuple[Path, Path]:
    return require_data_file("gpt2/vocab.bpe"), require_data_file("gpt2/encoder.json")


@pytest.fixture
def cl100k_path() -> Path:
    return require_data_file("cl100k_base.tiktoken")


@pytest.fixture
def small_text(shakespeare_path, tmp_path) -> Path:
    """The first 60,000 characters of tiny Shakespeare, in a file of the test's own."""
    path = tmp_path / "small.txt"
    path.write_text(shakespeare_path.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    return path

"""The GPU backend's CPU-side behaviour: lazy CuPy, clear errors without a GPU, the kernel switches.

These run everywhere (no GPU needed): CuPy is faked or hidden by
monkeypatching ``sys.modules`` and resetting the backend's cache. The tests
that need a real GPU are in ``test_gpu.py`` (marked ``gpu``).
"""
from __future__ import annotations

import builtins
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import tinygrad_lite as tl
from tinygrad_lite import backend, cuda_kernels, nn

ROOT = Path(__file__).resolve().parent.parent
INSTALL = 'pip install -e ".[gpu-cuda12]"'


@pytest.fixture
def no_cached_cupy(monkeypatch):
    """Forget any CuPy the backend loaded, so the next 'cuda' request imports and checks again."""
    monkeypatch.setattr(backend, "_cupy_module", None)
    monkeypatch.setattr(backend, "_generators", {})


def fake_cupy(driver_version=12040, device_count=1, count_error=None):
    """A stand-in for the ``cupy`` module with just the runtime calls the backend's checks make."""
    def get_device_count():
        if count_error is not None:
            raise RuntimeError(count_error)
        return device_count

    module = types.ModuleType("cupy")
    module.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(driverGetVersion=lambda: driver_version,
                                                                      getDeviceCount=get_device_count))
    module.ndarray = type("ndarray", (), {})
    return module


def cuda_error(monkeypatch, module) -> str:
    monkeypatch.setitem(sys.modules, "cupy", module)
    with pytest.raises(tl.GPUUnavailableError) as info:
        backend.get_xp("cuda")
    return str(info.value)


def test_cupy_not_installed(monkeypatch, no_cached_cupy):
    message = cuda_error(monkeypatch, None)  # None in sys.modules: "import cupy" fails as if it were absent
    assert "CuPy is not installed" in message and INSTALL in message and "gpu-cuda13" in message


def test_cupy_installed_but_broken(monkeypatch, no_cached_cupy):
    real_import = builtins.__import__

    def broken_import(name, *args, **kwargs):
        if name == "cupy":
            raise ImportError("libcublas.so.12: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(builtins, "__import__", broken_import)
    with pytest.raises(tl.GPUUnavailableError, match="installed but could not be imported.*libcublas") as info:
        backend.get_xp("cuda")
    assert INSTALL in str(info.value)


def test_no_cuda_driver(monkeypatch, no_cached_cupy):
    message = cuda_error(monkeypatch, fake_cupy(driver_version=0))
    assert "no CUDA driver" in message and "nvidia-smi" in message and INSTALL in message


def test_no_cuda_device(monkeypatch, no_cached_cupy):
    for module in (fake_cupy(device_count=0),
                   fake_cupy(count_error="cudaErrorNoDevice: no CUDA-capable device is detected")):
        message = cuda_error(monkeypatch, module)
        assert "no CUDA device" in message and "CUDA_VISIBLE_DEVICES" in message and INSTALL in message


def test_driver_too_old(monkeypatch, no_cached_cupy):
    message = cuda_error(monkeypatch, fake_cupy(driver_version=11040, count_error="cudaErrorInsufficientDriver"))
    assert "driver is too old" in message and "11.4" in message and INSTALL in message


def test_every_way_of_asking_for_cuda_raises_the_same_error(monkeypatch, no_cached_cupy, tmp_path):
    monkeypatch.setitem(sys.modules, "cupy", None)
    model = nn.Linear(2, 3)
    tl.save(model.state_dict(), tmp_path / "linear.safetensors")
    attempts = [lambda: tl.Tensor([1.0], device="cuda"), lambda: tl.Tensor([1.0]).to("cuda"),
                lambda: tl.Tensor([1.0]).cuda(), lambda: tl.zeros(2, device="cuda"), lambda: tl.randn(2, device="cuda"),
                lambda: model.to("cuda"), lambda: tl.load(tmp_path / "linear.safetensors", device="cuda"),
                lambda: backend.memory_pool_stats(), lambda: backend.synchronize("cuda"),
                lambda: backend.get_rng_state("cuda")]
    for attempt in attempts:
        with pytest.raises(tl.GPUUnavailableError, match="CuPy is not installed"):
            attempt()
    assert model.weight.device == "cpu"  # a failed move leaves the model where it was


def test_backend_helpers_without_a_gpu(monkeypatch):
    assert not backend.is_cuda(np.zeros(3)) and not backend.is_cuda(3.0)
    backend.synchronize("cpu")
    if backend._cupy_module is None:
        backend.empty_cache()  # nothing to free: a no-op, and it must not import CuPy
        assert backend._cupy_module is None
        monkeypatch.setenv("CUPY_TF32", "1")
        assert backend.tf32_enabled()
        monkeypatch.setenv("CUPY_TF32", "0")
        assert not backend.tf32_enabled()
    x = np.zeros((2, 3), np.float32)
    assert not cuda_kernels.supports(x)  # numpy arrays never take the CUDA kernels
    assert cuda_kernels.attention_algorithm(x, x, x) is None
    with pytest.raises(ValueError, match="expected one of"):
        cuda_kernels.set_attention_mode("fast")
    with cuda_kernels.disabled():
        assert not cuda_kernels.enabled()
    assert cuda_kernels.enabled()


def test_cpu_use_never_imports_cupy(tmp_path):
    """Training, saving, sampling on the CPU: CuPy (and cupyx) never get imported."""
    script = """
import sys
import numpy as np
import tinygrad_lite as tl
import gpt
from tinygrad_lite import optim

tl.manual_seed(0)
model = gpt.GPT(gpt.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
idx = np.random.default_rng(0).integers(0, 11, (2, 8))
optimizer = model.configure_optimizer(1e-3, 0.1)
for _ in range(2):
    _, loss = model(idx, idx)
    loss.backward()
    optim.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
tl.save(model.state_dict(), sys.argv[1])
model.generate(idx[:1, :2], 3)
tl.backend.synchronize("cpu")
tl.backend.empty_cache()
loaded = [name for name in sys.modules if name.split(".")[0] in ("cupy", "cupyx", "cupy_backends")]
assert not loaded, loaded
print("no cupy")
"""
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model.safetensors")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "no cupy" in result.stdout

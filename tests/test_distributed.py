"""Data parallelism: DDP and ZeRO-1 on 2 ranks against one process, Ctrl-C, a dead rank, the world of 1.

The 2-rank tests launch ``mpiexec -n 2`` themselves (tests/distributed_worker.py, or the
training script) and skip, with the reason, without the mpi extra (pip install -e ".[mpi]").
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pytest

import tinygrad_lite as tl
from tinygrad_lite import distributed as dist
from tinygrad_lite.optim import AdamW

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "distributed_worker.py"
sys.path.insert(0, str(REPO / "tests"))
import distributed_worker  # noqa: E402


def find_mpiexec() -> str | None:
    beside_python = Path(sys.executable).parent / "mpiexec"  # the mpich wheel puts it in the venv's bin/
    return str(beside_python) if beside_python.is_file() else shutil.which("mpiexec")


MPIEXEC = find_mpiexec()
needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
                               reason='needs mpi4py and mpiexec: pip install -e ".[mpi]"')


def mpi_env(timeout_s: float = 60) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "TINYGRAD_LITE_DIST_TIMEOUT": str(timeout_s)}


def launch(*args, timeout_s: float = 60, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([MPIEXEC, "-n", "2", sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout_s, env=env or mpi_env(), cwd=REPO)


# ------------------------------------------------------------- 2 ranks

@needs_mpi
@pytest.mark.timeout(120)
def test_ddp_and_zero1_follow_the_one_process_trajectory(tmp_path):
    out = tmp_path / "trajectories.json"
    result = launch(WORKER, "trajectories", out)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads(Path(f"{out}.rank{r}").read_text()) for r in (0, 1)]
    for key in ranks[0]:
        dtype, zero = key.split("-")
        one = distributed_worker.train_tiny(dtype, int(zero[-1]))  # the same training in this one process
        reference = numpy.array(one["losses"])
        assert reference[-1] < reference[0] - 0.3, "the tiny model should learn its pattern"
        for rank in ranks:
            for name in ("losses", "grad_norms"):
                values, expected = numpy.array(rank[key][name]), numpy.array(one[name])
                assert len(values) == 50
                if dtype == "float64":
                    numpy.testing.assert_allclose(values, expected, rtol=0, atol=1e-5, err_msg=f"{key} {name}")
                else:
                    numpy.testing.assert_allclose(values, expected, rtol=1e-3, atol=0, err_msg=f"{key} {name}")
        assert ranks[0][key]["weights"] == ranks[1][key]["weights"], f"{key}: the ranks' weights drifted apart"
    # ZeRO-1: the same losses as DDP, and each rank holds half of AdamW's moments
    ddp, zero = ranks[0]["float64-zero0"], ranks[0]["float64-zero1"]
    numpy.testing.assert_allclose(zero["losses"], ddp["losses"], rtol=0, atol=1e-12)
    full_bytes = 2 * 8 * ddp["num_params"]  # two float64 moments per parameter
    assert ddp["state_bytes"] == full_bytes
    for rank in ranks:
        shard_bytes = rank["float64-zero1"]["state_bytes"]
        assert abs(shard_bytes - full_bytes / 2) <= 2 * 8 * 2, (shard_bytes, full_bytes)  # up to the padding
    assert ranks[0]["float64-zero1"]["state_bytes"] + ranks[1]["float64-zero1"]["state_bytes"] == full_bytes


@needs_mpi
@pytest.mark.timeout(60)
def test_a_rank_that_dies_ends_the_others_with_a_clear_error():
    started = time.monotonic()
    result = launch(WORKER, "dead-rank", env=mpi_env(timeout_s=2), timeout_s=40)
    assert result.returncode != 0
    assert "all_reduce did not complete within 2 s" in result.stderr, result.stderr[-2000:]
    assert "another rank has probably died" in result.stderr
    assert "returned, which it must not" not in result.stdout
    assert time.monotonic() - started < 30


@needs_mpi
@pytest.mark.timeout(120)
def test_ctrl_c_saves_one_consistent_checkpoint_and_resumes_on_one_process(tmp_path):
    text = (REPO / "README.md").read_text(encoding="utf-8")[:20000]
    data = tmp_path / "text.txt"
    data.write_text(text, encoding="utf-8")
    out = tmp_path / "run"
    flags = ["--data", data, "--cache-dir", tmp_path / "cache", "--out-dir", out, "--n-layer", "1", "--n-head", "2",
             "--n-embd", "16", "--block-size", "16", "--batch-size", "8", "--eval-interval", "100000",
             "--eval-iters", "1", "--final-eval-iters", "1", "--sample-tokens", "5", "--no-progress"]
    script = REPO / "examples" / "train_shakespeare.py"
    process = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, str(script), *map(str, flags),
                                "--max-iters", "100000", "--zero", "1"], env=mpi_env(), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.is_file() and metrics.read_text().count('"kind": "train"') >= 3:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends mpiexec, which passes it on
    stdout, stderr = process.communicate(timeout=40)
    assert process.returncode == 0, stderr[-3000:]
    assert "interrupted at iteration" in stdout and stdout.count("interrupted at iteration") == 1  # rank 0 only
    saved = json.loads((out / "last.json").read_text())
    stopped_at = saved["train_state"]["iteration"]
    train_lines = [json.loads(line) for line in metrics.read_text().splitlines() if '"train"' in line]
    assert stopped_at >= 3 and [entry["iter"] for entry in train_lines] == list(range(stopped_at))
    assert saved["train_state"]["train_config"]["zero"] == 1

    # the full optimizer state was gathered: one process (plain AdamW) resumes from it
    resumed = subprocess.run([sys.executable, str(script), *map(str, flags), "--resume", "--zero", "0",
                              "--max-iters", str(stopped_at + 2)], capture_output=True, text=True,
                             env={**mpi_env(), "OPENBLAS_NUM_THREADS": "2"}, cwd=REPO, timeout=60)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at iteration {stopped_at}" in resumed.stdout
    assert json.loads((out / "last.json").read_text())["train_state"]["iteration"] == stopped_at + 2


@needs_mpi
@pytest.mark.gpu
@pytest.mark.timeout(120)
def test_nccl_collectives_on_one_gpu():
    result = subprocess.run([MPIEXEC, "-n", "1", sys.executable, str(WORKER), "nccl-one-rank"], capture_output=True,
                            text=True, timeout=100, env=mpi_env(), cwd=REPO)
    assert result.returncode == 0 and "all collectives ok" in result.stdout, result.stderr[-3000:]


# ------------------------------------------------------------ 1 process

def test_a_plain_process_is_a_world_of_one():
    assert dist.launcher_world() == (0, 1)
    world = dist.init()
    assert (dist.rank(), dist.world_size(), dist.is_main_process()) == (0, 1, True)
    assert isinstance(world, dist.SingleProcessWorld)
    array = numpy.arange(6.0)
    assert dist.all_reduce(array, op="mean") is array and array.tolist() == list(range(6))
    assert dist.all_gather(array).tolist() == array.tolist()
    assert dist.any_rank(True) and not dist.any_rank(False)
    x, y = dist.local_rows(numpy.zeros((4, 3)), numpy.ones((4, 3)))
    assert x.shape == y.shape == (4, 3)
    with pytest.raises(dist.CollectiveError, match="unknown reduction op 'avg'"):
        dist.all_reduce(array, op="avg")


def test_one_process_never_imports_mpi4py():
    code = ("import sys, tinygrad_lite as tl; tl.distributed.init(); tl.distributed.barrier(); "
            "print('mpi4py' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "SLURM_"))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                            env={**env, "PYTHONPATH": str(REPO)})
    assert result.stdout.strip() == "False", result.stderr[-2000:]


def test_init_without_mpi4py_says_what_to_install(monkeypatch):
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(dist, "_world", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[mpi\]"'):
        dist.init()


def test_post_accumulate_grad_hook_sees_the_complete_gradient():
    w = tl.Tensor(numpy.arange(3.0), requires_grad=True)
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    ((w * 2).sum() + (w * w).sum()).backward()  # w is used twice: the hook runs once, after both
    assert len(seen) == 1 and seen[0].tolist() == [2.0, 4.0, 6.0]
    handle.remove()
    (w.sum()).backward()
    assert len(seen) == 1
    with pytest.raises(RuntimeError, match="only for leaf tensors"):
        (w * 2).register_post_accumulate_grad_hook(print)


def test_zero1_on_one_rank_is_fused_adamw_bit_for_bit():
    def make():
        tl.manual_seed(3)
        model = tl.nn.Sequential(tl.nn.Linear(5, 7), tl.nn.Tanh(), tl.nn.Linear(7, 2))
        return model, AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)

    plain_model, plain = make()
    zero_model, inner = make()
    zero = dist.ZeroRedundancyOptimizer(inner)
    x = numpy.random.default_rng(0).standard_normal((4, 5)).astype(numpy.float32)
    for model, optimizer in ((plain_model, plain), (zero_model, zero)):
        for _ in range(3):
            (model(tl.Tensor(x)) ** 2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
    for a, b in zip(plain_model.parameters(), zero_model.parameters()):
        assert numpy.array_equal(a.numpy(), b.numpy())
    saved, theirs = zero.state_dict(), plain.state_dict()
    assert saved["param_groups"] == theirs["param_groups"]
    for index, state in theirs["state"].items():
        assert saved["state"][index]["step"] == state["step"]
        assert numpy.array_equal(saved["state"][index]["exp_avg_sq"], state["exp_avg_sq"])
    assert zero.state_bytes() == sum(v.nbytes for s in theirs["state"].values() for k, v in s.items() if k != "step")
    again = dist.ZeroRedundancyOptimizer(AdamW(zero_model.parameters(), lr=1e-2))
    again.load_state_dict(saved)
    assert numpy.array_equal(again.shards[0].exp_avg, zero.shards[0].exp_avg) and again.steps == [3]

"""The per-op profiler counts every op's forward and backward."""
import numpy as np

import tinygrad_lite as tl


def test_profile_counts_calls_per_op_and_phase(capsys):
    x = tl.Tensor(np.ones((4, 3), np.float32), requires_grad=True)
    w = tl.Tensor(np.ones((3, 2), np.float32), requires_grad=True)
    with tl.profile() as prof:
        for _ in range(2):
            ((x @ w).tanh() * 2.0).sum().backward()
    assert prof.rows[("MatMul", "forward")][0] == 2
    assert prof.rows[("MatMul", "backward")][0] == 2
    assert prof.rows[("Tanh", "forward")][2] == 2 * 4 * 2 * 4  # bytes of two (4, 2) float32 outputs
    assert prof.total_seconds() > 0
    printed = capsys.readouterr().out
    assert "MatMul" in printed and "backward" in printed


def test_profiling_is_off_outside_the_block():
    with tl.profile(print_table=False) as prof:
        pass
    (tl.Tensor(np.ones(2), requires_grad=True) * 2.0).sum().backward()
    assert not prof.rows

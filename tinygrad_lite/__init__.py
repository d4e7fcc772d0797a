"""tinygrad_lite: a tensor library with reverse-mode autograd, on NumPy (CPU) or CuPy (GPU).

    import tinygrad_lite as tl
    x = tl.Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    loss = (x * x).sum()
    loss.backward()          # x.grad == 2 * x

Start reading at ``tensor.py`` (the Tensor), ``autograd.py`` (Function and
the backward pass) and ``ops/`` (every primitive with its forward and backward).
"""
import os as _os
import sys as _sys

if "numpy" not in _sys.modules:
    # After a matmul, OpenBLAS's worker threads spin for a long while waiting for the next one,
    # stealing the cores from the elementwise work that follows (see backend.parallel_rows).
    # Let them sleep soon instead: on a 2-core machine a GPT training step takes ~13% less time.
    # OpenBLAS reads this when it loads, with numpy: import tinygrad_lite first (``gpt`` does),
    # or set OPENBLAS_THREAD_TIMEOUT=4 in the environment yourself.
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as _numpy  # noqa: E402

from . import backend
from .autograd import (Function, debug_mode, enable_grad, is_debug, is_grad_enabled, is_reference_mode, no_grad,
                       reference_mode, set_debug, set_reference_mode)
from .backend import GPUUnavailableError, manual_seed
backend.tune_cpu_allocator()  # see backend.py: reuse freed temporaries instead of page-faulting on new ones
from .creation import arange, full, ones, ones_like, rand, randn, tensor, zeros, zeros_like
from .gradcheck import GradcheckError, gradcheck
from .profiler import profile
from .tensor import Tensor, cat, stack, tril, where
from . import functional  # noqa: E402  (needs Tensor)
from . import nn, optim  # noqa: E402
from .graph import draw_graph, print_graph  # noqa: E402
from .serialization import load, save  # noqa: E402

float16, float32, float64 = _numpy.float16, _numpy.float32, _numpy.float64
int32, int64, bool_ = _numpy.int32, _numpy.int64, _numpy.bool_

__version__ = "0.1.0"

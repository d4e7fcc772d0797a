"""tinygrad_lite: a tensor library with reverse-mode autograd, on NumPy (CPU) or CuPy (GPU).

    import tinygrad_lite as tl
    x = tl.Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    loss = (x * x).sum()
    loss.backward()          # x.grad == 2 * x

Start reading at ``tensor.py`` (the Tensor), ``autograd.py`` (Function and
the backward pass) and ``ops/`` (every primitive with its forward and backward).

Importing changes nothing in the process (no environment variables, no allocator settings,
no threads until an op needs them); ``tinygrad_lite.cpu.tune()`` applies the CPU settings that
make training faster, and says why.
"""
import sys as _sys

import numpy as _numpy

from . import backend, cpu
from .autograd import (Function, debug_mode, enable_grad, is_debug, is_grad_enabled, is_reference_mode, no_grad,
                       reference_mode, set_debug, set_reference_mode)
from .backend import GPUUnavailableError, manual_seed
from .creation import (Generator, allclose, arange, empty, empty_like, eye, from_numpy, full, full_like, inference_mode,
                       linspace, multinomial, ones, ones_like, rand, rand_like, randint, randint_like, randn, randn_like,
                       randperm, tensor, zeros, zeros_like)
from .gradcheck import GradcheckError, gradcheck
from .profiler import profile
from .tensor import (Histogram, Size, Tensor, ValuesIndices, argsort, cat, clamp, exp, gather, histogram, log, maximum,
                     minimum, pow, roll, sigmoid, sort, sqrt, stack, tanh, topk, tril, triu, where)
from . import nn, optim  # noqa: E402  (need Tensor)
from . import distributed  # noqa: E402  (needs nn and optim; imports no MPI until a launcher asks)
from . import amp  # noqa: E402
from .amp import autocast  # noqa: E402  (torch.autocast)
from . import utils  # noqa: E402  (utils.checkpoint: activation checkpointing, as torch.utils.checkpoint)
from .nn import functional  # noqa: E402  (the home of the functional ops is tinygrad_lite/nn/functional.py)
# ``tinygrad_lite.functional`` stays importable as a second name for the same module (older code, the docs):
_sys.modules[__name__ + ".functional"] = functional
from .graph import draw_graph, print_graph  # noqa: E402
from .serialization import load, save  # noqa: E402

# dtypes, with torch's names (numpy types: x.dtype == tl.float32 holds)
float16, float32, float64 = _numpy.float16, _numpy.float32, _numpy.float64
int32, int64, bool_ = _numpy.int32, _numpy.int64, _numpy.bool_
half, float, double = float16, float32, float64  # noqa: A001 -- torch's names shadow builtins here only
int, long, bool = int32, int64, bool_  # noqa: A001

__version__ = "0.1.0"

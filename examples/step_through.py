"""One backward pass of a tiny GPT in reference mode, to step through in a debugger.

    python -m pdb examples/step_through.py
    (Pdb) b tinygrad_lite/autograd.py:340     # the line `input_grads = fn.backward(*output_grads)`
    (Pdb) c                                   # stops before each op's backward; `s` steps into it

Under ``tl.reference_mode()`` every composite op (softmax, cross-entropy, layer norm, GELU,
attention, linear) is its plain twin made of primitive ops, and nothing runs on worker threads.
"""
import sys
from pathlib import Path

import numpy as np

try:
    import gpt  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tinygrad_lite as tl  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402

tl.manual_seed(0)
model = GPT(GPTConfig(vocab_size=65, block_size=8, n_layer=1, n_head=2, n_embd=16))
x = np.random.default_rng(0).integers(0, 65, (2, 8))  # (B, T) token ids
with tl.reference_mode():
    logits, loss = model(x, targets=x)                 # logits (B, T, 65)
    loss.backward()
print(f"loss {loss.item():.4f}; gradient of the token embedding: {model.wte.weight.grad.shape}")

"""gpt: GPT-2 built on tinygrad_lite, with the code to train it on tiny Shakespeare and sample from it.

    from gpt import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128))
    logits, loss = model(idx, targets)            # idx, targets: (B, T) integer arrays
    print(model.param_table())                    # how big is a transformer?
    model.generate(idx, 100, temperature=0.8, top_k=200)

Modules: ``model`` (the network), ``generation`` (sampling, KV cache, beam
search), ``pretrained`` (loading Hugging Face GPT-2 weights), ``data``
(tiny Shakespeare, tokenizers, batches), ``checkpoint`` (atomic save/load),
``train`` (the training loop), ``sample`` (text from a checkpoint).
"""
from .model import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]

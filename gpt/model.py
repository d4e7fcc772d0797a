"""GPT-2, written on tinygrad_lite (the architecture of nanoGPT's ``model.py``).

    token ids (B, T)
      -> token embedding + learned position embedding          wte, wpe
      -> n_layer x Block:                                       h.0 ... h.{n_layer-1}
             x = x + attention(layer_norm(x))                   causal multi-head self-attention
             x = x + mlp(layer_norm(x))                         Linear(C, 4C) -> GELU -> Linear(4C, C)
      -> final layer norm                                       ln_f
      -> lm_head (the token embedding, transposed)              logits (B, T, vocab)

Parameter names follow GPT-2's (``h.0.attn.c_attn.weight`` ...) so a Hugging
Face checkpoint maps onto them one to one (see ``gpt/pretrained.py``).
Generation with a KV cache lives in ``gpt/generation.py`` (``model(idx, cache=cache)``).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy

import tinygrad_lite as tl
from tinygrad_lite import functional as F
from tinygrad_lite import nn
from tinygrad_lite.optim import AdamW
from tinygrad_lite.utils.checkpoint import checkpoint


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int          # the longest sequence the model can see (number of position embeddings)
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0     # on the embeddings and on each residual branch, while training
    bias: bool = True        # biases in the Linears and LayerNorms (GPT-2 has them; nanoGPT can drop them)
    checkpoint_blocks: bool = False  # training: recompute each block's forward in backward (less memory)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value <= 0:
                raise ValueError(f"GPTConfig: {name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}), "
                             "each head gets n_embd / n_head dimensions")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig: dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"GPTConfig: unknown field(s) {unknown}")
        return cls(**values)


class CausalSelfAttention(nn.Module):
    """Each position mixes in the value vectors of itself and earlier positions.

    One Linear (``c_attn``) computes queries, keys and values for all heads at
    once (3 * n_embd outputs); they are split into n_head heads of size
    n_embd / n_head, attend independently, and ``c_proj`` mixes the heads.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: tl.Tensor, cache=None) -> tl.Tensor:
        B, T, C = x.shape
        # (B, T, 3C) -> 3 x (B, n_head, T, head_size): the heads become a batch dimension.
        # The same as nanoGPT's split(C, dim=2) and view(B, T, n_head, head_size).transpose(1, 2)
        # (functional.split_heads_reference), as one op whose backward needs no copy.
        q, k, v = F.split_heads(self.c_attn(x), self.n_head)
        if cache is not None:  # generating: the keys and values of the earlier positions, then these
            k, v = cache.append(k, v)  # (B, n_head, cached + T, head_size), see gpt/generation.py
        # query i sees keys 0..i; one new query (decoding with a cache) sees every key
        y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Per position: widen to 4 * n_embd, GELU, narrow back."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's form (torch's default is the exact erf one)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: tl.Tensor) -> tl.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """A pre-LayerNorm transformer block: attention then MLP, each added to the residual stream."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: tl.Tensor, cache=None) -> tl.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    """GPT-2: ``logits, loss = model(idx, targets)``; ``model.generate(idx, n)`` to write text."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)   # token embedding
        self.wpe = nn.Embedding(config.block_size, config.n_embd)   # position embedding
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the output layer scores each token by the dot product
        # with that token's input embedding. One matrix, trained by both uses
        # (autograd adds the two gradients), and vocab * n_embd fewer parameters.
        self.lm_head.weight = self.wte.weight
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights, zero biases, LayerNorms at (1, 0).

        The projections that write into the residual stream (``c_proj``) get
        std 0.02 / sqrt(2 * n_layer): the stream is a sum of 2 * n_layer such
        branches, and this keeps its variance from growing with depth.
        """
        rng = tl.backend.generator("cpu")
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                param.data = rng.normal(0.0, residual_std, param.shape).astype(numpy.float32)
            elif name.endswith(".weight") and param.ndim == 2:  # Linear and Embedding weights
                param.data = rng.normal(0.0, 0.02, param.shape).astype(numpy.float32)
            elif name.endswith(".bias"):
                param.data = numpy.zeros(param.shape, dtype=numpy.float32)
            # LayerNorm weights keep their ones.

    # ---------------------------------------------------------------- forward
    def hidden_states(self, idx, cache=None) -> tl.Tensor:
        """The final layer norm's output (B, T, n_embd) for token ids ``idx`` (B, T): one vector per
        position, before ``lm_head`` (Hugging Face's ``last_hidden_state``; the task heads of
        ``gpt/heads.py`` read it). ``cache``: see `forward`."""
        idx = _token_array(idx, "idx")
        B, T = idx.shape
        start = cache.length if cache is not None else 0  # positions already in the cache
        if start + T > self.config.block_size:
            raise ValueError(f"GPT: the sequence has {start + T} tokens but block_size is {self.config.block_size} "
                             f"(the model has only that many position embeddings); "
                             f"crop it to the last {self.config.block_size} tokens")
        positions = numpy.arange(start, start + T)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        layer_caches = cache.layers if cache is not None else [None] * len(self.h)
        for block, layer_cache in zip(self.h, layer_caches):
            if self.config.checkpoint_blocks and layer_cache is None:
                x = checkpoint(block, x)  # keeps only x for backward, which reruns the block (utils/checkpoint.py)
            else:
                x = block(x, layer_cache)
        return self.ln_f(x)

    def forward(self, idx, targets=None, cache=None) -> tuple[tl.Tensor, tl.Tensor | None]:
        """Logits (B, T, vocab) for token ids ``idx`` (B, T); and the mean cross-entropy if ``targets``.

        ``cache`` (a ``gpt.generation.KVCache``, when generating): ``idx`` are the
        positions after the cached ones, and every layer attends to those too.
        """
        idx = _token_array(idx, "idx")
        B, T = idx.shape
        logits = self.lm_head(self.hidden_states(idx, cache))
        loss = None
        if targets is not None:
            targets = _token_array(targets, "targets")
            if targets.shape != idx.shape:
                raise ValueError(f"GPT: targets have shape {targets.shape}, idx has shape {idx.shape}; "
                                 "they must match (targets are idx shifted by one)")
            loss = F.cross_entropy(logits.reshape(B * T, self.config.vocab_size), targets.reshape(B * T))
        return logits, loss

    # --------------------------------------------------------- how big is it?
    def num_params(self, include_position_embeddings: bool = True) -> int:
        """The number of trainable numbers (the tied lm_head / wte matrix counted once).

        nanoGPT reports the count without the position embeddings
        (``include_position_embeddings=False``); GPT-2 small has 124M with them.
        """
        total = sum(p.numel() for p in self.parameters())
        if not include_position_embeddings:
            total -= self.wpe.weight.numel()
        return total

    def param_counts(self) -> dict[str, int]:
        """Parameter counts grouped by role: embeddings, attention, MLP, layer norms."""
        groups = {"token embedding (tied with lm_head)": 0, "position embedding": 0,
                  "attention": 0, "MLP": 0, "layer norms": 0}
        for name, param in self.named_parameters():
            if name.startswith("wte."):
                group = "token embedding (tied with lm_head)"
            elif name.startswith("wpe."):
                group = "position embedding"
            elif ".attn." in name:
                group = "attention"
            elif ".mlp." in name:
                group = "MLP"
            elif ".ln_" in name or name.startswith("ln_f."):
                group = "layer norms"
            else:  # a parameter this table does not know about must still be counted somewhere
                group = name
                groups.setdefault(group, 0)
            groups[group] += param.numel()
        return groups

    def param_table(self) -> str:
        """A printable table answering "how big is a transformer?"."""
        c = self.config
        counts = self.param_counts()
        total = self.num_params()
        layers = f"{c.n_layer} layer{'s' if c.n_layer != 1 else ''}"
        lines = [f"GPT: {layers}, {c.n_head} heads, n_embd {c.n_embd}, block_size {c.block_size}, "
                 f"vocab {c.vocab_size}",
                 f"{'group':<38}{'parameters':>14}{'share':>8}"]
        per_layer = {"attention": f"{c.n_layer} x (4 C^2 + 4 C)" if c.bias else f"{c.n_layer} x 4 C^2",
                     "MLP": f"{c.n_layer} x (8 C^2 + 5 C)" if c.bias else f"{c.n_layer} x 8 C^2"}
        for group, count in counts.items():
            note = f"  {per_layer[group]}" if group in per_layer else ""
            lines.append(f"{group:<38}{count:>14,}{count / total:>8.1%}{note}")
        lines.append(f"{'total':<38}{total:>14,}{1:>8.0%}")
        return "\n".join(lines)

    # ------------------------------------------------------------- training
    def configure_optimizer(self, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.99),
                            eps: float = 1e-8) -> AdamW:
        """AdamW with weight decay on the 2-D weights (matmuls, embeddings) only.

        Biases and LayerNorm gains are left undecayed: shrinking them towards 0
        does not regularise anything useful (nanoGPT's rule, "every 2-D tensor").
        Frozen parameters (``requires_grad=False``) are left out, as nanoGPT does.
        """
        trained = [p for p in self.parameters() if p.requires_grad]
        if not trained:
            raise ValueError("GPT.configure_optimizer: every parameter is frozen (requires_grad=False)")
        decay = [p for p in trained if p.ndim >= 2]
        no_decay = [p for p in trained if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return AdamW([group for group in groups if group["params"]], lr=lr, betas=betas, eps=eps)

    # ----------------------------------------------------------- generation
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, stop_tokens=None, *, use_cache: bool = True,
                 decoder: str = "modules", generator=None) -> numpy.ndarray:
        """Continue each row of ``idx`` (B, T) by up to ``max_new_tokens`` sampled tokens.

        ``temperature=0`` is greedy decoding; ``decoder="folded"`` the fast path. See ``gpt.generation.generate``.
        """
        from .generation import generate  # noqa: PLC0415 -- generation.py imports this module

        return generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        stop_tokens=stop_tokens, use_cache=use_cache, decoder=decoder, generator=generator)

    def beam_search(self, idx, max_new_tokens: int, num_beams: int) -> numpy.ndarray:
        """The most likely continuation found by beam search. See ``gpt.generation.beam_search``."""
        from .generation import beam_search  # noqa: PLC0415

        return beam_search(self, idx, max_new_tokens, num_beams)

    # ------------------------------------------------------------ pretrained
    @classmethod
    def from_pretrained(cls, path: str | Path) -> "GPT":
        """A GPT-2 from a Hugging Face checkpoint directory (config.json + model.safetensors)."""
        from .pretrained import load_hf_gpt2  # noqa: PLC0415

        return load_hf_gpt2(path)


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """Run the block in eval mode (no dropout) without autograd, then put the model's mode back."""
    was_training = model.training
    model.eval()
    try:
        with tl.no_grad():
            yield model
    finally:
        model.train(was_training)


def _token_array(values, what: str):
    """``values`` as a 2-D integer backend array (accepts Tensors, numpy/cupy arrays, lists)."""
    if isinstance(values, tl.Tensor):
        array = values.data
    elif hasattr(values, "shape") and hasattr(values, "dtype"):
        array = values
    else:
        array = numpy.asarray(values)
    if array.dtype.kind not in "iu":
        raise TypeError(f"GPT: {what} must hold integer token ids, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"GPT: {what} must have shape (batch, time), got shape {tuple(array.shape)}")
    return array

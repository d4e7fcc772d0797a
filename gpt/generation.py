"""Generating text: sampling (temperature, top-k, top-p), a KV cache, beam search.

Without a cache, every new token costs a forward pass over the whole context:
the keys and values of the earlier positions are recomputed each time although
they never change (a position only attends to itself and to earlier ones).
The KV cache keeps each layer's keys and values, so a new token costs one
forward pass over one position, attending to the cached keys/values.

Two decoders use a cache; both give the same tokens (the tests check it):

* ``decoder="modules"`` (the default): ``model(idx, cache=cache)``, the
  model's own forward. Each ``CausalSelfAttention`` writes the new position's
  k, v (B, n_head, 1, head_size) into its ``LayerKVCache`` and attends to all
  of them, (B, n_head, length, head_size). The code a learner reads in
  ``gpt/model.py`` is the code that runs.
* ``decoder="folded"``, the fast path: ``forward_folded``, the same math on
  raw arrays with the weights laid out for decoding (see ``FoldedKVCache``).
  For one position per call every op's overhead costs more than its
  arithmetic, so it saves ops: no autograd wrappers, layer norms folded into
  the next Linear. ``examples/sample.py --decoder folded`` uses it.

When the context outgrows ``block_size`` it is cropped. GPT-2's position
embeddings are absolute, so after a crop every cached key is at the wrong
position and the cache must be refilled; refilling at every step would cost
as much as no cache at all. So the window *jumps*: when the context would
exceed block_size, it restarts from the last block_size // 2 tokens (one
refill), then grows again one token per step. Every path (with and without
the cache) uses the same windows, which is why they agree token for token.
"""
from __future__ import annotations

import math

import numpy

import tinygrad_lite as tl
from tinygrad_lite import backend, nn

from tinygrad_lite.fused import GELU_C, GELU_K

from .model import GPT, evaluating

DECODERS = ("modules", "folded")  # see the module docstring


# -------------------------------------------------------------- the window

def initial_window_start(length: int, block_size: int) -> int:
    """Where the context starts for the first step: the last block_size tokens of the prompt."""
    return max(0, length - block_size)


def next_window_start(start: int, length: int, block_size: int) -> int:
    """Where the context starts once the sequence has ``length`` tokens (see the module docstring)."""
    if length - start <= block_size:
        return start
    return length - max(1, block_size // 2)


# --------------------------------------------------------------- the cache

class LayerKVCache:
    """One attention layer's keys and values for the positions seen so far.

    ``keys`` and ``values`` are (B, n_head, block_size, head_size) buffers,
    allocated once; the first ``length`` positions are filled. ``append``
    writes the new positions' k, v (B, n_head, T, head_size) after them and
    returns every key and value so far, (B, n_head, length, head_size), as
    views of the buffers (nothing is copied or concatenated).
    """

    def __init__(self, batch_size: int, n_head: int, block_size: int, head_size: int, dtype, xp):
        self.keys = xp.zeros((batch_size, n_head, block_size, head_size), dtype=dtype)
        self.values = xp.zeros((batch_size, n_head, block_size, head_size), dtype=dtype)
        self.length = 0

    def append(self, k: tl.Tensor, v: tl.Tensor) -> tuple[tl.Tensor, tl.Tensor]:
        B, n_head, block_size, head_size = self.keys.shape
        start, end = self.length, self.length + k.shape[2]
        if k.requires_grad or v.requires_grad:
            raise RuntimeError("KV cache: it stores arrays, not the autograd graph; "
                               "run generation under tl.no_grad()")
        if k.shape != v.shape or k.shape[:2] + k.shape[3:] != (B, n_head, head_size):
            raise ValueError(f"KV cache: k {k.shape} and v {v.shape} do not fit the cache "
                             f"(expected ({B}, {n_head}, T, {head_size}))")
        if end > block_size:
            raise ValueError(f"KV cache: {start} cached + {end - start} new positions exceed block_size {block_size}")
        if start > 0 and end - start > 1:  # attention's causal mask would be aligned wrong
            raise ValueError(f"KV cache: {end - start} new positions after {start} cached ones; "
                             "after the prompt, positions come one at a time")
        self.keys[:, :, start:end] = k.data
        self.values[:, :, start:end] = v.data
        self.length = end
        return tl.Tensor(self.keys[:, :, :end]), tl.Tensor(self.values[:, :, :end])


class KVCache:
    """Every layer's ``LayerKVCache``: what ``model(idx, cache=cache)`` reads and extends.

    (In the style of Hugging Face's ``past_key_values``: the cache lives
    outside the model and is passed in; ``GPT.forward`` hands layer i's cache
    to block i and starts the position embeddings at ``length``.)
    """

    def __init__(self, model: GPT, batch_size: int):
        c = model.config
        weight = model.wte.weight
        self.layers = [LayerKVCache(batch_size, c.n_head, c.block_size, c.n_embd // c.n_head, weight.dtype, weight.xp)
                       for _ in range(c.n_layer)]

    @property
    def length(self) -> int:
        """How many positions are cached (the same in every layer)."""
        return self.layers[0].length

    def reset(self) -> None:
        """Forget every position (the buffers are reused)."""
        for layer in self.layers:
            layer.length = 0

    def reorder(self, rows) -> None:
        """Keep rows ``rows`` (beam search: each surviving beam continues from its parent)."""
        rows = backend.xp_of(self.layers[0].keys).asarray(rows)
        for layer in self.layers:
            layer.keys, layer.values = layer.keys[rows], layer.values[rows]


def forward_cached(model: GPT, idx, cache: KVCache):
    """Logits (B, vocab) of the last of the new positions ``idx`` (B, T), extending ``cache``.

    The model's own forward: the new positions attend to the cached keys and values too.
    """
    logits, _ = model(idx, cache=cache)  # (B, T, vocab)
    return logits.data[:, -1]


# ------------------------------------------- the fast path: folded weights

class FoldedKVCache:
    """The fast decoder's cache: every layer's keys and values, and the weights to extend them.

    The same cache as ``KVCache``, for ``forward_folded``: the math of
    ``GPT.forward`` on raw arrays, rearranged to take fewer NumPy calls.

    Buffers are allocated once, for ``block_size`` positions; ``length`` of
    them are filled. Keys are stored transposed and already scaled by
    s = 1/sqrt(head_size): ``keys_t[layer]`` is s K^T, (B, n_head, head_size,
    block_size), so a new query's scores are the plain product q @ (s K^T).
    Values are (B, n_head, block_size, head_size).

    ``layers`` holds a copy of each block's weights, laid out for decoding
    (where each NumPy call costs more than its arithmetic, so every call
    saved counts):

    * each layer norm's gain and bias are folded into the Linear after it:
      (xhat * g + b) W^T + c = xhat (W * g)^T + (W b + c), two passes fewer;
    * GELU's factor 1/2 is folded into the MLP's output projection;
    * weights are stored transposed, (in, out), so that x @ W^T is a plain
      product (NumPy's BLAS call with a transposed right operand is slower
      on small inputs).

    The cache is built for one ``generate`` call: it holds the weights as
    they are at that moment.
    """

    def __init__(self, model: GPT, batch_size: int):
        c = model.config
        xp = model.wte.weight.xp
        head_size = c.n_embd // c.n_head
        dtype = model.wte.weight.dtype
        self.scale = 1.0 / math.sqrt(head_size)
        self.keys_t = [xp.zeros((batch_size, c.n_head, head_size, c.block_size), dtype=dtype)
                       for _ in range(c.n_layer)]
        self.values = [xp.zeros((batch_size, c.n_head, c.block_size, head_size), dtype=dtype)
                       for _ in range(c.n_layer)]
        self.length = 0
        self.average = xp.full((c.n_embd, 1), 1.0 / c.n_embd, dtype=dtype)  # x @ average: each row's mean
        self.layers = [_DecoderLayer(block) for block in model.h]

    def reset(self) -> None:
        """Forget every position (the buffers are reused)."""
        self.length = 0

    def reorder(self, rows) -> None:
        """Keep rows ``rows`` (beam search: each surviving beam continues from its parent)."""
        rows = backend.xp_of(self.values[0]).asarray(rows)
        self.keys_t = [k[rows] for k in self.keys_t]
        self.values = [v[rows] for v in self.values]


class _DecoderLayer:
    """One block's weights laid out for decoding (see ``FoldedKVCache``): W^T as (in, out) arrays and biases."""

    def __init__(self, block):
        self.eps_1, self.eps_2 = block.ln_1.eps, block.ln_2.eps
        self.attn_weight, self.attn_bias = _transposed(block.attn.c_attn, ln=block.ln_1)
        self.attn_proj_weight, self.attn_proj_bias = _transposed(block.attn.c_proj)
        self.fc_weight, self.fc_bias = _transposed(block.mlp.c_fc, ln=block.ln_2)
        self.mlp_proj_weight, self.mlp_proj_bias = _transposed(block.mlp.c_proj, scale=0.5)  # see _twice_gelu


def _transposed(linear, ln=None, scale: float = 1.0):
    """(W')^T as a new C-contiguous array, and the bias c', for a Linear y = x W^T + c.

    With ``ln`` (the layer norm before it): W' = W * g (each input column of W
    scaled by its gain) and c' = W b + c. With ``scale``: W' = scale * W. An unmerged LoRA layer
    (``nn.LoRALinear``) gives W + scaling B A: the folded weights are copies, so its update folds in too.
    """
    weight, bias = linear.weight.data, linear.bias.data if linear.bias is not None else None
    if isinstance(linear, nn.LoRALinear) and not linear.merged:
        weight = weight + linear.get_delta_weight().data
    if ln is not None:
        if ln.bias is not None:
            bias = weight @ ln.bias.data if bias is None else bias + weight @ ln.bias.data
        weight = weight * ln.weight.data
    if scale != 1.0:
        weight = weight * scale
    return backend.xp_of(weight).ascontiguousarray(weight.T), bias


# Small helpers on raw arrays of shape (positions, features). They are written for speed at
# one position per call, where each NumPy call costs more than its arithmetic: few calls,
# in-place updates, and 2-D matrix products.

def _normalize(x, eps, average, xp):
    """(x - mean) / sqrt(var + eps) per row (a layer norm without its gain and bias).

    ``average`` is a (C, 1) column of 1/C, so ``x @ average`` is each row's mean in one BLAS call.
    """
    centered = x - x @ average
    variance = (centered * centered) @ average
    variance += eps
    centered /= xp.sqrt(variance, out=variance)
    return centered


def _linear(x, weight_t, bias):
    y = x @ weight_t
    if bias is not None:
        y += bias
    return y


def _twice_gelu(x, xp):
    """2 GELU(x) = x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in one scratch array.

    (The 1/2 is folded into the weights of the Linear that reads this.)
    """
    inner = x * x
    inner *= GELU_K * GELU_C
    inner += GELU_C
    inner *= x
    xp.tanh(inner, out=inner)
    inner += 1.0
    inner *= x
    return inner


def forward_folded(model: GPT, idx, cache: FoldedKVCache):
    """Logits (B, vocab) of the last of the new positions ``idx`` (B, T), extending ``cache`` (the fast path).

    The same computation as ``forward_cached`` (``GPT.forward`` in eval mode,
    the new positions attending to the cached keys/values too), on raw arrays.
    """
    c = model.config
    xp = model.wte.weight.xp
    idx = xp.asarray(idx)
    B, T = idx.shape
    start, end = cache.length, cache.length + T
    if end > c.block_size:
        raise ValueError(f"forward_folded: {start} cached + {T} new positions exceed block_size {c.block_size}")
    n_head, head_size = c.n_head, c.n_embd // c.n_head
    # the residual stream, one row per (sequence, position)
    x = (model.wte.weight.data[idx] + model.wpe.weight.data[start:end]).reshape(B * T, c.n_embd)
    if T > 1:  # new position i (absolute start + i) may see keys 0 .. start + i
        future = xp.triu(xp.ones((T, end), dtype=bool), k=start + 1)
        mask = xp.where(future, -xp.inf, 0.0).astype(x.dtype)
    for layer, weights in enumerate(cache.layers):
        qkv = _linear(_normalize(x, weights.eps_1, cache.average, xp), weights.attn_weight, weights.attn_bias)
        # (B*T, 3C) -> (3, B, n_head, T, head_size): queries, keys, values per head
        q, k, v = qkv.reshape(B, T, 3, n_head, head_size).transpose(2, 0, 3, 1, 4)
        keys_t, values = cache.keys_t[layer], cache.values[layer]
        xp.multiply(k.swapaxes(-1, -2), cache.scale, out=keys_t[..., start:end])
        values[:, :, start:end] = v
        scores = q @ keys_t[..., :end]  # (B, n_head, T, end), scaled
        if T > 1:
            scores += mask
        scores -= scores.max(axis=-1, keepdims=True)
        xp.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        y = (scores @ values[:, :, :end]).transpose(0, 2, 1, 3).reshape(B * T, c.n_embd)
        x += _linear(y, weights.attn_proj_weight, weights.attn_proj_bias)
        hidden = _linear(_normalize(x, weights.eps_2, cache.average, xp), weights.fc_weight, weights.fc_bias)
        x += _linear(_twice_gelu(hidden, xp), weights.mlp_proj_weight, weights.mlp_proj_bias)
    cache.length = end
    last = _normalize(x.reshape(B, T, c.n_embd)[:, -1], model.ln_f.eps, cache.average, xp)
    last *= model.ln_f.weight.data  # not folded into lm_head: that would copy the (vocab, C) embedding
    if model.ln_f.bias is not None:
        last += model.ln_f.bias.data
    return last @ model.lm_head.weight.data.T


def forward_uncached(model: GPT, idx):
    """Logits (B, vocab) of the last position, from a full ``GPT.forward`` over ``idx`` (B, T)."""
    logits, _ = model(idx)
    return logits.data[:, -1]


# ---------------------------------------------------------------- sampling

def sample_next_token(logits, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                      generator=None, uniform=None) -> numpy.ndarray:
    """One token id per row of ``logits`` (B, vocab).

    temperature < 1 sharpens the distribution, > 1 flattens it, 0 takes the
    argmax (greedy). top_k keeps only the k most likely tokens; top_p keeps the
    smallest set of most likely tokens whose probabilities add up to p
    ("nucleus sampling"). Computed on the CPU in float64. The draw uses one
    uniform number in [0, 1) per row: ``uniform`` (B,) if given, else drawn
    from ``generator``.
    """
    logits = backend.to_numpy(logits).astype(numpy.float64)  # a new array: updated in place below
    if temperature == 0:
        return logits.argmax(axis=-1)
    vocab = logits.shape[-1]
    if top_k is not None and top_k < vocab:
        kth_largest = numpy.partition(logits, vocab - top_k, axis=-1)[:, vocab - top_k, None]
        logits[logits < kth_largest] = -numpy.inf
    # softmax(l / t) is proportional to exp((l - max l) / t): exp's argument stays <= 0
    logits -= logits.max(axis=-1, keepdims=True)
    logits *= 1.0 / temperature
    probs = numpy.exp(logits, out=logits)  # unnormalised: the sampling below divides
    if top_p is not None and top_p < 1.0:
        probs /= probs.sum(axis=-1, keepdims=True)
        order = numpy.argsort(-probs, axis=-1, kind="stable")
        sorted_probs = numpy.take_along_axis(probs, order, axis=-1)
        # drop a token if the more likely ones already reach top_p (the most likely one always stays)
        drop_sorted = numpy.cumsum(sorted_probs, axis=-1) - sorted_probs >= top_p
        drop = numpy.zeros_like(drop_sorted)
        numpy.put_along_axis(drop, order, drop_sorted, axis=-1)
        probs = numpy.where(drop, 0.0, probs)
    if uniform is None:
        uniform = (generator if generator is not None else backend.generator("cpu")).random(probs.shape[0])
    # inverse-CDF sampling: the first token whose cumulative weight passes u * (total weight)
    cumulative = numpy.cumsum(probs, axis=-1)
    u = uniform * cumulative[:, -1]
    return numpy.minimum((cumulative <= u[:, None]).sum(axis=-1), vocab - 1)


def _check_sampling_options(max_new_tokens, temperature, top_k, top_p) -> None:
    if not isinstance(max_new_tokens, (int, numpy.integer)) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if temperature < 0 or not math.isfinite(temperature):
        raise ValueError(f"generate: temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and (not isinstance(top_k, (int, numpy.integer)) or top_k < 1):
        raise ValueError(f"generate: top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"generate: top_p must be in (0, 1] or None, got {top_p}")


def _check_decoder(decoder: str) -> None:
    if decoder not in DECODERS:
        raise ValueError(f"generate: decoder must be one of {DECODERS}, got {decoder!r}")


def _prompt_array(model: GPT, idx) -> numpy.ndarray:
    array = backend.to_numpy(idx.data if isinstance(idx, tl.Tensor) else idx if backend.is_cuda(idx) else numpy.asarray(idx))
    if array.dtype.kind not in "iu" and array.size:
        raise TypeError(f"generate: idx must hold integer token ids, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"generate: idx must have shape (batch, time) with at least one token, "
                         f"got shape {array.shape}")
    vocab = model.config.vocab_size
    if array.min() < 0 or array.max() >= vocab:
        raise ValueError(f"generate: token ids must be in [0, {vocab}), got min {array.min()}, max {array.max()}")
    return array.astype(numpy.int64)


# -------------------------------------------------------------- generation

def new_cache(model: GPT, batch_size: int, decoder: str = "modules"):
    """(cache, forward) for ``decoder``: ``forward(model, idx, cache)`` gives the last position's logits."""
    _check_decoder(decoder)
    if decoder == "folded":
        return FoldedKVCache(model, batch_size), forward_folded
    return KVCache(model, batch_size), forward_cached


def next_logits(model: GPT, window: numpy.ndarray, cache=None, forward=forward_cached):
    """Logits (B, vocab) for the token after ``window`` (B, T), the context of this step.

    Without a cache, a forward pass over the whole window. With one, only the
    last position runs, unless the cache does not hold the rest of the window
    (the first step, or the window jumped): then it is refilled with all of it.
    """
    if cache is None:
        return forward_uncached(model, window)
    if cache.length != window.shape[1] - 1:
        cache.reset()
        return forward(model, window, cache)
    return forward(model, window[:, -1:], cache)


def generate(model: GPT, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, stop_tokens=None, *, use_cache: bool = True,
             decoder: str = "modules", generator=None) -> numpy.ndarray:
    """Continue each row of ``idx`` (B, T); returns the ids (B, T + new) as a numpy int64 array.

    ``stop_tokens``: ids that end a row (kept in the output). Generation ends
    when every row has stopped; a row that stopped earlier is padded with its
    stop token. ``use_cache=False`` recomputes the whole context every step;
    ``decoder`` picks the cached path ("modules" or the fast "folded", see the
    module docstring). ``generator``: a numpy Generator (default:
    tinygrad_lite's, seeded by ``tl.manual_seed``); sampling takes
    max_new_tokens x B uniform numbers from it up front (none when greedy).
    The model runs in eval mode (no dropout) and without autograd.
    """
    _check_sampling_options(max_new_tokens, temperature, top_k, top_p)
    _check_decoder(decoder)
    prompt = _prompt_array(model, idx)
    batch, length = prompt.shape
    cache, forward = new_cache(model, batch, decoder) if use_cache else (None, None)
    sequence = numpy.empty((batch, length + max_new_tokens), dtype=numpy.int64)
    sequence[:, :length] = prompt
    stop = numpy.asarray(sorted(set(stop_tokens or ())), dtype=numpy.int64)
    finished = numpy.zeros(batch, dtype=bool)
    block_size = model.config.block_size
    start = initial_window_start(length, block_size)
    # every step's uniform numbers drawn at once: the same numbers as one draw per step, one call fewer
    rng = generator if generator is not None else backend.generator("cpu")
    uniforms = rng.random((max_new_tokens, batch)) if temperature > 0 else [None] * max_new_tokens
    with evaluating(model):
        for step in range(max_new_tokens):
            start = next_window_start(start, length, block_size)
            logits = next_logits(model, sequence[:, start:length], cache, forward)
            next_tokens = sample_next_token(logits, temperature, top_k, top_p, uniform=uniforms[step])
            if stop.size:  # rows that already stopped repeat their stop token
                next_tokens = numpy.where(finished, sequence[:, length - 1], next_tokens)
                finished |= numpy.isin(next_tokens, stop)
            sequence[:, length] = next_tokens
            length += 1
            if stop.size and finished.all():
                break
    return sequence[:, :length]


def beam_search(model: GPT, idx, max_new_tokens: int, num_beams: int, *, decoder: str = "modules") -> numpy.ndarray:
    """The continuation with the highest total log-probability among ``num_beams`` kept at each step.

    Each step extends every beam by every token, scores each candidate by the
    sum of its tokens' log-probabilities, and keeps the ``num_beams`` best.
    Greedy decoding is ``num_beams=1``. Returns (B, T + max_new_tokens) ids,
    the best beam of each row. ``decoder``: as in ``generate``.
    """
    _check_sampling_options(max_new_tokens, 1.0, None, None)
    if not isinstance(num_beams, (int, numpy.integer)) or num_beams < 1:
        raise ValueError(f"beam_search: num_beams must be a positive integer, got {num_beams!r}")
    _check_decoder(decoder)
    prompts = _prompt_array(model, idx)
    with evaluating(model):
        return numpy.stack([_beam_search_one(model, row, max_new_tokens, num_beams, decoder) for row in prompts])


def _beam_search_one(model: GPT, prompt: numpy.ndarray, max_new_tokens: int, num_beams: int,
                     decoder: str) -> numpy.ndarray:
    block_size = model.config.block_size
    beams = numpy.repeat(prompt[None, :], num_beams, axis=0)  # (num_beams, T)
    # All beams start identical: only the first may be extended at step one.
    scores = numpy.full(num_beams, -numpy.inf)
    scores[0] = 0.0
    start = initial_window_start(beams.shape[1], block_size)
    cache, forward = new_cache(model, num_beams, decoder)
    for _ in range(max_new_tokens):
        start = next_window_start(start, beams.shape[1], block_size)
        logits = backend.to_numpy(next_logits(model, beams[:, start:], cache, forward)).astype(numpy.float64)
        log_probs = logits - logits.max(axis=-1, keepdims=True)
        log_probs -= numpy.log(numpy.exp(log_probs).sum(axis=-1, keepdims=True))
        candidates = (scores[:, None] + log_probs).reshape(-1)  # (num_beams * vocab,)
        best = numpy.argsort(-candidates, kind="stable")[:num_beams]
        parents, tokens = numpy.divmod(best, log_probs.shape[-1])
        scores = candidates[best]
        beams = numpy.concatenate([beams[parents], tokens[:, None]], axis=1)
        cache.reorder(parents)
    return beams[int(numpy.argmax(scores))]

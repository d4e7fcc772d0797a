# %% [markdown]
# # Lesson 8: attention from scratch
#
# Lesson 7 turned text into a sequence of token vectors. Until now each position was processed on
# its own; *attention* is how positions talk to each other. Every token asks a question (its
# *query*), every token advertises what it holds (its *key*), and the answer a token gets is a
# weighted average of the others' *values*, weighted by how well each key matches its query:
#
#     attention(Q, K, V) = softmax(Q Kᵀ / √d) V
#
# We build it up piece by piece: dot products, the 1/√d scale and why it is there, the causal
# mask, one head, several heads; check it against the engine's fused
# `F.scaled_dot_product_attention`, forward and backward; and look at what the heads of a small
# GPT trained on tiny Shakespeare attend to.
#
# `--checkpoint DIR` uses a model trained with `python examples/train_shakespeare.py` (its
# `--out-dir`, default `out-shakespeare`, when that exists); otherwise the lesson trains a small
# one itself (about a minute).

# %%
import math
import os
import time
from pathlib import Path

# The matrices here are small: one BLAS thread is faster than two that spin against the engine's
# own threads (this must be set before numpy loads; in a notebook, set it before starting Jupyter).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from _common import lesson_args, pyplot, report, save_figure, shakespeare_path  # noqa: E402

import tinygrad_lite as torch  # noqa: E402
import tinygrad_lite.nn as nn  # noqa: E402
from tinygrad_lite.nn import functional as F  # noqa: E402

DEFAULT_CHECKPOINT = "out-shakespeare"  # examples/train_shakespeare.py's --out-dir
args = lesson_args("lesson 8: attention from scratch", checkpoint=DEFAULT_CHECKPOINT)
plt = pyplot()
generator = torch.Generator().manual_seed(1337)

# %% [markdown]
# ## A weighted average, weighted by dot products
#
# Take 4 tokens with 2-d keys and values, and one token's query. The query is compared with every
# key by a dot product; a large one means "this token is relevant to me". Softmax turns the scores
# into weights that are positive and sum to 1, and the output is the weighted sum of the values.

# %%
keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
values = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-4.0, 0.0]])
query = torch.tensor([2.0, 1.0])
scores = keys @ query                      # (4,): one dot product per key
weights = F.softmax(scores, dim=0)
print("scores ", scores.numpy(), "\nweights", weights.numpy().round(3), "\noutput ", (weights @ values).numpy())

# %% [markdown]
# ## Why divide by √d
#
# With queries and keys of d numbers, each roughly N(0, 1), the score q·k = Σᵢ qᵢkᵢ is a sum of d
# products of variance 1, so its variance is d and its spread √d. At d = 64 (GPT-2's head size)
# raw scores span tens of units, and softmax of such numbers is nearly one-hot: each token
# attends to a single other, and the gradient through a saturated softmax (pᵢ(δᵢⱼ - pⱼ)) is almost
# zero, so it learns slowly. Dividing by √d brings the variance back to 1 at every width.

# %%
head_size = 64
dims = [4, 16, 64, 256, 1024]


def random_scores(d: int) -> torch.Tensor:
    """Unscaled scores q kᵀ of random N(0, 1) queries and keys: 8 sequences of 64 tokens."""
    q = torch.randn((8, 64, d), generator=generator)
    k = torch.randn((8, 64, d), generator=generator)
    return q @ k.transpose(-2, -1)                     # (8, 64, 64)


def peakiness(s: torch.Tensor) -> float:
    """The average largest softmax weight of a row: 1/64 is uniform, 1.0 one-hot."""
    return F.softmax(s, dim=-1).amax(dim=-1).mean().item()


rows = []
for d in dims:
    unscaled = random_scores(d)
    scaled = unscaled / math.sqrt(d)
    rows.append((d, unscaled.std().item(), scaled.std().item(), peakiness(unscaled), peakiness(scaled)))
    print(f"d={d:5d}  std unscaled {rows[-1][1]:7.3f}  scaled {rows[-1][2]:.3f}   "
          f"largest softmax weight: unscaled {rows[-1][3]:.3f}  scaled {rows[-1][4]:.3f}")
d, unscaled_std, scaled_std, peak_unscaled, peak_scaled = rows[dims.index(head_size)]
unscaled_std_ratio = unscaled_std / scaled_std

# %%
if plt is not None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.plot(dims, [r[1] for r in rows], "o-", label="q·k")
    left.plot(dims, [r[2] for r in rows], "o-", label="q·k / √d")
    left.plot(dims, np.sqrt(dims), "k:", label="√d")
    left.set(xscale="log", yscale="log", xlabel="d", ylabel="std of the scores", title="score spread")
    left.legend()
    row = random_scores(head_size)[0, 0]
    right.bar(np.arange(64) - 0.2, F.softmax(row, dim=-1).numpy(), width=0.4, label="unscaled")
    right.bar(np.arange(64) + 0.2, F.softmax(row / math.sqrt(head_size), dim=-1).numpy(), width=0.4,
              label="scaled")
    right.set(xlabel="key", ylabel="softmax weight", title=f"one query's weights, d={head_size}")
    right.legend()
    save_figure(figure, "attention_scaling.png", args)

# %% [markdown]
# ## The causal mask
#
# A language model predicts the next token, so token t may only look at tokens 0..t: letting it
# see the future would give away the answer. Before the softmax, set the scores of later
# positions to -∞; their weights become exactly 0. With all scores equal, the weights are then a
# plain average of the past (the lower-triangular matrix below); with learned scores each token
# picks its own mix.

# %%
T = 5
future = ~np.tril(np.ones((T, T), dtype=bool))  # True above the diagonal: the keys a query may not see
print(F.softmax(torch.zeros((T, T)).masked_fill(future, -math.inf), dim=-1).numpy().round(2))

# %% [markdown]
# ## Attention, written out
#
# Softmax by hand: subtract each row's largest score first (it changes nothing mathematically,
# since softmax(s - c) = softmax(s), but exp() of a large score would overflow), exponentiate,
# normalize. The inputs are (..., T, d): any leading dimensions (batch, heads) ride along.

# %%
def softmax_by_hand(scores: torch.Tensor) -> torch.Tensor:
    shifted = scores - scores.amax(dim=-1, keepdim=True).detach()  # a constant per row: no gradient needed
    e = shifted.exp()
    return e / e.sum(dim=-1, keepdim=True)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True):
    """(softmax(q kᵀ / √d) v, the weights) for q, k, v of shape (..., T, d)."""
    T, d = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)             # (..., T, T)
    if causal:
        scores = scores.masked_fill(~np.tril(np.ones((T, T), dtype=bool)), -math.inf)
    weights = softmax_by_hand(scores)
    return weights @ v, weights                                 # (..., T, d), (..., T, T)


# %% [markdown]
# ## One head, then several
#
# In a transformer the queries, keys and values are learned linear maps of the token vectors x:
# q = x W_q, k = x W_k, v = x W_v, with W of shape (C, head_size). One head has one notion of
# relevance. *Multi-head* attention runs several smaller heads side by side (n_head heads of
# C / n_head each, the same cost as one big head), so one head can track the previous character
# while another tracks, say, the start of the word. One Linear makes q, k and v for all heads at
# once (C → 3C, GPT-2's `c_attn`); we cut C into heads, attend per head, lay the heads side by
# side again and mix them with one more Linear (`c_proj`).

# %%
class Head(nn.Module):
    def __init__(self, n_embd: int, head_size: int):
        super().__init__()
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, T, C) -> (B, T, head_size)
        return attention(self.query(x), self.key(x), self.value(x))[0]


class MultiHeadAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)                      # 3 x (B, T, C)
        # (B, T, C) -> (B, T, n_head, head_size) -> (B, n_head, T, head_size): heads become a batch dim
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y, _ = attention(q, k, v)                                     # (B, n_head, T, head_size)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))        # heads side by side, then mixed


x = torch.randn((4, 8, 32), generator=generator)
print("one head:", tuple(Head(32, 16)(x).shape), "  four heads:", tuple(MultiHeadAttention(32, 4)(x).shape))

# %% [markdown]
# ## Checking it against the engine
#
# `F.scaled_dot_product_attention` is the engine's attention as one fused op with a hand-derived
# backward (`tinygrad_lite/fused.py`), PyTorch's signature. Ours is built from primitive ops
# (matmul, masked_fill, exp, sum, division) and autograd differentiates it op by op. Forward
# values and the gradients of q, k and v must agree to float32 rounding. Then our
# `MultiHeadAttention`, given the weights of the GPT's own `CausalSelfAttention`, must compute
# what it computes.

# %%
q, k, v = (torch.randn((2, 4, 32, 16), generator=generator, requires_grad=True) for _ in range(3))
upstream = torch.randn((2, 4, 32, 16), generator=generator)  # a made-up gradient from above
mine, _ = attention(q, k, v)
(mine * upstream).sum().backward()
my_grads = [t.grad.numpy() for t in (q, k, v)]
for t in (q, k, v):
    t.grad = None
engine = F.scaled_dot_product_attention(q, k, v, is_causal=True)
(engine * upstream).sum().backward()
sdpa_max_diff = float(np.abs(mine.numpy() - engine.numpy()).max())
grad_max_diff = max(float(np.abs(mine_g - t.grad.numpy()).max()) for mine_g, t in zip(my_grads, (q, k, v)))
print(f"forward max |ours - engine| = {sdpa_max_diff:.2e}; gradients of q, k, v: {grad_max_diff:.2e}")

# %%
from gpt.model import GPT, GPTConfig, CausalSelfAttention, evaluating  # noqa: E402

gpt_attention = CausalSelfAttention(GPTConfig(vocab_size=65, block_size=32, n_layer=1, n_head=4, n_embd=32))
ours = MultiHeadAttention(32, 4)
ours.load_state_dict(gpt_attention.state_dict())  # the same parameter names: c_attn, c_proj
x = torch.randn((2, 32, 32), generator=generator)
model_attn_max_diff = float(np.abs(ours(x).numpy() - gpt_attention(x).numpy()).max())
print(f"our MultiHeadAttention vs gpt.model.CausalSelfAttention: max diff {model_attn_max_diff:.2e}")

# %% [markdown]
# ## What a trained model attends to
#
# A character-level GPT on tiny Shakespeare: 2 layers of 4 heads, 64-d, a context of 64 characters,
# trained here for 600 steps (or the model of `--checkpoint`). We run it on a line of Romeo's and
# recompute each layer's attention weights with our `attention`, from the model's own q and k.
# Row t of a map is where character t looks; everything above the diagonal is masked.

# %%
from gpt.data import CharTokenizer, TokenData  # noqa: E402
from gpt.sample import load_for_sampling  # noqa: E402


def train_small_gpt(steps: int):
    text = shakespeare_path(args).read_text(encoding="utf-8")
    tokenizer = CharTokenizer.from_text(text)
    ids = np.array(tokenizer.encode(text), dtype=np.uint16)
    data = TokenData(ids[:int(0.9 * len(ids))], ids[int(0.9 * len(ids)):])
    torch.manual_seed(1337)
    model = GPT(GPTConfig(tokenizer.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64))
    optimizer = model.configure_optimizer(lr=3e-3, weight_decay=0.1)
    rng = np.random.default_rng(1337)
    losses = []
    for _ in range(steps):
        xb, yb = data.get_batch("train", 32, 64, rng)
        _, loss = model(xb, yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with evaluating(model):
        val_loss = np.mean([model(*data.get_batch("val", 32, 64, rng))[1].item() for _ in range(10)])
    return model, tokenizer, losses, float(val_loss)


checkpoint_dir = args.checkpoint if args.checkpoint is not None else Path(DEFAULT_CHECKPOINT)
checkpoint_names = [name for name in ("best", "last") if (checkpoint_dir / f"{name}.json").is_file()]
if args.checkpoint is not None and not checkpoint_names:
    raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no best.json or last.json there "
                            "(the --out-dir of examples/train_shakespeare.py)")
started = time.perf_counter()
if checkpoint_names:
    model, tokenizer = load_for_sampling(checkpoint_dir, checkpoint_names[0])
    losses, val_loss, steps = [], float("nan"), 0
    print(f"loaded {checkpoint_dir / checkpoint_names[0]}.json")
else:
    steps = 5 if args.quick else 600
    model, tokenizer, losses, val_loss = train_small_gpt(steps)
    print(f"trained {steps} steps in {time.perf_counter() - started:.0f} s: "
          f"train loss {losses[0]:.3f} -> {losses[-1]:.3f}, val loss {val_loss:.3f}")

# %%
def attention_maps(model, ids: np.ndarray) -> list[np.ndarray]:
    """Each layer's attention weights (n_head, T, T) for one sequence ``ids`` (1, T)."""
    B, T = ids.shape
    n_head, C = model.config.n_head, model.config.n_embd
    maps = []
    with evaluating(model):
        x = model.wte(ids) + model.wpe(np.arange(T))
        for block in model.h:
            q, k, v = block.attn.c_attn(block.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
            maps.append(attention(q, k, v)[1].numpy()[0])
            x = block(x)
    return maps


line = "ROMEO:\nBut, soft! what light through yonder window breaks?"
ids = np.array([tokenizer.encode(line)[-model.config.block_size:]], dtype=np.int64)
labels = [tokenizer.decode([i]).replace("\n", "\\n") for i in ids[0]]
maps = attention_maps(model, ids)
# How much weight each head puts on the token just before: a "previous token" head is common.
previous_token = [[float(np.mean(np.diagonal(head, offset=-1))) for head in layer] for layer in maps]
previous_token_weight = max(max(layer) for layer in previous_token)
print("weight on the previous token, per layer and head:", np.round(previous_token, 2).tolist())

# %%
if plt is not None:
    n_layer, n_head = len(maps), maps[0].shape[0]
    figure, grid = plt.subplots(n_layer, n_head, figsize=(5 * n_head, 5 * n_layer), squeeze=False,
                                sharex=True, sharey=True)
    for layer in range(n_layer):
        for head in range(n_head):
            grid[layer][head].imshow(maps[layer][head], cmap="viridis", vmin=0, vmax=1)
            grid[layer][head].set_title(f"layer {layer}, head {head}")
    # Shared axes: the characters are written once per row and column (text is slow to lay out).
    grid[-1][0].set_xticks(range(len(labels)), labels)
    grid[-1][0].set_yticks(range(len(labels)), labels)
    for axes in grid.flat:
        axes.tick_params(labelsize=7)
    for layer in range(n_layer):
        grid[layer][0].set_ylabel("query (looking)")
    for head in range(n_head):
        grid[-1][head].set_xlabel("key (looked at)")
    save_figure(figure, "attention_maps.png", args)
# %% [markdown]
# Look for a few kinds of head. A bright line just below the diagonal is a *previous-token* head:
# each character looks at the one before it (the numbers above measure it). A bright column at
# the start, often at the newline or the first character, is a head with nothing to do parking
# its weight somewhere harmless. Others light up on spaces or on the first letters of the word
# being spelled. Which head does what changes from run to run: nothing in the code assigns the
# roles, the heads find them in training.

# %%
if plt is not None and losses:
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(losses)
    axes.set(xlabel="step", ylabel="training loss", title="the small Shakespeare GPT")
    save_figure(figure, "attention_training.png", args)

# %%
report(sdpa_max_diff=sdpa_max_diff, grad_max_diff=grad_max_diff, unscaled_std_ratio=unscaled_std_ratio,
       head_size=head_size, unscaled_std=unscaled_std, scaled_std=scaled_std, peak_unscaled=peak_unscaled,
       peak_scaled=peak_scaled, model_attn_max_diff=model_attn_max_diff, steps=steps,
       loss_start=losses[0] if losses else float("nan"), loss_end=losses[-1] if losses else float("nan"),
       val_loss=val_loss, previous_token_weight=previous_token_weight)

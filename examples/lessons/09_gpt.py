# %% [markdown]
# # Lesson 9: let's build GPT
#
# A GPT reads a stretch of text and predicts, at every position, the next character. We build
# one on tiny Shakespeare (1.1 million characters of plays) one idea at a time, and train each
# version briefly so we can see what every idea buys in validation loss:
#
# | stage | what it adds |
# |---|---|
# | 1 bigram | a lookup table: the current character alone picks the next one |
# | 2 one head | self-attention: each position gathers information from the positions before it |
# | 3 multi-head | several smaller heads, each free to look for something else |
# | 4 feed-forward | a per-position MLP to think about what attention gathered |
# | 5 residual | stacks of blocks, each adding to a residual stream `x = x + f(x)` |
# | 6 layer norm | each position's vector normalised before each sub-layer |
# | 7 dropout | random zeroing while training, against overfitting |
#
# Then we count parameters by formula, from this baby model up to GPT-3.
#
# **The CPU budget.** Every stage trains with the same recipe: batches of 32 windows of 32
# characters, AdamW at a learning rate of 3·10⁻³, for 1,200 steps (about 1.2 million characters,
# a single pass over the text), embeddings of 64 numbers, 4 heads, 3 blocks. The whole lesson
# takes about 3½ minutes of CPU time (longer on a busy machine). Karpathy's video
# trains the final model far longer on a GPU (5,000 steps of 64 × 256 characters, 384-wide
# embeddings, 6 blocks) and reaches 1.48; in our budget the last stage lands a little under 2.0
# (1.95 in our run).

# %%
import os

# These matrices are small (1,024 x 64): OpenBLAS's threads cost more in hand-offs than they save,
# and on a busy machine they wait on each other (10x slower steps). One thread; set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from _common import lesson_args, load_shakespeare, pyplot, report, save_figure  # noqa: E402

import tinygrad_lite as torch  # noqa: E402
import tinygrad_lite.nn as nn  # noqa: E402
from tinygrad_lite.nn import functional as F  # noqa: E402

args = lesson_args("lesson 9: let's build GPT")
plt = pyplot()
torch.manual_seed(1337)  # the initial weights and the dropout draws: the same every run
text = load_shakespeare(args)
print(f"{len(text):,} characters:\n{text[:200]}")

# %% [markdown]
# ## Characters as numbers
#
# The vocabulary is the set of characters in the text, 65 of them. The first 90% of the text
# is for training, the last 10% for validation.

# %%
chars = sorted(set(text))
vocab_size = len(chars)
stoi = {ch: i for i, ch in enumerate(chars)}


def encode(s: str) -> list[int]:
    return [stoi[c] for c in s]


def decode(ids) -> str:
    return "".join(chars[i] for i in ids)


data = np.array(encode(text), dtype=np.int64)
n = int(0.9 * len(data))
train_data, val_data = data[:n], data[n:]
print(f"vocabulary {vocab_size}: {''.join(chars)!r}")
print(f"encode('hii there') = {encode('hii there')}, decode back: {decode(encode('hii there'))!r}")

# %% [markdown]
# ## Batches of windows
#
# A training example is a window of `block_size` characters x and the same window shifted by one,
# y. One window holds `block_size` examples at once: after x[:t+1] comes y[t]. A batch is
# `batch_size` windows from random places, trained in parallel.

# %%
batch_size = 32     # windows per step
block_size = 32     # the longest context the model sees
n_embd = 64         # the width of every position's vector
n_head = 4
n_layer = 1 if args.quick else 3  # --quick: one block, to keep CI fast
dropout = 0.1       # only the last stage uses it
learning_rate = 3e-3
max_steps = 20 if args.quick else 1200
eval_interval = 10 if args.quick else 100
eval_iters = 1 if args.quick else 10
val_windows = 16 if args.quick else None  # --quick scores only the start of the validation split
rng = np.random.default_rng(1337)


def get_batch(split: str):
    source = train_data if split == "train" else val_data
    starts = rng.integers(0, len(source) - block_size, size=batch_size)
    x = np.stack([source[s:s + block_size] for s in starts])
    y = np.stack([source[s + 1:s + block_size + 1] for s in starts])
    return torch.tensor(x), torch.tensor(y)  # (B, T) int64 each


xb, yb = get_batch("train")
for t in range(4):
    print(f"after {decode(xb[0, :t + 1].tolist())!r} comes {decode([yb[0, t].item()])!r}")

# %% [markdown]
# ## What every stage shares
#
# Each model maps token ids `idx` (B, T) to `logits` (B, T, vocab): a score for every possible
# next character at every position. The loss is the cross-entropy of those scores against the
# real next characters. At the start, with every character equally likely, it is
# −ln(1/65) = 4.17. `train_stage` runs the same recipe for each model and records the estimated
# train and val losses every `eval_interval` steps; `val_loss_of` scores the whole validation
# split, cut into windows, once training is done.

# %%
class LanguageModel(nn.Module):
    """The frame of every stage: ``logits(idx)`` is what each stage writes, the loss and sampling are shared."""

    def forward(self, idx, targets=None):
        logits = self.logits(idx)                                    # (B, T, vocab)
        if targets is None:
            return logits, None
        B, T, V = logits.shape
        return logits, F.cross_entropy(logits.view(B * T, V), targets.view(B * T))

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, generator):
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -block_size:])                   # at most block_size of context
            probs = F.softmax(logits[:, -1, :], dim=-1)              # (B, vocab) at the last position
            idx_next = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat([idx, idx_next], dim=1)
        return idx


@torch.no_grad()
def estimate_loss(model) -> dict[str, float]:
    model.eval()
    losses = {split: float(np.mean([model(*get_batch(split))[1].item() for _ in range(eval_iters)]))
              for split in ("train", "val")}
    model.train()
    return losses


@torch.no_grad()
def val_loss_of(model) -> float:
    """The mean loss over the whole validation split, as consecutive windows of block_size."""
    model.eval()
    windows = val_windows or (len(val_data) - 1) // block_size
    x = val_data[:windows * block_size].reshape(windows, block_size)
    y = val_data[1:windows * block_size + 1].reshape(windows, block_size)
    total = sum(model(torch.tensor(x[i:i + 256]), torch.tensor(y[i:i + 256]))[1].item() * len(x[i:i + 256])
                for i in range(0, windows, 256))
    model.train()
    return total / windows


stages = {}  # name -> {"steps", "val", "val_loss", "params", "seconds"}


def train_stage(name: str, model) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    params = sum(p.numel() for p in model.parameters())
    record = {"steps": [], "train": [], "val": [], "params": params}
    start = time.perf_counter()
    for step in range(max_steps + 1):
        if step % eval_interval == 0:
            losses = estimate_loss(model)
            record["steps"].append(step)
            record["train"].append(losses["train"])
            record["val"].append(losses["val"])
        if step == max_steps:
            break
        _, loss = model(*get_batch("train"))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    record["seconds"] = time.perf_counter() - start
    record["val_loss"] = val_loss_of(model)
    stages[name] = record
    print(f"{name}: {params:,} parameters, {max_steps} steps in {record['seconds']:.1f} s, "
          f"train {record['train'][-1]:.4f}, val {record['val_loss']:.4f}")
    return record["val_loss"]

# %% [markdown]
# ## Stage 1: the bigram model
#
# The model of lesson 2, on Shakespeare: row `idx` of a 65 × 65 table holds the scores of
# the next character. It never looks further back than one character.

# %%
class Bigram(LanguageModel):
    def __init__(self):
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab_size, vocab_size)

    def logits(self, idx):
        return self.token_embedding_table(idx)                       # (B, T, vocab)


bigram = Bigram()
initial_loss = bigram(xb, yb)[1].item()
print(f"initial loss {initial_loss:.4f} (uniform: {math.log(vocab_size):.4f})")
train_stage("bigram", bigram)

# %% [markdown]
# ## The mathematical trick: averaging the past with a matrix product
#
# Position t may use positions 0..t, never the future (it has to predict it). The simplest way
# to gather the past is its average, and a matrix product does that for every position at once:
# with `wei` lower-triangular and each row summing to 1, `wei @ x` holds at row t the mean of
# x[0..t]. Writing `wei` as softmax of a matrix whose future entries are −∞ gives the same
# matrix, and leaves a door open: the entries need not be equal. Self-attention computes them
# from the data.

# %%
T = 4
x = torch.randn(T, 2, generator=torch.Generator().manual_seed(42))
tril = torch.tril(torch.ones(T, T))
wei = tril / tril.sum(dim=1, keepdim=True)
wei_softmax = F.softmax(torch.zeros(T, T).masked_fill(tril == 0, float("-inf")), dim=-1)
print(wei)
print("the running means:", torch.allclose(wei @ x, torch.stack([x[:t + 1].mean(dim=0) for t in range(T)])))
print("softmax with -inf above the diagonal is the same matrix:", torch.allclose(wei, wei_softmax))

# %% [markdown]
# ## Stage 2: one head of self-attention
#
# Every position emits three vectors from its own x: a query q ("what am I looking for"), a key
# k ("what do I hold") and a value v ("what I pass on"). Position t attends to position s by the
# affinity q_t · k_s; softmax over s ≤ t turns the affinities into weights:
#
# $$\mathrm{head}(x) = \mathrm{softmax}\!\left(\frac{q k^\top}{\sqrt{d}} + \text{mask}\right) v$$
#
# The 1/√d (d the head size) keeps the affinities of unit variance: without it they grow like
# d, and softmax turns nearly one-hot (lesson 8). Attention has no idea of order by itself, so the
# input now adds a learned *position* embedding to the token embedding.

# %%
class Head(nn.Module):
    """One head of causal self-attention."""

    def __init__(self, head_size: int, dropout: float = 0.0):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)))
        self.dropout = nn.Dropout(dropout)  # used in stage 7 only

    def forward(self, x):
        B, T, C = x.shape
        k, q, v = self.key(x), self.query(x), self.value(x)          # (B, T, head_size) each
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5          # (B, T, T) affinities
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))  # no looking ahead
        wei = self.dropout(F.softmax(wei, dim=-1))                   # each row sums to 1
        return wei @ v                                               # (B, T, head_size)


class OneHead(LanguageModel):
    def __init__(self):
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.sa_head = Head(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def embed(self, idx):
        B, T = idx.shape
        return self.token_embedding_table(idx) + self.position_embedding_table(torch.arange(T))  # (B, T, C)

    def logits(self, idx):
        return self.lm_head(self.sa_head(self.embed(idx)))


train_stage("one head", OneHead())

# %% [markdown]
# ## Stage 3: multi-head attention
#
# Four heads of size 16 instead of one of size 64: the same width once their outputs are laid
# side by side, but four separate attention patterns. One head can follow the vowels while
# another follows the start of the word. A last Linear (`proj`) mixes what the heads found.

# %%
class MultiHeadAttention(nn.Module):
    def __init__(self, num_heads: int, head_size: int, dropout: float = 0.0):
        super().__init__()
        self.heads = nn.ModuleList([Head(head_size, dropout) for _ in range(num_heads)])
        self.proj = nn.Linear(num_heads * head_size, n_embd)

    def forward(self, x):
        return self.proj(torch.cat([h(x) for h in self.heads], dim=-1))  # (B, T, C)


class MultiHead(OneHead):
    def __init__(self):
        super().__init__()
        self.sa_head = MultiHeadAttention(n_head, n_embd // n_head)


train_stage("multi-head", MultiHead())

# %% [markdown]
# ## Stage 4: feed-forward
#
# Attention is communication: the positions exchange information. Then each position needs to
# compute with what it received, by itself: a small MLP applied to every position alone,
# widening to 4 · n_embd with a ReLU and narrowing back.

# %%
class FeedForward(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.ReLU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x):
        return self.net(x)                                           # (B, T, C), per position


class AttentionThenMLP(OneHead):
    def __init__(self):
        super().__init__()
        self.sa_head = MultiHeadAttention(n_head, n_embd // n_head)
        self.ffwd = FeedForward(n_embd)

    def logits(self, idx):
        return self.lm_head(self.ffwd(self.sa_head(self.embed(idx))))


train_stage("feed-forward", AttentionThenMLP())

# %% [markdown]
# ## Stage 5: blocks with residual connections
#
# A Transformer repeats communication-then-computation in blocks. Stacked plainly, deep
# networks train badly: the gradient has to pass through every layer in turn. A
# residual connection adds each sub-layer's output to its input instead of replacing it,
#
# $$x \leftarrow x + \mathrm{attention}(x), \qquad x \leftarrow x + \mathrm{mlp}(x)$$
#
# so there is a straight path, the *residual stream*, from the loss back to the embeddings:
# the gradient of a sum flows to both of its terms unchanged. The sub-layers start small and
# add their corrections to it as they learn.

# %%
class ResidualBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.sa = MultiHeadAttention(n_head, n_embd // n_head)
        self.ffwd = FeedForward(n_embd)

    def forward(self, x):
        x = x + self.sa(x)
        return x + self.ffwd(x)


class Residual(OneHead):
    def __init__(self):
        super().__init__()
        del self.sa_head
        self.blocks = nn.Sequential(*[ResidualBlock(n_embd, n_head) for _ in range(n_layer)])

    def logits(self, idx):
        return self.lm_head(self.blocks(self.embed(idx)))


train_stage("residual", Residual())

# %% [markdown]
# ## Stage 6: layer norm
#
# Layer norm rescales each position's vector to mean 0 and variance 1 over its n_embd numbers,
# then applies a learned gain γ and bias β:
#
# $$\mathrm{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta$$
#
# Unlike lesson 4's batch norm it needs no batch statistics, so training and generation compute
# the same thing. As in GPT-2 it comes *before* each sub-layer (pre-norm), inside the branch,
# so the residual stream itself stays untouched; one more layer norm comes before `lm_head`.

# %%
class LayerNormBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.sa = MultiHeadAttention(n_head, n_embd // n_head)
        self.ffwd = FeedForward(n_embd)
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))
        return x + self.ffwd(self.ln2(x))


class WithLayerNorm(Residual):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(*[LayerNormBlock(n_embd, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)

    def logits(self, idx):
        return self.lm_head(self.ln_f(self.blocks(self.embed(idx))))


train_stage("layer norm", WithLayerNorm())

# %% [markdown]
# ## Stage 7: dropout
#
# Dropout (Srivastava et al. 2014) zeroes each number with probability p while training and
# scales the rest by 1/(1 − p), so the expected value is unchanged; in eval mode it does
# nothing. No unit can rely on one particular other unit, which works like training many thinned
# networks at once. We drop attention weights and the output of each residual branch. It is a
# regulariser: it pays off when a model trains long enough to overfit. In one pass over the data
# ours does not overfit yet, so expect it to cost a little here, not to help.

# %%
class DropoutBlock(LayerNormBlock):
    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__(n_embd, n_head)
        self.sa = MultiHeadAttention(n_head, n_embd // n_head, dropout)  # dropout on the attention weights
        self.drop = nn.Dropout(dropout)                                   # and on each branch's output

    def forward(self, x):
        x = x + self.drop(self.sa(self.ln1(x)))
        return x + self.drop(self.ffwd(self.ln2(x)))


class WithDropout(WithLayerNorm):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(*[DropoutBlock(n_embd, n_head, dropout) for _ in range(n_layer)])


model = WithDropout()
val_loss = train_stage("dropout", model)

# %% [markdown]
# ## What each idea bought
#
# Attention is the big step: context of 32 characters instead of 1. Each later idea adds less,
# and dropout, as expected in a single pass, costs a little. The bigram has not finished learning
# at this rate (its curve still falls; it levels off near 2.46), but it cannot get far below that:
# one character of context is all it has.

# %%
print(f"{'stage':<14}{'parameters':>12}{'train':>9}{'val':>9}{'seconds':>9}")
for name, record in stages.items():
    print(f"{name:<14}{record['params']:>12,}{record['train'][-1]:>9.4f}{record['val_loss']:>9.4f}"
          f"{record['seconds']:>9.1f}")

if plt is not None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    for name, record in stages.items():
        left.plot(record["steps"], record["val"], label=name)
    left.set(xlabel="step", ylabel="val loss (estimated)", title="every stage, the same recipe", ylim=(1.8, 4.8))
    left.legend()
    names = list(stages)
    finals = [stages[name]["val_loss"] for name in names]
    right.bar_label(right.bar(names, finals, color="tab:blue"), fmt="%.3f")
    right.set(ylabel="val loss (whole split)", title="after training", ylim=(1.5, max(finals) + 0.2))
    right.tick_params(axis="x", rotation=30)
    save_figure(figure, "gpt_stages.png", args)

# %% [markdown]
# Samples from the last stage. The spelling is mostly right, the words mostly English-like, and
# the layout of a play (names, colons, lines) is there; the sense is not.

# %%
generator = torch.Generator().manual_seed(42)
model.eval()
print(decode(model.generate(torch.zeros((1, 1), dtype=torch.long), 300, generator)[0].tolist()))
model.train()

# %% [markdown]
# ## How big is a GPT? Counting parameters by formula
#
# Our stages are Karpathy's lecture model. GPT-2 (the library's `gpt.model.GPT`) differs in
# small ways: one Linear makes q, k and v for all heads at once (with biases), the MLP uses GELU,
# and the output layer reuses the token embedding matrix (*weight tying*). With C = n_embd,
# V = vocab size, T = block size and L layers:
#
# | part | parameters |
# |---|---|
# | token embedding (and, tied, the output layer) | V·C |
# | position embedding | T·C |
# | attention per block: q, k, v (3C² + 3C), output projection (C² + C) | 4C² + 4C |
# | MLP per block: C → 4C (4C² + 4C), 4C → C (4C² + C) | 8C² + 5C |
# | two layer norms per block, γ and β | 4C |
# | final layer norm | 2C |
#
# $$N = VC + TC + L\,(12C^2 + 13C) + 2C$$
#
# The 12C² term dominates as models grow: the parameters live in the blocks' matrices.

# %%
from gpt.model import GPT, GPTConfig  # noqa: E402 -- the library model, once the lesson has built its own


def gpt2_params(vocab_size: int, block_size: int, n_layer: int, n_embd: int) -> int:
    C = n_embd
    embeddings = vocab_size * C + block_size * C
    per_block = (4 * C * C + 4 * C) + (8 * C * C + 5 * C) + 4 * C
    return embeddings + n_layer * per_block + 2 * C


baby = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd))
print(baby.param_table())
baby_formula = gpt2_params(vocab_size, block_size, n_layer, n_embd)
assert baby_formula == baby.num_params(), (baby_formula, baby.num_params())
print(f"formula: {baby_formula:,} = gpt.model.GPT's num_params(): {baby.num_params():,}")

# %% [markdown]
# Our stage-7 model has a few more: q, k and v without biases (3C² per block instead of
# 3C² + 3C), but a separate output layer with its own bias (C·V + V) instead of the tied one.

# %%
C, V = n_embd, vocab_size
lecture_formula = V * C + block_size * C + n_layer * (3 * C * C + (C * C + C) + (8 * C * C + 5 * C) + 4 * C) \
    + 2 * C + (C * V + V)
ours = sum(p.numel() for p in model.parameters())
assert lecture_formula == ours, (lecture_formula, ours)
print(f"stage 7 by formula {lecture_formula:,} = counted {ours:,}")

# %% [markdown]
# The published sizes (GPT-2: Radford et al. 2019, vocabulary 50,257 and 1,024 positions; GPT-3:
# Brown et al. 2020, 2,048 positions and the same vocabulary):

# %%
published = {"GPT-2 124M": (50257, 1024, 12, 768), "GPT-2 1.5B": (50257, 1024, 48, 1600),
             "GPT-3 175B": (50257, 2048, 96, 12288)}
counts = {name: gpt2_params(*sizes) for name, sizes in published.items()}
print(f"{'model':<12}{'layers':>7}{'n_embd':>8}{'parameters':>19}{'in the blocks':>15}")
for name, (V_, T_, L_, C_) in published.items():
    in_blocks = L_ * (12 * C_ * C_ + 13 * C_) / counts[name]
    print(f"{name:<12}{L_:>7}{C_:>8}{counts[name]:>19,}{in_blocks:>15.1%}")
gpt2_124m_params = counts["GPT-2 124M"]
assert gpt2_124m_params == 124_439_808

# %%
stage_val_losses = {f"{name.replace(' ', '_').replace('-', '_')}_val": record["val_loss"]
                    for name, record in stages.items()}  # bigram_val, one_head_val, ...
report(val_loss=val_loss, initial_loss=initial_loss, **stage_val_losses,
       gpt2_124m_params=gpt2_124m_params, gpt2_1558m_params=counts["GPT-2 1.5B"],
       gpt3_175b_params=counts["GPT-3 175B"], steps=max_steps)

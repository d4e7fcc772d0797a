# %% [markdown]
# # Lesson 6: makemore part 5, a hierarchical network (WaveNet)
#
# Lesson 4's MLP reads 3 characters and crushes them into one hidden layer at once. Reading more
# characters that way means one ever wider first layer. WaveNet (van den Oord et al., 2016) fuses
# the context slowly instead: neighbours pairwise, then pairs of pairs, up a tree. With 8
# characters: 8 → 4 → 2 → 1, three layers, each seeing two of the previous layer's outputs.
#
# The layers become PyTorch modules (`nn.Module`), stacked in `nn.Sequential`, with training and
# evaluation modes. The recipe is makemore's: context 8, 24-d embeddings, 128 hidden units per
# level, 76,579 parameters, minibatches of 32, 200,000 steps, learning rate 0.1 then 0.01 for the
# last 50,000, `torch.manual_seed(42)`.

# %%
from _common import char_vocabulary, contexts, lesson_args, load_names, pyplot, report, save_figure, split_names

import tinygrad_lite as torch
import tinygrad_lite.nn as nn
from tinygrad_lite.nn import functional as F

args = lesson_args("lesson 6: makemore part 5 (WaveNet)")
plt = pyplot()
train_words, dev_words, test_words = split_names(load_names(args))
stoi, itos = char_vocabulary(train_words + dev_words + test_words)
vocab_size, block_size = 27, 8

# every (context of 8, next character) pair, built as in lesson 3: (n, 8) and (n,) int64
Xtr, Ytr = (torch.tensor(a) for a in contexts(train_words, stoi, block_size))
Xdev, Ydev = (torch.tensor(a) for a in contexts(dev_words, stoi, block_size))
print(f"train {tuple(Xtr.shape)}, dev {tuple(Xdev.shape)}")
for x, y in zip(Xtr[:8], Ytr[:8]):
    print("".join(itos[ix.item()] for ix in x), "-->", itos[y.item()])

# %% [markdown]
# ## Fusing neighbours: FlattenConsecutive
#
# After the embedding a batch is (B, T, C) = (32, 8, 24). Viewing it as (32, 4, 48) puts each
# pair of neighbouring characters side by side. A Linear layer then works on the last dim only:
# (32, 4, 48) @ (48, 128) is the same Linear applied to each of the 4 pairs at once (matmul
# broadcasts over the leading dims). When one group is left, the middle dim is dropped.

# %%
class FlattenConsecutive(nn.Module):
    """(B, T, C) -> (B, T // n, C * n): n neighbours side by side; (B, C * n) when T == n."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x):
        B, T, C = x.shape
        # reshape, where makemore writes view: our BatchNorm1d below hands back a transposed
        # (B, C, T) memory layout, which torch's view refuses (reshape copies when it must)
        x = x.reshape(B, T // self.n, C * self.n)
        if x.shape[1] == 1:
            x = x.squeeze(1)
        return x


e = torch.randn(4, 8, 24)
print(f"{tuple(e.shape)} -> {tuple(FlattenConsecutive(2)(e).shape)} -> "
      f"{tuple((FlattenConsecutive(2)(e) @ torch.randn(48, 128)).shape)}")

# %% [markdown]
# ## Batch norm over (B, T, C)
#
# Lesson 4's `BatchNorm1d` averages over dim 0. Given (32, 4, 128) it would compute (1, 4, 128)
# statistics: a separate mean and variance for each of the 4 positions, from 32 numbers each, and
# running statistics of the wrong shape. That was a real bug in makemore's first version; the fix
# averages over dims (0, 1), so that every channel gets one mean from all 32 · 4 values.
#
# PyTorch's `nn.BatchNorm1d` takes (N, C) or (N, C, L): channels in dim 1, and the statistics over
# N and L. Our (B, T, C) is that with the last two dims swapped, so the fix is also
# `nn.BatchNorm1d` applied to `x.transpose(1, 2)`. Both ways, written out and checked:

# %%
x = torch.randn(32, 4, 128) * 2 + 3
wrong_mean = x.mean(0, keepdim=True)                           # (1, 4, 128): one mean per position
xmean, xvar = x.mean((0, 1), keepdim=True), x.var((0, 1), keepdim=True, unbiased=False)
by_hand = (x - xmean) / torch.sqrt(xvar + 1e-5)                # (32, 4, 128), one mean per channel
engine_norm = nn.BatchNorm1d(128)
engine = engine_norm(x.transpose(1, 2)).transpose(1, 2)
batchnorm_3d_diff = (by_hand - engine).abs().max().item()
print(f"statistics over dim 0: {tuple(wrong_mean.shape)}; over dims (0, 1): {tuple(xmean.shape)}")
print(f"hand-written over (0, 1) vs nn.BatchNorm1d on x.transpose(1, 2): max difference {batchnorm_3d_diff:.2e}")
print(f"running mean moved towards {xmean.view(-1)[:3].tolist()} -> {engine_norm.running_mean[:3].tolist()}")


class BatchNorm1d(nn.BatchNorm1d):
    """nn.BatchNorm1d for features in the last dim: (B, C), or (B, T, C) normalized over B and T."""

    def forward(self, x):
        if x.ndim == 3:
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        return super().forward(x)


# %% [markdown]
# ## The model
#
# Embedding, then three times: fuse pairs, Linear (no bias: batch norm's β is the bias), batch
# norm, tanh; then a Linear to the 27 logits. makemore initializes each Linear with N(0, 1/fan_in)
# (Kaiming without the gain: batch norm fixes the scale anyway) and the last layer 10× smaller,
# so that the first predictions are nearly uniform.

# %%
torch.manual_seed(42)
n_embd, n_hidden = 24, 128
model = nn.Sequential(
    nn.Embedding(vocab_size, n_embd),
    FlattenConsecutive(2), nn.Linear(n_embd * 2, n_hidden, bias=False), BatchNorm1d(n_hidden), nn.Tanh(),
    FlattenConsecutive(2), nn.Linear(n_hidden * 2, n_hidden, bias=False), BatchNorm1d(n_hidden), nn.Tanh(),
    FlattenConsecutive(2), nn.Linear(n_hidden * 2, n_hidden, bias=False), BatchNorm1d(n_hidden), nn.Tanh(),
    nn.Linear(n_hidden, vocab_size),
)
with torch.no_grad():
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=layer.in_features**-0.5)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    model[-1].weight.mul_(0.1)       # last layer: less confident (in place: it stays a parameter)
parameters = list(model.parameters())
params = sum(p.nelement() for p in parameters)
print(model)
print(f"{params:,} parameters")  # makemore: 76,579

x = Xtr[:4]
for layer in model:
    x = layer(x)
    print(f"{layer.__class__.__name__:>18}: {tuple(x.shape)}")

# %% [markdown]
# ## Training
#
# `model.train()` (the default) makes batch norm use each batch's statistics and update its
# running ones; plain SGD, as in every makemore lesson so far.

# %%
steps = 300 if args.quick else 200_000
decay_at = steps * 3 // 4
model.train()
lossi = []
for i in range(steps):
    ix = torch.randint(0, Xtr.shape[0], (32,))
    logits = model(Xtr[ix])
    loss = F.cross_entropy(logits, Ytr[ix])
    for p in parameters:
        p.grad = None
    loss.backward()
    lr = 0.1 if i < decay_at else 0.01
    for p in parameters:
        p.data += -lr * p.grad.data
    if i % 20_000 == 0 or i == steps - 1:
        print(f"step {i:7d}  minibatch loss {loss.item():.4f}")
    lossi.append(loss.item())

if plt is not None:
    window = 1000 if steps >= 10_000 else 50
    averaged = torch.tensor(lossi[:len(lossi) // window * window]).view(-1, window).mean(1)
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.plot(range(0, len(averaged) * window, window), averaged.numpy())
    axes.set(xlabel="step", ylabel="minibatch loss", title=f"training (mean of every {window} steps)")
    save_figure(figure, "wavenet_training.png", args)

# %% [markdown]
# ## Evaluation mode
#
# `model.eval()` switches every batch norm to its running statistics: the prediction for one
# name no longer depends on which other names share its batch, and a batch of one works.
# We evaluate in chunks to keep the (n, 4, 128) activations small.

# %%
@torch.no_grad()
def split_loss(X, Y, chunk: int = 20_000) -> float:
    total = sum(F.cross_entropy(model(X[i:i + chunk]), Y[i:i + chunk], reduction="sum").item()
                for i in range(0, X.shape[0], chunk))
    return total / X.shape[0]


model.eval()
train_n = 20_000 if args.quick else Xtr.shape[0]  # --quick: the first 20,000 training examples
train_loss, val_loss = split_loss(Xtr[:train_n], Ytr[:train_n]), split_loss(Xdev, Ydev)
print(f"train {train_loss:.4f}  val {val_loss:.4f}  (makemore: train 1.769, val 1.993)")

# %%
with torch.no_grad():
    for _ in range(10):
        out, context = [], [0] * block_size
        while True:
            probs = F.softmax(model(torch.tensor([context])), dim=1)
            ix = torch.multinomial(probs, num_samples=1).item()
            context = context[1:] + [ix]
            if ix == 0:
                break
            out.append(itos[ix])
        print("".join(out))

# %% [markdown]
# ## Where this goes: convolutions
#
# Each Linear here is applied to every group of 2 neighbours in turn: a 1-d convolution with
# kernel size 2 and stride 2, and the stack of them is WaveNet's dilated convolution tree. We feed
# one context of 8 per example, so the work shared between overlapping contexts of the same name
# is done again for each. A convolution would slide the tree along the whole name and compute each
# node once, reusing it for every position that needs it.

# %%
report(train_loss=train_loss, val_loss=val_loss, params=params, steps=steps, batchnorm_3d_diff=batchnorm_3d_diff)

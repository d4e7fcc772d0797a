# %% [markdown]
# # Lesson 2: makemore part 1, the bigram model
#
# makemore makes more of what it is given: trained on 32,033 names, it invents new ones. The
# simplest model looks at one character and predicts the next (a *bigram* model). We build it
# twice: first by counting, then as a one-layer neural network trained by gradient descent,
# and measure both with the same number, the average negative log-likelihood of the data.

# %%
import numpy as np

from _common import lesson_args, load_names, pyplot, report, save_figure

import tinygrad_lite as torch
from tinygrad_lite.nn import functional as F

args = lesson_args("lesson 2: makemore part 1 (bigram)")
plt = pyplot()
words = load_names(args)
print(f"{len(words):,} names, from {min(len(w) for w in words)} to {max(len(w) for w in words)} letters:",
      words[:5])

# %% [markdown]
# ## Counting bigrams
#
# Each name becomes a chain of pairs: `emma` is `.e`, `em`, `mm`, `ma`, `a.`, where `.` marks
# the start and the end. We number the 26 letters 1 to 26 and `.` 0, then count every pair
# in a 27 × 27 table: row = the first character, column = the one that follows.

# %%
chars = sorted(set("".join(words)))
stoi = {ch: i + 1 for i, ch in enumerate(chars)}
stoi["."] = 0
itos = {i: ch for ch, i in stoi.items()}


def bigrams(words: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every (this character, next character) pair of ``words`` as two int64 arrays."""
    xs, ys = [], []
    for w in words:
        chs = ["."] + list(w) + ["."]
        for ch1, ch2 in zip(chs, chs[1:]):
            xs.append(stoi[ch1])
            ys.append(stoi[ch2])
    return np.array(xs, dtype=np.int64), np.array(ys, dtype=np.int64)


xs, ys = bigrams(words)
counts = np.zeros((27, 27), dtype=np.int64)
np.add.at(counts, (xs, ys), 1)  # counts[x, y] += 1 for every pair, repeated pairs included
N = torch.tensor(counts)
print(f"{len(xs):,} bigrams; the most common: {itos[int(N.argmax()) // 27]}{itos[int(N.argmax()) % 27]}")

# %%
if plt is not None:
    figure, axes = plt.subplots(figsize=(14, 14))
    axes.imshow(counts, cmap="Blues")
    for i in range(27):
        for j in range(27):
            axes.text(j, i, itos[i] + itos[j], ha="center", va="bottom", color="gray", fontsize=7)
            axes.text(j, i, str(counts[i, j]), ha="center", va="top", color="gray", fontsize=7)
    axes.axis("off")
    save_figure(figure, "bigram_counts.png", args)

# %% [markdown]
# ## Sampling names
#
# Normalize each row to probabilities, P[i, j] = N[i, j] / Σ_j N[i, j], then walk: start at `.`,
# draw the next character from its row with `torch.multinomial`, and stop at the next `.`.
# A generator of our own makes the draws repeatable (NumPy's generator: not torch's names).

# %%
P = (N + 1).float()                  # +1 smoothing: no pair has probability 0
P = P / P.sum(dim=1, keepdim=True)   # (27, 27), each row sums to 1


def sample_names(P, count: int, seed: int) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    names = []
    for _ in range(count):
        ix, out = 0, []
        while True:
            ix = torch.multinomial(P[ix], num_samples=1, replacement=True, generator=generator).item()
            if ix == 0:
                break
            out.append(itos[ix])
        names.append("".join(out))
    return names


print("sampled from the counts:", sample_names(P, 10, seed=2147483647))

# %% [markdown]
# ## How good is the model? The negative log-likelihood
#
# The likelihood of the data is the product of the probabilities the model gives each pair that
# occurs. Products of many small numbers underflow, so we sum logs instead, negate so that lower
# is better, and average: NLL = -(1/n) Σ log P[x, y]. A model that knows nothing, P = 1/27
# everywhere, scores log(27) = 3.2958; a perfect model would score 0.
#
# Without smoothing every pair in the data has a count of at least 1, so its log is finite; but a
# name with a pair never seen (say `jq`) would get probability 0 and an infinite loss. Adding 1 to
# every count costs a little on the data and avoids that.

# %%
def nll(P, xs: np.ndarray, ys: np.ndarray) -> float:
    return -P[xs, ys].log().mean().item()


P_unsmoothed = N.float() / N.float().sum(dim=1, keepdim=True)
counts_nll, unsmoothed_nll = nll(P, xs, ys), nll(P_unsmoothed, xs, ys)
print(f"NLL over all {len(xs):,} bigrams: {counts_nll:.4f} with +1 smoothing, {unsmoothed_nll:.4f} without "
      f"(uniform: {np.log(27):.4f})")

# %% [markdown]
# ## The same model as a neural network
#
# Encode the current character as a one-hot vector of 27 numbers and multiply by a 27 × 27 weight
# matrix W: the product picks row x of W. Read that row as log-counts ("logits"); exp() makes
# them positive counts and normalizing makes probabilities. That is softmax. The loss is the NLL
# from above, plus a small pull of W towards 0, which plays the part of the smoothing.
#
# No counting this time: gradient descent finds W. At the optimum exp(W) is proportional to the
# counts, so the loss should approach the counting model's.

# %%
X_onehot = F.one_hot(torch.tensor(xs), num_classes=27).float()  # (n, 27)
targets = torch.tensor(ys)
n = len(xs)
generator = torch.Generator().manual_seed(2147483647)
W = torch.randn(27, 27, generator=generator, requires_grad=True)


def forward(W):
    logits = X_onehot @ W                                  # (n, 27) log-counts
    counts = logits.exp()                                  # (n, 27) counts
    probs = counts / counts.sum(dim=1, keepdim=True)       # (n, 27) softmax
    data_nll = -probs[torch.arange(n), targets].log().mean()
    return data_nll, data_nll + 0.01 * (W**2).mean()


steps = 10 if args.quick else 100
losses = []
for step in range(steps):
    data_nll, loss = forward(W)
    W.grad = None
    loss.backward()
    W.data -= 50 * W.grad.data  # a big step size works: the loss is smooth in W
    losses.append(data_nll.item())
    if step % 10 == 0 or step == steps - 1:
        print(f"step {step:3d}  nll {data_nll.item():.4f}")
nn_nll = forward(W)[0].item()
print(f"after {steps} steps: {nn_nll:.4f} (counting: {counts_nll:.4f}); "
      f"F.cross_entropy agrees: {F.cross_entropy(X_onehot @ W, targets).item():.4f}")
print("sampled from the network:", sample_names(F.softmax(W, dim=1).detach(), 5, seed=2147483647))

# %%
if plt is not None:
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(losses, label="neural net")
    axes.axhline(counts_nll, color="gray", linestyle="--", label="counting, +1 smoothing")
    axes.set(xlabel="step", ylabel="NLL", title="gradient descent towards the counts")
    axes.legend()
    save_figure(figure, "bigram_loss.png", args)

# %%
report(counts_nll=counts_nll, unsmoothed_nll=unsmoothed_nll, nn_nll_start=losses[0], nn_nll=nn_nll,
       steps=steps)

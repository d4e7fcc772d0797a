# %% [markdown]
# # Lesson 5: makemore part 4, becoming a backprop ninja
#
# `loss.backward()` does the calculus for us, and that is a leaky abstraction: saturated tanh
# units, dead neurons, a batch-norm layer that couples the examples of a batch, exploding
# gradients are all easier to see when you know what backward computes. So here we write the
# backward pass of lesson 3's MLP, now with a batch-norm layer (lesson 4), by hand: every
# intermediate tensor of the forward pass, one small step at a time, each compared with the
# gradient the engine computes. Then the two big pieces, cross-entropy and batch norm, as one
# formula each, derived on paper. At the end the network trains with no `backward()` at all.
#
# Everything is float64, so a right formula matches the engine to rounding (about 1e-16) and a
# wrong one is off by far more. The parameters start from unusual values (small random biases,
# gains that are not 1) so that a wrong formula cannot hide behind zeros and ones.
#
# The exercises: each cell below that computes gradients holds its solution between
# `# BEGIN SOLUTION` and `# END SOLUTION`, and ends with a check. `make_exercises.py` writes this
# lesson as a notebook with those blocks left for you to fill in.

# %%
import numpy as np

from _common import char_vocabulary, contexts, lesson_args, load_names, pyplot, report, save_figure, split_names
from _exercises import check_close, check_gradients

import tinygrad_lite as torch
from tinygrad_lite.nn import functional as F

args = lesson_args("lesson 5: makemore part 4 (backprop ninja)")
plt = pyplot()
train_words, dev_words, test_words = split_names(load_names(args))
stoi, itos = char_vocabulary(train_words + dev_words + test_words)  # '.' is 0, then a-z
vocab_size, block_size = len(stoi), 3
# every (context of 3 characters, next character) pair, built as in lesson 3
Xtr, Ytr = (torch.tensor(a) for a in contexts(train_words, stoi, block_size))  # (n, 3) and (n,) int64
Xdev, Ydev = (torch.tensor(a) for a in contexts(dev_words, stoi, block_size))
print(f"train {tuple(Xtr.shape)}, dev {tuple(Xdev.shape)}")

# %% [markdown]
# ## The network, and a forward pass in small steps
#
# Lesson 3's MLP with a batch-norm layer between the first linear layer and the tanh:
# 10-d embeddings, 64 hidden units, a batch of n = 32. The forward pass is written out one small
# operation at a time, so that each has a backward we can write in a line or two. Batch norm is
# spelled out too: the batch mean, the deviations, the variance with Bessel's correction
# (divide by n - 1), its inverse square root, the normalized values, then the gain and bias.
# Cross-entropy is spelled out as in lesson 2: subtract each row's max (so exp cannot overflow),
# exp, normalize, log, and the mean negative log-probability of the right characters.

# %%
n_embd, n_hidden, batch_size = 10, 64, 32
n = batch_size  # a short name for the formulas


def init_parameters(n_hidden: int, seed: int = 2147483647) -> list:
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    C = randn(vocab_size, n_embd)
    W1 = randn(n_embd * block_size, n_hidden) * (5 / 3) / (n_embd * block_size) ** 0.5  # Kaiming, tanh
    b1 = randn(n_hidden) * 0.1  # useless before batch norm (its mean is subtracted), here for practice
    W2 = randn(n_hidden, vocab_size) * 0.1
    b2 = randn(vocab_size) * 0.1
    bngain = randn(1, n_hidden) * 0.1 + 1.0
    bnbias = randn(1, n_hidden) * 0.1
    parameters = [C, W1, b1, W2, b2, bngain, bnbias]
    for p in parameters:
        p.requires_grad = True
    return parameters


parameters = init_parameters(n_hidden)
C, W1, b1, W2, b2, bngain, bnbias = parameters
print(f"{sum(p.numel() for p in parameters):,} parameters")
ix = torch.randint(0, Xtr.shape[0], (batch_size,), generator=torch.Generator().manual_seed(42))
Xb, Yb = Xtr[ix], Ytr[ix]

# %%
emb = C[Xb]                                   # (n, 3, 10): the embedding of each context character
embcat = emb.view(emb.shape[0], -1)           # (n, 30): the three side by side
hprebn = embcat @ W1 + b1                     # (n, 64): before batch norm
bnmeani = 1 / n * hprebn.sum(0, keepdim=True)  # (1, 64)
bndiff = hprebn - bnmeani
bndiff2 = bndiff**2
bnvar = 1 / (n - 1) * bndiff2.sum(0, keepdim=True)  # Bessel's correction: n - 1
bnvar_inv = (bnvar + 1e-5) ** -0.5
bnraw = bndiff * bnvar_inv                    # (n, 64): zero mean, unit variance per unit
hpreact = bngain * bnraw + bnbias
h = torch.tanh(hpreact)                       # (n, 64)
logits = h @ W2 + b2                          # (n, 27)
logit_maxes = logits.max(1, keepdim=True).values
norm_logits = logits - logit_maxes
counts = norm_logits.exp()
counts_sum = counts.sum(1, keepdim=True)
counts_sum_inv = counts_sum**-1
probs = counts * counts_sum_inv               # (n, 27): each row sums to 1
logprobs = probs.log()
loss = -logprobs[range(n), Yb].mean()

intermediates = [logprobs, probs, counts, counts_sum, counts_sum_inv, norm_logits, logit_maxes, logits,
                 h, hpreact, bnraw, bnvar_inv, bnvar, bndiff2, bndiff, hprebn, bnmeani, embcat, emb]
for t in intermediates:
    t.retain_grad()  # keep .grad on these non-leaves too, to compare ours with
loss.backward()
print(f"loss {loss.item():.4f}")

# %% [markdown]
# ## Backward by hand, step by step
#
# We walk the forward pass backwards. For each step z = f(x, ...) we know dloss/dz (written
# `dz`) and want dloss/dx = dz · ∂z/∂x. Three rules do almost all the work:
#
# * **Broadcasting forward is summing backward.** If x of shape (n, 1) was stretched to (n, 27),
#   each of its numbers was used 27 times, and the gradients of all uses add up: sum over the
#   broadcast dimension, `keepdim=True`.
# * **Summing forward is broadcasting backward.** z = x.sum(1) passes dz unchanged to every x
#   it summed.
# * **A matmul's backward is a matmul.** For z = x @ W: dx = dz @ Wᵀ and dW = xᵀ @ dz.
#   The shapes leave only one way to write each.
#
# `check_gradients(name=(mine, tensor))` prints makemore's `cmp(name, mine, tensor)` row for
# each pair (exact, approximate, largest difference) and fails, saying which, unless every one is
# within 1e-8 of the engine's `tensor.grad`. Step by step, ours come out bit-exact: the engine's
# backward of each small op is the same arithmetic.
#
# ### Through the loss
#
# loss = -(1/n) Σᵢ logprobs[i, Yᵢ]: only the n picked entries get a gradient, -1/n each.
# log's derivative is 1/x. probs = counts · counts_sum_inv uses counts_sum_inv broadcast over
# each row (so sum over the row), and counts appears twice, here and inside counts_sum
# (so the two gradients add).

# %%
diffs = {}  # the largest difference of each exercise, for the result line
# BEGIN SOLUTION dlogprobs = dprobs = dcounts_sum_inv = dcounts_sum = dcounts = None
dlogprobs = torch.zeros_like(logprobs)
dlogprobs[range(n), Yb] = -1.0 / n
dprobs = (1.0 / probs) * dlogprobs
dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)
dcounts = counts_sum_inv * dprobs
dcounts_sum = -counts_sum**-2 * dcounts_sum_inv
dcounts = dcounts + torch.ones_like(counts) * dcounts_sum
# END SOLUTION
diffs["loss"] = check_gradients(logprobs=(dlogprobs, logprobs), probs=(dprobs, probs),
                                counts_sum_inv=(dcounts_sum_inv, counts_sum_inv),
                                counts_sum=(dcounts_sum, counts_sum), counts=(dcounts, counts))

# %% [markdown]
# ### Through exp and the max
#
# d(eˣ)/dx = eˣ, which is `counts` itself. norm_logits = logits - logit_maxes: logits gets the
# gradient unchanged; logit_maxes was broadcast, so it gets minus the row sum. The max then
# routes its gradient to the one logit of each row that was the largest (a one-hot mask).
# Mathematically that gradient is zero: shifting a row does not change its softmax. It comes
# out as rounding-sized numbers, which is a good check in itself.

# %%
# BEGIN SOLUTION dnorm_logits = dlogit_maxes = dlogits = None
dnorm_logits = counts * dcounts
dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)
dlogits = dnorm_logits + F.one_hot(logits.max(1).indices, num_classes=vocab_size) * dlogit_maxes
# END SOLUTION
diffs["exp and max"] = check_gradients(norm_logits=(dnorm_logits, norm_logits),
                                       logit_maxes=(dlogit_maxes, logit_maxes), logits=(dlogits, logits))

# %% [markdown]
# ### The second linear layer and the tanh
#
# logits = h @ W2 + b2 is a matmul and a broadcast bias (sum over the batch). For h = tanh(x),
# dh/dx = 1 - tanh²(x) = 1 - h², so the forward's output is all the backward needs.

# %%
# BEGIN SOLUTION dh = dW2 = db2 = dhpreact = None
dh = dlogits @ W2.T
dW2 = h.T @ dlogits
db2 = dlogits.sum(0)
dhpreact = (1.0 - h**2) * dh
# END SOLUTION
diffs["linear 2 and tanh"] = check_gradients(h=(dh, h), W2=(dW2, W2), b2=(db2, b2), hpreact=(dhpreact, hpreact))

# %% [markdown]
# ### Batch norm, step by step
#
# hpreact = bngain · bnraw + bnbias: gain and bias were broadcast over the batch (sum over it).
# bnraw = bndiff · bnvar_inv; bnvar_inv = (bnvar + ε)^(-1/2) has the derivative
# -½ (bnvar + ε)^(-3/2); bnvar = 1/(n-1) Σ bndiff2 hands each bndiff2 1/(n-1) of its gradient.

# %%
# BEGIN SOLUTION dbngain = dbnbias = dbnraw = dbnvar_inv = dbnvar = dbndiff2 = None
dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
dbnbias = dhpreact.sum(0, keepdim=True)
dbnraw = bngain * dhpreact
dbnvar_inv = (bndiff * dbnraw).sum(0, keepdim=True)
dbnvar = -0.5 * (bnvar + 1e-5) ** -1.5 * dbnvar_inv
dbndiff2 = 1.0 / (n - 1) * torch.ones_like(bndiff2) * dbnvar
# END SOLUTION
diffs["batch norm 1"] = check_gradients(bngain=(dbngain, bngain), bnbias=(dbnbias, bnbias), bnraw=(dbnraw, bnraw),
                                        bnvar_inv=(dbnvar_inv, bnvar_inv), bnvar=(dbnvar, bnvar),
                                        bndiff2=(dbndiff2, bndiff2))

# %% [markdown]
# bndiff is used twice: in bnraw and, squared, in bndiff2 (d(x²)/dx = 2x). The two gradients
# add. Then bndiff = hprebn - bnmeani, and bnmeani = 1/n Σ hprebn: hprebn gets its gradient
# twice too, directly and through the mean.

# %%
# BEGIN SOLUTION dbndiff = dbnmeani = dhprebn = None
dbndiff = bnvar_inv * dbnraw + 2 * bndiff * dbndiff2
dbnmeani = (-dbndiff).sum(0, keepdim=True)
dhprebn = dbndiff + 1.0 / n * torch.ones_like(hprebn) * dbnmeani
# END SOLUTION
diffs["batch norm 2"] = check_gradients(bndiff=(dbndiff, bndiff), bnmeani=(dbnmeani, bnmeani),
                                        hprebn=(dhprebn, hprebn))

# %% [markdown]
# ### The first linear layer and the embedding
#
# The view only reshapes, so its backward reshapes back. The lookup emb = C[Xb] copied row
# Xb[k, j] of C to position (k, j): each position's gradient goes back to that row, and a
# character that occurs several times in the batch collects the sum.

# %%
# BEGIN SOLUTION dembcat = dW1 = db1 = demb = dC = None
dembcat = dhprebn @ W1.T
dW1 = embcat.T @ dhprebn
db1 = dhprebn.sum(0)
demb = dembcat.view(emb.shape)
dC = torch.zeros_like(C)
for k in range(Xb.shape[0]):
    for j in range(Xb.shape[1]):
        dC[Xb[k, j].item()] += demb[k, j]
# END SOLUTION
diffs["linear 1 and embedding"] = check_gradients(embcat=(dembcat, embcat), W1=(dW1, W1), b1=(db1, b1),
                                                  emb=(demb, emb), C=(dC, C))

# %% [markdown]
# ## Cross-entropy's backward in one formula
#
# Eight small steps for cross-entropy is a lot of work (and memory) for a simple answer. Write
# pᵢ = softmax(logitsᵢ) and y = Yᵢ. Then
#
# loss = -(1/n) Σᵢ log pᵢ,y  and  log pᵢ,y = logitsᵢ,y - log Σₖ exp(logitsᵢ,ₖ),
#
# so ∂loss/∂logitsᵢ,ⱼ = (1/n) (pᵢ,ⱼ - 1[j = y]): the softmax, minus 1 at the right character,
# over n. Each row sums to zero: the gradient pulls the right character's logit up exactly as
# hard as it pushes the others down, each in proportion to its probability.
#
# First the forward: `F.cross_entropy` is the same loss in one op. The one-line gradient is
# not bit-exact any more (it rounds differently from the eight steps), only to about 1e-17.

# %%
loss_fast = F.cross_entropy(logits, Yb)
check_close("F.cross_entropy(logits, Yb)", loss_fast, loss, atol=1e-12)

# %%
# BEGIN SOLUTION dlogits_fused = None
dlogits_fused = (F.softmax(logits, 1) - F.one_hot(Yb, num_classes=vocab_size)) / n
# END SOLUTION
diffs["fused cross-entropy"] = check_gradients(logits=(dlogits_fused, logits))

# %%
if plt is not None:  # each row: the probabilities, and a dark cell at the right character
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.imshow(dlogits_fused.numpy(), cmap="gray")
    axes.set(xlabel="character", ylabel="example in the batch", title="dloss/dlogits")
    save_figure(figure, "backprop_dlogits.png", args)

# %% [markdown]
# ## Batch norm's backward in one formula
#
# For one hidden unit, with x = hprebn over the batch, s = (σ² + ε)^(-1/2) and
# x̂ = bnraw = (x - μ) s, the layer's output is y = γ x̂ + β. Given dy (that is `dhpreact`),
# dx̂ᵢ = γ dyᵢ. Each x̂ᵢ depends on every xⱼ, through μ and σ²:
#
# ∂μ/∂xⱼ = 1/n,  ∂σ²/∂xⱼ = 2 (xⱼ - μ) / (n - 1)
# (the term through μ vanishes, since Σᵢ (xᵢ - μ) = 0), so
#
# ∂x̂ᵢ/∂xⱼ = s (1[i = j] - 1/n) - (xᵢ - μ) · ½ s³ · 2 (xⱼ - μ) / (n - 1)
#         = s (1[i = j] - 1/n - x̂ᵢ x̂ⱼ / (n - 1)).
#
# Summing dx̂ᵢ ∂x̂ᵢ/∂xⱼ over i:
#
# dxⱼ = (γ s / n) (n dyⱼ - Σᵢ dyᵢ - n/(n-1) · x̂ⱼ Σᵢ dyᵢ x̂ᵢ),
#
# one line for all 64 units at once. First check the forward: the same numbers as the eight
# steps above, from `mean` and `var`.

# %%
hpreact_fast = (bngain * (hprebn - hprebn.mean(0, keepdim=True))
                / torch.sqrt(hprebn.var(0, keepdim=True, unbiased=True) + 1e-5) + bnbias)
check_close("batch norm in one line", hpreact_fast, hpreact, atol=1e-12)

# %%
dy = hpreact.grad  # the engine's dloss/dhpreact, so that this exercise stands on its own
# BEGIN SOLUTION dhprebn_fused = None
dhprebn_fused = bngain * bnvar_inv / n * (n * dy - dy.sum(0, keepdim=True)
                                          - n / (n - 1) * bnraw * (dy * bnraw).sum(0, keepdim=True))
# END SOLUTION
diffs["fused batch norm"] = check_gradients(hprebn=(dhprebn_fused, hprebn))

# %% [markdown]
# ## Training with our own backward
#
# Now the whole backward of the network fits in a dozen lines: the two formulas above, the
# matmuls, tanh, and the embedding. The embedding's double loop becomes one matmul: with the
# one-hot rows of every context character stacked (3n × 27), its transpose times the stacked
# gradients (3n × 10) sums each character's gradients into its row of C.
#
# The forward is the one that trains: batch norm from `mean` and `var`, `F.cross_entropy`.
# Check the hand backward against the engine's once; then train with makemore's recipe
# (200 hidden units, 200,000 steps, learning rate 0.1 then 0.01) with no graph at all:
# everything runs under `torch.no_grad()`.

# %%
def forward(parameters: list, Xb, Yb) -> tuple:
    """The loss, and what the hand backward needs from the forward pass."""
    C, W1, b1, W2, b2, bngain, bnbias = parameters
    emb = C[Xb]                                        # (n, 3, 10)
    embcat = emb.view(emb.shape[0], -1)                # (n, 30)
    hprebn = embcat @ W1 + b1                          # (n, hidden)
    bnvar_inv = (hprebn.var(0, keepdim=True, unbiased=True) + 1e-5) ** -0.5
    bnraw = (hprebn - hprebn.mean(0, keepdim=True)) * bnvar_inv
    h = torch.tanh(bngain * bnraw + bnbias)            # (n, hidden)
    logits = h @ W2 + b2                               # (n, 27)
    return F.cross_entropy(logits, Yb), (Xb, Yb, emb, embcat, bnvar_inv, bnraw, h, logits)


def hand_backward(parameters: list, saved: tuple) -> list:
    """dloss/dparameter for each parameter, in their order, without the engine's backward."""
    C, W1, b1, W2, b2, bngain, bnbias = parameters
    Xb, Yb, emb, embcat, bnvar_inv, bnraw, h, logits = saved
    n = Xb.shape[0]
    # BEGIN SOLUTION return [torch.zeros_like(p) for p in parameters]
    dlogits = (F.softmax(logits, 1) - F.one_hot(Yb, num_classes=logits.shape[1])) / n
    dh, dW2, db2 = dlogits @ W2.T, h.T @ dlogits, dlogits.sum(0)
    dhpreact = (1.0 - h**2) * dh
    dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
    dbnbias = dhpreact.sum(0, keepdim=True)
    dhprebn = bngain * bnvar_inv / n * (n * dhpreact - dhpreact.sum(0, keepdim=True)
                                        - n / (n - 1) * bnraw * (dhpreact * bnraw).sum(0, keepdim=True))
    dembcat, dW1, db1 = dhprebn @ W1.T, embcat.T @ dhprebn, dhprebn.sum(0)
    one_hot_contexts = F.one_hot(Xb.view(-1), num_classes=C.shape[0]).to(C.dtype)  # (3n, 27)
    dC = one_hot_contexts.T @ dembcat.view(-1, C.shape[1])                          # (27, 10)
    return [dC, dW1, db1, dW2, db2, dbngain, dbnbias]
    # END SOLUTION


parameters = init_parameters(n_hidden=200)
loss, saved = forward(parameters, Xb, Yb)
loss.backward()
names = ["C", "W1", "b1", "W2", "b2", "bngain", "bnbias"]
diffs["hand backward"] = check_gradients(**{name: (grad, p) for name, grad, p
                                            in zip(names, hand_backward(parameters, saved), parameters)})

# %%
steps = 500 if args.quick else 200_000
generator = torch.Generator().manual_seed(2147483647)
step_losses = []
with torch.no_grad():
    for step in range(steps):
        ix = torch.randint(0, Xtr.shape[0], (batch_size,), generator=generator)
        loss, saved = forward(parameters, Xtr[ix], Ytr[ix])
        learning_rate = 0.1 if step < steps // 2 else 0.01
        for p, grad in zip(parameters, hand_backward(parameters, saved)):
            p.data -= learning_rate * grad.data
        step_losses.append(loss.item())
        if step % 20_000 == 0 or step == steps - 1:
            print(f"step {step:7d}  minibatch loss {loss.item():.4f}")

# %% [markdown]
# ## Evaluating: batch norm over the whole training set
#
# A trained batch-norm layer needs a mean and a variance that do not depend on the batch. Here,
# as in makemore, we measure them once over the whole training set after training (lesson 4
# keeps running averages during training instead). With --quick, on the first 10,000 examples.

# %%
@torch.no_grad()
def split_loss(parameters: list, X, Y, bnmean, bnvar) -> float:
    C, W1, b1, W2, b2, bngain, bnbias = parameters
    hpreact = C[X].view(X.shape[0], -1) @ W1 + b1
    h = torch.tanh(bngain * (hpreact - bnmean) * (bnvar + 1e-5) ** -0.5 + bnbias)
    return F.cross_entropy(h @ W2 + b2, Y).item()


n_eval = 10_000 if args.quick else None  # None: all of each split
Xtr_eval, Ytr_eval, Xdev_eval, Ydev_eval = Xtr[:n_eval], Ytr[:n_eval], Xdev[:n_eval], Ydev[:n_eval]
with torch.no_grad():
    C, W1, b1 = parameters[:3]
    hpreact_train = C[Xtr_eval].view(Xtr_eval.shape[0], -1) @ W1 + b1
    bnmean, bnvar = hpreact_train.mean(0, keepdim=True), hpreact_train.var(0, keepdim=True, unbiased=True)
train_loss = split_loss(parameters, Xtr_eval, Ytr_eval, bnmean, bnvar)
val_loss = split_loss(parameters, Xdev_eval, Ydev_eval, bnmean, bnvar)
print(f"train {train_loss:.4f}  val {val_loss:.4f}  (makemore: train 2.0705, val 2.1099)")
if plt is not None:
    figure, axes = plt.subplots(figsize=(6, 4))
    window = min(1000, steps // 10)
    axes.plot(np.convolve(np.log10(step_losses), np.ones(window) / window, mode="valid"))
    axes.set(xlabel="step", ylabel="log10(minibatch loss)", title=f"training, hand backward (mean of {window})")
    save_figure(figure, "backprop_training.png", args)

# %%
print("\n".join(f"{name:24s} largest difference {diff:.3g}" for name, diff in diffs.items()))
report(max_abs_diff=max(diffs.values()), fused_ce_diff=diffs["fused cross-entropy"],
       fused_bn_diff=diffs["fused batch norm"], loss_start=step_losses[0], train_loss=train_loss,
       val_loss=val_loss, steps=steps)

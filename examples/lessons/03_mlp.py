# %% [markdown]
# # Lesson 3: makemore part 2, a multilayer perceptron (Bengio et al. 2003)
#
# The bigram model sees one character. Looking at more of them with a table does not scale:
# 3 characters of context already need 27³ = 19,683 rows of counts, most of them empty. Bengio
# et al. (2003) replace the table with a neural network. Each character gets a small learned
# vector (an *embedding*), the vectors of the last 3 characters are concatenated and fed to a
# hidden layer of 200 tanh units, and a softmax over 27 characters comes out. Characters that
# behave alike end up with vectors close together, so what is learned about one helps the other.
#
# The recipe is makemore's: 10-d embeddings, context of 3, 200 hidden units, minibatches of 32,
# 200,000 steps, learning rate 0.1 then 0.01, on makemore's 80/10/10 split of names.txt.

# %%
import numpy as np

from _common import lesson_args, load_names, pyplot, report, save_figure, split_names
from _exercises import check_function

import tinygrad_lite as torch
from tinygrad_lite.nn import functional as F

args = lesson_args("lesson 3: makemore part 2 (MLP)")
plt = pyplot()
train_words, dev_words, test_words = split_names(load_names(args))
chars = sorted(set("".join(train_words + dev_words + test_words)))
stoi = {ch: i + 1 for i, ch in enumerate(chars)}
stoi["."] = 0
itos = {i: ch for ch, i in stoi.items()}
block_size = 3  # how many characters the model sees to predict the next one

# %% [markdown]
# ## The dataset: every (context, next character) pair
#
# `emma` with a context of 3 gives `... -> e`, `..e -> m`, `.em -> m`, `emm -> a`, `mma -> .`.

# %%
def build_dataset(words: list[str]):
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            X.append(context)
            Y.append(stoi[ch])
            context = context[1:] + [stoi[ch]]
    return torch.tensor(X), torch.tensor(Y)  # (n, 3) and (n,) int64


Xtr, Ytr = build_dataset(train_words)
Xdev, Ydev = build_dataset(dev_words)
Xte, Yte = build_dataset(test_words)
print(f"train {tuple(Xtr.shape)}, dev {tuple(Xdev.shape)}, test {tuple(Xte.shape)}")

# %% [markdown]
# ## The model
#
# `C[X]` looks up the embedding of every character of every context at once: X is (n, 3) of
# integers, C is (27, 10), so C[X] is (n, 3, 10). `view(-1, 30)` lays the three vectors side by
# side; then h = tanh(emb W1 + b1) and logits = h W2 + b2. `F.cross_entropy` is the softmax and
# the NLL of lesson 2 in one op, and steadier: it subtracts each row's max before exp().

# %%
def init_parameters(seed: int = 2147483647) -> list:
    generator = torch.Generator().manual_seed(seed)
    C = torch.randn((27, 10), generator=generator)
    W1 = torch.randn((30, 200), generator=generator)
    b1 = torch.randn(200, generator=generator)
    W2 = torch.randn((200, 27), generator=generator)
    b2 = torch.randn(27, generator=generator)
    parameters = [C, W1, b1, W2, b2]
    for p in parameters:
        p.requires_grad = True
    return parameters


def loss_of(parameters: list, X, Y):
    C, W1, b1, W2, b2 = parameters
    emb = C[X]                                      # (n, 3, 10)
    h = torch.tanh(emb.view(-1, 30) @ W1 + b1)      # (n, 200)
    logits = h @ W2 + b2                            # (n, 27)
    return F.cross_entropy(logits, Y)


def train_step(parameters: list, learning_rate: float, generator) -> float:
    ix = torch.randint(0, Xtr.shape[0], (32,), generator=generator)  # a minibatch of 32 contexts
    loss = loss_of(parameters, Xtr[ix], Ytr[ix])
    for p in parameters:
        p.grad = None
    loss.backward()
    for p in parameters:
        p.data += -learning_rate * p.grad.data
    return loss.item()


parameters = init_parameters()
print(f"{sum(p.numel() for p in parameters):,} parameters")

# %% [markdown]
# **Exercise**: cross-entropy by hand, from Tensor ops. For one row of logits l and the right
# character y: loss = -log softmax(l)_y = -(l_y - log Σₖ exp(l_k)). Subtract the row's max from
# the logits first: it does not change the softmax, and exp() of a large logit would overflow.
# Then average over the rows. `check_function` compares yours with `F.cross_entropy`, forward
# and backward, and with finite differences.

# %%
def cross_entropy_by_hand(logits, Y):
    """mean over the rows i of -log softmax(logits[i])[Y[i]]"""
    # BEGIN SOLUTION return logits.sum() * 0
    shifted = logits - logits.max(1, keepdim=True).values
    log_probs = shifted - shifted.exp().sum(1, keepdim=True).log()
    return -log_probs[torch.arange(Y.shape[0]), Y].mean()
    # END SOLUTION


test_logits = 3 * torch.randn((8, 27), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
check_function("cross_entropy_by_hand", cross_entropy_by_hand, F.cross_entropy, [test_logits, Ytr[:8]])

# %% [markdown]
# ## Finding a learning rate
#
# Try learning rates from 10⁻³ to 1, growing a little at every step, and watch the loss. Too small
# and it hardly moves; too big and it blows up. A good rate sits in the valley before the rise:
# around 10⁻¹, the rate makemore trains with.

# %%
finder_steps = 100 if args.quick else 1000
exponents = np.linspace(-3, 0, finder_steps)
generator = torch.Generator().manual_seed(42)
finder_losses = [train_step(parameters, 10**e, generator) for e in exponents]
if plt is not None:
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(exponents, finder_losses)
    axes.set(xlabel="log10(learning rate)", ylabel="minibatch loss", title="learning-rate finder")
    save_figure(figure, "mlp_lr_finder.png", args)

# %% [markdown]
# ## Training
#
# Start again from fresh parameters; train with 0.1, then with 0.01 for the second half.
# A minibatch gradient is only an estimate of the true one, but a cheap one: many rough steps beat
# few exact ones. We judge the model on the dev split, names it never trained on.

# %%
@torch.no_grad()
def split_loss(parameters: list, X, Y) -> float:
    return loss_of(parameters, X, Y).item()


parameters = init_parameters()
initial_dev_loss = split_loss(parameters, Xdev, Ydev)
steps = 1_000 if args.quick else 200_000
generator = torch.Generator().manual_seed(42)
step_losses = []
for step in range(steps):
    step_losses.append(train_step(parameters, 0.1 if step < steps // 2 else 0.01, generator))
    if step % 20_000 == 0 or step == steps - 1:
        print(f"step {step:7d}  minibatch loss {step_losses[-1]:.4f}")
train_loss = split_loss(parameters, Xtr, Ytr)
dev_loss = split_loss(parameters, Xdev, Ydev)
test_loss = split_loss(parameters, Xte, Yte)
print(f"train {train_loss:.4f}  dev {dev_loss:.4f}  test {test_loss:.4f}  (makemore: train 2.126, dev 2.170)")

# %%
if plt is not None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.plot(np.log10(step_losses))
    left.set(xlabel="step", ylabel="log10(minibatch loss)", title="training")
    C = parameters[0].data
    right.scatter(C[:, 0], C[:, 1], s=200, c="lightblue")
    for i in range(C.shape[0]):
        right.text(C[i, 0], C[i, 1], itos[i], ha="center", va="center")
    right.set(title="the first two of the 10 embedding dimensions")
    save_figure(figure, "mlp_training.png", args)

# %% [markdown]
# ## Sampling
#
# Start from a context of `...`, draw the next character from the softmax, slide the window, and
# stop at `.`.

# %%
generator = torch.Generator().manual_seed(2147483647 + 10)
C, W1, b1, W2, b2 = parameters
with torch.no_grad():
    for _ in range(10):
        out, context = [], [0] * block_size
        while True:
            h = torch.tanh(C[torch.tensor([context])].view(1, -1) @ W1 + b1)
            probs = F.softmax(h @ W2 + b2, dim=1)
            ix = torch.multinomial(probs, num_samples=1, generator=generator).item()
            context = context[1:] + [ix]
            if ix == 0:
                break
            out.append(itos[ix])
        print("".join(out))

# %%
report(initial_dev_loss=initial_dev_loss, train_loss=train_loss, dev_loss=dev_loss, test_loss=test_loss,
       steps=steps)

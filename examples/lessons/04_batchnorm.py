# %% [markdown]
# # Lesson 4: makemore part 3, activations, gradients and batch normalization
#
# Lesson 3's MLP trained, but it started badly: a loss of about 27 at step 0, and a hidden layer
# whose tanh units were stuck at ±1. Deep networks do not forgive that. This lesson looks inside
# the network while it trains: the statistics of the activations and of the gradients, layer by
# layer. We fix the initialization by hand, then by a rule (Kaiming), then make the network
# robust to it with batch normalization (Ioffe & Szegedy, 2015).
#
# The recipe is makemore's: 10-d embeddings, context of 3, 200 hidden units with batch norm,
# minibatches of 32, 200,000 steps, learning rate 0.1 then 0.01, seed 2147483647.

# %%
import math

from _common import char_vocabulary, contexts, lesson_args, load_names, pyplot, report, save_figure, split_names

import tinygrad_lite as torch
import tinygrad_lite.nn as nn
from tinygrad_lite.nn import functional as F

args = lesson_args("lesson 4: makemore part 3 (batch norm)")
plt = pyplot()
train_words, dev_words, test_words = split_names(load_names(args))
stoi, itos = char_vocabulary(train_words + dev_words + test_words)
vocab_size, block_size = 27, 3

# every (context of 3, next character) pair, built as in lesson 3: (n, 3) and (n,) int64
Xtr, Ytr = (torch.tensor(a) for a in contexts(train_words, stoi, block_size))
Xdev, Ydev = (torch.tensor(a) for a in contexts(dev_words, stoi, block_size))
print(f"train {tuple(Xtr.shape)}, dev {tuple(Xdev.shape)}")

# %% [markdown]
# ## The loss at step 0
#
# Before training, no character should be more likely than another: every probability is 1/27,
# and the loss is -ln(1/27) = 3.2958. Lesson 3's init drew the output weights from N(0, 1), so the
# logits came out large and confidently wrong. Scaling W2 by 0.01 and zeroing b2 makes the logits
# nearly equal, and the first thousands of steps are no longer spent squashing them.

# %%
n_embd, n_hidden = 10, 200
fan_in = n_embd * block_size


def mlp_parameters(w1_scale: float, b1_scale: float, w2_scale: float, b2_scale: float) -> list:
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((vocab_size, n_embd), generator=g)
    W1 = torch.randn((fan_in, n_hidden), generator=g) * w1_scale
    b1 = torch.randn(n_hidden, generator=g) * b1_scale
    W2 = torch.randn((n_hidden, vocab_size), generator=g) * w2_scale
    b2 = torch.randn(vocab_size, generator=g) * b2_scale
    return [C, W1, b1, W2, b2]


@torch.no_grad()
def hidden_and_loss(parameters: list, X, Y):
    C, W1, b1, W2, b2 = parameters
    hpreact = C[X].view(X.shape[0], -1) @ W1 + b1   # (n, 200): what goes into tanh
    h = torch.tanh(hpreact)
    return hpreact, h, F.cross_entropy(h @ W2 + b2, Y).item()


print(f"uniform guess: {-math.log(1 / vocab_size):.4f}")
before = mlp_parameters(1.0, 1.0, 1.0, 1.0)                     # lesson 3's init
_, _, initial_loss_before = hidden_and_loss(before, Xdev, Ydev)
last_layer_fixed = mlp_parameters(1.0, 1.0, 0.01, 0.0)
_, _, initial_loss_fixed = hidden_and_loss(last_layer_fixed, Xdev, Ydev)
print(f"initial dev loss: {initial_loss_before:.4f} with N(0, 1) weights, {initial_loss_fixed:.4f} with W2 * 0.01, "
      "b2 = 0")

# %% [markdown]
# ## Saturated tanh units
#
# The hidden pre-activations sum 30 inputs times N(0, 1) weights, so their spread is about √30 ≈ 5.5
# and most of them land where tanh is flat. There tanh's derivative, 1 - tanh², is about 0: the
# gradient that flows back through such a unit is multiplied by nearly nothing. A unit that is
# saturated on *every* example never learns (a dead neuron). The histograms show the pile-up at
# ±1; in the white-and-black picture each row is an example, each column a unit, white where
# |h| > 0.99.

# %%
kaiming = (5 / 3) / fan_in**0.5   # the Kaiming init of the next section
fixed = mlp_parameters(kaiming, 0.01, 0.01, 0.0)
batch = slice(0, 32)
pre_before, h_before, _ = hidden_and_loss(before, Xtr[batch], Ytr[batch])
pre_after, h_after, _ = hidden_and_loss(fixed, Xtr[batch], Ytr[batch])


def saturated(h) -> float:
    """The fraction of tanh outputs beyond ±0.99, where the gradient through tanh is below 0.02."""
    return (h.abs() > 0.99).float().mean().item()


saturated_before, saturated_after = saturated(h_before), saturated(h_after)
print(f"saturated tanh units: {saturated_before:.1%} with N(0, 1) weights, {saturated_after:.1%} after the fix")
if plt is not None:
    figure, axes = plt.subplots(2, 3, figsize=(13, 6))
    for row, (name, pre, h) in enumerate([("N(0, 1) init", pre_before, h_before), ("Kaiming init", pre_after, h_after)]):
        hist, edges = torch.histogram(pre.view(-1), bins=50)
        axes[row, 0].stairs(hist.numpy(), edges.numpy())
        axes[row, 0].set(title=f"{name}: tanh input")
        hist, edges = torch.histogram(h.view(-1), bins=50)
        axes[row, 1].stairs(hist.numpy(), edges.numpy())
        axes[row, 1].set(title=f"{name}: tanh output, {saturated(h):.0%} saturated")
        axes[row, 2].imshow((h.abs() > 0.99).numpy(), cmap="gray", interpolation="nearest", aspect="auto")
        axes[row, 2].set(title="|h| > 0.99 (white)", xlabel="hidden unit", ylabel="example")
    figure.tight_layout()
    save_figure(figure, "batchnorm_saturation.png", args)

# %% [markdown]
# ## Kaiming init
#
# For y = x W with x of unit variance and n inputs per output, Var(y) = n Var(W). Weights drawn
# with std 1/√n keep the variance at 1 from layer to layer. A tanh squashes its input, so He et al.
# (2015) and PyTorch add a gain to make up for it: std = gain/√fan_in, with gain 5/3 for tanh
# (`nn.init.calculate_gain("tanh")`). Above, W1 was scaled by (5/3)/√30 = 0.304.

# %%
g = torch.Generator().manual_seed(2147483647)
x = torch.randn((1000, fan_in), generator=g)
w = torch.randn((fan_in, n_hidden), generator=g)
print(f"x std {x.std().item():.3f}; (x @ w) std {(x @ w).std().item():.3f} (√{fan_in} = {fan_in**0.5:.3f}); "
      f"(x @ w / √{fan_in}) std {(x @ w / fan_in**0.5).std().item():.3f}")
print(f"gain for tanh: {nn.init.calculate_gain('tanh'):.4f} (5/3 = {5 / 3:.4f})")

# %% [markdown]
# ## Batch normalization
#
# Rather than hope the pre-activations come out roughly unit Gaussian, make them so: standardize
# each hidden unit over the minibatch, then let the network rescale and shift it,
#
# $$\hat{x} = \frac{x - \mu_B}{\sigma_B}, \qquad y = \gamma\,\hat{x} + \beta,$$
#
# with μ_B and σ_B the mean and standard deviation of that unit over the 32 examples, and γ (gain)
# and β (bias) learned. Every step is differentiable, so backpropagation goes through the
# statistics too. The bias b1 is gone: the mean subtraction would cancel it, β takes its place.
#
# At test time there is no batch (we may feed one example), so training also keeps *running*
# estimates of μ and σ, moved a little towards each batch's (momentum 0.001), and evaluation uses
# those. This is makemore's code, written out.

# %%
g = torch.Generator().manual_seed(2147483647)
C = torch.randn((vocab_size, n_embd), generator=g)
W1 = torch.randn((fan_in, n_hidden), generator=g) * kaiming
W2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.01
b2 = torch.randn(vocab_size, generator=g) * 0
bngain = torch.ones((1, n_hidden))
bnbias = torch.zeros((1, n_hidden))
bnmean_running = torch.zeros((1, n_hidden))
bnstd_running = torch.ones((1, n_hidden))
parameters = [C, W1, W2, b2, bngain, bnbias]
for p in parameters:
    p.requires_grad = True
print(f"{sum(p.nelement() for p in parameters):,} parameters")  # makemore: 12,097

steps = 300 if args.quick else 200_000
lossi = []
for i in range(steps):
    ix = torch.randint(0, Xtr.shape[0], (32,), generator=g)
    Xb, Yb = Xtr[ix], Ytr[ix]
    embcat = C[Xb].view(Xb.shape[0], -1)
    hpreact = embcat @ W1
    bnmeani = hpreact.mean(0, keepdim=True)
    bnstdi = hpreact.std(0, keepdim=True)
    hpreact = bngain * (hpreact - bnmeani) / bnstdi + bnbias
    with torch.no_grad():
        bnmean_running = 0.999 * bnmean_running + 0.001 * bnmeani
        bnstd_running = 0.999 * bnstd_running + 0.001 * bnstdi
    h = torch.tanh(hpreact)
    loss = F.cross_entropy(h @ W2 + b2, Yb)
    for p in parameters:
        p.grad = None
    loss.backward()
    lr = 0.1 if i < steps // 2 else 0.01
    for p in parameters:
        p.data += -lr * p.grad.data
    if i % 20_000 == 0 or i == steps - 1:
        print(f"step {i:7d}  minibatch loss {loss.item():.4f}")
    lossi.append(loss.item())

# %% [markdown]
# ## Evaluating with the running statistics
#
# The running estimates should agree with the statistics of the whole training set, computed
# once after training (makemore's "calibration"); evaluation then needs no batch at all.

# %%
with torch.no_grad():
    hpreact_all = C[Xtr].view(Xtr.shape[0], -1) @ W1
    bnmean, bnstd = hpreact_all.mean(0, keepdim=True), hpreact_all.std(0, keepdim=True)
print(f"running vs whole-training-set statistics: mean differs by at most "
      f"{(bnmean - bnmean_running).abs().max().item():.4f}, std by at most {(bnstd - bnstd_running).abs().max().item():.4f}")


@torch.no_grad()
def split_loss(X, Y) -> float:
    hpreact = C[X].view(X.shape[0], -1) @ W1
    hpreact = bngain * (hpreact - bnmean_running) / bnstd_running + bnbias
    return F.cross_entropy(torch.tanh(hpreact) @ W2 + b2, Y).item()


train_loss, val_loss = split_loss(Xtr, Ytr), split_loss(Xdev, Ydev)
print(f"train {train_loss:.4f}  val {val_loss:.4f}  (makemore: train 2.067, val 2.106)")
if plt is not None:
    figure, axes = plt.subplots(figsize=(8, 4))
    window = 1000 if steps >= 10_000 else 50
    averaged = torch.tensor(lossi[:len(lossi) // window * window]).view(-1, window).mean(1)
    axes.plot(range(0, len(averaged) * window, window), averaged.numpy())
    axes.set(xlabel="step", ylabel="minibatch loss", title=f"training (mean of every {window} steps)")
    save_figure(figure, "batchnorm_training.png", args)

# %% [markdown]
# ## Looking inside a deeper network
#
# With one hidden layer a bad init costs a little; with five it can stop training. makemore builds
# its layers as small classes with PyTorch's interface (a `__call__`, `parameters()`), keeping each
# layer's output in `.out` to inspect it. Here they are on our tensors. `BatchNorm1d` normalizes
# with the batch variance divided by n, and keeps the running variance divided by n - 1, as
# PyTorch's does (makemore divides by n - 1 in both; with 32 examples that changes σ by 1.6%).

# %%
class Linear:
    def __init__(self, fan_in: int, fan_out: int, bias: bool = True):
        self.weight = torch.randn((fan_in, fan_out), generator=g) / fan_in**0.5   # Kaiming, gain 1
        self.bias = torch.zeros(fan_out) if bias else None

    def __call__(self, x):
        self.out = x @ self.weight
        if self.bias is not None:
            self.out = self.out + self.bias
        return self.out

    def parameters(self) -> list:
        return [self.weight] + ([] if self.bias is None else [self.bias])


class BatchNorm1d:
    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1):
        self.eps, self.momentum, self.training = eps, momentum, True
        self.gamma, self.beta = torch.ones(dim), torch.zeros(dim)                  # trained by backprop
        self.running_mean, self.running_var = torch.zeros(dim), torch.ones(dim)    # buffers

    def __call__(self, x):
        if self.training:
            xmean = x.mean(0, keepdim=True)
            xvar = x.var(0, keepdim=True, unbiased=False)
        else:
            xmean, xvar = self.running_mean, self.running_var
        self.out = self.gamma * (x - xmean) / torch.sqrt(xvar + self.eps) + self.beta
        if self.training:
            n = x.shape[0]
            with torch.no_grad():
                self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * xmean.view(-1)
                self.running_var = (1 - self.momentum) * self.running_var + self.momentum * xvar.view(-1) * n / (n - 1)
        return self.out

    def parameters(self) -> list:
        return [self.gamma, self.beta]


class Tanh:
    def __call__(self, x):
        self.out = torch.tanh(x)
        return self.out

    def parameters(self) -> list:
        return []


# The same layer as the engine's nn.BatchNorm1d: outputs and running statistics after one batch.
g = torch.Generator().manual_seed(2147483647)
x = torch.randn((32, 100), generator=g) * 3 + 1
ours, engine = BatchNorm1d(100), nn.BatchNorm1d(100)
batchnorm_diff = max((ours(x) - engine(x)).abs().max().item(),
                     (ours.running_mean - engine.running_mean).abs().max().item(),
                     (ours.running_var - engine.running_var).abs().max().item())
print(f"hand-written BatchNorm1d vs nn.BatchNorm1d: max difference {batchnorm_diff:.2e}")

# %% [markdown]
# Five hidden layers of 100, trained for 1,000 steps, twice: without batch norm (Kaiming init with
# the 5/3 gain, the last layer scaled by 0.1) and with it (each Linear followed by BatchNorm1d, the
# last one's γ scaled by 0.1). After training we look at four things:
#
# * the distribution of each tanh layer's output (a healthy layer is spread out, few units at ±1);
# * the distribution of the gradient at each tanh output (about the same in every layer);
# * the gradient of each weight matrix against the size of its values;
# * the update-to-data ratio, log10(std(lr · grad) / std(weight)), per step: about -3 (a step
#   changes a weight by a thousandth of its size) is a sane rate; far below learns slowly, far above
#   is unstable.

# %%
def deep_network(batch_norm: bool) -> tuple[object, list, list]:
    global g
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((vocab_size, n_embd), generator=g)
    sizes = [fan_in] + [100] * 5
    layers = []
    for fan_in_, fan_out in zip(sizes, sizes[1:]):
        layers += [Linear(fan_in_, fan_out, bias=not batch_norm)] + ([BatchNorm1d(fan_out)] if batch_norm else [])
        layers.append(Tanh())
    layers += [Linear(100, vocab_size, bias=not batch_norm)] + ([BatchNorm1d(vocab_size)] if batch_norm else [])
    with torch.no_grad():
        if batch_norm:
            layers[-1].gamma *= 0.1                     # last layer: less confident
        else:
            layers[-1].weight *= 0.1
            for layer in layers[:-1]:
                if isinstance(layer, Linear):
                    layer.weight *= 5 / 3               # the tanh gain
    parameters = [C] + [p for layer in layers for p in layer.parameters()]
    for p in parameters:
        p.requires_grad = True
    return C, layers, parameters


def diagnose(batch_norm: bool, steps: int) -> dict:
    C, layers, parameters = deep_network(batch_norm)
    update_ratios = []
    for i in range(steps):
        ix = torch.randint(0, Xtr.shape[0], (32,), generator=g)
        x = C[Xtr[ix]].view(32, -1)
        for layer in layers:
            x = layer(x)
        loss = F.cross_entropy(x, Ytr[ix])
        for layer in layers:
            layer.out.retain_grad()
        for p in parameters:
            p.grad = None
        loss.backward()
        for p in parameters:
            p.data += -0.1 * p.grad.data
        with torch.no_grad():
            update_ratios.append([((0.1 * p.grad).std() / p.std()).log10().item() for p in parameters])
    tanhs = [(i, layer) for i, layer in enumerate(layers[:-1]) if isinstance(layer, Tanh)]
    return {"name": "with batch norm" if batch_norm else "without batch norm", "tanhs": tanhs,
            "parameters": parameters, "update_ratios": update_ratios, "loss": loss.item(),
            "saturated": sum(saturated(layer.out) for _, layer in tanhs) / len(tanhs)}


diagnostic_steps = 20 if args.quick else 1000
runs = [diagnose(False, diagnostic_steps), diagnose(True, diagnostic_steps)]
for run in runs:
    print(f"--- {run['name']}: loss {run['loss']:.4f} after {diagnostic_steps} steps")
    for i, layer in run["tanhs"]:
        t, grad = layer.out, layer.out.grad
        print(f"layer {i:2d} (Tanh): mean {t.mean().item():+.2f}, std {t.std().item():.2f}, "
              f"saturated {saturated(t):.2%}; gradient std {grad.std().item():.2e}")
    for p in run["parameters"]:
        if p.ndim == 2:
            print(f"weight {str(tuple(p.shape)):>10} | grad std {p.grad.std().item():.2e} | "
                  f"grad:data ratio {(p.grad.std() / p.std()).item():.2e}")

# %%
if plt is not None:
    figure, axes = plt.subplots(len(runs), 4, figsize=(18, 4 * len(runs)))
    for row, run in zip(axes, runs):
        for i, layer in run["tanhs"]:
            hist, edges = torch.histogram(layer.out.detach(), density=True)
            row[0].plot(edges[:-1].numpy(), hist.numpy(), label=f"layer {i}")
            hist, edges = torch.histogram(layer.out.grad, density=True)
            row[1].plot(edges[:-1].numpy(), hist.numpy(), label=f"layer {i}")
        for k, p in enumerate(run["parameters"]):
            if p.ndim == 2:
                hist, edges = torch.histogram(p.grad, density=True)
                row[2].plot(edges[:-1].numpy(), hist.numpy(), label=f"{k} {tuple(p.shape)}")
                row[3].plot([ratios[k] for ratios in run["update_ratios"]], label=f"{k} {tuple(p.shape)}")
        row[3].axhline(-3, color="k")
        titles = ["activations (tanh outputs)", "gradients at the tanh outputs", "weight gradients",
                  "log10 update:data ratio per step"]
        for axis, title in zip(row, titles):
            axis.set(title=f"{run['name']}: {title}")
            axis.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, "batchnorm_layer_statistics.png", args)

# %% [markdown]
# ## Sampling
#
# The single-layer model with batch norm, in evaluation: one example at a time, normalized with
# the running statistics.

# %%
g = torch.Generator().manual_seed(2147483647 + 10)
with torch.no_grad():
    for _ in range(10):
        out, context = [], [0] * block_size
        while True:
            hpreact = C[torch.tensor([context])].view(1, -1) @ W1
            h = torch.tanh(bngain * (hpreact - bnmean_running) / bnstd_running + bnbias)
            ix = torch.multinomial(F.softmax(h @ W2 + b2, dim=1), num_samples=1, generator=g).item()
            context = context[1:] + [ix]
            if ix == 0:
                break
            out.append(itos[ix])
        print("".join(out))

# %%
report(initial_loss_before=initial_loss_before, initial_loss_fixed=initial_loss_fixed,
       saturated_before=saturated_before, saturated_after=saturated_after, train_loss=train_loss, val_loss=val_loss,
       steps=steps, batchnorm_diff=batchnorm_diff, deep_saturated_plain=runs[0]["saturated"],
       deep_saturated_bn=runs[1]["saturated"])

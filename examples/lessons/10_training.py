# %% [markdown]
# # Lesson 10: training experiments
#
# Lesson 9 trained with one recipe and never asked why. Here we change one knob at a time on a
# small GPT (the library's `gpt.model.GPT`: 2 blocks, 4 heads, 64-wide, 32 characters of context,
# about 110K parameters) on tiny Shakespeare, and watch the loss:
#
# 1. the learning rate, swept over three orders of magnitude;
# 2. the batch size, at the same number of characters seen;
# 3. learning-rate warmup at a rate that is too high to start with;
# 4. gradient clipping at that rate;
# 5. overfitting a small slice of the text on purpose, then dropout and weight decay against it;
# 6. early stopping: stop when the held-out loss stops improving, and keep the best weights.
#
# **Three splits, and why.** Choosing a learning rate by its validation loss and then reporting
# that validation loss would grade the choice on the data it was chosen with. So every decision
# here (the sweep, early stopping) looks at a *dev* split, the last 10% of the training text, and
# trains on the 90% before it; the validation split (the last 10% of the whole text, as in lesson
# 9) is scored once, at the end, by the final model.
#
# **The CPU budget:** each run is 200 to 1,000 steps of 32 windows of 32 characters (about 6,000
# steps in all); the whole lesson takes about 2½ minutes of CPU time (longer on a busy machine).

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: see lesson 9

import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from _common import lesson_args, load_shakespeare, pyplot, report, save_figure  # noqa: E402

import tinygrad_lite as torch  # noqa: E402
from gpt.model import GPT, GPTConfig, evaluating  # noqa: E402
from tinygrad_lite.optim import clip_grad_norm_  # noqa: E402 -- torch.nn.utils.clip_grad_norm_ in PyTorch

args = lesson_args("lesson 10: training experiments")
plt = pyplot()
text = load_shakespeare(args)
chars = sorted(set(text))
stoi = {ch: i for i, ch in enumerate(chars)}
data = np.array([stoi[c] for c in text], dtype=np.int64)
n_train = int(0.9 * len(data))
train_all, val_data = data[:n_train], data[n_train:]        # lesson 9's split
n_fit = int(0.9 * len(train_all))
fit_data, dev_data = train_all[:n_fit], train_all[n_fit:]   # the dev split is cut from the training text
print(f"fit {len(fit_data):,}  dev {len(dev_data):,}  val {len(val_data):,} characters")

quick = args.quick
block_size, batch_size = 32, 32
short = 5 if quick else 200    # steps of one sweep run


def get_batch(source: np.ndarray, batch_size: int, rng):
    starts = rng.integers(0, len(source) - block_size, size=batch_size)
    x = np.stack([source[s:s + block_size] for s in starts])
    y = np.stack([source[s + 1:s + block_size + 1] for s in starts])
    return x, y  # (B, T) int64 each; the GPT takes numpy arrays too


def fixed_windows(source: np.ndarray, count: int | None):
    """Consecutive windows from the start of ``source`` (all of it when count is None): the same every time."""
    windows = (len(source) - 1) // block_size if count is None else count
    x = source[:windows * block_size].reshape(windows, block_size)
    y = source[1:windows * block_size + 1].reshape(windows, block_size)
    return x, y


dev_windows = fixed_windows(dev_data, 8 if quick else 256)   # 8,192 characters in a full run


def loss_on(model, windows) -> float:
    x, y = windows
    with evaluating(model):  # eval mode (no dropout), no graph
        losses = [model(x[i:i + 256], y[i:i + 256])[1].item() * len(x[i:i + 256]) for i in range(0, len(x), 256)]
    return sum(losses) / len(x)


def make_model(dropout: float = 0.0) -> GPT:
    torch.manual_seed(1337)  # every run starts from the same weights
    return GPT(GPTConfig(vocab_size=len(chars), block_size=block_size, n_layer=2, n_head=4, n_embd=64,
                         dropout=dropout))

# %% [markdown]
# ## One training loop for every experiment
#
# `train` is the loop of lesson 9 with the knobs this lesson turns. Warmup raises the learning
# rate linearly over the first `warmup` steps, lr_t = lr · min(1, (t + 1)/warmup). Clipping
# rescales the whole gradient when its norm is above `clip`,
#
# $$g \leftarrow g \cdot \min\!\left(1, \frac{\text{clip}}{\lVert g \rVert}\right)$$
#
# which keeps its direction and caps the size of the step. We record that norm at every step
# whether it is clipped or not. Weight decay (AdamW's, decoupled) shrinks every matrix a little at
# each step: w ← w − lr · λ · w. With `patience` the loop stops early (section 6).

# %%
def train(model, steps: int, lr: float, batch_size: int = batch_size, source=fit_data, warmup: int = 0,
          clip: float = 0.0, weight_decay: float = 0.0, eval_every: int = 50, patience: int | None = None):
    optimizer = model.configure_optimizer(lr, weight_decay)
    rng = np.random.default_rng(1337)  # every run draws the same batches: only the knob differs
    history = {"step": [], "dev": [], "loss": [], "grad_norm": [], "stopped": steps}
    best_dev, best_state, bad_evals = math.inf, None, 0
    start = time.perf_counter()
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            dev = loss_on(model, dev_windows)
            history["step"].append(step)
            history["dev"].append(dev)
            if dev < best_dev:
                best_dev, bad_evals = dev, 0
                best_state = {name: value.clone() for name, value in model.state_dict().items()}
            else:
                bad_evals += 1
            if patience is not None and bad_evals >= patience:
                history["stopped"] = step
                break
        if step == steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        _, loss = model(*get_batch(source, batch_size, rng))
        optimizer.zero_grad()
        loss.backward()
        history["grad_norm"].append(clip_grad_norm_(model.parameters(), clip if clip > 0 else math.inf))
        optimizer.step()
        history["loss"].append(loss.item())
    if patience is not None:
        model.load_state_dict(best_state)  # early stopping keeps the best weights, not the last
    history.update(best_dev=best_dev, final_dev=history["dev"][-1], seconds=time.perf_counter() - start)
    return history

# %% [markdown]
# ## 1. The learning rate
#
# The same 200 steps at rates from 10⁻⁴ to 3·10⁻². Too small and the loss creeps down; too large
# and the steps overshoot, the loss stalls high or blows up. The best rate sits just below the
# point where training turns unstable: a common rule is to find where it breaks and back off a
# factor of 3 or so.

# %%
initial_dev_loss = loss_on(make_model(), dev_windows)  # about ln(65) = 4.17: nothing learned yet
learning_rates = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
sweep = {lr: train(make_model(), short, lr) for lr in learning_rates}
for lr, history in sweep.items():
    print(f"lr {lr:<7g} dev loss {history['final_dev']:.4f}  ({history['seconds']:.1f} s)")
best_lr = min(sweep, key=lambda lr: sweep[lr]["final_dev"])
print(f"best learning rate on dev: {best_lr:g}")

# %% [markdown]
# A valley, as expected: in our run 3·10⁻³ was best, with 10⁻³ next; 10⁻⁴ has barely started,
# and 10⁻² and 3·10⁻² are already worse. Every run draws the same batches from the same initial
# weights, so the differences are the learning rate's. They are still one seed's: two seeds of
# the same run differ by up to about 0.1 this early, on the plateau around 2.5 where the models sit
# before attention starts to pay off.

# %% [markdown]
# ## 2. The batch size
#
# Bigger batches give a more accurate gradient, but at the same number of characters seen they
# give fewer steps. Here batches of 8, 32 and 128 windows each see the same 200 · 32 windows.
# At this scale the number of steps matters more than the accuracy of each: the small batch
# learns most per character. Per second it is another matter: a step of 128 windows costs far
# less than 16 steps of 8, because a matrix product is faster per number on bigger matrices and
# the Python work per step is the same. Which wins depends on the machine.

# %%
batches = {}
for size in (8, 32, 128):
    steps = short * batch_size // size
    batches[size] = train(make_model(), steps, best_lr, batch_size=size, eval_every=max(1, steps // 6))
    print(f"batch {size:>3}: {steps:>5} steps, dev loss {batches[size]['final_dev']:.4f} "
          f"in {batches[size]['seconds']:.1f} s")

# %% [markdown]
# ## 3. Warmup, and 4. gradient clipping
#
# At the start the weights are random and the gradients large and erratic; Adam's running
# estimates of their size are still empty. A high learning rate at that moment can throw the
# model into a bad region it takes long to leave. Warmup starts small and grows (here over the
# first third of the run). Clipping caps the size of the gradient instead. We try each at 3× the
# best rate, against the plain run.

# %%
high_lr = 3 * best_lr
plain = train(make_model(), short, high_lr, eval_every=25)
warm = train(make_model(), short, high_lr, warmup=short // 3, eval_every=25)
clipped = train(make_model(), short, high_lr, clip=1.0, eval_every=25)
for name, history in (("plain", plain), ("warmup", warm), ("clip 1.0", clipped)):
    print(f"lr {high_lr:g} {name:<9} dev loss {history['final_dev']:.4f}, "
          f"largest gradient norm {max(history['grad_norm']):.2f}")

# %% [markdown]
# Warmup pays off clearly at this rate. Clipping at 1.0 changes little, and the reason is
# worth knowing: the gradient norm is about 2 at the first step and below 1 soon after (the lower
# left plot), and Adam divides each gradient by a running estimate of its own size, so scaling a
# steady gradient by a constant leaves the step the same. Clipping guards against the rare spike,
# one bad batch that would otherwise enter Adam's running averages; this small model at this rate
# has none. In a large model, where such spikes happen, `clip_grad_norm_(params, 1.0)` is standard.

# %% [markdown]
# ## 5. Overfitting on purpose, then regularising
#
# Train on only the first 10,000 characters of the text, for long. The model can memorise a slice
# that small: the training loss keeps falling while the dev loss turns and rises, the signature
# of overfitting. Dropout (p = 0.2 on the embeddings and every residual branch) and weight decay
# (λ = 1.0, strong on purpose) both make memorising harder, and narrow the gap.

# %%
small = fit_data[:10_000]
long = 10 if quick else 600
small_windows = fixed_windows(small, None)  # all of the slice, in windows
overfit_runs = {}
for name, dropout, weight_decay in (("plain", 0.0, 0.0), ("dropout 0.2", 0.2, 0.0), ("weight decay 1.0", 0.0, 1.0)):
    model = make_model(dropout)
    history = train(model, long, best_lr, source=small, weight_decay=weight_decay)
    history["slice_loss"] = loss_on(model, small_windows)
    history["gap"] = history["final_dev"] - history["slice_loss"]
    overfit_runs[name] = history
    print(f"{name:<17} loss on the slice {history['slice_loss']:.4f}, dev {history['final_dev']:.4f} "
          f"(best {history['best_dev']:.4f}), gap {history['gap']:.4f}")

# %% [markdown]
# The plain model's loss on its slice falls far below its dev loss (a gap of more than 1), and
# its dev loss turns up after a few hundred steps. Both regularisers narrow the gap. Neither makes
# 10,000 characters teach as much as a million: the cure for overfitting that works best is
# more data.

# %% [markdown]
# ## 6. Early stopping
#
# Rather than guess how many steps to train, watch the dev loss: every `eval_every` steps, if it
# is the best so far, keep a copy of the weights; if it has not improved for `patience`
# evaluations in a row, stop, and put the best weights back. On the small slice it stops soon
# after the dev loss turns.

# %%
stopper = make_model()
early = train(stopper, long, best_lr, source=small, patience=3)
print(f"early stopping: stopped at step {early['stopped']} of {long}, best dev {early['best_dev']:.4f} "
      f"(restored: {loss_on(stopper, dev_windows):.4f}); "
      f"the plain run ended at {overfit_runs['plain']['final_dev']:.4f}")

# %% [markdown]
# ## Putting it together
#
# The best rate from the sweep, a short warmup, clipping at 1.0, a little dropout and weight
# decay, on all of the fit split, with early stopping on dev. Then, once, the validation split.
# (Two blocks here against lesson 9's three: expect a little above lesson 9's 1.93.)

# %%
final_model = make_model(dropout=0.1)
final = train(final_model, 15 if quick else 1000, best_lr, warmup=3 if quick else 100, clip=1.0, weight_decay=0.1,
              eval_every=5 if quick else 100, patience=4)
best_val_loss = loss_on(final_model, fixed_windows(val_data, 16 if quick else None))
print(f"final run: {final['stopped']} steps in {final['seconds']:.0f} s, best dev {final['best_dev']:.4f}, "
      f"val (the whole split, scored once) {best_val_loss:.4f}")

# %%
if plt is not None:
    figure, axes = plt.subplots(2, 3, figsize=(16, 9))
    ax = axes[0, 0]
    ax.semilogx(learning_rates, [sweep[lr]["final_dev"] for lr in learning_rates], "o-")
    ax.set(xlabel="learning rate", ylabel=f"dev loss after {short} steps", title="1. learning-rate sweep")
    ax = axes[0, 1]
    for size, history in batches.items():
        ax.plot(np.array(history["step"]) * size * block_size, history["dev"], label=f"batch {size}")
    ax.set(xlabel="characters seen", ylabel="dev loss", title="2. batch size", ylim=(1.9, 3.5))
    ax.legend()
    ax = axes[0, 2]
    for name, history in (("plain", plain), ("warmup", warm), ("clip 1.0", clipped)):
        ax.plot(history["step"], history["dev"], label=name)
    ax.set(xlabel="step", ylabel="dev loss", title=f"3-4. warmup and clipping at lr {high_lr:g}", ylim=(1.9, 3.5))
    ax.legend()
    ax = axes[1, 0]
    for name, history in (("plain", plain), ("clip 1.0", clipped)):
        ax.plot(history["grad_norm"], label=name, alpha=0.7)
    ax.set(xlabel="step", ylabel="gradient norm (before clipping)", yscale="log", title="4. gradient norms")
    ax.legend()
    ax = axes[1, 1]
    for name, history in overfit_runs.items():
        ax.plot(history["step"], history["dev"], label=f"{name}: dev")
    ax.plot(np.convolve(overfit_runs["plain"]["loss"], np.ones(20) / 20, mode="valid"), color="gray",
            label="plain: train (batches)")
    ax.axvline(early["stopped"], color="black", linestyle=":", label="early stop")
    ax.set(xlabel="step", ylabel="loss", title="5-6. 10,000 characters: overfitting", ylim=(0.5, 3.5))
    ax.legend(fontsize=8)
    ax = axes[1, 2]
    ax.plot(final["step"], final["dev"], label="dev")
    ax.axhline(best_val_loss, color="black", linestyle=":", label=f"val, once: {best_val_loss:.3f}")
    ax.set(xlabel="step", ylabel="loss", title="all together", ylim=(1.5, 3.5))
    ax.legend()
    figure.tight_layout()
    save_figure(figure, "training_experiments.png", args)

# %%
report(best_lr=best_lr, best_val_loss=best_val_loss, initial_dev_loss=initial_dev_loss,
       best_dev_loss=final["best_dev"], final_steps=final["stopped"],
       sweep_worst_dev=max(h["final_dev"] for h in sweep.values()), sweep_best_dev=sweep[best_lr]["final_dev"],
       batch8_dev=batches[8]["final_dev"], batch32_dev=batches[32]["final_dev"], batch128_dev=batches[128]["final_dev"],
       high_lr_plain_dev=plain["final_dev"], high_lr_warmup_dev=warm["final_dev"],
       high_lr_clip_dev=clipped["final_dev"],
       overfit_slice_loss=overfit_runs["plain"]["slice_loss"], overfit_dev=overfit_runs["plain"]["final_dev"],
       overfit_best_dev=overfit_runs["plain"]["best_dev"], overfit_gap=overfit_runs["plain"]["gap"],
       dropout_gap=overfit_runs["dropout 0.2"]["gap"], weight_decay_gap=overfit_runs["weight decay 1.0"]["gap"],
       early_stop_step=early["stopped"], early_stop_dev=early["best_dev"])

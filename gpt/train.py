"""The training loop: AdamW, warmup + cosine learning rate, clipping, accumulation, evals, checkpoints.

    for it in range(start, max_iters):
        every eval_interval: estimate train/val loss, print a sample, save checkpoints
                             (best.json when val improves; stop after --patience evals that do not)
        lr = warmup then cosine decay to min_lr
        gradient_accumulation_steps x (random batch -> forward -> backward)
        clip the gradient norm, AdamW step

``train(TrainConfig(...))`` runs it; ``examples/train_shakespeare.py`` is its
command line. Everything random (initialisation, batches, dropout) comes from
tinygrad_lite's generator, seeded once; its state goes into each checkpoint,
so ``resume=True`` continues exactly where the run stopped. Evaluation and the
samples use their own generators (seeded by seed and iteration), so how often
you evaluate never changes the training batches.

Under ``mpiexec -n N`` the same loop is data parallel (tinygrad_lite/distributed/):
every rank draws the same global batch and trains on its 1/N of the rows, the
gradients are averaged in backward (DistributedDataParallel), and only rank 0
prints, logs, samples and writes checkpoints; ``zero=1`` shards AdamW's moments.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy
from tqdm.auto import tqdm

import tinygrad_lite as tl
from tinygrad_lite import backend
from tinygrad_lite import distributed as dist
from tinygrad_lite.amp import GradScaler
from tinygrad_lite.optim import WarmupCosineSchedule, clip_grad_norm_

from .checkpoint import CheckpointError, load_checkpoint, load_model, read_checkpoint_json, save_checkpoint
from .data import file_identity, prepare_data
from .run_dir import check_usable_folder, claim_out_dir, make_folder
from .metrics import perplexity
from .model import GPT, GPTConfig, evaluating


@dataclass
class TrainConfig:
    # data
    data: str | None = None            # a text file; None downloads tiny Shakespeare
    tokenizer: str = "char"            # 'char', 'gpt2' or 'bpe:N'
    gpt2_dir: str | None = None        # folder with GPT-2's vocab.bpe + encoder.json (--tokenizer gpt2)
    cache_dir: str | None = None       # downloads and encoded tokens (default ~/.cache/tinygrad_lite)
    # The defaults are this project's CPU recipe (docs/recipe.md: how it was chosen). It is nanoGPT's CPU
    # "baby GPT" with one layer instead of four, trained for 2.5x the steps at 4x the learning rate, in
    # less time than nanoGPT's 2,000 steps take: at this budget more steps beat more depth.
    # model
    n_layer: int = 1
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = False                 # nanoGPT trains without biases; GPT-2 had them
    # optimisation
    batch_size: int = 12
    gradient_accumulation_steps: int = 1
    max_iters: int = 5000
    lr: float = 4e-3
    min_lr: float = 4e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None: max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0             # 0 turns clipping off
    dtype: str = "float32"             # "float16": mixed precision (tl.autocast, a GradScaler; weights stay float32)
    # evaluation and output
    eval_interval: int = 500
    eval_iters: int = 20
    patience: int = 0                  # stop after this many evals without a better val loss (0: never)
    final_eval_iters: int = 200
    sample_tokens: int = 200           # generated at each eval; the final sample is 2.5x longer
    out_dir: str = "out-shakespeare"
    device: str = "cpu"
    seed: int = 1337
    resume: bool = False
    overwrite: bool = False            # start over in an out_dir that holds a run (the old one is moved aside)
    allow_data_change: bool = False    # resume on a changed data file (the best val loss starts over)
    skip_nonfinite: int = 0            # steps with a non-finite loss or gradient to skip before stopping
    progress: bool = True              # the tqdm bar
    zero: int = 0                      # 1: ZeRO-1, each rank keeps 1/N of AdamW's moments (under mpiexec)

    def __post_init__(self):
        if self.lr_decay_iters is None:
            self.lr_decay_iters = self.max_iters
        positive = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "gradient_accumulation_steps",
                    "eval_interval", "eval_iters", "final_eval_iters")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.zero not in (0, 1):
            raise ValueError(f"TrainConfig: zero must be 0 (off) or 1 (shard the optimizer state), got {self.zero}")
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"TrainConfig: dtype must be 'float32' or 'float16' (mixed precision), got {self.dtype!r}")
        for name in ("max_iters", "warmup_iters", "sample_tokens", "skip_nonfinite", "patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig: {name} must be >= 0, got {getattr(self, name)}")
        ranges = {"lr": (0, math.inf, False), "min_lr": (0, math.inf, True), "weight_decay": (0, math.inf, True),
                  "grad_clip": (0, math.inf, True), "beta1": (0, 1, True), "beta2": (0, 1, True),
                  "dropout": (0, 1, True)}
        for name, (low, high, low_allowed) in ranges.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and (low <= value if low_allowed else low < value) and value < high):
                bound = ">= 0" if low_allowed else "> 0"
                raise ValueError(f"TrainConfig: {name} must be finite, {bound}"
                                 f"{' and < 1' if high == 1 else ''}, got {value}")

    def tokens_per_iter(self) -> int:
        return self.batch_size * self.block_size * self.gradient_accumulation_steps


# nanoGPT's recipes for tiny Shakespeare (its config/train_shakespeare_char.py, and the CPU command of its
# README): ``--preset nanogpt``, the calibration point that the default recipe is measured against.
NANOGPT_CPU = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False, batch_size=12,
                   gradient_accumulation_steps=1, max_iters=2000, lr=1e-3, min_lr=1e-4, warmup_iters=100,
                   lr_decay_iters=None, weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0,
                   eval_interval=250, eval_iters=20)
NANOGPT_GPU = {**NANOGPT_CPU, "n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "batch_size": 64,
               "max_iters": 5000, "dropout": 0.2, "eval_iters": 200}
PRESETS = ("default", "nanogpt")


def defaults_for_device(device: str, preset: str = "default") -> dict:
    """The default hyperparameters for ``device`` ('cpu' or 'cuda') and ``preset``.

    'default' is this project's CPU recipe (the TrainConfig defaults; docs/recipe.md tells how it was
    chosen). On a GPU it is nanoGPT's GPU config, which has not been tuned here. 'nanogpt' is
    nanoGPT's recipe for the device, exactly.
    """
    if preset not in PRESETS:
        raise ValueError(f"TrainConfig: unknown preset {preset!r} (expected one of {', '.join(PRESETS)})")
    base = {f.name: f.default for f in fields(TrainConfig)}
    if device.startswith("cuda"):
        base.update(NANOGPT_GPU)
    elif preset == "nanogpt":
        base.update(NANOGPT_CPU)
    base["device"] = device
    return base


def config_for_resume(out_dir: str | Path, overrides: dict) -> TrainConfig:
    """The configuration of the run saved in ``out_dir``, with ``overrides`` (flags given explicitly) on top."""
    saved = dict(read_checkpoint_json(out_dir, "last")["train_state"].get("train_config", {}))
    known = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in saved.items() if k in known}
    values.update(overrides)
    values.update(out_dir=str(out_dir), resume=True)
    return TrainConfig(**values)


class TrainingDiverged(RuntimeError):
    """The loss or the gradients stopped being finite; training stopped without saving."""


@dataclass
class TrainResult:
    iterations: int                      # the iteration reached
    final_train_loss: float | None       # over final_eval_iters batches (None when interrupted)
    final_val_loss: float | None
    best_val_loss: float
    wall_time_s: float
    ms_per_iter: float                   # mean time of a training iteration (evals excluded)
    tokens_per_s: float
    sample: str
    interrupted: bool
    out_dir: Path
    train_losses: list[float] = field(default_factory=list)  # the loss of every iteration of this call
    stopped_early: bool = False          # --patience ran out (best.json holds the best model)


# ------------------------------------------------------------ evaluation

EVAL_LOGITS_PER_FORWARD = 1 << 22  # float32 logits per evaluation forward (16 MB), see estimate_loss


def estimate_loss(model: GPT, data, batch_size: int, block_size: int, eval_iters: int, rng) -> dict[str, float]:
    """Mean loss over ``eval_iters`` random batches of each split (eval mode, no graph).

    The batches are drawn one by one, as training draws them, but run through the model several
    at a time: one forward over k batches is faster than k small ones, and since every batch has
    the same number of tokens its mean loss is the mean of their k mean losses.
    """
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", 1)
    per_forward = max(1, min(eval_iters, EVAL_LOGITS_PER_FORWARD // (batch_size * block_size * vocab_size)))
    losses = {}
    with evaluating(model):
        for split in ("train", "val"):
            total, left = 0.0, eval_iters
            while left:
                count = min(per_forward, left)
                batches = [dist.local_rows(*data.get_batch(split, batch_size, block_size, rng)) for _ in range(count)]
                x, y = (numpy.concatenate(parts) for parts in zip(*batches))  # all rows in 1 process
                _, loss = model(x, y)
                total, left = total + loss.item() * count, left - count
            losses[split] = dist.mean_over_ranks(total) / eval_iters  # each rank's rows, averaged
    return losses


def prompt_ids(tokenizer, data) -> numpy.ndarray:
    """What samples start from: a newline if the vocabulary has one, else the first training token."""
    try:
        ids = tokenizer.encode("\n")
    except ValueError:
        ids = []
    return numpy.asarray([ids if ids else [int(data.train[0])]], dtype=numpy.int64)


def write_sample(model: GPT, tokenizer, data, max_new_tokens: int, rng) -> str:
    prompt = prompt_ids(tokenizer, data)
    # the fast decoder (gpt/generation.py): samples are written during training, where time counts
    ids = model.generate(prompt, max_new_tokens, temperature=0.8, top_k=200, decoder="folded", generator=rng)
    return tokenizer.decode(ids[0].tolist())


# --------------------------------------------------------------- logging

class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, one line per iteration and per evaluation."""

    def __init__(self, path: Path, resume_from: int | None, enabled: bool = True):
        self.path, self.file = path, None
        if not enabled:  # ranks other than 0 log nothing
            return
        lines = []
        if resume_from is not None and path.is_file():  # keep the history up to the checkpoint
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if entry.get("iter", math.inf) < resume_from or (entry.get("kind") == "eval"
                                                               and entry.get("iter") == resume_from):
                    lines.append(line)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        self.file = open(path, "a", encoding="utf-8")

    def write(self, **entry) -> None:
        if self.file is not None:
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def plot_losses(metrics_path: Path, png_path: Path) -> bool:
    """Draw ``loss.png`` from ``metrics.jsonl``; False when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: PLC0415 -- optional
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    steps, losses, evals = [], [], {"train": [], "val": [], "iter": []}
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry["kind"] == "train":
            steps.append(entry["iter"])
            losses.append(entry["loss"])
        elif entry["kind"] == "eval":
            evals["iter"].append(entry["iter"])
            evals["train"].append(entry["train_loss"])
            evals["val"].append(entry["val_loss"])
    figure, axes = plt.subplots(figsize=(8, 5))
    axes.plot(steps, losses, color="0.75", linewidth=0.8, label="training batch loss")
    axes.plot(evals["iter"], evals["train"], "o-", label="train loss (eval)")
    axes.plot(evals["iter"], evals["val"], "o-", label="val loss (eval)")
    axes.set_xlabel("iteration")
    axes.set_ylabel("cross-entropy loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return True


class StopOnInterrupt:
    """Turn the first Ctrl-C into a request to stop at the next iteration boundary.

    The loop then saves a checkpoint of a consistent state (never one caught
    half-way through an optimizer step) and returns. A second Ctrl-C stops at
    once (the previous checkpoint is still intact: saves are atomic).
    """

    def __init__(self, announce):
        self.requested = False
        self.announce = announce
        self.previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.announce("\nCtrl-C: stopping after this iteration and saving a checkpoint (Ctrl-C again to quit now)")

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C cannot reach us here anyway
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False

    def agreed(self) -> bool:
        """Whether to stop now. Under mpiexec Ctrl-C reaches each rank at its own moment, so the ranks
        agree (one tiny all-reduce) and all stop after the same iteration."""
        self.requested = dist.any_rank(self.requested)
        return self.requested


# ------------------------------------------------------------------ train

def model_config_for(config: TrainConfig, vocab_size: int) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, block_size=config.block_size, n_layer=config.n_layer,
                     n_head=config.n_head, n_embd=config.n_embd, dropout=config.dropout, bias=config.bias)


def check_resume_compatible(checkpoint, wanted: GPTConfig, tokenizer) -> None:
    """Resuming must continue the same model on the same vocabulary; say exactly what differs."""
    saved = checkpoint.model_config
    theirs, ours = checkpoint.tokenizer, tokenizer.to_dict()
    if theirs.get("kind") == ours.get("kind") == "char" and theirs.get("chars") != ours.get("chars"):
        only_saved = "".join(sorted(set(str(theirs.get("chars"))) - set(ours["chars"])))
        only_here = "".join(sorted(set(ours["chars"]) - set(str(theirs.get("chars")))))
        raise CheckpointError(
            f"cannot resume from {checkpoint.path}: the characters of the text differ (only in the checkpoint's "
            f"text: {only_saved!r}; only in this --data: {only_here!r}), so the vocabulary does not match; "
            "resume with the same --data, or start a new run in another --out-dir")
    if saved.get("vocab_size") != wanted.vocab_size or theirs != ours:
        raise CheckpointError(
            f"cannot resume from {checkpoint.path}: its vocabulary ({saved.get('vocab_size')} tokens, "
            f"tokenizer {checkpoint.tokenizer.get('kind')!r}) does not match this run's ({wanted.vocab_size} "
            f"tokens, tokenizer {tokenizer.to_dict().get('kind')!r}); resume with the same --data and --tokenizer, "
            "or start a new run in another --out-dir")
    differences = [f"{name}: checkpoint {saved.get(name)!r}, this run {value!r}"
                   for name, value in wanted.to_dict().items() if saved.get(name) != value]
    if differences:
        raise CheckpointError(f"cannot resume from {checkpoint.path}: the model settings differ "
                              f"({'; '.join(differences)}); leave those flags out to use the checkpoint's, "
                              "or start a new run in another --out-dir")


def check_same_data(checkpoint, data_file: dict, allow_change: bool) -> bool:
    """True if ``data_file`` (path, bytes, sha256) is what the checkpoint was trained on. A changed
    file is refused unless ``allow_change``; then False, and the caller starts the best val loss over."""
    saved = checkpoint.train_state.get("data_file")
    if not isinstance(saved, dict):  # a checkpoint from before data files were recorded
        return True
    if (saved.get("sha256"), saved.get("bytes")) == (data_file["sha256"], data_file["bytes"]):
        return True
    if allow_change:
        return False
    raise CheckpointError(
        f"cannot resume from {checkpoint.path}: the data file changed (sha256 {str(saved.get('sha256'))[:16]}... "
        f"vs {data_file['sha256'][:16]}..., {saved.get('bytes'):,} vs {data_file['bytes']:,} bytes; it was "
        f"{saved.get('path')}). Resume with the same --data, or pass --allow-data-change to go on training "
        "on the new text (the best val loss then starts over)")


def stop_if_diverged(what: str, it: int, values: dict[str, float | None], last_saved: int | None,
                     out_dir: Path) -> None:
    """Raise TrainingDiverged if any of ``values`` is NaN or infinite; nothing has been saved from them."""
    bad = ", ".join(f"{name} {value}" for name, value in values.items()
                    if value is not None and not math.isfinite(value))
    if bad:
        kept = (f"the checkpoints in {out_dir} are untouched (last saved at iteration {last_saved})"
                if last_saved is not None else "nothing was saved")
        raise TrainingDiverged(f"training diverged at iteration {it} ({what}: {bad}); stopped, and {kept}. "
                               "Try a lower --lr, keep --grad-clip on, or allow a few bad steps with "
                               "--skip-nonfinite N")


def train(config: TrainConfig, opener=None) -> TrainResult:
    """Train (or resume) a GPT as ``config`` says; prints progress; returns the final numbers.

    The story: claim the out-dir, set up (or resume) the run, then iterate: every eval_interval
    evaluate and checkpoint, and take one optimizer step; at the end, a final evaluation,
    checkpoint and sample. The out-dir is claimed first (``gpt/run_dir.py``): a run already there
    is refused unless it is resumed or ``overwrite`` moves it aside, and two runs cannot share one
    out-dir at a time.
    """
    tl.cpu.tune()  # glibc keeps freed temporaries for reuse (see tinygrad_lite/cpu.py)
    main = dist.init(config.device).rank == 0  # rank 0 of mpiexec's world (or the only process) owns the out-dir
    check_usable_folder(Path(config.out_dir), "--out-dir")  # before the cache folder is made
    if config.cache_dir is not None and main:  # (the other ranks use it after the barrier below)
        make_folder(Path(config.cache_dir), "--cache-dir")
    claimed = claim_out_dir(config.out_dir, resume=config.resume, overwrite=config.overwrite) if main \
        else contextlib.nullcontext(None)
    with claimed as moved, only_rank0_prints(main):
        dist.barrier()  # the other ranks start once rank 0 owns the out-dir
        if moved is not None:
            tqdm.write(f"--overwrite: the previous run in {config.out_dir} is now in {moved}")
        started = time.perf_counter()
        run = set_up_run(config, opener)
        run.metrics = MetricsLog(run.out_dir / "metrics.jsonl", resume_from=run.start_iter if run.resumed else None,
                                 enabled=main)
        progress = tqdm(total=config.max_iters, initial=run.start_iter, desc="training", unit="it",
                        disable=not config.progress or not main, dynamic_ncols=True)
        try:
            with StopOnInterrupt(tqdm.write) as stop:
                it = run.start_iter
                run.model.train()
                while it < config.max_iters and not stop.agreed():
                    if it % config.eval_interval == 0 and not (run.resumed and it == run.start_iter):
                        evaluate_and_save(run, it)
                        if out_of_patience(run):
                            break
                    loss, seconds = take_a_step(run, it)
                    it += 1
                    progress.set_postfix_str(f"loss {loss:.4f}, {seconds * 1000:.0f} ms/iter, "
                                             f"{config.tokens_per_iter() / seconds:,.0f} tok/s", refresh=False)
                    progress.update(1)
                interrupted = stop.requested
                final = finish(run, it, interrupted)
        finally:
            progress.close()
            run.metrics.close()
        if main and plot_losses(run.out_dir / "metrics.jsonl", run.out_dir / "loss.png"):
            tqdm.write(f"loss curve: {run.out_dir / 'loss.png'}")
        ms_per_iter = 1000 * float(numpy.mean(run.step_times)) if run.step_times else float("nan")
        return TrainResult(iterations=it, final_train_loss=final["train"], final_val_loss=final["val"],
                           best_val_loss=run.best_val_loss, wall_time_s=time.perf_counter() - started,
                           ms_per_iter=ms_per_iter,
                           tokens_per_s=config.tokens_per_iter() * 1000 / ms_per_iter if run.step_times else float("nan"),
                           sample=run.sample, interrupted=interrupted, out_dir=run.out_dir,
                           train_losses=run.train_losses, stopped_early=run.stopped_early)


@contextlib.contextmanager
def only_rank0_prints(main: bool):
    """On ranks other than 0, what the loop prints (tqdm.write goes to stdout) goes nowhere."""
    if main:
        yield
        return
    with open(os.devnull, "w", encoding="utf-8") as nowhere, contextlib.redirect_stdout(nowhere):
        yield


@dataclass
class Run:
    """What one call of ``train`` works on: made by ``set_up_run``, changed by the steps after it."""
    config: TrainConfig
    out_dir: Path
    device: str
    data: object                     # gpt.data.TokenData
    tokenizer: object
    data_file: dict                  # path, bytes and SHA-256 of the text (recorded in checkpoints)
    model_config: GPTConfig
    model: GPT
    optimizer: object
    schedule: WarmupCosineSchedule   # the lr of each iteration: warmup, then cosine decay
    params: list                     # the model's parameters, in order (for gradient clipping)
    ddp: object = None               # DistributedDataParallel(model) under mpiexec: what the steps call
    start_iter: int = 0
    best_val_loss: float = math.inf
    resumed: bool = False
    last_saved: int | None = None    # the iteration of the latest checkpoint on disk
    metrics: MetricsLog | None = None
    skipped: int = 0                 # non-finite steps skipped so far (--skip-nonfinite)
    evals_without_improvement: int = 0  # since the best val loss (--patience)
    stopped_early: bool = False
    scaler: GradScaler | None = None  # the loss scaler of --dtype float16 (a no-op in float32)
    step_times: list = field(default_factory=list)
    train_losses: list = field(default_factory=list)
    sample: str = ""

    def save(self, name: str, iteration: int) -> None:
        if isinstance(self.optimizer, dist.ZeroRedundancyOptimizer):
            self.optimizer.consolidate_state_dict()  # every rank: each holds only its shard of the moments
        self.last_saved = iteration
        if not dist.is_main_process():
            return
        once_only = ("resume", "overwrite", "allow_data_change")  # they apply to one start, not to the run
        state = {"iteration": iteration,
                 "best_val_loss": None if math.isinf(self.best_val_loss) else self.best_val_loss,
                 "evals_without_improvement": self.evals_without_improvement,
                 "rng_state": backend.get_rng_state("cpu"),
                 "train_config": {k: v for k, v in asdict(self.config).items() if k not in once_only},
                 "data_file": self.data_file}
        save_checkpoint(self.out_dir, name, model=self.model, model_config=self.model_config.to_dict(),
                        tokenizer=self.tokenizer.to_dict(), train_state=state, optimizer=self.optimizer)


def set_up_run(config: TrainConfig, opener=None) -> Run:
    """Seed, load the data, build the model and optimizer, and restore them from --out-dir's
    ``last`` checkpoint when resuming; prints what it is about to train."""
    tl.manual_seed(config.seed)
    device = backend.check_device(config.device)
    extra = {"opener": opener} if opener is not None else {}
    data, tokenizer, text_path = prepare_data(config.data, config.tokenizer, config.cache_dir, config.gpt2_dir, **extra)
    data.check_block_size(config.block_size)
    wanted = model_config_for(config, tokenizer.vocab_size)
    checkpoint = None
    if config.resume:
        checkpoint = load_checkpoint(config.out_dir, "last")
        check_resume_compatible(checkpoint, wanted, tokenizer)
    model = load_model(checkpoint) if checkpoint is not None else GPT(wanted)
    model.to(device)
    optimizer = model.configure_optimizer(config.lr, config.weight_decay, (config.beta1, config.beta2))
    schedule = WarmupCosineSchedule(optimizer, warmup_iters=config.warmup_iters, max_iters=config.lr_decay_iters,
                                    max_lr=config.lr, min_lr=config.min_lr)
    if config.zero:
        optimizer = dist.ZeroRedundancyOptimizer(optimizer)  # the same param_groups: the schedule still sets lr
    ranks = dist.world_size()
    if config.batch_size % ranks:
        raise ValueError(f"--batch-size {config.batch_size} does not split over {ranks} ranks: it is the global "
                         f"batch, so use a multiple of {ranks}")
    run = Run(config=config, out_dir=Path(config.out_dir), device=device, data=data, tokenizer=tokenizer,
              data_file=file_identity(text_path), model_config=wanted, model=model, optimizer=optimizer,
              schedule=schedule, params=list(model.parameters()),
              ddp=dist.DistributedDataParallel(model) if ranks > 1 else None,  # rank 0's weights everywhere
              scaler=GradScaler(device=device, enabled=config.dtype == "float16"))
    if checkpoint is not None:
        restore_training_state(run, checkpoint)
    say = tqdm.write
    say(f"data: {text_path} -> {len(data.train):,} train / {len(data.val):,} val tokens "
        f"(tokenizer {config.tokenizer}, vocabulary {tokenizer.vocab_size})")
    say(model.param_table())
    say(f"{config.tokens_per_iter():,} tokens per iteration on {device}"
        f"{f' ({ranks} ranks, {config.batch_size // ranks} rows each)' if ranks > 1 else ''}; "
        f"{'resuming at' if run.resumed else 'starting at'} iteration {run.start_iter} of {config.max_iters}; "
        f"writing to {run.out_dir}")
    return run


def restore_training_state(run: Run, checkpoint) -> None:
    """The optimizer's moments, the iteration, the best val loss and the random generator's state."""
    if checkpoint.optimizer_state is None:
        raise CheckpointError(f"checkpoint {checkpoint.path} has no optimizer state, so it cannot be resumed")
    try:
        run.optimizer.load_state_dict(checkpoint.optimizer_state)
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"checkpoint {checkpoint.path}: optimizer state does not fit: {error}") from error
    try:
        run.start_iter = run.last_saved = int(checkpoint.train_state["iteration"])
        run.best_val_loss = float(checkpoint.train_state.get("best_val_loss") or math.inf)
        run.evals_without_improvement = int(checkpoint.train_state.get("evals_without_improvement", 0))
        if not check_same_data(checkpoint, run.data_file, run.config.allow_data_change):
            tqdm.write(f"--allow-data-change: {run.data_file['path']} differs from the checkpoint's data; "
                       "the best val loss starts over")
            run.best_val_loss = math.inf
        backend.set_rng_state(checkpoint.train_state["rng_state"])  # the batches continue where they stopped
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {checkpoint.path} has a malformed training state ({error!r})") from error
    run.resumed = True


def evaluate_and_save(run: Run, it: int) -> None:
    """Estimate both losses, print them and a sample, and save ``last`` (and ``best`` if it is)."""
    config = run.config
    losses = estimate_loss(run.model, run.data, config.batch_size, config.block_size, config.eval_iters,
                           numpy.random.default_rng([config.seed, it]))
    stop_if_diverged("eval", it, losses, run.last_saved, run.out_dir)
    run.metrics.write(kind="eval", iter=it, train_loss=losses["train"], val_loss=losses["val"],
                      val_perplexity=perplexity(losses["val"]))
    tqdm.write(f"iter {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f} "
               f"(perplexity {perplexity(losses['val']):.2f})")
    if it > 0 and dist.is_main_process():
        run.sample = write_sample(run.model, run.tokenizer, run.data, config.sample_tokens,
                                  numpy.random.default_rng([config.seed, it, 1]))
        tqdm.write(f"--- sample at iter {it} ---\n{run.sample}\n---")
    if losses["val"] < run.best_val_loss:
        run.best_val_loss = losses["val"]
        run.evals_without_improvement = 0
        run.save("best", it)
    else:
        run.evals_without_improvement += 1
    run.save("last", it)


def out_of_patience(run: Run) -> bool:
    """Early stopping: True (and say so) once ``patience`` evals in a row have not beaten the best
    val loss. The model that did is in ``best.json``; more steps would mostly fit the training set."""
    patience = run.config.patience
    if patience == 0 or run.evals_without_improvement < patience:
        return False
    run.stopped_early = True
    tqdm.write(f"early stopping: no better val loss in {patience} evals (best {run.best_val_loss:.4f}, "
               f"perplexity {perplexity(run.best_val_loss):.2f}); the best model is in {run.out_dir / 'best.json'}")
    return True


def take_a_step(run: Run, it: int) -> tuple[float, float]:
    """One optimizer step: set the lr, accumulate gradients over the micro-batches, clip, update.
    A non-finite loss or gradient norm skips the update (--skip-nonfinite) or stops the run.
    Returns the step's loss and its time in seconds."""
    config, optimizer, scaler = run.config, run.optimizer, run.scaler
    lr = run.schedule.set_iteration(it)[0]  # every group's lr for this iteration (warmup, then cosine decay)
    step_start = time.perf_counter()
    loss_sum = 0.0
    for micro_step in range(config.gradient_accumulation_steps):
        # every rank draws the global batch (the same generator state) and keeps its rows
        x, y = dist.local_rows(*run.data.get_batch("train", config.batch_size, config.block_size,
                                                   backend.generator("cpu")))
        last = micro_step == config.gradient_accumulation_steps - 1
        with gradient_sync(run, last):
            with tl.autocast(tl.float16, enabled=config.dtype == "float16"):  # matmuls in float16 (tinygrad_lite/amp.py)
                _, loss = (run.ddp if run.ddp is not None else run.model)(x, y)
            # gradients add up over the micro-batches: scale so the sum is their mean
            scaler.scale(loss * (1.0 / config.gradient_accumulation_steps)).backward()
        loss_sum += loss.item()
    loss_sum = dist.mean_over_ranks(loss_sum)  # the global batch's loss, the same on every rank
    scaler.unscale_(optimizer)  # float16: the true gradients again, before clipping
    grad_norm = clip_grad_norm_(run.params, config.grad_clip) if config.grad_clip > 0 else None
    # (in float16 an overflowed gradient is routine: the scaler skips that step and halves its scale)
    if math.isfinite(loss_sum) and (grad_norm is None or math.isfinite(grad_norm) or scaler.is_enabled()):
        scaler.step(optimizer)
    elif run.skipped < config.skip_nonfinite:  # no update from this batch
        run.skipped += 1
        tqdm.write(f"iter {it}: non-finite loss or gradient, step skipped ({run.skipped} of {config.skip_nonfinite})")
    else:
        stop_if_diverged("step", it, {"loss": loss_sum, "gradient norm": grad_norm}, run.last_saved, run.out_dir)
    scaler.update()
    optimizer.zero_grad()
    backend.synchronize(run.device)
    step_time = time.perf_counter() - step_start
    step_loss = loss_sum / config.gradient_accumulation_steps
    run.step_times.append(step_time)
    run.train_losses.append(step_loss)
    tokens_per_s = config.tokens_per_iter() / step_time
    run.metrics.write(kind="train", iter=it, loss=step_loss, lr=lr, grad_norm=grad_norm,
                      ms_per_iter=step_time * 1000, tokens_per_s=tokens_per_s)
    return step_loss, step_time


def gradient_sync(run: Run, last_micro_step: bool):
    """DDP averages the gradients over the ranks in the backward of the last micro-step only."""
    return run.ddp.no_sync() if run.ddp is not None and not last_micro_step else contextlib.nullcontext()


def finish(run: Run, it: int, interrupted: bool) -> dict[str, float | None]:
    """Interrupted: save ``last`` to resume from. Finished: the final losses over final_eval_iters
    batches, the last checkpoints and a longer sample. Returns the final losses (None if interrupted)."""
    config = run.config
    if interrupted:
        run.save("last", it)
        tqdm.write(f"interrupted at iteration {it}: saved {run.out_dir / 'last.json'}; "
                   "continue with the same command plus --resume")
        return {"train": None, "val": None}
    losses = estimate_loss(run.model, run.data, config.batch_size, config.block_size, config.final_eval_iters,
                           numpy.random.default_rng([config.seed, it]))
    stop_if_diverged("final eval", it, losses, run.last_saved, run.out_dir)
    run.metrics.write(kind="eval", iter=it, train_loss=losses["train"], val_loss=losses["val"],
                      val_perplexity=perplexity(losses["val"]), batches=config.final_eval_iters)
    tqdm.write(f"iter {it} (final, {config.final_eval_iters} batches per split): "
               f"train loss {losses['train']:.4f}, val loss {losses['val']:.4f} "
               f"(perplexity {perplexity(losses['val']):.2f})")
    if losses["val"] < run.best_val_loss:
        run.best_val_loss = losses["val"]
        run.save("best", it)
    run.save("last", it)
    if dist.is_main_process():
        run.sample = write_sample(run.model, run.tokenizer, run.data, int(config.sample_tokens * 2.5),
                                  numpy.random.default_rng([config.seed, it, 1]))
        tqdm.write(f"--- sample at iter {it} ---\n{run.sample}\n---")
    return losses

"""Train a character-level GPT on tiny Shakespeare with tinygrad_lite.

    python examples/train_shakespeare.py                          # this project's CPU recipe (docs/recipe.md)
    python examples/train_shakespeare.py --preset nanogpt         # nanoGPT's CPU recipe, exactly
    python examples/train_shakespeare.py --device cuda            # nanoGPT's GPU config (6 layers, 384 wide)
    python examples/train_shakespeare.py --data input.txt         # a local copy of the text (no download)
    python examples/train_shakespeare.py --resume                 # continue the run in --out-dir
    mpiexec -n 2 python examples/train_shakespeare.py             # data parallel: 2 processes, half the batch each
    python examples/sample.py --out-dir out-shakespeare --prompt "ROMEO:"

Every flag left out takes its default for the device (or, with --resume, the
value saved in the checkpoint). Ctrl-C saves a checkpoint and stops; --resume
continues from it. Under ``mpiexec -n N`` (``pip install -e ".[mpi]"``) the same
command trains on N processes (--batch-size stays the global batch; rank 0 prints
and saves; --zero 1 shards the optimizer state); see docs/scaling.md.
"""
from __future__ import annotations

import os

# Before anything loads numpy, which loads OpenBLAS: its idle threads then sleep soon after a matrix
# product instead of spinning on the cores the next elementwise work needs (tinygrad_lite/cpu.py).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def share_the_cores_between_ranks() -> None:
    """Under ``mpiexec -n N``, the N processes on this machine split its cores: each runs its BLAS and
    its own threads on cores / N (unless you set the variables yourself), instead of N x cores threads."""
    local_ranks = int(os.environ.get("MPI_LOCALNRANKS") or os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") or 1)
    if local_ranks > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "TINYGRAD_LITE_CPU_THREADS"):
            os.environ.setdefault(name, str(max(1, cores // local_ranks)))


share_the_cores_between_ranks()

import argparse  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from dataclasses import fields  # noqa: E402
from pathlib import Path  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
try:
    import gpt  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from gpt.checkpoint import CheckpointError  # noqa: E402
from gpt.data import DataError  # noqa: E402
from gpt.train import PRESETS, TrainConfig, config_for_resume, defaults_for_device, train  # noqa: E402
from gpt.cli_types import number, whole_number  # noqa: E402
from gpt.run_dir import RunDirError  # noqa: E402
from gpt.train import TrainingDiverged  # noqa: E402
from tinygrad_lite import GPUUnavailableError  # noqa: E402
from tinygrad_lite import distributed as dist  # noqa: E402

POSITIVE, NON_NEGATIVE = whole_number(at_least=1), whole_number(at_least=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    cpu = defaults_for_device("cpu")
    gpu = defaults_for_device("cuda")

    def default(name: str) -> str:
        if cpu[name] == gpu[name]:
            return f"default {cpu[name]}"
        return f"default {cpu[name]} on cpu, {gpu[name]} on cuda"

    # Every default is None here: "not given" must be told apart from "given", so that --resume
    # takes the checkpoint's value for every flag left out.
    parser.add_argument("--preset", choices=PRESETS, help="default: this project's CPU recipe (docs/recipe.md; on "
                        "cuda, nanoGPT's GPU config); nanogpt: nanoGPT's recipe for the device, exactly. Flags you "
                        "give override it. The defaults below are the default preset's")
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="a UTF-8 text file to train on (default: download tiny Shakespeare)")
    group.add_argument("--tokenizer", help="char (default), gpt2, or bpe:N (our BPE with N tokens)")
    group.add_argument("--gpt2-dir", help="folder with GPT-2's vocab.bpe and encoder.json (for --tokenizer gpt2)")
    group.add_argument("--cache-dir", default=str(REPO_ROOT / "data_cache"),
                       help="downloads and encoded tokens (default: data_cache/ in the repository)")

    group = parser.add_argument_group("model")
    group.add_argument("--n-layer", type=POSITIVE, help=default("n_layer"))
    group.add_argument("--n-head", type=POSITIVE, help=default("n_head"))
    group.add_argument("--n-embd", type=POSITIVE, help=default("n_embd"))
    group.add_argument("--block-size", type=POSITIVE, help=f"context length; {default('block_size')}")
    group.add_argument("--dropout", type=number(at_least=0, below=1), help=default("dropout"))
    group.add_argument("--bias", action=argparse.BooleanOptionalAction, help="biases in Linear and LayerNorm "
                       f"(GPT-2 has them, nanoGPT drops them); {default('bias')}")

    group = parser.add_argument_group("optimisation")
    group.add_argument("--batch-size", type=POSITIVE, help=default("batch_size"))
    group.add_argument("--grad-accum", type=POSITIVE, dest="gradient_accumulation_steps",
                       help=f"micro-batches per step; {default('gradient_accumulation_steps')}")
    group.add_argument("--max-iters", type=NON_NEGATIVE, help=default("max_iters"))
    group.add_argument("--lr", type=number(above=0), help=f"peak learning rate; {default('lr')}")
    group.add_argument("--min-lr", type=number(at_least=0), help=f"the cosine decay ends here; {default('min_lr')}")
    group.add_argument("--warmup-iters", type=NON_NEGATIVE, help=default("warmup_iters"))
    group.add_argument("--lr-decay-iters", type=NON_NEGATIVE, help="iterations of cosine decay (default: --max-iters)")
    group.add_argument("--weight-decay", type=number(at_least=0), help=f"on 2-D weights only; {default('weight_decay')}")
    group.add_argument("--beta1", type=number(at_least=0, below=1), help=default("beta1"))
    group.add_argument("--beta2", type=number(at_least=0, below=1), help=default("beta2"))
    group.add_argument("--grad-clip", type=number(at_least=0), help=f"max gradient norm, 0 = off; {default('grad_clip')}")
    group.add_argument("--zero", type=int, choices=(0, 1), help="under mpiexec, 1 shards AdamW's moments over the "
                       f"ranks (ZeRO-1); {default('zero')}")
    group.add_argument("--dtype", choices=("float32", "float16"),
                       help=f"float16: mixed precision, matmuls in float16, weights float32 (tinygrad_lite/amp.py); "
                            f"{default('dtype')}")

    group = parser.add_argument_group("evaluation and output")
    group.add_argument("--eval-interval", type=POSITIVE, help=default("eval_interval"))
    group.add_argument("--eval-iters", type=POSITIVE, help=f"batches per split at each eval; {default('eval_iters')}")
    group.add_argument("--patience", type=NON_NEGATIVE,
                       help=f"stop after this many evals without a better val loss, 0 = never; {default('patience')}")
    group.add_argument("--final-eval-iters", type=POSITIVE,
                       help=f"batches per split for the final loss; {default('final_eval_iters')}")
    group.add_argument("--sample-tokens", type=NON_NEGATIVE, help=f"tokens sampled at each eval; {default('sample_tokens')}")
    group.add_argument("--out-dir", help="checkpoints, metrics.jsonl, loss.png (default out-shakespeare)")
    group.add_argument("--device", help="cpu (default) or cuda")
    group.add_argument("--seed", type=NON_NEGATIVE, help=default("seed"))
    group.add_argument("--resume", action="store_true", help="continue the run saved in --out-dir")
    group.add_argument("--overwrite", action="store_true", default=None,
                       help="start over in an --out-dir that holds a run (the old run moves to previous-<time>/)")
    group.add_argument("--allow-data-change", action="store_true", default=None,
                       help="with --resume: go on training on a changed --data file (the best val loss starts over)")
    group.add_argument("--skip-nonfinite", type=NON_NEGATIVE,
                       help=f"steps with a NaN/inf loss or gradient to skip before stopping; {default('skip_nonfinite')}")
    group.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                       help="no progress bar (eval lines are still printed)")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    given = {name: value for name, value in vars(args).items() if name in names and value is not None}
    given.pop("resume", None)
    if args.resume:
        return config_for_resume(args.out_dir or "out-shakespeare", given)
    return TrainConfig(**{**defaults_for_device(args.device or "cpu", args.preset or "default"), **given})


def as_flags(message: str) -> str:
    """A TrainConfig message in the words of this command line: field names become flags."""
    flags = {f.name: "--" + f.name.replace("_", "-") for f in fields(TrainConfig)}
    flags["gradient_accumulation_steps"] = "--grad-accum"
    names = "|".join(sorted(flags, key=len, reverse=True))
    return re.sub(rf"(?<![\w-])({names})\b", lambda m: flags[m.group(1)], message.removeprefix("TrainConfig: "))


def stop_every_rank(code: int) -> int:
    """Under mpiexec, a rank that stops alone would leave the others waiting for it: end them all."""
    if dist.world_size() > 1:
        dist.abort(code, "this rank stopped (the error above), so every rank stops")
    return code


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 the run failed (bad data, checkpoint, out-dir; divergence), 2 bad flags, 130 Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.allow_data_change and not args.resume:
        parser.error("--allow-data-change only applies with --resume")
    if args.preset and args.resume:
        parser.error("--preset applies to a new run; --resume takes the settings saved in the checkpoint")
    if args.overwrite and args.resume:
        parser.error("--overwrite and --resume contradict each other: choose one")
    try:
        config = config_from_args(args)
    except ValueError as error:  # flags that are fine alone but not together (or with the checkpoint's)
        parser.error(as_flags(str(error)))
    except (CheckpointError, RunDirError) as error:
        print(f"error: {error}", file=sys.stderr)
        return stop_every_rank(1)
    try:
        result = train(config)
    except (DataError, CheckpointError, RunDirError, TrainingDiverged, GPUUnavailableError, ValueError,
            OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return stop_every_rank(1)
    except KeyboardInterrupt:
        print("\nstopped; the last saved checkpoint is intact (continue with --resume)", file=sys.stderr)
        return stop_every_rank(130)
    if not dist.is_main_process():
        return 0
    print(f"\n{result.iterations} iterations, {result.wall_time_s:.1f} s wall time, "
          f"{result.ms_per_iter:.1f} ms/iter, {result.tokens_per_s:,.0f} tokens/s")
    if result.final_val_loss is not None:
        print(f"final loss ({config.final_eval_iters} batches per split): train {result.final_train_loss:.4f}, "
              f"val {result.final_val_loss:.4f} (best val {result.best_val_loss:.4f})")
    print(f"checkpoints and logs in {result.out_dir}/; sample with:\n"
          f"  python examples/sample.py --out-dir {result.out_dir} --prompt \"ROMEO:\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())

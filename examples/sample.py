"""Sample text from a GPT trained by examples/train_shakespeare.py.

    python examples/sample.py --out-dir out-shakespeare --prompt "ROMEO:" --max-new-tokens 500 \\
        --temperature 0.8 --top-k 200
    python examples/sample.py --out-dir out-shakespeare --decoder folded  # the fast KV-cache decoder
    python examples/sample.py --out-dir out-shakespeare --compare-cache   # time no cache and both decoders
    python examples/sample.py --out-dir out-shakespeare --int8            # int8 weights (gpt/quantize.py)
"""
from __future__ import annotations

import os

# Before anything loads numpy, which loads OpenBLAS: its idle threads then sleep soon after a matrix
# product instead of spinning on the cores the next elementwise work needs (tinygrad_lite/cpu.py).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

try:
    import gpt  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt.checkpoint import CheckpointError  # noqa: E402
from gpt.cli_types import number, whole_number  # noqa: E402
from gpt.quantize import int8, weight_bytes  # noqa: E402
from gpt.sample import load_for_sampling, sample_text  # noqa: E402
import tinygrad_lite as tl  # noqa: E402
from tinygrad_lite import GPUUnavailableError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--out-dir", default="out-shakespeare", help="the training run's output folder (default out-shakespeare)")
    parser.add_argument("--checkpoint", default="last", choices=("last", "best"), help="which checkpoint (last)")
    parser.add_argument("--prompt", default="", help="text to continue (default: a newline)")
    parser.add_argument("--max-new-tokens", type=whole_number(at_least=0), default=500,
                        help="tokens to generate (default 500)")
    parser.add_argument("--temperature", type=number(at_least=0), default=0.8,
                        help="0 = greedy; < 1 safer, > 1 wilder (default 0.8)")
    parser.add_argument("--top-k", type=whole_number(at_least=1), default=200,
                        help="sample only among the k likeliest tokens (default 200)")
    parser.add_argument("--top-p", type=number(above=0, at_most=1), default=None,
                        help="nucleus sampling: keep the likeliest tokens up to this mass (default: off)")
    parser.add_argument("--num-samples", type=whole_number(at_least=1), default=1, help="default 1")
    parser.add_argument("--seed", type=whole_number(at_least=0), default=1337, help="default 1337")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--no-cache", dest="use_cache", action="store_false",
                        help="recompute the whole context for every token (slow; for comparison)")
    parser.add_argument("--decoder", default="modules", choices=("modules", "folded"),
                        help="the KV-cache decoder: the model's own modules (default) or the folded-weights "
                             "fast path (gpt/generation.py)")
    parser.add_argument("--compare-cache", action="store_true",
                        help="generate without the KV cache and with each decoder, and report the speeds")
    parser.add_argument("--int8", action="store_true",
                        help="quantize every Linear's weight to int8 first (gpt/quantize.py; the modules decoder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 the sampling failed (missing or damaged checkpoint, bad prompt), 2 bad flags."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.int8 and (args.decoder == "folded" or args.compare_cache):
        parser.error("--int8 runs the modules decoder: the folded one reads float weights "
                     "(leave out --decoder folded and --compare-cache)")
    tl.cpu.tune()  # glibc keeps freed temporaries for reuse (see tinygrad_lite/cpu.py)
    try:
        model, tokenizer = load_for_sampling(args.out_dir, args.checkpoint, args.device)
        if args.int8:
            float_bytes, model = weight_bytes(model), int8(model)
            print(f"int8 weights: {weight_bytes(model):,} bytes ({weight_bytes(model) / float_bytes:.0%} of "
                  f"{float_bytes:,} in float32)", file=sys.stderr)
        modes = ([(True, "modules"), (True, "folded"), (False, "modules")] if args.compare_cache
                 else [(args.use_cache, args.decoder)])
        for index in range(args.num_samples):
            for use_cache, decoder in modes:
                sample = sample_text(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature,
                                     args.top_k, args.top_p, seed=args.seed + index, use_cache=use_cache,
                                     decoder=decoder)
                print(sample.text)
                how = f"with the KV cache, decoder {decoder}" if use_cache else "without the KV cache"
                print(f"--- {sample.new_tokens} tokens in {sample.seconds:.2f} s "
                      f"({sample.tokens_per_s:,.0f} tokens/s, {how})", file=sys.stderr)
    except (CheckpointError, GPUUnavailableError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

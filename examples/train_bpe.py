"""Train a BPE tokenizer on tiny Shakespeare and look at what it learned.

    python examples/train_bpe.py                         # 4,096 tokens, GPT-4's split pattern
    python examples/train_bpe.py --vocab-size 1024 --sentence "Now is the winter of our discontent"

Prints the compression (bytes per token), the longest tokens learned, and the sentence with each
token on a coloured background. The text is read from --input, else from tinyshakespeare.txt in
$TINYGRAD_LITE_DATA (or ../shared/data beside the project).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import bpe  # noqa: E402

# Background colours (ANSI 256-colour codes) that keep black text readable.
COLOURS = [153, 186, 217, 151, 223, 183, 158, 229]


def colourise(tokenizer: bpe.Tokenizer, text: str) -> str:
    pieces = []
    for i, token_id in enumerate(tokenizer.encode(text)):
        # A token can hold half a UTF-8 character; show it as replacement characters then.
        piece = tokenizer.decode_single_token_bytes(token_id).decode("utf-8", "replace")
        pieces.append(f"\033[48;5;{COLOURS[i % len(COLOURS)]}m\033[30m{piece}")
    return "".join(pieces) + "\033[0m"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data = Path(os.environ.get("TINYGRAD_LITE_DATA", ROOT.parent / "shared" / "data"))
    parser.add_argument("--input", type=Path, default=data / "tinyshakespeare.txt")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--sentence", default="O Romeo, Romeo! wherefore art thou Romeo?")
    parser.add_argument("--out", type=Path, help="also save the tokenizer here")
    args = parser.parse_args()
    if not args.input.is_file():
        sys.exit(f"{args.input} is missing: pass --input or set TINYGRAD_LITE_DATA")

    text = args.input.read_text(encoding="utf-8")
    start = time.perf_counter()
    tokenizer = bpe.Tokenizer.train(text, args.vocab_size, special_tokens=["<|endoftext|>"])
    seconds = time.perf_counter() - start
    ids = tokenizer.encode_ordinary(text)
    n_bytes = len(text.encode("utf-8"))
    print(f"trained {tokenizer.n_vocab:,} tokens on {n_bytes:,} bytes in {seconds:.2f} s")
    print(f"compression: {n_bytes:,} bytes -> {len(ids):,} tokens = "
          f"{n_bytes / len(ids):.2f} bytes per token")

    longest = sorted(tokenizer.ranks, key=lambda token: (-len(token), tokenizer.ranks[token]))
    print("longest tokens learned:")
    for token in longest[:10]:
        print(f"  {tokenizer.ranks[token]:5d}  {token.decode('utf-8', 'replace')!r}")

    print(f"\n{args.sentence!r} -> {len(tokenizer.encode(args.sentence))} tokens:")
    print(colourise(tokenizer, args.sentence))
    if args.out:
        tokenizer.save(args.out)
        print(f"saved to {args.out}")


if __name__ == "__main__":
    main()

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


def colourise(tokenizer: bpe.Tokenizer, text: str, colour: bool) -> str:
    """The text with each token on its own background colour, or between | bars without colour."""
    if not colour:
        return "|".join(tokenizer.decode_single_token_bytes(t).decode("utf-8", "replace")
                        for t in tokenizer.encode(text))
    pieces = []
    for i, token_id in enumerate(tokenizer.encode(text)):
        # A token can hold half a UTF-8 character; show it as replacement characters then.
        piece = tokenizer.decode_single_token_bytes(token_id).decode("utf-8", "replace")
        pieces.append(f"\033[48;5;{COLOURS[i % len(COLOURS)]}m\033[30m{piece}")
    return "".join(pieces) + "\033[0m"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    data = Path(os.environ.get("TINYGRAD_LITE_DATA", ROOT.parent / "shared" / "data"))
    parser.add_argument("--input", type=Path, default=data / "tinyshakespeare.txt",
                        help="UTF-8 text to learn from (default: tiny Shakespeare in $TINYGRAD_LITE_DATA)")
    parser.add_argument("--vocab-size", type=int, default=4096, help="tokens, with 256 bytes and 1 special (default 4096)")
    parser.add_argument("--sentence", default="O Romeo, Romeo! wherefore art thou Romeo?", help="shown split into tokens")
    parser.add_argument("--out", type=Path, help="also save the tokenizer here (default: not saved)")
    parser.add_argument("--color", action=argparse.BooleanOptionalAction, default=None,
                        help="colour the tokens (default: only when printing to a terminal)")
    args = parser.parse_args()
    if not args.input.is_file():
        print(f"error: {args.input} is missing: pass --input or set TINYGRAD_LITE_DATA", file=sys.stderr)
        return 1

    text = args.input.read_text(encoding="utf-8")
    start = time.perf_counter()
    try:
        tokenizer = bpe.Tokenizer.train(text, args.vocab_size, special_tokens=["<|endoftext|>"])
    except ValueError as error:  # e.g. a vocabulary larger than the text can fill
        print(f"error: {error}", file=sys.stderr)
        return 1
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
    print(colourise(tokenizer, args.sentence, sys.stdout.isatty() if args.color is None else args.color))
    if args.out:
        tokenizer.save(args.out)
        print(f"saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

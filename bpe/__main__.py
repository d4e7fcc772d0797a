"""Command line: train, encode and decode.

    python -m bpe train  --input input.txt --vocab-size 4096 --out shakespeare.bpe
    python -m bpe encode --tokenizer shakespeare.bpe --text "To be, or not to be"
    python -m bpe encode --tokenizer gpt2 --input input.txt --out ids.npy   # numpy array file
    python -m bpe decode --tokenizer shakespeare.bpe 405 308 44 532 325 291 308
    echo "405 308 44" | python -m bpe decode --tokenizer shakespeare.bpe

`--tokenizer` is a file written by `train` (or `Tokenizer.save`), or `gpt2` / `cl100k` for
OpenAI's vocabularies, read from --data (default: $TINYGRAD_LITE_DATA, else ./data).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import GPT2_PATTERN, GPT4_PATTERN, Tokenizer, cl100k, gpt2
from .patterns import special_token_regex

PATTERNS = {"gpt4": GPT4_PATTERN, "gpt2": GPT2_PATTERN}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bpe", description="byte-level BPE tokenizer "
                                     "(exit codes: 1 the command failed, 2 bad flags)", allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="learn a vocabulary from a text file", allow_abbrev=False)
    train.add_argument("--input", type=Path, required=True, help="UTF-8 text file to learn from")
    train.add_argument("--vocab-size", type=int, required=True,
                       help="total tokens, including 256 bytes and the special tokens")
    train.add_argument("--out", type=Path, required=True, help="where to save the tokenizer")
    train.add_argument("--pattern", default="gpt4",
                       help="split pattern: gpt4 (default), gpt2, or a regex of your own")
    train.add_argument("--special-token", action="append", default=[], metavar="TEXT",
                       help="add a special token, e.g. '<|endoftext|>' (repeatable)")
    train.add_argument("--verbose", action="store_true", help="show progress and every merge")

    for name, help_text in [("encode", "text -> token ids"), ("decode", "token ids -> text")]:
        command = commands.add_parser(name, help=help_text, allow_abbrev=False)
        command.add_argument("--tokenizer", required=True,
                             help="a saved tokenizer file, or 'gpt2' or 'cl100k'")
        command.add_argument("--data", type=Path, default=None,
                             help="folder with the gpt2/cl100k files (default: download into the cache)")
        command.add_argument("--input", type=Path, help="read the input from this file (default: stdin)")
        command.add_argument("--out", type=Path,
                             help="write the output here (for encode, a .npy file gets an array; "
                                  "default: stdout)")
    encode = commands.choices["encode"]
    encode.add_argument("--text", help="the text to encode (instead of --input or stdin)")
    encode.add_argument("--allow-special", action="store_true",
                        help="encode special-token text as special tokens (default: an error)")
    decode = commands.choices["decode"]
    decode.add_argument("ids", nargs="*", type=int, help="token ids (else read from --input/stdin)")

    args = parser.parse_args(argv)
    try:
        return {"train": run_train, "encode": run_encode, "decode": run_decode}[args.command](args)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def run_train(args: argparse.Namespace) -> int:
    text = args.input.read_text(encoding="utf-8")
    pattern = PATTERNS.get(args.pattern, args.pattern)
    start = time.perf_counter()
    tokenizer = Tokenizer.train(text, args.vocab_size, pattern=pattern,
                                special_tokens=args.special_token, verbose=args.verbose)
    seconds = time.perf_counter() - start
    tokenizer.save(args.out)
    n_ids = len(tokenizer.encode_ordinary(text))
    print(f"trained {tokenizer.n_vocab} tokens on {len(text.encode()):,} bytes in {seconds:.2f} s; "
          f"{len(text.encode()) / max(n_ids, 1):.2f} bytes per token; saved to {args.out}")
    return 0


def load_tokenizer(name: str, data: Path | None) -> Tokenizer:
    if name == "gpt2":
        return gpt2(data)
    if name == "cl100k":
        return cl100k(data)
    return Tokenizer.load(name)


def run_encode(args: argparse.Namespace) -> int:
    tokenizer = load_tokenizer(args.tokenizer, args.data)
    if args.text is not None:
        text = args.text
    elif args.input is not None:
        text = args.input.read_text(encoding="utf-8")
    else:
        text = sys.stdin.read()
    allowed = "all" if args.allow_special else frozenset()
    found = None
    if tokenizer.special_tokens and not args.allow_special:
        found = special_token_regex(tokenizer.special_tokens).search(text)
    if found is not None:
        raise ValueError(f"the input contains the special token {found.group()!r}: pass --allow-special to "
                         "encode it as that token (by default special-token text is refused)")
    if args.out is not None and args.out.suffix == ".npy":
        np.save(args.out, tokenizer.encode_to_numpy(text, allowed_special=allowed))
        return 0
    output = " ".join(map(str, tokenizer.encode(text, allowed_special=allowed))) + "\n"
    _write(output, args.out)
    return 0


def run_decode(args: argparse.Namespace) -> int:
    tokenizer = load_tokenizer(args.tokenizer, args.data)
    if args.ids:
        ids = args.ids
    else:
        if args.input is not None and args.input.suffix == ".npy":
            ids = np.load(args.input, allow_pickle=False).tolist()
        else:
            source = args.input.read_text() if args.input is not None else sys.stdin.read()
            try:
                ids = [int(word) for word in source.split()]
            except ValueError as error:
                raise ValueError(f"expected whitespace-separated token ids: {error}") from None
    _write(tokenizer.decode(ids), args.out)
    return 0


def _write(text: str, path: Path | None) -> None:
    if path is None:
        sys.stdout.write(text)
    else:
        path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())

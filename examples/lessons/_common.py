"""What every lesson shares: its flags, where the data lives, figures, and the result line.

    args = lesson_args("makemore part 1")   # --quick (or LESSON_QUICK=1), --data PATH, --out DIR
    words = load_names(args)                 # makemore's names.txt, 32,033 names
    text = load_shakespeare(args)            # tiny Shakespeare, 1,115,394 characters
    train, dev, test = split_names(words)    # makemore's split: random.seed(42), shuffle, 80/10/10
    stoi, itos = char_vocabulary(words)      # '.' is 0, the letters 1..26
    X, Y = contexts(train, stoi, 3)          # lesson 3's dataset: lists, for torch.tensor(X)
    plt = pyplot()                           # None when matplotlib is not installed
    save_figure(fig, "loss.png", args)       # a PNG in --out; shown inline in a notebook
    report(loss=2.45, steps=100)             # the last line: "result: loss=2.4500 steps=100"
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import urllib.request
from pathlib import Path

LESSONS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = LESSONS_DIR.parent.parent
NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt"

if str(PROJECT_ROOT) not in sys.path:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(PROJECT_ROOT))


def lesson_args(description: str, checkpoint: str | None = None) -> argparse.Namespace:
    """The lesson's flags. Unknown ones are ignored: Jupyter starts the kernel with its own.

    ``checkpoint``: for lessons that can use a trained model, a --checkpoint DIR flag (the
    --out-dir of examples/train_shakespeare.py); None when not given, and the lesson looks in
    the folder named here.
    """
    parser = argparse.ArgumentParser(description=description)
    if checkpoint is not None:
        parser.add_argument("--checkpoint", type=Path, default=None,
                            help=f"a trained model's folder, from examples/train_shakespeare.py "
                                 f"(default: {checkpoint}, if it exists)")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("LESSON_QUICK") == "1",
                        help="a few steps only, for CI (also LESSON_QUICK=1)")
    parser.add_argument("--data", type=Path, default=None, help="the data file (default: the shared data folder)")
    parser.add_argument("--out", type=Path, default=LESSONS_DIR / "output", help="where figures are written")
    args, _unknown = parser.parse_known_args()
    return args


def data_dir() -> Path:
    """$TINYGRAD_LITE_DATA, else ../shared/data beside the project (as tests/conftest.py)."""
    return Path(os.environ.get("TINYGRAD_LITE_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def names_path(args: argparse.Namespace) -> Path:
    """names.txt: --data, else the shared data folder, else a cached download from makemore."""
    if args.data is not None:
        return args.data
    shared = data_dir() / "names.txt"
    if shared.is_file():
        return shared
    from gpt.data import default_cache_dir, write_atomically  # the cache tiny Shakespeare uses
    cached = default_cache_dir() / "names.txt"
    if not cached.is_file():
        print(f"downloading {NAMES_URL} to {cached}")
        with urllib.request.urlopen(NAMES_URL, timeout=30) as response:
            write_atomically(cached, response.read())
    return cached


def load_names(args: argparse.Namespace) -> list[str]:
    return names_path(args).read_text(encoding="utf-8").splitlines()


def shakespeare_path(args: argparse.Namespace) -> Path:
    """tinyshakespeare.txt: --data, else the shared data folder, else gpt.data's cached download."""
    if args.data is not None:
        return args.data
    shared = data_dir() / "tinyshakespeare.txt"
    if shared.is_file():
        return shared
    from gpt.data import download_tiny_shakespeare  # the cache `python -m gpt train` uses
    return download_tiny_shakespeare()


def load_shakespeare(args: argparse.Namespace) -> str:
    return shakespeare_path(args).read_text(encoding="utf-8")


def split_names(words: list[str]) -> tuple[list[str], list[str], list[str]]:
    """makemore's split: shuffle with random.seed(42), then 80% train, 10% dev, 10% test."""
    words = list(words)
    random.seed(42)
    random.shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    return words[:n1], words[n1:n2], words[n2:]


def char_vocabulary(words: list[str]) -> tuple[dict[str, int], dict[int, str]]:
    """makemore's numbering: '.' (start and end of a name) is 0, the sorted characters 1, 2, ..."""
    stoi = {ch: i + 1 for i, ch in enumerate(sorted(set("".join(words))))}
    stoi["."] = 0
    return stoi, {i: ch for ch, i in stoi.items()}


def contexts(words: list[str], stoi: dict[str, int], block_size: int) -> tuple[list[list[int]], list[int]]:
    """Every (last ``block_size`` characters, next character) pair of the names, as lesson 3 builds them
    (``emma`` with 3: ``... -> e``, ``..e -> m``, ...). Plain lists: the lesson makes the tensors."""
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            X.append(context)
            Y.append(stoi[ch])
            context = context[1:] + [stoi[ch]]
    return X, Y


def in_notebook() -> bool:
    return "ipykernel" in sys.modules


def pyplot():
    """matplotlib.pyplot, or None when matplotlib (the `lessons` extra) is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    if not in_notebook():
        matplotlib.use("Agg")  # a script only writes files; no window opens
    import matplotlib.pyplot as plt
    return plt


def save_figure(figure, name: str, args: argparse.Namespace) -> Path:
    """Write ``figure`` as a PNG in --out. A notebook shows it inline; a script closes it."""
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / name
    figure.savefig(path, dpi=100, bbox_inches="tight")
    print(f"figure: {path}")
    if not in_notebook():
        pyplot().close(figure)
    return path


def report(**results: float | int) -> str:
    """Print the lesson's last line, ``result: key=value ...``: floats to 4 decimals, or to 3
    significant digits below 0.001 (a gradient difference of 2e-16 is not 0.0000)."""
    parts = [f"{key}={format_number(value)}" for key, value in results.items()]
    line = "result: " + " ".join(parts)
    print(line)
    return line


def format_number(value: float | int) -> str:
    if isinstance(value, float) and value != 0 and abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4f}" if isinstance(value, float) else f"{value}"

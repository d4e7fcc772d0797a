"""`python -m bpe` and examples/train_bpe.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import require_data_file

import bpe
from bpe.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def test_train_encode_decode(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 50 + "<|endoftext|>", encoding="utf-8")
    model = tmp_path / "cat.bpe"
    assert main(["train", "--input", str(corpus), "--vocab-size", "266", "--out", str(model),
                 "--special-token", "<|endoftext|>"]) == 0
    assert "trained 266 tokens" in capsys.readouterr().out
    tokenizer = bpe.Tokenizer.load(model)
    assert tokenizer.n_vocab == 266 and tokenizer.eot_token == 265

    assert main(["encode", "--tokenizer", str(model), "--text", "the cat"]) == 0
    ids = [int(word) for word in capsys.readouterr().out.split()]
    assert ids == tokenizer.encode("the cat") and len(ids) < len("the cat")
    assert main(["decode", "--tokenizer", str(model), *map(str, ids)]) == 0
    assert capsys.readouterr().out == "the cat"

    assert main(["encode", "--tokenizer", str(model), "--text", "a<|endoftext|>"]) == 1
    assert "special token '<|endoftext|>': pass --allow-special" in capsys.readouterr().err
    assert main(["encode", "--tokenizer", str(model), "--text", "a<|endoftext|>",
                 "--allow-special"]) == 0
    assert capsys.readouterr().out.split()[-1] == "265"

    array_file = tmp_path / "ids.npy"
    assert main(["encode", "--tokenizer", str(model), "--input", str(corpus), "--out",
                 str(array_file), "--allow-special"]) == 0
    array = np.load(array_file)
    assert array.dtype == np.uint16 and tokenizer.decode(array) == corpus.read_text()
    assert main(["decode", "--tokenizer", str(model), "--input", str(array_file)]) == 0
    assert capsys.readouterr().out == corpus.read_text()


def test_errors_are_reported_not_raised(tmp_path, capsys):
    missing = tmp_path / "missing.bpe"
    assert main(["decode", "--tokenizer", str(missing), "1"]) == 1
    assert "missing.bpe" in capsys.readouterr().err
    assert main(["encode", "--tokenizer", "gpt2", "--data", str(tmp_path), "--text", "x"]) == 1
    assert "vocab.bpe is missing" in capsys.readouterr().err


def test_gpt2_from_the_command_line(capsys):
    data = require_data_file("gpt2/vocab.bpe").parent.parent
    assert main(["encode", "--tokenizer", "gpt2", "--data", str(data), "--text", "Hello world"]) == 0
    assert capsys.readouterr().out.split() == ["15496", "995"]


def test_module_entry_point_and_example(tmp_path):
    shakespeare = require_data_file("tinyshakespeare.txt")
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "bpe", "--help"], capture_output=True, text=True,
                         env=environment, cwd=tmp_path)
    assert run.returncode == 0 and "train" in run.stdout and "encode" in run.stdout
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "train_bpe.py"), "--input",
                          str(shakespeare), "--vocab-size", "400", "--sentence", "Romeo, Romeo!"],
                         capture_output=True, text=True, env=environment, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "trained 400 tokens" in run.stdout and "bytes per token" in run.stdout
    assert "longest tokens learned" in run.stdout
    tokens_line = run.stdout.split("tokens:\n")[-1].splitlines()[0]
    assert "\033[" not in run.stdout and tokens_line.count("|") == 8  # a pipe gets no colour codes
    assert tokens_line.replace("|", "") == "Romeo, Romeo!"
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "train_bpe.py"), "--input",
                          str(shakespeare), "--vocab-size", "400", "--color"],
                         capture_output=True, text=True, env=environment, timeout=120)
    assert run.returncode == 0 and "\033[48;5;" in run.stdout
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "train_bpe.py"), "--input",
                          str(shakespeare), "--vocab-size", "100000"], capture_output=True, text=True,
                         env=environment, timeout=120)
    assert run.returncode == 1 and run.stderr.startswith("error: ") and "Traceback" not in run.stderr

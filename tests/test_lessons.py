"""The lessons in examples/lessons/ run top to bottom with --quick and print their result line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, require_data_file

LESSONS_DIR = PROJECT_ROOT / "examples" / "lessons"
sys.path.insert(0, str(LESSONS_DIR))
import _common  # noqa: E402


def run_lesson(name: str, tmp_path: Path, *extra: str) -> dict[str, float]:
    """Run a lesson with --quick as a script; return its ``result:`` line as {key: number}."""
    environment = {**os.environ, "CI": "true", "MPLBACKEND": "Agg"}
    completed = subprocess.run([sys.executable, str(LESSONS_DIR / name), "--quick", "--out", str(tmp_path), *extra],
                               cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=90)
    assert completed.returncode == 0, f"{name} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    last = completed.stdout.strip().splitlines()[-1]
    assert last.startswith("result: "), f"{name} did not end with a result line: {last!r}"
    return {key: float(value) for key, value in (pair.split("=") for pair in last.split()[1:])}


def test_lesson_files_are_jupytext_percent_scripts():
    lessons = sorted(LESSONS_DIR.glob("[0-9][0-9]_*.py"))
    assert lessons, "no lessons found"
    for path in lessons:
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# %% [markdown]\n# # Lesson"), f"{path.name} should open with a markdown title cell"
        assert "\n# %%\n" in text, f"{path.name} has no code cells"
        assert "\nreport(" in text, f"{path.name} never prints its result line"


def test_micrograd_lesson(tmp_path):
    result = run_lesson("01_micrograd.py", tmp_path)
    assert result["slope"] == 14.0
    # micrograd README's expression: these three are exact in quick mode too.
    assert (result["expr_g"], result["a_grad"], result["b_grad"]) == (24.7041, 138.8338, 645.5773)
    assert result["steps"] == 20
    assert result["moons_loss"] < 0.5 * result["moons_loss_start"]
    assert 0.9 <= result["moons_acc"] <= 1.0


def test_bigram_lesson(tmp_path):
    names = require_data_file("names.txt")
    result = run_lesson("02_bigram.py", tmp_path, "--data", str(names))
    # The counting model is scored on all of names.txt in quick mode too.
    assert result["counts_nll"] == 2.4546
    assert result["unsmoothed_nll"] == 2.4540
    assert result["steps"] == 10
    assert result["nn_nll"] < result["nn_nll_start"] - 0.5


def test_mlp_lesson(tmp_path):
    names = require_data_file("names.txt")
    result = run_lesson("03_mlp.py", tmp_path, "--data", str(names))
    assert result["steps"] == 1000
    assert result["initial_dev_loss"] > 15  # randn weights, unscaled: confidently wrong at first
    assert result["dev_loss"] < result["initial_dev_loss"] / 3
    assert abs(result["dev_loss"] - result["train_loss"]) < 0.2


def test_makemore_split_and_result_line(capsys):
    words = [f"name{i}" for i in range(32_033)]
    train, dev, test = _common.split_names(words)
    assert (len(train), len(dev), len(test)) == (25_626, 3_203, 3_204)
    assert sorted(train + dev + test) == sorted(words)
    assert _common.split_names(words) == (train, dev, test)  # the same shuffle every time
    assert _common.report(loss=2.45, steps=3) == "result: loss=2.4500 steps=3"
    assert capsys.readouterr().out == "result: loss=2.4500 steps=3\n"


def test_lesson_flags(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["lesson", "-f", "kernel.json", "--data", str(tmp_path / "x.txt")])
    monkeypatch.setenv("LESSON_QUICK", "1")
    args = _common.lesson_args("test")  # Jupyter's own -f flag is ignored
    assert args.quick and args.data == tmp_path / "x.txt"
    assert _common.names_path(args) == tmp_path / "x.txt"
    monkeypatch.setenv("TINYGRAD_LITE_DATA", str(tmp_path))
    (tmp_path / "names.txt").write_text("emma\nava\n", encoding="utf-8")
    args.data = None
    assert _common.load_names(args) == ["emma", "ava"]


@pytest.mark.skipif(_common.pyplot() is None, reason="matplotlib is not installed (the lessons extra)")
def test_save_figure_writes_a_png(tmp_path):
    plt = _common.pyplot()
    figure, axes = plt.subplots()
    axes.plot([1, 2, 3])
    args = _common.lesson_args("test")
    args.out = tmp_path / "figures"
    path = _common.save_figure(figure, "line.png", args)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

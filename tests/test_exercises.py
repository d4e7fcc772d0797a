"""The lessons' exercises: with the TODO in place each check fails, with the solution it passes.

The round trip runs the lesson's script form in this process, cell by cell, in quick mode: at a
cell holding an exercise it first runs the cell with that one solution block replaced by its
TODO (as make_exercises.py writes it; in a copy of the namespace, thrown away), which must stop
at the check with an ExerciseError, then the cell as it is, whose check must pass.
"""
from __future__ import annotations

import re
import sys

import pytest

from conftest import PROJECT_ROOT, require_data_file

LESSONS_DIR = PROJECT_ROOT / "examples" / "lessons"
sys.path.insert(0, str(LESSONS_DIR))
import _exercises  # noqa: E402
import make_exercises  # noqa: E402

# lesson -> how many exercises it holds; a lesson that gains markers must be added here
EXERCISES = {"01_micrograd.py": 1, "03_mlp.py": 1, "05_backprop_ninja.py": 9}
CELL_START = re.compile(r"^# %%.*$", re.MULTILINE)


def lesson_paths() -> list:
    return sorted(LESSONS_DIR.glob("[0-9][0-9]_*.py"))


def code_cells(source: str) -> list[str]:
    """The code cells of a jupytext percent script (markdown cells hold only comments)."""
    starts = [match.start() for match in CELL_START.finditer(source)] + [len(source)]
    cells = [source[begin:end] for begin, end in zip(starts, starts[1:])]
    return [cell for cell in cells if not cell.startswith("# %% [markdown]")]


def exercise_count(source: str) -> int:
    return len(make_exercises.solution_blocks(source.split("\n")))


def test_every_lesson_with_exercises_is_round_tripped():
    found = {path.name: exercise_count(path.read_text(encoding="utf-8")) for path in lesson_paths()}
    assert {name: count for name, count in found.items() if count} == EXERCISES


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_exercise_checks_fail_with_the_todo_and_pass_with_the_solution(name, monkeypatch, tmp_path, capsys):
    argv = [name, "--quick", "--out", str(tmp_path)]
    if name != "01_micrograd.py":
        argv += ["--data", str(require_data_file("names.txt"))]
    monkeypatch.setattr(sys, "argv", argv)
    namespace = {"__name__": "__main__"}
    exercises_left = EXERCISES[name]
    for number, cell in enumerate(code_cells((LESSONS_DIR / name).read_text(encoding="utf-8"))):
        where = f"{name}, code cell {number}"
        for which in range(exercise_count(cell)):
            with pytest.raises(_exercises.ExerciseError, match="not yet") as failure:
                exec(compile(make_exercises.replace_solutions(cell, which), where + " (TODO)", "exec"),
                     dict(namespace))
            assert str(failure.value).strip(), f"{where}: the failing check says nothing"
            exercises_left -= 1
        capsys.readouterr()
        exec(compile(cell, where, "exec"), namespace)
        if exercise_count(cell):
            assert "OK: " in capsys.readouterr().out, f"{where}: the solution's check printed no OK"
        if exercises_left == 0:
            break  # the rest of the lesson holds no exercise; test_lessons runs it all
    assert exercises_left == 0


def test_replace_solutions_keeps_the_indentation_and_the_placeholder():
    source = "\n".join([
        "def f(x):",
        "    # BEGIN SOLUTION return None",
        "    y = x + 1",
        "    return y",
        "    # END SOLUTION",
        "# BEGIN SOLUTION",
        "z = 3",
        "# END SOLUTION",
        "check(f)",
    ])
    assert make_exercises.replace_solutions(source) == "\n".join([
        "def f(x):",
        "    # TODO: your code here (the solution has 2 lines)",
        "    return None",
        "# TODO: your code here (the solution has 1 line)",
        "check(f)",
    ])
    only_second = make_exercises.replace_solutions(source, which=1)
    assert "    y = x + 1" in only_second and "z = 3" not in only_second
    assert "the solution has 1 line" in only_second


@pytest.mark.parametrize("lines, message", [
    (["# BEGIN SOLUTION", "x = 1"], "lesson.py:1: BEGIN SOLUTION is never closed"),
    (["x = 1", "# END SOLUTION"], "lesson.py:2: END SOLUTION without a BEGIN SOLUTION"),
    (["# BEGIN SOLUTION", "# BEGIN SOLUTION", "# END SOLUTION"], "lesson.py:2: BEGIN SOLUTION inside the block"),
])
def test_unbalanced_markers_are_an_error_naming_the_line(lines, message):
    with pytest.raises(ValueError, match=message):
        make_exercises.replace_solutions("\n".join(lines), source_name="lesson.py")


@pytest.mark.parametrize("path", lesson_paths(), ids=lambda path: path.name)
def test_every_exercise_version_compiles_without_its_solutions(path):
    source = path.read_text(encoding="utf-8")
    exercise = make_exercises.replace_solutions(source, source_name=path.name)
    compile(exercise, path.name, "exec")
    assert exercise.count("# TODO: your code here") == exercise_count(source)
    assert make_exercises.solution_blocks(exercise.split("\n")) == []


def test_check_gradients_says_what_is_wrong(capsys):
    import tinygrad_lite as tl

    w = tl.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=tl.float64, requires_grad=True)
    (w * w).sum().backward()
    assert _exercises.check_gradients(w=(2 * w.detach(), w)) == 0.0
    assert "OK: 1 gradient(s)" in capsys.readouterr().out
    with pytest.raises(_exercises.ExerciseError, match="dw is not computed yet"):
        _exercises.check_gradients(w=(None, w))
    with pytest.raises(_exercises.ExerciseError, match=r"dw has shape \(2,\), but w has shape \(2, 2\)"):
        _exercises.check_gradients(w=(tl.tensor([1.0, 2.0]), w))
    with pytest.raises(_exercises.ExerciseError, match="differs from the engine's gradient by up to 4"):
        _exercises.check_gradients(w=(w.detach(), w))


def test_check_function_catches_a_wrong_backward():
    import tinygrad_lite as tl

    class WrongSquare(tl.Function):
        def forward(self, x):
            self.save_for_backward(x)
            return x * x

        def backward(self, grad):
            (x,) = self.saved_tensors
            return grad * x  # should be 2x

    x = tl.tensor([0.5, -1.0, 2.0], dtype=tl.float64)
    _exercises.check_function("square", lambda t: t * t, lambda t: t**2, [x])
    with pytest.raises(_exercises.ExerciseError, match="square's gradient for input 0 differs"):
        _exercises.check_function("square", WrongSquare.apply, lambda t: t**2, [x])


def test_make_exercises_writes_every_lesson_as_a_notebook(tmp_path):
    jupytext = pytest.importorskip("jupytext")
    written = make_exercises.write_notebooks(tmp_path)
    assert [path.name for path in written] == [path.stem + ".ipynb" for path in lesson_paths()]
    assert (tmp_path / "_common.py").is_file() and (tmp_path / "_exercises.py").is_file()
    notebook = jupytext.read(tmp_path / "05_backprop_ninja.ipynb")
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    assert sum("# TODO: your code here" in source for source in code) == EXERCISES["05_backprop_ninja.py"]
    assert not any("dlogprobs[range(n), Yb] = -1.0 / n" in source for source in code)
    assert any("# TODO: your code here (the solution has 7 lines)\ndlogprobs = dprobs = " in source
               for source in code)
    assert notebook.cells[0].cell_type == "markdown"
    plain = jupytext.read(tmp_path / "02_bigram.ipynb")  # no exercises: the lesson as it is
    original = jupytext.reads((LESSONS_DIR / "02_bigram.py").read_text(encoding="utf-8"), fmt="py:percent")
    assert [cell.source for cell in plain.cells] == [cell.source for cell in original.cells]


def test_make_exercises_command_line(tmp_path, capsys):
    assert make_exercises.main([]) == 2
    assert "make_exercises.py OUT_DIR" in capsys.readouterr().err

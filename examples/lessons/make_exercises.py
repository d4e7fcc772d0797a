"""Write every lesson as a Jupyter notebook, its exercises' solutions replaced by TODOs.

    python examples/lessons/make_exercises.py OUT_DIR     # needs jupytext: pip install -e ".[lessons]"

In a lesson a solution sits between two marker lines (see _exercises.py):

    # BEGIN SOLUTION dW2 = db2 = None      <- what follows the marker is the placeholder
    ...the solution...
    # END SOLUTION

and the notebook gets, at the marker's indentation,

    # TODO: your code here (the solution has 2 lines)
    dW2 = db2 = None

A lesson without markers becomes a notebook as it is. The helpers the notebooks import
(_common.py, _exercises.py) are copied beside them; the project itself must be installed
(`pip install -e .`) for the notebooks to find tinygrad_lite.
"""
from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

LESSONS_DIR = Path(__file__).resolve().parent
HELPERS = ("_common.py", "_exercises.py")
BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION(?P<placeholder>.*)$")
END = re.compile(r"^[ \t]*# END SOLUTION[ \t]*$")


@dataclass
class SolutionBlock:
    begin: int         # line index of "# BEGIN SOLUTION"
    end: int           # line index of "# END SOLUTION"
    indent: str
    placeholder: str   # the code after the marker, "" for none

    def todo_lines(self) -> list[str]:
        count = self.end - self.begin - 1
        lines = [f"{self.indent}# TODO: your code here (the solution has {count} line{'s' * (count != 1)})"]
        if self.placeholder:
            lines.append(self.indent + self.placeholder)
        return lines


def solution_blocks(lines: list[str], source_name: str = "<lesson>") -> list[SolutionBlock]:
    """The marked blocks, in order; a BEGIN without its END (or the reverse) is an error."""
    blocks, open_block = [], None
    for number, line in enumerate(lines):
        begin = BEGIN.match(line)
        if begin:
            if open_block is not None:
                raise ValueError(f"{source_name}:{number + 1}: BEGIN SOLUTION inside the block "
                                 f"opened on line {open_block.begin + 1}")
            open_block = SolutionBlock(number, -1, begin["indent"], begin["placeholder"].strip())
        elif END.match(line):
            if open_block is None:
                raise ValueError(f"{source_name}:{number + 1}: END SOLUTION without a BEGIN SOLUTION")
            open_block.end = number
            blocks.append(open_block)
            open_block = None
    if open_block is not None:
        raise ValueError(f"{source_name}:{open_block.begin + 1}: BEGIN SOLUTION is never closed")
    return blocks


def replace_solutions(source: str, which: int | None = None, source_name: str = "<lesson>") -> str:
    """``source`` with its solution blocks replaced by TODOs: all of them, or only block ``which``."""
    lines = source.split("\n")
    blocks = solution_blocks(lines, source_name)
    if which is not None:
        blocks = [blocks[which]]
    for block in reversed(blocks):  # from the bottom up, so that earlier line numbers stay valid
        lines[block.begin:block.end + 1] = block.todo_lines()
    return "\n".join(lines)


def write_notebooks(out_dir: Path, lessons_dir: Path = LESSONS_DIR) -> list[Path]:
    """Every ``NN_*.py`` lesson as ``OUT_DIR/NN_*.ipynb`` with TODOs, plus the helpers beside them."""
    import jupytext  # the lessons extra; imported here so that the functions above need nothing

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for lesson in sorted(lessons_dir.glob("[0-9][0-9]_*.py")):
        source = replace_solutions(lesson.read_text(encoding="utf-8"), source_name=lesson.name)
        notebook = jupytext.reads(source, fmt="py:percent")
        path = out_dir / (lesson.stem + ".ipynb")
        jupytext.write(notebook, path)
        written.append(path)
    for helper in HELPERS:
        shutil.copy(lessons_dir / helper, out_dir / helper)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for path in write_notebooks(Path(argv[0])):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The out-dir of a training run: never overwritten by accident, one run at a time, no debris.

    with claim_out_dir(out_dir, resume=False, overwrite=False):
        ...train...

* A folder that already holds a run (``last.json``, ``best.json`` or ``metrics.jsonl``) is
  refused unless the caller resumes it or asks to overwrite it; ``overwrite`` first moves the old
  run into ``previous-<UTC time>/`` inside the folder, so even that loses nothing.
* A lock file, ``.lock``, holds the pid, host and start time of the run that owns the folder. A
  second run is refused with those facts; a lock whose process is gone (same host) is stale and
  is taken over.
* Temporary files that a killed save left behind are removed (see ``checkpoint.remove_debris``;
  also the ``.tmpXXXXXX`` files through which safetensors writes), and weights files that no
  checkpoint points at.
* Unusable paths (a file where a folder should be, a folder we may not write) are reported before
  any work starts, and a folder created for a start that then fails is removed again.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import socket
from pathlib import Path
from typing import Iterator

from .checkpoint import CHECKPOINT_NAMES, remove_debris

RUN_FILES = ("last.json", "best.json", "metrics.jsonl")
LOCK_NAME = ".lock"
UNFINISHED_WRITE = re.compile(r"\.tmp[A-Za-z0-9]{6}")  # the Rust tempfile crate's names


class RunDirError(RuntimeError):
    """The out-dir (or another folder) cannot be used for this run; the message says why and what to do."""


def check_usable_folder(path: Path, flag: str) -> None:
    """Raise RunDirError unless ``path`` is, or can be created as, a folder we can write into."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{flag} {path} is a file, not a folder: pass a folder path")
    existing = path
    while not existing.exists():  # the nearest existing ancestor must be a writable folder
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirError(f"{flag} {path} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"{flag} {path} cannot be written: no write permission for {existing}")


def make_folder(path: Path, flag: str) -> bool:
    """Create ``path`` (and its parents) after `check_usable_folder`; True if it did not exist."""
    check_usable_folder(path, flag)
    if path.is_dir():
        return False
    try:
        path.mkdir(parents=True)
    except OSError as error:  # e.g. under /proc, or a read-only file system, where permissions look fine
        raise RunDirError(f"{flag} {path} cannot be created: {error.strerror or error}") from None
    return True


def holds_a_run(out_dir: Path) -> bool:
    return any((out_dir / name).exists() for name in RUN_FILES)


def move_run_aside(out_dir: Path) -> Path:
    """Move the run files of ``out_dir`` into a new ``previous-<UTC time>/`` folder inside it."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    target = out_dir / f"previous-{stamp}"
    suffix = 1
    while target.exists():
        target, suffix = out_dir / f"previous-{stamp}-{suffix}", suffix + 1
    target.mkdir()
    for name in CHECKPOINT_NAMES:
        for path in out_dir.glob(f"{name}-*.safetensors"):
            path.rename(target / path.name)
    for name in (*RUN_FILES, "loss.png"):
        if (out_dir / name).exists():
            (out_dir / name).rename(target / name)
    return target


def _process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False


def _read_lock(path: Path) -> dict:
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
        return owner if isinstance(owner, dict) else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def _take_lock(out_dir: Path) -> Path:
    """Create ``out_dir/.lock`` naming this process, atomically (written aside, then hard-linked)."""
    lock = out_dir / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    draft = out_dir / f"{LOCK_NAME}.{os.getpid()}.tmp"
    draft.write_text(json.dumps(me), encoding="utf-8")
    try:
        for _ in range(2):
            try:
                os.link(draft, lock)  # fails if a lock exists: no two runs can both succeed
                return lock
            except FileExistsError:
                owner = _read_lock(lock)
                pid = owner.get("pid")
                stale = (owner.get("host") == me["host"] and isinstance(pid, int) and _process_is_gone(pid))
                if not stale:
                    raise RunDirError(
                        f"another run is training into {out_dir}: pid {pid} on {owner.get('host')}, started "
                        f"{owner.get('started')}. Wait for it to finish or use another --out-dir (if that run "
                        f"is gone, delete {lock})") from None
                lock.unlink(missing_ok=True)  # its process died without cleaning up
        raise RunDirError(f"could not take the lock {lock}: another run keeps creating it")
    finally:
        draft.unlink(missing_ok=True)


@contextlib.contextmanager
def claim_out_dir(out_dir: str | Path, *, resume: bool, overwrite: bool) -> Iterator[Path | None]:
    """Own ``out_dir`` for one run (see the module docstring); yields where an overwritten run went."""
    out_dir = Path(out_dir)
    created = make_folder(out_dir, "--out-dir")
    lock = None
    try:
        lock = _take_lock(out_dir)
        moved = None
        if not resume and holds_a_run(out_dir):
            if not overwrite:
                raise RunDirError(
                    f"{out_dir} already holds a training run. Continue it with --resume, or start over with "
                    f"--overwrite (the old run is then moved into {out_dir}/previous-<time>/), or pick another "
                    "--out-dir")
            moved = move_run_aside(out_dir)
        for name in CHECKPOINT_NAMES:
            remove_debris(out_dir, name)
        for unfinished in out_dir.glob(".tmp*"):  # safetensors writes through a Rust `.tmpXXXXXX` file
            if UNFINISHED_WRITE.fullmatch(unfinished.name) and unfinished.is_file():
                unfinished.unlink(missing_ok=True)
        yield moved
    finally:
        if lock is not None and _read_lock(lock).get("pid") == os.getpid():
            lock.unlink(missing_ok=True)
        if created and not any(out_dir.iterdir()):  # a start that failed leaves no empty folder
            out_dir.rmdir()

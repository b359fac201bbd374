"""Deterministic, all-or-nothing file output shared by every stage.

DVC re-runs a downstream stage whenever an upstream output's bytes change, so everything we write is
byte-stable for identical inputs: JSON with sorted keys and fixed separators, no timestamps, no
absolute temp paths. Directories are built beside their destination and renamed into place only when
complete, so an interrupted or failed stage never leaves something a reader accepts as finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.core.errors import DataError

# What marks a folder as somebody's project rather than a stage's output: an output folder is replaced
# whole, so a mistyped `--out .` or `--out ~/work` must stop before anything is deleted.
PROJECT_MARKERS = (".git", ".dvc", "dvc.yaml", "params.yaml", "pyproject.toml")


def dumps(obj: Any) -> str:
    """Canonical JSON text (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_json(path: Path, obj: Any) -> None:
    Path(path).write_text(dumps(obj))


def write_json_atomic(path: Path, obj: Any) -> None:
    """`write_json` through a scratch file renamed into place: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_text(dumps(obj))
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """One canonical JSON object per line; returns the number of rows."""
    n = 0
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: an existence check, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_scratch(dest: Path) -> list[Path]:
    """Delete `.<name>.partial-<pid>` / `.<name>.old-<pid>` leftovers of `dest` whose process is dead.

    A SIGKILL skips every cleanup handler, so a killed build leaves its scratch folder behind (gigabytes
    for a token cache); the next build of the same output removes it. A live process's scratch is kept:
    DVC's repository lock already keeps two builds of one output apart.
    """
    removed = []
    for path in dest.parent.glob(f".{dest.name}.*-*"):
        kind, _, pid = path.name[len(dest.name) + 2:].rpartition("-")
        if kind in ("partial", "old") and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_output_dir(dest: Path) -> None:
    """Refuse, in one line and before any work, an output folder that cannot be written or whose
    replacement would delete more than an earlier output of the same command: a file, the working
    directory or a folder above it, the home or root folder, a folder holding a project marker, or a
    place under a file or a folder this process may not write to."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise DataError(f"{dest}: is a file, and this output is a folder; name another folder")
    here, resolved = Path.cwd().resolve(), dest.resolve()
    if resolved == here or resolved in here.parents or resolved == Path.home().resolve():
        raise DataError(f"{dest}: an output folder is replaced whole, and this one holds the working "
                        f"directory; name a folder of its own")
    marker = next((m for m in PROJECT_MARKERS if (dest / m).exists()), None)
    if marker is not None:
        raise DataError(f"{dest}: holds {marker}, so it is a project, not an output of this command; an "
                        f"output folder is replaced whole: name a folder of its own")
    parent = dest.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{parent}: is a file, so {dest} cannot be created under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{parent}: not writable by this user, so {dest} cannot be written there")


def check_outputs(*folders: Path) -> None:
    """`check_output_dir` for each output folder a stage will write, before it starts its work."""
    for folder in folders:
        check_output_dir(folder)


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a scratch directory that replaces `dest` only if the block finishes without error.

    The scratch dir sits next to `dest` (same filesystem, so the final rename is atomic) and is
    removed on failure; an existing `dest` is untouched until the new one is complete.
    """
    dest = Path(dest)
    check_output_dir(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(dest)
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)

"""Terminal plumbing shared by the stage commands: progress, one-line errors, rank-0 output.

Progress is a rich bar when stderr is a terminal and plain, periodic log lines otherwise (CI logs,
`dvc exp run --queue`), so long stages always show that they are alive.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from pipeline.core.config import ConfigError
from pipeline.core.errors import DataError, os_error_line

# Stage output is plain text: with markup on, rich would swallow bracketed text in messages and paths
# ("[focal]", "bbox [nan, 0, 4, 4]"). Styling is explicit (`Text`), never parsed from a string.
console = Console(stderr=True, markup=False, highlight=False)
PARAMS_HELP = "params file to read this stage's section from"


def is_rank0() -> bool:
    # Stage entry points may run under torchrun; only rank 0 draws progress and prints summaries.
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """Yield a `callback(done, total)` that drives a rich bar (TTY) or prints ~10 log lines."""
    if not is_rank0():
        yield lambda done, total: None
        return
    if console.is_terminal:
        columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(description, total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)
        return
    start, last = time.monotonic(), [-1]

    def log(done: int, total: int) -> None:
        step = max(1, total // 10)
        if done == total or done // step != last[0]:
            last[0] = done // step
            console.print(f"{description}: {done}/{total} ({time.monotonic() - start:.1f}s)",
                          highlight=False)

    yield log


def fail_cleanly(fn: Callable) -> Callable:
    """Turn bad-input errors, and what the operating system refuses (a permission, a full disk, a file
    where a folder should be), into one red line on stderr and exit code 1 (no traceback).

    Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (DataError, ConfigError) as e:
            _error(one_line(e))
        except OSError as e:
            _error(os_error_line(e))

    return wrapper


def _error(message: str) -> None:
    console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    raise typer.Exit(code=1) from None


def one_line(e: BaseException) -> str:
    """The message of `e`; for an error re-raised from a DataLoader worker (whose message carries the
    worker's traceback) the original one-line message at its end."""
    text = str(e)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    name = f"{type(e).__module__}.{type(e).__name__}: "
    return last[len(name):] if last.startswith(name) else last


"""The stage commands that run as several processes: `AIT_NPROC=N` makes each start N workers of itself."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from pipeline.core.runtime import launch_workers


def in_workers(fn: Callable) -> Callable:
    """For train-tokenizer, cache-tokens, train-solver and evaluate: with `AIT_NPROC` > 1 the command
    starts that many workers of itself through torchrun's launcher (`pipeline.core.runtime.launch_workers`)
    and returns once they have all finished; otherwise it does the work itself."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if launch_workers(sys.argv[1:]):
            return None
        return fn(*args, **kwargs)

    return wrapper

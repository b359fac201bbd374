"""The registered tasks: the one place that lists them (README "Adding a task").

A task is the folder `pipeline/tasks/<name>/`; its `task.py` defines `TASK`. `get_task` imports that one
folder by name and no other, so a stage imports (and dvc.yaml lists) only the code of its own tasks.
The order below is the vocabulary's layout order of the code ranges (PAPER_NOTES §4.3: mask codes before
depth codes; later tasks after them), so a solver's layout never depends on the order a run names its
tasks; each value is the task's row in the solver's task embedding (PAPER_NOTES §9: det 0, insseg 1,
depth 2; later tasks next).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pipeline.core.constraints import ConfigError
from pipeline.core.vocab import Vocab

if TYPE_CHECKING:  # the protocol's module imports the generic helpers; the registry stays below them
    from pipeline.tasks.base import Task

TASK_IDS: dict[str, int] = {"insseg": 1, "depth": 2, "semseg": 3}
TASK_NAMES = tuple(TASK_IDS)
TASK_SLOTS = 1 + max(TASK_IDS.values())  # rows of the solver's task embedding tables


def check_task(name: str) -> str:
    """`name` if it is a registered task; else a one-line error listing the known ones."""
    if name not in TASK_IDS:
        raise ConfigError(f"unknown task {name!r}; registered tasks: {', '.join(TASK_NAMES)}")
    return name


def get_task(name: str) -> Task:
    """The task called `name`, imported from its own folder only."""
    return importlib.import_module(f"pipeline.tasks.{check_task(name)}.task").TASK


def get_preparer(name: str):
    """How `ait prepare <name>` reads its dataset (`pipeline/tasks/<name>/prepare.py` `PREPARE`:
    params path, progress -> `Prepared`), imported without the rest of the task."""
    return importlib.import_module(f"pipeline.tasks.{check_task(name)}.prepare").PREPARE


def ordered(names) -> list[str]:
    """`names` (registered tasks) in the registry's order: the vocabulary's layout order."""
    unknown = sorted(set(names) - set(TASK_IDS))
    if unknown:
        raise ConfigError(f"unknown task(s) {unknown}; registered tasks: {', '.join(TASK_NAMES)}")
    return [name for name in TASK_NAMES if name in set(names)]


def vocab_for(num_bins: int, manifests: dict[str, dict], spare_codes: int = 0) -> Vocab:
    """The layout of a solver trained on these token caches (task -> its cache's `manifest.json`): each
    task's codebook size and class count come from its manifest; nothing here is typed by hand."""
    tasks = [get_task(name) for name in ordered(manifests)]
    classes = sum(t.vocab_classes(manifests[t.name]) for t in tasks)
    codes = tuple((t.code_kind, int(manifests[t.name]["tokenizer"]["num_embeddings"])) for t in tasks)
    return Vocab(num_bins, classes, codes, spare_codes)

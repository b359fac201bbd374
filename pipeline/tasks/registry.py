"""The registered tasks, by name: the one place that lists them (README "Adding a task").

Their order is the vocabulary's layout order of the code ranges (PAPER_NOTES §4.3: mask codes before depth
codes; later tasks after them), so a solver's layout never depends on the order a run names its tasks.
"""

from __future__ import annotations

from pipeline.constraints import ConfigError
from pipeline.tasks import depth, insseg, semseg
from pipeline.tasks.base import Task
from pipeline.vocab import Vocab

TASKS: dict[str, Task] = {t.name: t for t in (insseg.TASK, depth.TASK, semseg.TASK)}
TASK_SLOTS = 1 + max(t.task_id for t in TASKS.values())  # rows of the solver's task embedding tables


def get_task(name: str) -> Task:
    """The task called `name`; an unknown name is a one-line error listing the known ones."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; registered tasks: {', '.join(TASKS)}")
    return TASKS[name]


def vocab_for(num_bins: int, manifests: dict[str, dict], spare_codes: int = 0) -> Vocab:
    """The layout of a solver trained on these token caches (task -> its cache's `manifest.json`): each
    task's codebook size and class count come from its manifest; nothing here is typed by hand."""
    tasks = [t for name, t in TASKS.items() if name in manifests]
    unknown = set(manifests) - set(TASKS)
    if unknown:
        raise ConfigError(f"unknown task(s) {sorted(unknown)}; registered tasks: {', '.join(TASKS)}")
    classes = sum(t.vocab_classes(manifests[t.name]) for t in tasks)
    codes = tuple((t.code_kind, t.vocab_codes(manifests[t.name])) for t in tasks)
    return Vocab(num_bins, classes, codes, spare_codes)

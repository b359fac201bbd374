"""`ait prepare <task>` — the `prepare@<task>` DVC stages (depth, insseg, semseg).

Reads only `data.tasks.<task>` and `data.max_bad_fraction` (depth and semseg also the two crop sides
their frames must fit: `tokenizer.<task>.train.crop_size`, `cache.<task>.crop_size`), validates every
sample once and writes `<out>/<split>.jsonl` manifests plus `report.json` (and `categories.json` for
insseg, `classes.json` for semseg). The work is `pipeline.data.prepare_run.prepare_task`.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.io import check_outputs
from pipeline.data.prepare_run import prepare_task
from pipeline.tasks.registry import TASK_NAMES
from stages.ui import PARAMS_HELP, console, fail_cleanly, progress

Task = Enum("Task", {name: name for name in TASK_NAMES}, type=str)  # one choice per registered task


@fail_cleanly
def main(
    task: Annotated[Task, typer.Argument(help="which dataset to validate")],
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
    out: Annotated[Path | None, typer.Option(help="output dir (default data/prepared/<task>)")] = None,
) -> None:
    """Validate a dataset once and write per-split manifests plus report.json."""
    out = out or Path("data/prepared") / task.value
    check_outputs(out)
    report = prepare_task(task.value, params, out, progress,
                          lambda line: console.print(line, soft_wrap=True))
    counts = ", ".join(f"{s}: {c['kept']}/{c['total']}" for s, c in report["counts"].items())
    console.print(f"prepare {task.value}: {counts} samples kept -> {out}", highlight=False)

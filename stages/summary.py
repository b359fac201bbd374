"""`ait summary` — a rich table of what the pipeline produced (run at the end of `make repro`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def _prepared_table(root: Path) -> Table | None:
    reports = sorted(root.glob("*/report.json"))
    if not reports:
        return None
    table = Table(title="prepared datasets")
    for col in ("task", "source", "split", "kept", "skipped", "annotations"):
        table.add_column(col, justify="left" if col in ("task", "source", "split") else "right")
    for path in reports:
        report = json.loads(path.read_text())
        for split, c in report["counts"].items():
            table.add_row(report["task"], report["source"], split, str(c["kept"]), str(c["skipped"]),
                          str(c["annotations"]) if report["task"] == "insseg" else "-")
    return table


def main(
    prepared: Annotated[Path, typer.Option(help="prepared-data root")] = Path("data/prepared"),
) -> None:
    """Print the key numbers of the last `dvc repro`."""
    console = Console()
    tables = [t for t in (_prepared_table(prepared),) if t is not None]
    if not tables:
        console.print("nothing produced yet: run `dvc repro`")
    for t in tables:
        console.print(t)

"""`ait report TABLE|all` — the paper's ablation tables with this project's figures beside the paper's.

    ait report 7                  # rich table; rows not run yet say so, with the command that runs them
    ait report all --md           # GitHub markdown for a README

Our figures come from `dvc exp show --json -A` (every baseline commit; for a row whose experiment ran
on several commits, the newest), found by the experiment names `ait ablate` gives; `--json-file` reads
a saved copy instead. The paper's figures are NYUv2 / COCO val at full scale, ours whatever params the
experiments ran with (the demo unless a preset was passed to `ait ablate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.experiments import get_table, load_ablations
from pipeline.report import (
    PAPER_NOTE,
    Report,
    build_report,
    cells,
    exp_show,
    headers,
    parse_exp_show,
    read_exp_show,
    render_markdown,
)
from stages.ablate import ABLATIONS_HELP
from stages.ui import fail_cleanly


@fail_cleanly
def main(
    table: Annotated[str, typer.Argument(help="the paper's table number, or `all`")],
    md: Annotated[bool, typer.Option("--md", help="print GitHub markdown instead of rich tables")] = False,
    json_file: Annotated[Path | None, typer.Option(
        help="a saved `dvc exp show --json -A` output instead of running it")] = None,
    ablations: Annotated[Path, typer.Option(help=ABLATIONS_HELP)] = Path("ablations.yaml"),
) -> None:
    """Print paper TABLE (or all of them) with our experiments' figures beside the published ones."""
    tables = load_ablations(ablations)
    numbers = list(tables) if table == "all" else [get_table(tables, table)[0]]
    results = parse_exp_show(read_exp_show(json_file) if json_file else exp_show())
    reports = [build_report(n, tables[n], results) for n in numbers]
    if md:
        typer.echo("\n\n".join(render_markdown(r) for r in reports))
        return
    console = Console()
    for report in reports:
        console.print(_rich_table(report))
        if report.todo:
            console.print("rows without results:")
        for exp, cmd in report.todo:
            console.print(f"  {exp}: {cmd}", markup=False, highlight=False, soft_wrap=True)
        console.print()


def _rich_table(report: Report) -> Table:
    caption = f"{PAPER_NOTE}; ours: this project's `dvc exp` runs. {report.table.note}".strip()
    table = Table(title=escape(f"Table {report.number} — {report.table.title}"), caption=escape(caption))
    for i, header in enumerate(headers(report.table)):
        table.add_column(header.replace(": ", "\n"), justify="left" if i == 0 else "right")
    for texts in cells(report):
        table.add_row(*map(escape, texts), style="dim" if "missing" in texts else None)
    return table


"""Rich tables of the report commands (`ait summary`, `ait ablate --run`) from `summary.SummaryTable`s."""

from __future__ import annotations

from rich.table import Table

from pipeline.summary import SummaryTable


def rich_table(t: SummaryTable, labels: int = 2) -> Table:
    """A rich table of `t`: the first `labels` columns left-aligned, the numbers right-aligned."""
    table = Table(title=t.title, caption=t.caption or None)
    for i, col in enumerate(t.columns):
        table.add_column(col, justify="left" if i < labels else "right")
    for row in t.rows:
        table.add_row(*row)
    return table

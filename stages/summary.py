"""`ait summary` — the key numbers of the last `dvc repro` (run by `make repro`), as rich tables or, with
`--md`, the GitHub markdown the README's demo results are pasted from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.staleness import staleness
from pipeline.summary import markdown, read_spread, summary_tables
from stages.tables import rich_table
from stages.ui import console as stderr
from stages.ui import fail_cleanly


@fail_cleanly
def main(
    prepared: Annotated[Path, typer.Option(help="prepared-data root")] = Path("data/prepared"),
    results: Annotated[Path, typer.Option(help="results root")] = Path("results"),
    md: Annotated[bool, typer.Option("--md", help="print GitHub markdown instead of rich tables")] = False,
    spread: Annotated[Path | None, typer.Option(help="seeds.json of bench/bench_seeds.py: adds each figure's "
                                                "seed spread and whether its gain exceeds it")] = None,
    check_status: Annotated[bool, typer.Option(help="warn (on stderr) about numbers `dvc status` finds "
                                                    "out of date")] = True,
) -> None:
    """Print the key numbers of the last `dvc repro`: data, tokenizers, solvers."""
    tables = summary_tables(prepared, results, read_spread(spread) if spread else None)
    # DVC's status is the project's in this directory: asked only when the results shown are its own
    ours = results.resolve().is_relative_to(Path.cwd().resolve())
    state = staleness() if check_status and tables and ours else None
    if state is not None and state.warning():
        stderr.print(state.warning(), soft_wrap=True)
    if md:
        typer.echo(markdown(tables) if tables else "nothing produced yet: run `dvc repro`")
        return
    console = Console()
    if not tables:
        console.print("nothing produced yet: run `dvc repro`")
    for t in tables:
        console.print(rich_table(t), markup=False)

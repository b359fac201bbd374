"""`ait ablate TABLE` — the DVC experiments that reproduce one of the paper's ablation tables.

    ait ablate 7                                   # queue one experiment per row, then `dvc queue start`
    ait ablate 5 -S tokenizer.depth.train.crop_size=96 --dry-run
    ait ablate 7 --row hard --row both --run
    ait ablate 1 $(ait preset presets/paper.yaml) --run --timings results/ablate_t1.json

The rows live in ablations.yaml: each is `dvc exp run -n t<TABLE>-<row> -S ... TARGETS`. Extra `-S`
apply to every row except for the keys the row sets itself. `--run` runs the rows one after the
other with `--temp` (the workspace is untouched) and reports how many stages DVC ran, restored from
its run-cache or found unchanged, which is where the shared-solver rows of Table 7 save their time.
`ait report TABLE` reads the results back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.core.params import read_params
from pipeline.experiments import (
    check_keys,
    check_mode,
    check_rows,
    check_values,
    command,
    get_table,
    load_ablations,
    queue_rows,
    run_rows,
    select,
    shell_line,
    timing_table,
)
from stages.tables import rich_table
from stages.ui import PARAMS_HELP, console, fail_cleanly

ABLATIONS_HELP = "the paper's ablation tables (rows, overrides, paper numbers)"


@fail_cleanly
def main(
    table: Annotated[str, typer.Argument(help="the paper's table number (see ablations.yaml)")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-S", help="extra key=value override for every row (repeatable, as dvc exp run -S)")] = None,
    rows: Annotated[list[str] | None, typer.Option("--row", help="only this row id (repeatable)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the dvc commands only")] = False,
    run: Annotated[bool, typer.Option("--run", help="run the rows now, one by one, in temp dirs")] = False,
    timings: Annotated[Path | None, typer.Option(help="with --run: write per-row timings (JSON)")] = None,
    ablations: Annotated[Path, typer.Option(help=ABLATIONS_HELP)] = Path("ablations.yaml"),
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
) -> None:
    """Queue (default), print (--dry-run) or run (--run) one DVC experiment per row of a paper TABLE."""
    check_mode(dry_run, run, timings)
    number, spec = get_table(load_ablations(ablations), table)
    exps = select(number, spec, rows or [])
    extra = list(set_ or [])
    check_keys(exps, extra, read_params(params))
    check_values(exps, extra, params)
    commands = [command(e, extra, "temp" if run else "queue") for e in exps]
    names = [e.name for e in exps]
    if dry_run:
        for argv in commands:
            typer.echo(shell_line(argv))
    elif run:
        done = run_rows(commands, names, _echo, timings)
        Console().print(rich_table(timing_table(done), labels=1))
        check_rows(done)
    else:
        queue_rows(commands, names, _echo)
        _echo(f"\n{len(commands)} experiment(s) queued. Run and follow them with")
        for hint in ("dvc queue start          # one worker; -j N for N at once",
                     "dvc queue status", "dvc queue logs NAME", f"ait report {number}"):
            _echo(f"  {hint}")


def _echo(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


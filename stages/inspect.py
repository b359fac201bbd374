"""`ait inspect …` — look inside what the stages produced (token caches), for people and for scripts.

- `ait inspect cache PATH [--json] [--verify]`: per split samples, shards, bytes, tokens per sample and
  code usage, as a rich table on stdout or as JSON (pipeline/inspect.py);
- `ait inspect keys PATH [--split S]`: the sample keys of each split, one per line;
- `ait inspect sample PATH KEY --out FILE.png`: image | GT | hard-decoded cached tokens, drawn by the
  cache's task.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.core.viz import save_png
from pipeline.inspect import cache_keys, cache_table, foreign_variant, sample_panel, summarize_cache
from stages.ui import console, fail_cleanly

app = typer.Typer(no_args_is_help=True, help="Inspect pipeline outputs (token caches).")


@app.command("cache")
@fail_cleanly
def cache(
    path: Annotated[Path, typer.Argument(help="token cache dir (data/tokens/<variant>)")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON on stdout instead of a table")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="also check the sha256 of every shard and zarr "
                                                          "file against the manifest (reads all)")] = False,
) -> None:
    """Counts, sizes and codebook usage of a token cache."""
    summary = summarize_cache(path, verify)
    warning = foreign_variant(path, summary["variant"])
    if warning:
        console.print(warning, soft_wrap=True, markup=False)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
    else:
        out = Console()
        # Logs and pipes default to 80 columns, which truncates the cells; give them room instead.
        (out if out.is_terminal else Console(width=max(out.width, 160))).print(cache_table(summary))



@app.command("keys")
@fail_cleanly
def keys(
    path: Annotated[Path, typer.Argument(help="token cache dir (data/tokens/<variant>)")],
    split: Annotated[str | None, typer.Option(help="only this split (default: every split)")] = None,
) -> None:
    """The sample keys of a token cache, one `split<TAB>key` line each (for `ait inspect sample`)."""
    for name, names in cache_keys(path, split).items():
        for key in names:
            typer.echo(f"{name}\t{key}")


@app.command("sample")
@fail_cleanly
def sample(
    path: Annotated[Path, typer.Argument(help="token cache dir")],
    key: Annotated[str, typer.Argument(help="sample key (`ait inspect keys PATH` lists them)")],
    out: Annotated[Path, typer.Option(help="PNG to write")] = Path("sample.png"),
    model_dir: Annotated[Path | None, typer.Option(help="tokenizer checkpoint "
                                                        "(default: the manifest's)")] = None,
) -> None:
    """Render image | GT | hard-decoded cached tokens of one sample to a PNG."""
    split, index, image = sample_panel(path, key, model_dir)
    save_png(image, out)
    console.print(f"inspect sample {key} ({split} #{index}) -> {out} ({image.shape[1]}x{image.shape[0]})")

"""`ait summary` — rich tables of the key numbers of the last `dvc repro` (run by `make repro`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def _load(paths: list[Path]) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(paths)]


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < 2 else "right")
    return table


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def prepared_table(root: Path) -> Table | None:
    reports = _load(list(root.glob("*/report.json")))
    if not reports:
        return None
    table = _table("prepared datasets", ("task", "split", "source", "kept", "skipped", "annotations"))
    for r in reports:
        for split, c in r["counts"].items():
            table.add_row(r["task"], split, r["source"], str(c["kept"]), str(c["skipped"]),
                          str(c["annotations"]) if r["task"] == "insseg" else "-")
    return table


def tokenizer_table(root: Path) -> Table | None:
    results = _load(list(root.glob("*/metrics.json")))
    if not results:
        return None
    table = _table("tokenizer reconstruction (upper bound of the system)",
                   ("variant", "metric", "VQ-VAE hard", "VQ-VAE soft", "interpolation", "hole RMSE"))
    for m in results:
        key = "rmse" if m["task"] == "depth" else "AP"
        table.add_row(m["variant"], "RMSE (m)" if key == "rmse" else "mask AP",
                      *(_fmt(m[k][key]) for k in ("vqvae_hard", "vqvae_soft", "interp_baseline")),
                      _fmt(m["vqvae_hard"].get("hole_rmse")))
    return table


def solver_table(root: Path) -> Table | None:
    runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/metrics.json"))}
    if not runs:
        return None
    table = _table("task-solver", ("run", "task / metric", "model", "baseline", "gain", "tokenizer bound"))
    table.caption = "baseline: depth, the training mean depth map; insseg, the image-blind class prior"
    for run, m in runs.items():
        if "depth" in m:
            d = m["depth"]
            for key in ("rmse", "abs_rel", "d1"):
                table.add_row(run, f"depth {key}", _fmt(d["model"][key]), _fmt(d["mean_depth_baseline"][key]),
                              f"{d['rmse_gain_vs_mean']:+.1%}" if key == "rmse" else "",
                              _fmt(d["tokenizer_upper_bound"][key]))
        if "insseg" in m:
            for iou in ("bbox", "segm"):
                for key in ("AP", "AP50"):
                    table.add_row(run, f"insseg {iou} {key}", _fmt(m["insseg"][iou][key]),
                                  _fmt(m["insseg"]["prior_baseline"][iou][key]), "", "")
    return table


def main(
    prepared: Annotated[Path, typer.Option(help="prepared-data root")] = Path("data/prepared"),
    results: Annotated[Path, typer.Option(help="results root")] = Path("results"),
) -> None:
    """Print the key numbers of the last `dvc repro`: data, tokenizers, solvers."""
    console = Console()
    tables = [prepared_table(prepared), tokenizer_table(results / "eval_tokenizer"),
              solver_table(results / "evaluate")]
    tables = [t for t in tables if t is not None]
    if not tables:
        console.print("nothing produced yet: run `dvc repro`")
    for t in tables:
        console.print(t)

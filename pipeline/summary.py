"""The key numbers of a finished `dvc repro`, read back from the stages' outputs (report.json and
metrics.json files), as plain tables that `ait summary` prints with rich or as GitHub markdown. The
README's demo results are this module's markdown, so every figure there comes from a stage output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.tasks import scores
from pipeline.tasks.base import fmt
from pipeline.tasks.registry import get_task


@dataclass(frozen=True)
class SummaryTable:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


def _load(root: Path, pattern: str) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(root).glob(pattern))}


def prepared_table(root: Path) -> SummaryTable | None:
    rows = [(r["task"], split, r["source"], str(c["kept"]), str(c["skipped"]), str(c.get("annotations", "-")))
            for r in _load(root, "*/report.json").values() for split, c in r["counts"].items()]
    return SummaryTable("prepared datasets", ("task", "split", "source", "kept", "skipped", "annotations"),
                        tuple(rows)) if rows else None


def tokenizer_table(root: Path) -> SummaryTable | None:
    """VQ-VAE reconstruction next to the interpolation tokenizer (fair; literal for depth), with both
    methods' RMSE inside the sensor holes where a complete depth exists."""
    rows = []
    for m in _load(root, "*/metrics.json").values():
        score = get_task(m["task"]).tokenizer_score
        key, metric = score.value[0], score.label
        methods = ("vqvae_hard", "vqvae_soft", "interp_baseline", "interp_literal")
        rows.append((m["variant"], metric, *(fmt(m[k][key]) if k in m else "-" for k in methods),
                     *(fmt(m.get(k, {}).get("hole_rmse")) for k in ("vqvae_hard", "interp_baseline",
                                                                    "interp_literal"))))
    columns = ("variant", "metric", "VQ-VAE hard", "VQ-VAE soft", "interpolation", "interp. literal",
               "hole RMSE VQ-VAE", "hole RMSE interp.", "hole RMSE literal")
    caption = ("interpolation: the area average of each token cell (depth: of its valid pixels, holes "
               "ignored; masks: thresholded at 0.5); literal: depth's bilinear resample that reads holes as "
               "0 m, masks' nearest sampling; hole RMSE: inside the sensor's holes, against the complete "
               "depth (demo only)")
    return SummaryTable("tokenizer reconstruction (upper bound of the system)", columns, tuple(rows),
                        caption) if rows else None


def solver_table(root: Path) -> SummaryTable | None:
    rows = [row for run, m in _load(root, "*/metrics.json").items() for task, metrics in m.items()
            for row in scores.summary_rows(get_task(task), run, metrics)]
    columns = ("run", "task / metric", "model", "baseline", "gain", "tokenizer bound")
    tasks = sorted({task for m in _load(root, "*/metrics.json").values() for task in m})
    caption = ("gain: the improvement over the baseline in the metric's unit (+ = better); baseline: "
               + "; ".join(f"{name}, {get_task(name).baseline_note}" for name in tasks))
    return SummaryTable("task-solver", columns, tuple(rows), caption) if rows else None


def summary_tables(prepared: Path, results: Path) -> list[SummaryTable]:
    tables = [prepared_table(prepared), tokenizer_table(results / "eval_tokenizer"),
              solver_table(results / "evaluate")]
    return [t for t in tables if t is not None]


def markdown(tables: Sequence[SummaryTable]) -> str:
    """GitHub markdown: per table a bold title, a pipe table (numbers right-aligned) and its caption."""
    out = []
    for t in tables:
        align = ["---"] * min(2, len(t.columns)) + ["---:"] * max(len(t.columns) - 2, 0)
        lines = [f"**{t.title}**", "", md_row(t.columns), md_row(align), *(md_row(r) for r in t.rows)]
        out.append("\n".join(lines + ([f"\n{t.caption}."] if t.caption else [])))
    return "\n\n".join(out)


def md_row(texts: Sequence[str]) -> str:
    return "| " + " | ".join(t.replace("|", "\\|") for t in texts) + " |"

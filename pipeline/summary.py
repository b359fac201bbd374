"""The key numbers of a finished `dvc repro`, read back from the stages' outputs (report.json and
metrics.json files), as plain tables that `ait summary` prints with rich or as GitHub markdown. The
README's demo results are this module's markdown, so every figure there comes from a stage output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SummaryTable:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


def fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


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
        key, metric = ("rmse", "RMSE (m)") if m["task"] == "depth" else ("AP", "mask AP")
        methods = ("vqvae_hard", "vqvae_soft", "interp_baseline", "interp_literal")
        rows.append((m["variant"], metric, *(fmt(m[k][key]) if k in m else "-" for k in methods),
                     *(fmt(m.get(k, {}).get("hole_rmse")) for k in ("vqvae_hard", "interp_baseline",
                                                                    "interp_literal"))))
    columns = ("variant", "metric", "VQ-VAE hard", "VQ-VAE soft", "interpolation", "interp. literal",
               "hole RMSE VQ-VAE", "hole RMSE interp.", "hole RMSE literal")
    caption = ("interpolation: area average of the valid depth per token cell (holes ignored); literal: "
               "bilinear resample that reads holes as 0 m; hole RMSE: inside the sensor's holes, against "
               "the complete depth (demo only)")
    return SummaryTable("tokenizer reconstruction (upper bound of the system)", columns, tuple(rows),
                        caption) if rows else None


def solver_table(root: Path) -> SummaryTable | None:
    rows: list[tuple[str, ...]] = []
    for run, m in _load(root, "*/metrics.json").items():
        if "depth" in m:
            rows += depth_rows(run, m["depth"])
        if "insseg" in m:
            rows += insseg_rows(run, m["insseg"])
    columns = ("run", "task / metric", "model", "baseline", "median map", "gain", "tokenizer bound")
    caption = ("baseline: depth, the training mean depth map; insseg, the image-blind class prior. "
               "spread: RMS deviation of the prediction from the mean map over the GT's (0 = the model "
               "outputs the mean map), and their correlation")
    return SummaryTable("task-solver", columns, tuple(rows), caption) if rows else None


def depth_rows(run: str, d: dict) -> list[tuple[str, ...]]:
    median = d.get("median_depth_baseline", {})
    rows = [(run, f"depth {key}", fmt(d["model"][key]), fmt(d["mean_depth_baseline"][key]),
             fmt(median.get(key)), f"{d['rmse_gain_vs_mean']:+.1%}" if key == "rmse" else "",
             fmt(d["tokenizer_upper_bound"][key]))
            for key in ("rmse", "abs_rel", "d1")]
    if "spread_vs_mean_map" in d:
        s = d["spread_vs_mean_map"]
        spread = f"{s['deviation_ratio']:.2f} (corr {s['deviation_correlation']:+.2f})"
        rows.append((run, "depth spread vs mean map", spread, "0.00", "", "", ""))
    return rows


def insseg_rows(run: str, m: dict) -> list[tuple[str, ...]]:
    rows = [(run, f"insseg {iou} {key}", fmt(m[iou][key]), fmt(m["prior_baseline"][iou][key]), "", "", "")
            for iou in ("bbox", "segm") for key in ("AP", "AP50")]
    if "hits" in m:
        rows.append((run, "insseg GT objects found (IoU>=0.5; right class)", hits_text(m["hits"]),
                     hits_text(m["prior_baseline"]["hits"]), "", "", ""))
    return rows


def hits_text(h: dict) -> str:
    return f"{h['gt_found']}/{h['gt_objects']} ({h['gt_found_right_class']})"


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

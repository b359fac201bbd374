"""The key numbers of a finished `dvc repro`, read back from the stages' outputs (report.json and
metrics.json files), as plain tables that `ait summary` prints with rich or as GitHub markdown. The
README's demo results are this module's markdown, so every figure there comes from a stage output.

With a seed-spread file (`bench/bench_seeds.py`'s seeds.json: the same runs re-trained with other seeds),
the tokenizer and solver tables gain, per compared figure, the standard deviation of the model's figure
over the seeds and whether its difference to the baseline (the interpolation tokenizer; the image-blind
baseline) exceeds twice the pooled deviation ("better" or "worse beyond spread") or not ("within
spread")."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.constraints import ConfigError
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
    """{folder name: its JSON object}; a file that is not one is a one-line error naming it."""
    out = {}
    for path in sorted(Path(root).glob(pattern)):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: not a readable stage output ({type(e).__name__}); "
                              "re-run the stage that writes it (`dvc repro`)") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: not a stage output (a JSON object); re-run `dvc repro`")
        out[path.parent.name] = data
    return out


def prepared_table(root: Path) -> SummaryTable | None:
    rows = [(r["task"], split, r["source"], str(c["kept"]), str(c["skipped"]), str(c.get("annotations", "-")))
            for r in _load(root, "*/report.json").values() for split, c in r["counts"].items()]
    return SummaryTable("prepared datasets", ("task", "split", "source", "kept", "skipped", "annotations"),
                        tuple(rows)) if rows else None


SPREAD_COLUMNS = ("seed sd", "vs baseline")
METHODS = ("vqvae_hard", "vqvae_soft", "interp_baseline", "interp_literal")
HOLE_METHODS = ("vqvae_hard", "interp_baseline", "interp_literal")
SPREAD_NOTE = ("; seed sd: the model's standard deviation over the seeds of bench/bench_seeds.py (objects "
               "found: of the share found with the right class); "
               "vs baseline: beyond spread when the means differ by more than twice the pooled deviation")


def read_spread(path: Path) -> dict:
    """A seed-spread file, or a one-line error naming it."""
    try:
        spread = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable seeds.json of bench/bench_seeds.py ({err})") from None
    if not isinstance(spread, dict) or not {"solver", "tokenizer"} <= spread.keys():
        raise ConfigError(f"{path}: not a seeds.json of bench/bench_seeds.py (no 'solver', 'tokenizer' keys)")
    return spread


def spread_cells(spread: dict | None, key: str) -> tuple[str, ...]:
    """(± sd of the model over n seeds, verdict) of score `key` in one run's seed summary; blanks without."""
    row = (spread or {}).get(key, {})
    if "value" not in row:
        return ("", "")
    return (f"±{row['value']['sd']:.4f} (n={len(row['value']['values'])})", row.get("verdict", ""))


def tokenizer_table(root: Path, spread: dict | None = None) -> SummaryTable | None:
    """VQ-VAE reconstruction next to the interpolation tokenizer (fair; literal for depth), with both
    methods' RMSE inside the sensor holes where a complete depth exists."""
    rows = []
    for m in _load(root, "*/metrics.json").values():
        score = get_task(m["task"]).tokenizer_score
        key, metric = score.value[0], score.label
        row = (m["variant"], metric, *(fmt(m[k][key]) if k in m else "-" for k in METHODS),
               *(fmt(m.get(k, {}).get("hole_rmse")) for k in HOLE_METHODS))
        seeds = (spread or {}).get("tokenizer", {}).get(m["variant"])
        extra = spread_cells(seeds, score.key) + spread_cells(seeds, "hole_rmse") if spread else ()
        rows.append(row + extra)
    columns = ("variant", "metric", "VQ-VAE hard", "VQ-VAE soft", "interpolation", "interp. literal",
               "hole RMSE VQ-VAE", "hole RMSE interp.", "hole RMSE literal")
    columns += SPREAD_COLUMNS + tuple(f"holes: {c}" for c in SPREAD_COLUMNS) if spread else ()
    caption = ("interpolation: the area average of each token cell (depth: of its valid pixels, holes "
               "ignored; masks: thresholded at 0.5); literal: depth's bilinear resample that reads holes as "
               "0 m, masks' nearest sampling; hole RMSE: inside the sensor's holes, against the complete "
               "depth (demo only)") + (SPREAD_NOTE if spread else "")
    return SummaryTable("tokenizer reconstruction (upper bound of the system)", columns, tuple(rows),
                        caption) if rows else None


def solver_rows(run: str, task: str, metrics: dict, spread: dict | None) -> list[tuple[str, ...]]:
    """`scores.summary_rows` of one task of a run, each followed by its spread cells when there is a file."""
    rows = scores.summary_rows(get_task(task), run, metrics)
    if spread is None:
        return rows
    shown = [s.key for s in get_task(task).scores if scores.parts(s, metrics)["value"] is not None]
    runs = spread.get("solver", {})
    return [row + spread_cells(runs.get(run) if task == run else None, key)
            for row, key in zip(rows, shown, strict=True)]


def solver_table(root: Path, spread: dict | None = None) -> SummaryTable | None:
    rows = [row for run, m in _load(root, "*/metrics.json").items() for task, metrics in m.items()
            for row in solver_rows(run, task, metrics, spread)]
    columns = ("run", "task / metric", "model", "baseline", "gain", "tokenizer bound") + \
        (SPREAD_COLUMNS if spread else ())
    tasks = sorted({task for m in _load(root, "*/metrics.json").values() for task in m})
    caption = ("gain: the improvement over the baseline in the metric's unit (+ = better); baseline: "
               + "; ".join(f"{name}, {get_task(name).baseline_note}" for name in tasks)
               + (SPREAD_NOTE if spread else ""))
    return SummaryTable("task-solver", columns, tuple(rows), caption) if rows else None


def summary_tables(prepared: Path, results: Path, spread: dict | None = None) -> list[SummaryTable]:
    tables = [prepared_table(prepared), tokenizer_table(results / "eval_tokenizer", spread),
              solver_table(results / "evaluate", spread)]
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

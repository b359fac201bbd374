"""This project's ablation results beside the paper's: `dvc exp show --json -A` → report tables.

Rows find their experiment by the name `ait ablate` gave it (pipeline/experiments.py); for a name run
on several baseline commits the newest wins. Reports render as rich tables (stages/report.py) or
GitHub markdown (`render_markdown`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.core.config import ConfigError
from pipeline.experiments import (
    Ablation,
    Column,
    ExperimentError,
    Row,
    command,
    experiment_name,
    experiments,
    row_metrics,
    run_dvc,
    shell_line,
)
from pipeline.summary import md_row

# --------------------------------------------------------------------------------------------------
# dvc exp show


@dataclass(frozen=True)
class ExpResult:
    """One named experiment as `dvc exp show` lists it."""

    name: str
    timestamp: str
    state: Literal["done", "queued", "running", "failed"]
    metrics: dict[str, Any]  # flattened dotted keys of every metrics file, merged


def exp_show() -> list:
    """`dvc exp show --json -A` of the current directory."""
    return _parse_json(run_dvc(["dvc", "exp", "show", "--json", "-A"]), "dvc exp show --json -A")


def read_exp_show(path: str | Path) -> list:
    """A saved `dvc exp show --json -A` output."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    return _parse_json(path.read_text(), str(path))


def _parse_json(text: str, where: str) -> list:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ExperimentError(f"{where}: not the JSON list `dvc exp show --json` prints ({e})") from None
    if not isinstance(data, list):
        raise ExperimentError(f"{where}: expected a JSON list of commits")
    for i, commit in enumerate(data):
        if not _well_formed(commit):
            raise ExperimentError(f"{where}: item {i} is not a commit as `dvc exp show --json` writes it "
                                  f"(an object whose experiments hold objects)")
    return data


def _well_formed(commit: Any) -> bool:
    """The shape `parse_exp_show` reads: commit -> experiments[] -> revs[] -> data, each an object."""
    def objects(items: Any) -> list | None:
        items = items or []
        return items if isinstance(items, list) and all(isinstance(x, dict) for x in items) else None

    if commit is None:
        return True
    groups = objects(commit.get("experiments")) if isinstance(commit, dict) else None
    if groups is None:
        return False
    revs = [objects(g.get("revs")) for g in groups]
    return all(r is not None and all(isinstance(x.get("data") or {}, dict) for x in r) for r in revs)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mapping → {"a.b.c": leaf}."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out |= flatten(value, path + ".") if isinstance(value, dict) else {path: value}
    return out


def parse_exp_show(commits: list) -> dict[str, ExpResult]:
    """Experiments by name across all baselines; for a name run on several commits the newest wins."""
    out: dict[str, ExpResult] = {}
    for commit in commits:
        for group in (commit or {}).get("experiments") or []:
            for rev in group.get("revs") or []:
                result = _result(rev, group.get("executor"))
                if result and (result.name not in out or result.timestamp > out[result.name].timestamp):
                    out[result.name] = result
    return out


_UNFINISHED = ("queued", "running", "failed")


def _result(rev: dict, executor: dict | None) -> ExpResult | None:
    if not rev.get("name"):
        return None
    data = rev.get("data") or {}
    metrics: dict[str, Any] = {}
    for entry in (data.get("metrics") or {}).values():
        if isinstance(entry, dict) and isinstance(entry.get("data"), dict):
            metrics |= flatten(entry["data"])
    state = (executor or {}).get("state")
    if rev.get("error"):
        state = "failed"  # a failed run still lists the metrics files it found, stale or partial
    return ExpResult(rev["name"], data.get("timestamp") or "", state if state in _UNFINISHED else "done",
                     metrics)


# --------------------------------------------------------------------------------------------------
# reports


@dataclass(frozen=True)
class ReportRow:
    """A table row as reported: our figures (scaled) or why there are none."""

    label: str
    exp: str
    state: Literal["done", "queued", "running", "failed", "missing"]
    ours: tuple[float | None, ...]  # scaled like the paper; None = no value
    applicable: tuple[bool, ...]


@dataclass(frozen=True)
class Report:
    """A paper table with our figures filled in, plus what to run for the rows still empty."""

    number: int
    table: Ablation
    rows: tuple[ReportRow, ...]
    todo: tuple[tuple[str, str], ...]  # (experiment, what to run) for rows without results


def build_report(number: int, table: Ablation, results: dict[str, ExpResult]) -> Report:
    """Our figures beside the paper's for every row, and the commands that would fill the gaps."""
    rows = tuple(_report_row(number, table, row, results.get(experiment_name(number, row)))
                 for row in table.rows)
    return Report(number, table, rows, _todo(number, table, rows))


def _report_row(number: int, table: Ablation, row: Row, result: ExpResult | None) -> ReportRow:
    keys = row_metrics(table, row)
    ours = tuple(_scaled(result.metrics.get(k), c.scale) if result and k else None
                 for k, c in zip(keys, table.columns, strict=True))
    return ReportRow(row.label, experiment_name(number, row), result.state if result else "missing",
                     ours, tuple(k is not None for k in keys))


def _scaled(value: Any, scale: float) -> float | None:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return value * scale if numeric else None


def _todo(number: int, table: Ablation, rows: tuple[ReportRow, ...]) -> tuple[tuple[str, str], ...]:
    if all(r.state == "missing" for r in rows):
        return ((f"table {number}", f"ait ablate {number}"),)
    exps = {e.name: e for e in experiments(number, table)}
    todo = {r.exp: shell_line(command(exps[r.exp], [], "queue")) for r in rows if r.state == "missing"}
    todo |= {r.exp: f"dvc queue logs {r.exp}" for r in rows if r.state == "failed"}
    return tuple(todo.items())


def ours_text(row: ReportRow, i: int, column: Column) -> str:
    """Our cell: the number, "-" when not applicable, else why there is none (missing, queued, ...)."""
    if not row.applicable[i]:
        return "-"
    if row.state != "done":
        return row.state
    value = row.ours[i]
    return "absent" if value is None else f"{value:.{column.digits}f}"


def paper_text(value: float | None, column: Column) -> str:
    """The paper's cell, with the column's decimals."""
    return "-" if value is None else f"{value:.{column.digits}f}"


def cells(report: Report) -> list[list[str]]:
    """Rows of text: label, then (ours, paper) per column."""
    out = []
    for row, spec in zip(report.rows, report.table.rows, strict=True):
        texts = [row.label]
        for i, column in enumerate(report.table.columns):
            texts += [ours_text(row, i, column), paper_text(spec.paper[i], column)]
        out.append(texts)
    return out


def headers(table: Ablation) -> list[str]:
    """`row`, then "<column>: ours" and "<column>: paper (<dataset>)" per column."""
    out = ["row"]
    for c in table.columns:
        out += [f"{c.header}: ours", f"{c.header}: paper ({c.dataset})"]
    return out


PAPER_NOTE = "paper: the published figures, NYUv2 depth / COCO val instances at full scale"


def render_markdown(report: Report) -> str:
    """A GitHub-markdown section: heading, pipe table, caveats and the commands for missing rows."""
    head = headers(report.table)
    lines = [f"### Table {report.number} — {report.table.title}", "", md_row(head),
             "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |"]
    lines += [md_row(row) for row in cells(report)]
    lines += ["", f"{PAPER_NOTE}; ours: this project's `dvc exp` runs."]
    if report.table.note:
        lines += ["", report.table.note]
    if report.todo:
        lines += ["", "Rows without results:", ""] + [f"- `{exp}`: `{cmd}`" for exp, cmd in report.todo]
    return "\n".join(lines)


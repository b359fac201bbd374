"""Headline numbers, console reports and summary rows, produced from a task's score table (`Task.scores`)
the same way for every task: a task declares what it reports, never how it is printed.

- headline (`results/headline/evaluate_<run>.json`, what `dvc exp show` compares): per score, the parts
  its `headline` names, as `<key>`, `base_<key>` and `tok_<key>`;
- report (one console line per task): each headline score with its baseline and tokenizer bound;
- summary rows (`ait summary`): every score, with its gain over the baseline, in the metric's own unit
  and signed so that + is better.
"""

from __future__ import annotations

from typing import Any

from pipeline.tasks.base import Score, Task, fmt

PREFIX = {"value": "", "baseline": "base_", "bound": "tok_"}


def lookup(metrics: dict, path: tuple[str, ...] | None) -> Any:
    """The value at `path` in a task's metrics, None when any key is missing (or no path)."""
    if path is None:
        return None
    node: Any = metrics
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def parts(score: Score, metrics: dict) -> dict[str, Any]:
    """{"value", "baseline", "bound"} -> the score's numbers (None where the metrics have none)."""
    return {"value": lookup(metrics, score.value), "baseline": lookup(metrics, score.baseline),
            "bound": lookup(metrics, score.bound)}


def headline(task: Task, metrics: dict) -> dict[str, float]:
    """The few numbers `dvc exp show` compares (keys unique across tasks)."""
    out = {}
    for score in task.scores:
        found = parts(score, metrics)
        out |= {PREFIX[part] + score.key: found[part] for part in score.headline if found[part] is not None}
    return out


def cell(score: Score, value: Any) -> str:
    if value is None:
        return "-"
    return score.text(value) if score.text else fmt(value)


def gain(score: Score, value: Any, baseline: Any) -> str:
    """value − baseline in the metric's unit, signed so that + is better; "" when not two numbers."""
    if not isinstance(value, int | float) or not isinstance(baseline, int | float):
        return ""
    return f"{(baseline - value) if score.lower_is_better else (value - baseline):+.4f}"


def report(task: Task, metrics: dict) -> str:
    """One console line: each headline score beside its baseline (and tokenizer bound)."""
    texts = []
    for score in (s for s in task.scores if s.headline):
        found = parts(score, metrics)
        if found["value"] is None:
            continue
        extra = [f"{name} {cell(score, found[part])}" for part, name in
                 (("baseline", "baseline"), ("bound", "tokenizer bound")) if found[part] is not None]
        beside = f" ({', '.join(extra)})" if extra else ""
        texts.append(f"{score.label} {cell(score, found['value'])}{beside}")
    return "; ".join(texts)


def summary_rows(task: Task, run: str, metrics: dict) -> list[tuple[str, ...]]:
    """Rows of `ait summary`'s solver table: (run, task and score, model, baseline, gain, tokenizer bound);
    a score the metrics do not hold (an older run) is left out."""
    rows = []
    for score in task.scores:
        found = parts(score, metrics)
        if found["value"] is None:
            continue
        rows.append((run, f"{task.name} {score.label}", cell(score, found["value"]),
                     cell(score, found["baseline"]) if score.baseline else "",
                     gain(score, found["value"], found["baseline"]),
                     cell(score, found["bound"]) if score.bound else ""))
    return rows

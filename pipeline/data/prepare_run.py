"""`ait prepare TASK` as a library call: load one task's data params, validate its dataset with the
checks of `prepare.py`, and write the prepared manifests, extra files and report atomically.

Each task validates its own dataset (`pipeline/tasks/<task>/prepare.py` `PREPARE`, found by the
registry); `prepare_task` is what the stage calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_dir, write_json, write_jsonl
from pipeline.core.params import load_value
from pipeline.core.sources import ListSourceConfig
from pipeline.data import nyu
from pipeline.data.prepare import (
    ProgressFactory,
    SplitResult,
    build_report,
)
from pipeline.tasks.registry import get_preparer


@dataclass(frozen=True)
class Prepared:
    """One task's validated dataset: where it came from, its splits, and extra json files to write."""

    source: str  # data.tasks.<task>.source, for the report
    splits: dict[str, SplitResult]
    extra: dict[str, Any] = field(default_factory=dict)  # file name -> json object


def frame_crops(params: Path, task: str) -> tuple[int, int]:
    # Frames must fit the crops of later stages: checked here, before any tokenizer trains.
    return (load_value(params, f"tokenizer.{task}.train.crop_size"),
            load_value(params, f"cache.{task}.crop_size"))


def list_splits(root: Path, cfg: ListSourceConfig) -> dict[str, list[nyu.DepthEntry]]:
    lists = {"train": (cfg.train_list, cfg.train_dir), "test": (cfg.test_list, cfg.test_dir)}
    return {split: nyu.list_depth_samples(root, list_file, cfg.layout, folder)
            for split, (list_file, folder) in lists.items()}


def write_prepared(task: str, prepared: Prepared, max_bad_fraction: float, out: Path,
                   log: Callable[[str], None] = print) -> dict:
    """Judge `prepared` (build_report) and write `<out>/<split>.jsonl`, its extra files and report.json
    atomically; a rejected dataset writes nothing and raises DataError. Returns the report."""
    report = build_report(task, prepared.source, prepared.splits, max_bad_fraction)
    for row in report["skipped"][:5] + report["dropped_annotations"][:5]:
        log(f"skipped {row['split']}/{row['key']}: {row['reason']}")
    if not report["ok"]:
        raise DataError(f"prepare {task}: {report['verdict']} ({len(report['skipped'])} skipped "
                        f"samples, {len(report['dropped_annotations'])} dropped annotations; the first "
                        f"reasons are listed above)")
    with atomic_dir(out) as tmp:
        for split, result in prepared.splits.items():
            write_jsonl(tmp / f"{split}.jsonl", result.records)
        for name, obj in prepared.extra.items():
            write_json(tmp / name, obj)
        write_json(tmp / "report.json", report)
    return report


def prepare_task(task: str, params: Path, out: Path, progress: ProgressFactory | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """`ait prepare <task>`: read `data.tasks.<task>` (and what it must fit) from `params`, validate,
    write the manifests to `out`; returns the report."""
    max_bad = load_value(params, "data.max_bad_fraction")
    return write_prepared(task, get_preparer(task)(params, progress), max_bad, out, log)

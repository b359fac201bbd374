"""`ait prepare TASK` as a library call: load one task's data params, validate its dataset with the
checks of `prepare.py`, and write the prepared manifests, extra files and report atomically.

`PREPARERS` maps each task with a dataset to its loader; `prepare_task` is what the stage calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.data.sources import DepthSourceConfig, InssegSourceConfig, SemsegDataConfig
from pipeline.data import coco, nyu
from pipeline.data.errors import DataError
from pipeline.data.prepare import (
    CLASSES_FILE,
    FrameRules,
    ProgressFactory,
    SplitResult,
    bar,
    build_report,
    keep_one_frame_size,
    prepare_depth_split,
    prepare_insseg_split,
    prepare_semseg_split,
    read_classes,
)
from pipeline.io import atomic_dir, write_json, write_jsonl
from pipeline.params import load_section, load_value


@dataclass(frozen=True)
class Prepared:
    """One task's validated dataset: where it came from, its splits, and extra json files to write."""

    source: str  # data.tasks.<task>.source, for the report
    splits: dict[str, SplitResult]
    extra: dict[str, Any] = field(default_factory=dict)  # file name -> json object


def _crops(params: Path, task: str) -> tuple[int, int]:
    # Frames must fit the crops of later stages: checked here, before any tokenizer trains.
    return (load_value(params, f"tokenizer.{task}.train.crop_size"),
            load_value(params, f"cache.{task}.crop_size"))


def _list_splits(root: Path, cfg: DepthSourceConfig | SemsegDataConfig) -> dict[str, list[nyu.DepthEntry]]:
    lists = {"train": (cfg.train_list, cfg.train_dir), "test": (cfg.test_list, cfg.test_dir)}
    return {split: nyu.list_depth_samples(root, list_file, cfg.layout, folder)
            for split, (list_file, folder) in lists.items()}


def depth_dataset(cfg: DepthSourceConfig, crops: tuple[int, int],
                  progress: ProgressFactory | None = None) -> Prepared:
    root = Path(cfg.root)
    entries = _list_splits(root, cfg)
    splits = {}
    for split, split_entries in entries.items():
        rules = FrameRules(split, *crops)
        with bar(progress, f"prepare depth/{split}") as cb:
            splits[split] = prepare_depth_split(split_entries, root, cfg.layout, rules, cb)
    keep_one_frame_size(splits)
    return Prepared(cfg.source, splits)


def semseg_dataset(cfg: SemsegDataConfig, crops: tuple[int, int],
                   progress: ProgressFactory | None = None) -> Prepared:
    root = Path(cfg.root)
    entries = _list_splits(root, cfg)
    classes = read_classes(root / CLASSES_FILE)
    splits = {}
    for split, split_entries in entries.items():
        rules = FrameRules(split, *crops, task="semseg")
        with bar(progress, f"prepare semseg/{split}") as cb:
            splits[split] = prepare_semseg_split(split_entries, root, rules, len(classes), cb)
    keep_one_frame_size(splits, path_key="label")
    return Prepared(cfg.source, splits, {"classes.json": classes})


def insseg_dataset(cfg: InssegSourceConfig, progress: ProgressFactory | None = None) -> Prepared:
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found")
    splits, categories = {}, None
    for split, images, ann in (("train", cfg.train_images, cfg.train_json),
                               ("val", cfg.val_images, cfg.val_json)):
        index = coco.load_coco(root / ann, root / images)
        if categories is not None and index.categories != categories:
            raise DataError(f"{root / ann}: categories differ from the train json's")
        categories = index.categories
        if not categories:
            raise DataError(f"{root / ann}: no categories")
        with bar(progress, f"prepare insseg/{split}") as cb:
            splits[split] = prepare_insseg_split(index, cb)
    return Prepared(cfg.source, splits, {"categories.json": [{"id": c["id"], "name": c["name"]}
                                                             for c in categories]})


def _depth(params: Path, progress: ProgressFactory | None) -> Prepared:
    cfg = load_section(params, "data.tasks.depth", DepthSourceConfig)
    return depth_dataset(cfg, _crops(params, "depth"), progress)


def _semseg(params: Path, progress: ProgressFactory | None) -> Prepared:
    cfg = load_section(params, "data.tasks.semseg", SemsegDataConfig)
    return semseg_dataset(cfg, _crops(params, "semseg"), progress)


def _insseg(params: Path, progress: ProgressFactory | None) -> Prepared:
    return insseg_dataset(load_section(params, "data.tasks.insseg", InssegSourceConfig), progress)


# task name -> how `ait prepare <task>` reads its dataset's params and validates it
PREPARERS: dict[str, Callable[[Path, ProgressFactory | None], Prepared]] = {
    "depth": _depth, "insseg": _insseg, "semseg": _semseg,
}


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
    return write_prepared(task, PREPARERS[task](params, progress), max_bad, out, log)

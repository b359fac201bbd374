"""`ait prepare {depth,insseg}` — the `prepare@<task>` DVC stages.

Reads only `data.tasks.<task>` and `data.max_bad_fraction` (depth also the two crop sides its frames
must fit: `tokenizer.depth.train.crop_size`, `cache.depth.crop_size`), validates every sample once and writes
`<out>/<split>.jsonl` manifests plus `report.json` (and `categories.json` for insseg).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import DepthSourceConfig, InssegSourceConfig
from pipeline.data import coco, nyu
from pipeline.data.errors import DataError
from pipeline.data.prepare import (
    DepthRules,
    SplitResult,
    build_report,
    keep_one_frame_size,
    prepare_depth_split,
    prepare_insseg_split,
)
from pipeline.io import atomic_dir, write_json, write_jsonl
from pipeline.params import load_section, load_value
from stages.ui import PARAMS_HELP, console, fail_cleanly, progress


class Task(str, Enum):
    depth = "depth"
    insseg = "insseg"


def _depth_splits(cfg: DepthSourceConfig, crops: tuple[int, int]) -> dict[str, SplitResult]:
    root = Path(cfg.root)
    splits = {}
    for split, list_file in (("train", cfg.train_list), ("test", cfg.test_list)):
        entries = nyu.list_depth_samples(root, list_file, cfg.layout)
        with progress(f"prepare depth/{split}") as cb:
            splits[split] = prepare_depth_split(entries, root, cfg.layout, DepthRules(split, *crops), cb)
    keep_one_frame_size(splits)
    return splits


def _insseg_splits(cfg: InssegSourceConfig) -> tuple[dict[str, SplitResult], list[dict]]:
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
        with progress(f"prepare insseg/{split}") as cb:
            splits[split] = prepare_insseg_split(index, cb)
    return splits, [{"id": c["id"], "name": c["name"]} for c in categories]


@fail_cleanly
def main(
    task: Annotated[Task, typer.Argument(help="which dataset to validate")],
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
    out: Annotated[Path | None, typer.Option(help="output dir (default data/prepared/<task>)")] = None,
) -> None:
    """Validate a dataset once and write per-split manifests plus report.json."""
    out = out or Path("data/prepared") / task.value
    max_bad = load_value(params, "data.max_bad_fraction")
    if task is Task.depth:
        cfg = load_section(params, "data.tasks.depth", DepthSourceConfig)
        # Frames must fit the crops of later stages: checked here, before any tokenizer trains.
        crops = (load_value(params, "tokenizer.depth.train.crop_size"),
                 load_value(params, "cache.depth.crop_size"))
        splits, extra = _depth_splits(cfg, crops), {}
    else:
        cfg = load_section(params, "data.tasks.insseg", InssegSourceConfig)
        splits, categories = _insseg_splits(cfg)
        extra = {"categories.json": categories}
    report = build_report(task.value, cfg.source, splits, max_bad)
    for row in report["skipped"][:5] + report["dropped_annotations"][:5]:
        console.print(f"skipped {row['split']}/{row['key']}: {row['reason']}", soft_wrap=True)
    if not report["ok"]:
        raise DataError(f"prepare {task.value}: {report['verdict']} ({len(report['skipped'])} skipped "
                        f"samples, {len(report['dropped_annotations'])} dropped annotations; the first "
                        f"reasons are listed above)")
    with atomic_dir(out) as tmp:
        for split, result in splits.items():
            write_jsonl(tmp / f"{split}.jsonl", result.records)
        for name, obj in extra.items():
            write_json(tmp / name, obj)
        write_json(tmp / "report.json", report)
    counts = ", ".join(f"{s}: {c['kept']}/{c['total']}" for s, c in report["counts"].items())
    console.print(f"prepare {task.value}: {counts} samples kept -> {out}", highlight=False)

"""`prepare@semseg`: validate per-pixel class labels next to NYUv2-layout frames once.

Labels sit beside the depth (`label_XXXXX.png` next to `sync_depth_XXXXX.png`, as the demo and
`ait data import-nyu-mat` write them). The class list `<root>/semseg_classes.json` has contiguous ids
1..N with unique non-empty names; per frame the RGB and the label exist and decode, the label is a
single-channel 8/16-bit map of the RGB's size whose values are 0 (unlabelled) or class ids, with at
least one labelled pixel, and the frame fits the crops and the one frame size as depth frames do.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.errors import DataError
from pipeline.core.params import load_section
from pipeline.data import nyu
from pipeline.data.prepare import (
    FrameRules,
    Progress,
    ProgressFactory,
    SplitResult,
    bar,
    check_frame_size,
    check_frames,
    keep_held_out_unseen,
    keep_one_frame_size,
    one_line,
    sample_key,
)
from pipeline.data.prepare_run import Prepared, frame_crops, list_splits
from pipeline.tasks.semseg.config import SemsegSourceConfig

CLASSES_FILE = "semseg_classes.json"  # at the dataset root (pipeline/data/demo, pipeline/data/nyu_mat)


def read_classes(path: Path) -> list[dict]:
    """The class list `[{"id", "name"}]` sorted by id; it must number 1..N with unique non-empty names."""
    try:
        classes = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: class list not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read the class list ({one_line(e)})") from None
    if not isinstance(classes, list) or not classes or not all(_is_class(c) for c in classes):
        raise DataError(f'{path}: expected a non-empty list of {{"id": int, "name": non-empty str}}')
    classes = sorted(({"id": c["id"], "name": c["name"]} for c in classes), key=lambda c: c["id"])
    if [c["id"] for c in classes] != list(range(1, len(classes) + 1)):
        raise DataError(f"{path}: class ids must be 1..{len(classes)}, each once (0 means unlabelled)")
    names = Counter(c["name"] for c in classes)
    if max(names.values()) > 1:
        raise DataError(f"{path}: class name {names.most_common(1)[0][0]!r} appears more than once")
    return classes


def _is_class(c: object) -> bool:
    return (isinstance(c, dict) and type(c.get("id")) is int
            and isinstance(c.get("name"), str) and bool(c["name"].strip()))


def label_path(depth: Path) -> Path:
    """A frame's class labels lie beside its depth: `sync_depth_XXXXX.png` -> `label_XXXXX.png`."""
    if "sync_depth_" not in depth.name:
        raise DataError(f"{depth}: cannot locate the frame's label (the name lacks 'sync_depth_')")
    return depth.with_name(depth.name.replace("sync_depth_", "label_"))


def check_semseg_entry(entry: nyu.DepthEntry, root: Path, rules: FrameRules, num_classes: int) -> dict:
    """One manifest record for an RGB + class-label pair, or DataError naming the first problem."""
    path = label_path(entry.depth)
    rgb = nyu.read_rgb(entry.rgb)
    label = nyu.read_label_png(path)
    if label.shape != rgb.shape[:2]:
        raise DataError(f"{path}: label is {label.shape[1]}x{label.shape[0]} but RGB is "
                        f"{rgb.shape[1]}x{rgb.shape[0]}")
    check_frame_size(path, label.shape, rules)
    top = int(label.max())
    if top > num_classes:  # the ids are 1..num_classes (read_classes)
        raise DataError(f"{path}: class id {top} is not 0 or one of the {num_classes} classes of "
                        f"{CLASSES_FILE}")
    if top == 0:
        raise DataError(f"{path}: no labelled pixel (all 0)")
    return {"key": sample_key(os.path.relpath(entry.rgb, root)), "rgb": str(entry.rgb), "label": str(path),
            "height": int(label.shape[0]), "width": int(label.shape[1])}


def prepare_semseg_split(entries: Sequence[nyu.DepthEntry], root: Path, rules: FrameRules, num_classes: int,
                         progress: Progress | None = None) -> SplitResult:
    return check_frames(entries, root, lambda e: check_semseg_entry(e, root, rules, num_classes), progress)


def semseg_dataset(cfg: SemsegSourceConfig, crops: tuple[int, int],
                   progress: ProgressFactory | None = None) -> Prepared:
    root = Path(cfg.root)
    entries = list_splits(root, cfg)
    classes = read_classes(root / CLASSES_FILE)
    splits = {}
    for split, split_entries in entries.items():
        rules = FrameRules(split, *crops, task="semseg")
        with bar(progress, f"prepare semseg/{split}") as cb:
            splits[split] = prepare_semseg_split(split_entries, root, rules, len(classes), cb)
    keep_held_out_unseen(splits)
    keep_one_frame_size(splits, path_key="label")
    return Prepared(cfg.source, splits, {"classes.json": classes})


def prepare(params: Path, progress: ProgressFactory | None) -> Prepared:
    cfg = load_section(params, "data.tasks.semseg", SemsegSourceConfig)
    return semseg_dataset(cfg, frame_crops(params, "semseg"), progress)


PREPARE = prepare  # what the registry hands `ait prepare semseg`

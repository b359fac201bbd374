"""`prepare@depth`: validate a NYUv2-format depth dataset once (PAPER_NOTES §1.4, docs/DATA.md).

Both files of a pair exist and decode, RGB and depth sizes match, depth is uint16 millimetres (or the
documented 8-bit DenseDepth encoding in that layout), the map has a valid pixel (inside the Eigen
evaluation crop for the test split), the frame fits the configured crops (the tokenizer's training crop;
the solver's crop is the full frame height) and has the dataset's one frame size (the token cache needs
a fixed view set). The generic half (lists, reports, writing) is `pipeline/data/prepare*.py`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.core.errors import DataError
from pipeline.core.params import load_section
from pipeline.core.sources import ListSourceConfig
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
    sample_key,
)
from pipeline.data.prepare_run import Prepared, frame_crops, list_splits
from pipeline.tasks.depth.metrics import MAX_DEPTH, MIN_DEPTH, eval_mask


def check_depth_entry(entry: nyu.DepthEntry, root: Path, layout: str, rules: FrameRules) -> dict:
    """One manifest record for a depth pair, or DataError naming the first problem."""
    rgb = nyu.read_rgb(entry.rgb)
    raw = nyu.read_depth_png(entry.depth)
    allowed = (np.uint16, np.uint8) if layout == "densedepth" else (np.uint16,)
    if raw.dtype not in allowed:
        raise DataError(f"{entry.depth}: depth must be uint16 millimetres, got {raw.dtype}")
    if raw.shape != rgb.shape[:2]:
        raise DataError(f"{entry.depth}: depth is {raw.shape[1]}x{raw.shape[0]} but RGB is "
                        f"{rgb.shape[1]}x{rgb.shape[0]}")
    check_frame_size(entry.depth, raw.shape, rules)
    _check_valid_depth(entry.depth, nyu.stored_depth_to_metres(raw), rules.split)
    rel = os.path.relpath(entry.rgb, root)
    record = {
        "key": sample_key(rel),
        "rgb": str(entry.rgb),
        "depth": str(entry.depth),
        "focal": entry.focal,
        "height": int(raw.shape[0]),
        "width": int(raw.shape[1]),
        "complete_depth": None,
    }
    # The demo dataset stores its hole-free depth next to the sensor depth (pipeline/data/demo).
    complete = entry.depth.with_name(entry.depth.name.replace("sync_depth_", "complete_depth_"))
    if complete != entry.depth and complete.is_file():
        record["complete_depth"] = str(complete)
    return record


def _check_valid_depth(path: Path, metres: np.ndarray, split: str) -> None:
    # Evaluation scores only MIN_DEPTH < gt < MAX_DEPTH inside the Eigen crop (metrics.py): a test
    # frame without such a pixel has no score, a training frame without any valid pixel has no target.
    if split == "test" and not eval_mask(metres).any():
        raise DataError(f"{path}: no valid depth pixel inside the evaluation crop")
    if not ((metres > MIN_DEPTH) & (metres < MAX_DEPTH)).any():
        raise DataError(f"{path}: no valid depth pixel (all holes or out of range)")


def prepare_depth_split(entries: Sequence[nyu.DepthEntry], root: Path, layout: str, rules: FrameRules,
                        progress: Progress | None = None) -> SplitResult:
    return check_frames(entries, root, lambda entry: check_depth_entry(entry, root, layout, rules), progress)


def depth_dataset(cfg: ListSourceConfig, crops: tuple[int, int],
                  progress: ProgressFactory | None = None) -> Prepared:
    root = Path(cfg.root)
    entries = list_splits(root, cfg)
    splits = {}
    for split, split_entries in entries.items():
        rules = FrameRules(split, *crops)
        with bar(progress, f"prepare depth/{split}") as cb:
            splits[split] = prepare_depth_split(split_entries, root, cfg.layout, rules, cb)
    keep_held_out_unseen(splits)
    keep_one_frame_size(splits)
    return Prepared(cfg.source, splits)


def prepare(params: Path, progress: ProgressFactory | None) -> Prepared:
    cfg = load_section(params, "data.tasks.depth", ListSourceConfig)
    return depth_dataset(cfg, frame_crops(params, "depth"), progress)


PREPARE = prepare  # what the registry hands `ait prepare depth`

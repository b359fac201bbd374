"""Validate a dataset once and turn it into per-split manifests (JSON lines) plus a report.

Every later stage reads these manifests instead of the raw list files or annotation jsons, so the
checks below run exactly once per dataset version:

- depth (NYUv2 formats): both files exist and decode, RGB and depth sizes match, depth is uint16
  millimetres (or the documented 8-bit DenseDepth encoding in that layout), the map has a valid pixel
  (inside the Eigen evaluation crop for the test split), the frame fits the configured crops (the
  tokenizer's training crop; the solver's crop is the full frame height) and has the dataset's one
  frame size (the token cache needs a fixed view set);
- semseg (per-pixel class labels next to NYUv2-layout frames, `label_XXXXX.png` beside
  `sync_depth_XXXXX.png`, as the demo and `ait data import-nyu-mat` write them): the class list
  `<root>/semseg_classes.json` has contiguous ids 1..N with unique non-empty names; per frame the RGB
  and the label exist and decode, the label is a single-channel 8/16-bit map of the RGB's size whose
  values are 0 (unlabelled) or class ids, with at least one labelled pixel, and the frame fits the
  crops and the one frame size as depth frames do;
- insseg (COCO format): the image exists, decodes and has the size the json claims; every
  annotation has a known category, a finite positive box inside the image, a finite area, a
  non-empty decodable segmentation whose mask is non-empty and a 0/1 crowd flag; every split keeps at
  least one annotation.

A malformed sample is skipped and listed in the report with its reason; a malformed annotation is
dropped from its image and listed. `max_bad_fraction` decides whether the dataset as a whole is
acceptable. `prepare_run.py` runs it all for one task from params.yaml and writes the results.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from pipeline.data import coco, nyu
from pipeline.data.errors import DataError
from pipeline.metrics.depth import MAX_DEPTH, MIN_DEPTH, eval_mask

Progress = Callable[[int, int], None]
# `label -> context manager yielding a Progress` (stages.ui.progress): one bar per split
ProgressFactory = Callable[[str], AbstractContextManager[Progress | None]]
BOX_TOLERANCE_PX = 1.0  # COCO boxes are floats rounded from polygons; allow one pixel of overhang


@dataclass
class SplitResult:
    """Validated records of one split plus what was skipped (each with its reason)."""

    records: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # whole samples
    dropped: list[dict] = field(default_factory=list)  # single annotations (insseg only)
    total: int = 0
    total_annotations: int = 0


def sample_key(rel_path: str) -> str:
    """A WebDataset-safe key (no dots, no slashes) from a dataset-relative file path."""
    stem = os.path.splitext(rel_path.lstrip("/"))[0]
    return stem.replace("/", "_").replace(".", "_")


def bar(progress: ProgressFactory | None, label: str) -> AbstractContextManager[Progress | None]:
    return contextlib.nullcontext() if progress is None else progress(label)


def _parallel_map(fn, items: Sequence, progress: Progress | None) -> list:
    # Decoding is I/O and C code that releases the GIL, so threads give a real speed-up here.
    out = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, result in enumerate(pool.map(fn, items), 1):
            out.append(result)
            if progress:
                progress(i, len(items))
    return out


# --------------------------------------------------------------------------------------------------
# depth


@dataclass(frozen=True)
class FrameRules:
    """What a dense-label frame must satisfy beyond decoding: its split and the configured crops."""

    split: str  # depth "test" frames need a valid pixel inside the evaluation crop
    tokenizer_crop: int  # tokenizer.<task>.train.crop_size: a square inside the frame
    solver_crop: int  # cache.<task>.crop_size: the full frame height (PAPER_NOTES §6.1)
    task: str = "depth"  # names those two params in error messages




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
    _check_frame_size(entry.depth, raw.shape, rules)
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


def _check_frame_size(path: Path, shape: tuple[int, int], rules: FrameRules) -> None:
    h, w = shape
    if rules.tokenizer_crop > min(h, w):
        raise DataError(f"{path}: frame {w}x{h} is smaller than tokenizer.{rules.task}.train.crop_size "
                        f"{rules.tokenizer_crop}")
    if rules.solver_crop != h or rules.solver_crop > w:
        raise DataError(f"{path}: frame {w}x{h}, but cache.{rules.task}.crop_size {rules.solver_crop} must "
                        f"equal the frame height (the solver crops full-height squares)")


def _check_valid_depth(path: Path, metres: np.ndarray, split: str) -> None:
    # Evaluation scores only MIN_DEPTH < gt < MAX_DEPTH inside the Eigen crop (metrics/depth.py): a test
    # frame without such a pixel has no score, a training frame without any valid pixel has no target.
    if split == "test" and not eval_mask(metres).any():
        raise DataError(f"{path}: no valid depth pixel inside the evaluation crop")
    if not ((metres > MIN_DEPTH) & (metres < MAX_DEPTH)).any():
        raise DataError(f"{path}: no valid depth pixel (all holes or out of range)")


def prepare_depth_split(entries: Sequence[nyu.DepthEntry], root: Path, layout: str, rules: FrameRules,
                        progress: Progress | None = None) -> SplitResult:
    return _check_frames(entries, root, lambda entry: check_depth_entry(entry, root, layout, rules), progress)


def _check_frames(entries: Sequence[nyu.DepthEntry], root: Path,
                  check_entry: Callable[[nyu.DepthEntry], dict], progress: Progress | None) -> SplitResult:
    """Records of the frames `check_entry` accepts; the others (and repeats) skipped with the reason."""
    def check(entry):
        try:
            return check_entry(entry)
        except (DataError, OSError) as e:
            return {"key": sample_key(os.path.relpath(entry.rgb, root)), "reason": _one_line(e)}

    result = SplitResult(total=len(entries))
    seen: set[str] = set()
    for row in _parallel_map(check, entries, progress):
        if "reason" not in row and row["key"] in seen:
            row = {"key": row["key"], "reason": f"{row['rgb']}: listed more than once"}
        (result.skipped if "reason" in row else result.records).append(row)
        seen.add(row["key"])
    return result


def keep_one_frame_size(splits: dict[str, SplitResult], path_key: str = "depth") -> None:
    """Skip frames whose size is not the dataset's most common one (ties: the larger): the token cache
    stores a fixed view set, so every frame of both splits must share one size. `path_key` names the
    record's label file in the reason."""
    sizes = Counter((r["height"], r["width"]) for s in splits.values() for r in s.records)
    if len(sizes) < 2:
        return
    (h, w), _ = max(sizes.items(), key=lambda kv: (kv[1], kv[0]))
    for result in splits.values():
        odd = [r for r in result.records if (r["height"], r["width"]) != (h, w)]
        result.records = [r for r in result.records if (r["height"], r["width"]) == (h, w)]
        result.skipped += [{"key": r["key"], "reason": f"{r[path_key]}: frame {r['width']}x{r['height']} "
                            f"differs from the dataset's {w}x{h} (the token cache needs one size)"}
                           for r in odd]


# --------------------------------------------------------------------------------------------------
# semantic segmentation

CLASSES_FILE = "semseg_classes.json"  # at the dataset root (pipeline/data/demo, pipeline/data/nyu_mat)


def read_classes(path: Path) -> list[dict]:
    """The class list `[{"id", "name"}]` sorted by id; it must number 1..N with unique non-empty names."""
    try:
        classes = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: class list not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read the class list ({_one_line(e)})") from None
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
    _check_frame_size(path, label.shape, rules)
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
    return _check_frames(entries, root, lambda e: check_semseg_entry(e, root, rules, num_classes), progress)


# --------------------------------------------------------------------------------------------------
# instance segmentation


def _finite_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_annotation(ann: dict, width: int, height: int, category_ids: set[int]) -> str | None:
    """Why this COCO annotation is unusable, or None when it is fine."""
    if ann.get("category_id") not in category_ids:
        return f"unknown category_id {ann.get('category_id')!r}"
    if ann.get("iscrowd", 0) not in (0, 1):
        return f"iscrowd must be 0 or 1, got {ann.get('iscrowd')!r}"
    if not _finite_number(ann.get("area")) or ann["area"] < 0:
        return f"area must be a finite number >= 0, got {ann.get('area')!r}"
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_finite_number, bbox))):
        return f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"empty bbox {bbox}"
    t = BOX_TOLERANCE_PX
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        return f"bbox {bbox} outside the {width}x{height} image"
    seg = ann.get("segmentation")
    if not seg:
        return "empty segmentation"
    try:
        area = float(mask_utils.area(coco.segmentation_to_rle(seg, height, width)))
    except Exception as e:  # pycocotools raises bare Exceptions on malformed polygons
        return f"unreadable segmentation ({_one_line(e)})"
    if area <= 0:
        return "segmentation covers no pixel"
    return None


def check_image(index: coco.CocoIndex, image_id: int) -> dict:
    """The manifest record of one COCO image (annotations not yet filtered) or DataError."""
    info = index.image_record(image_id)
    if not all(isinstance(info.get(k), int) and info[k] > 0 for k in ("width", "height")):
        raise DataError(f"{index.json_path}: image {image_id} needs positive integer width and height")
    if not isinstance(info.get("file_name"), str):
        raise DataError(f"{index.json_path}: image {image_id} has no file_name")
    path = index.image_path(image_id)
    try:
        with Image.open(path) as im:
            im.load()
            size = im.size
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot decode image ({_one_line(e)})") from None
    if size != (info["width"], info["height"]):
        raise DataError(f"{path}: image is {size[0]}x{size[1]} but the json says "
                        f"{info['width']}x{info['height']}")
    return {"key": f"{image_id:012d}", "image_id": image_id, "image": str(path),
            "width": info["width"], "height": info["height"]}


def prepare_insseg_split(index: coco.CocoIndex, progress: Progress | None = None) -> SplitResult:
    category_ids = {c["id"] for c in index.categories}

    def check(image_id):
        try:
            record = check_image(index, image_id)
        except DataError as e:
            return {"key": f"{image_id:012d}", "reason": _one_line(e)}, []
        kept, dropped = [], []
        for ann in index.annotations(image_id):
            reason = check_annotation(ann, record["width"], record["height"], category_ids)
            if reason:
                dropped.append({"key": record["key"], "annotation_id": ann.get("id"), "reason": reason})
            else:
                kept.append({k: ann[k] for k in ("id", "category_id", "bbox", "area", "segmentation")}
                            | {"iscrowd": int(ann.get("iscrowd", 0))})
        record["annotations"] = kept
        return record, dropped

    result = SplitResult(total=len(index.image_ids))
    for row, dropped in _parallel_map(check, index.image_ids, progress):
        (result.skipped if "reason" in row else result.records).append(row)
        result.dropped.extend(dropped)
    result.total_annotations = sum(len(index.annotations(i)) for i in index.image_ids)
    return result


# --------------------------------------------------------------------------------------------------
# report


def build_report(task: str, source: str, splits: dict[str, SplitResult], max_bad_fraction: float) -> dict:
    """Counts per split, every skipped sample/annotation with its reason, and the verdict."""
    total = sum(s.total for s in splits.values())
    bad = sum(len(s.skipped) for s in splits.values())
    total_ann = sum(s.total_annotations for s in splits.values())
    bad_ann = sum(len(s.dropped) for s in splits.values())
    fractions = {"samples": bad / total if total else 1.0}
    if total_ann:
        fractions["annotations"] = bad_ann / total_ann
    worst = max(fractions, key=fractions.get)
    within = total > 0 and fractions[worst] <= max_bad_fraction
    verdict = f"{worst}: {fractions[worst]:.1%} bad (limit {max_bad_fraction:.1%})"
    verdict = "no samples listed" if not total else verdict if within else f"too many bad samples, {verdict}"
    empty = _empty_split(splits) if within else None
    return {
        "task": task,
        "source": source,
        "max_bad_fraction": max_bad_fraction,
        "bad_fraction": fractions,
        "ok": within and empty is None,
        "verdict": empty or verdict,
        "counts": {name: {"total": s.total, "kept": len(s.records), "skipped": len(s.skipped),
                          "annotations": sum(len(r.get("annotations", ())) for r in s.records),
                          "dropped_annotations": len(s.dropped)}
                   for name, s in splits.items()},
        "skipped": [dict(row, split=name) for name, s in splits.items() for row in s.skipped],
        "dropped_annotations": [dict(row, split=name) for name, s in splits.items() for row in s.dropped],
    }


def _empty_split(splits: dict[str, SplitResult]) -> str | None:
    """Why the dataset cannot feed every later stage although few samples are bad, or None."""
    for name, result in splits.items():
        if not result.records:
            return f"{name}: no usable sample ({result.total} listed)"
        # tasks whose samples carry annotations (insseg) need at least one
        if "annotations" in result.records[0] and not any(r["annotations"] for r in result.records):
            return f"{name}: no usable annotation in {len(result.records)} images"
    return None


def _one_line(e: BaseException, limit: int = 400) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"

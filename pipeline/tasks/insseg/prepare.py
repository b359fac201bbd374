"""`prepare@insseg`: validate a COCO-format instance dataset once.

The image exists, decodes and has the size the json claims; every annotation has a known category, a
finite positive box inside the image, a finite area, a non-empty decodable segmentation whose mask is
non-empty and a 0/1 crowd flag; every split keeps at least one annotation. A malformed annotation is
dropped from its image and listed in the report.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from pycocotools import mask as mask_utils

from pipeline.core.errors import DataError
from pipeline.core.params import load_section
from pipeline.data import coco
from pipeline.data.prepare import (
    Progress,
    ProgressFactory,
    SplitResult,
    bar,
    finite_number,
    one_line,
    parallel_map,
)
from pipeline.data.prepare_run import Prepared
from pipeline.tasks.insseg.config import InssegSourceConfig

BOX_TOLERANCE_PX = 1.0  # COCO boxes are floats rounded from polygons; allow one pixel of overhang


def check_annotation(ann: dict, width: int, height: int, category_ids: set[int]) -> str | None:
    """Why this COCO annotation is unusable, or None when it is fine."""
    if ann.get("category_id") not in category_ids:
        return f"unknown category_id {ann.get('category_id')!r}"
    if ann.get("iscrowd", 0) not in (0, 1):
        return f"iscrowd must be 0 or 1, got {ann.get('iscrowd')!r}"
    if not finite_number(ann.get("area")) or ann["area"] < 0:
        return f"area must be a finite number >= 0, got {ann.get('area')!r}"
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(finite_number, bbox))):
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
    problem = segmentation_problem(seg, width, height)
    if problem:
        return f"unreadable segmentation ({problem})"
    try:
        area = float(mask_utils.area(coco.segmentation_to_rle(seg, height, width)))
    except Exception as e:  # pycocotools raises bare Exceptions on malformed polygons
        return f"unreadable segmentation ({one_line(e)})"
    if area <= 0:
        return "segmentation covers no pixel"
    return box_mismatch(bbox, coco.segmentation_to_rle(seg, height, width))


# How far a box edge may sit from the edge of its mask's own box: COCO boxes are the polygons' extent,
# rasterising moves an edge by up to a pixel, so 2 px, or a quarter of the side for large objects.
BOX_MASK_SLACK_PX, BOX_MASK_SLACK_FRACTION = 2.0, 0.25


def box_mismatch(bbox: list[float], rle: dict) -> str | None:
    """Why `bbox` [x, y, w, h] is not the box of its segmentation (an [x1, y1, x2, y2] box, another
    object's box), or None. The box becomes the coordinate targets and the mask the mask tokens of the
    same object, so the two must agree."""
    mx, my, mw, mh = (float(v) for v in mask_utils.toBbox(rle))
    x, y, w, h = bbox
    for edges, side in (((x, mx), (x + w, mx + mw)), mw), (((y, my), (y + h, my + mh)), mh):
        slack = max(BOX_MASK_SLACK_PX, BOX_MASK_SLACK_FRACTION * side)
        if any(abs(a - b) > slack for a, b in edges):
            return (f"bbox {bbox} is not the box of its segmentation ([{mx:g}, {my:g}, {mw:g}, {mh:g}]); "
                    f"COCO boxes are [x, y, width, height]")
    return None


def segmentation_problem(seg, width: int, height: int) -> str | None:
    """What makes a segmentation unreadable, checked before pycocotools sees it (it takes a 4-number
    polygon for a box, ignores an odd last number and sizes a mask by the RLE's own `size`)."""
    if isinstance(seg, list):
        for poly in seg:
            if not (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
                    and all(map(finite_number, poly))):
                return f"a polygon needs 3 or more points as an even count of finite numbers: {poly!r:.60}"
        return None
    if not isinstance(seg, dict):
        return f"polygons or an RLE expected, got {type(seg).__name__}"
    size, counts = seg.get("size"), seg.get("counts")
    if size != [height, width]:
        return f"RLE size {size!r} is not the image's [height, width] [{height}, {width}]"
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts) \
                or sum(counts) != height * width:
            return "RLE counts must be run lengths adding up to height x width"
    elif not isinstance(counts, str):
        return f"RLE counts must be a string or a list of run lengths, got {type(counts).__name__}"
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
        raise DataError(f"{path}: cannot decode image ({one_line(e)})") from None
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
            key, reason = f"{image_id:012d}", one_line(e)
            lost = [{"key": key, "annotation_id": a.get("id"), "reason": f"its image is skipped: {reason}"}
                    for a in index.annotations(image_id)]
            return {"key": key, "reason": reason}, lost
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
    for row, dropped in parallel_map(check, index.image_ids, progress):
        (result.skipped if "reason" in row else result.records).append(row)
        result.dropped.extend(dropped)
    # nothing vanishes: an annotation no image holds is counted as dropped, with its reason
    unattached = index.unattached()
    result.dropped += [{"key": f"image_id {ann.get('image_id')!r}", "annotation_id": ann.get("id"),
                        "reason": reason} for ann, reason in unattached]
    result.total_annotations = sum(len(index.annotations(i)) for i in index.image_ids) + len(unattached)
    return result


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


def prepare(params: Path, progress: ProgressFactory | None) -> Prepared:
    return insseg_dataset(load_section(params, "data.tasks.insseg", InssegSourceConfig), progress)


PREPARE = prepare  # what the registry hands `ait prepare insseg`

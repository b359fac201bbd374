"""COCO mask metrics: RLE encoding and pycocotools COCOeval AP, isolated in one module (PAPER_NOTES §1.5, §5.2).

All pycocotools evaluation calls live here so the rest of the code never depends on its printing or
its result-loading quirks. pycocotools is imported inside the functions (a native extension; kept off
the import path of the pure model code).

Choices: COCOeval's console output is suppressed; an empty result list is scored as "no detections"
(pycocotools' `loadRes` would crash on it) so AP is 0 rather than an exception.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

AP_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[:6]


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """`(H, W)` binary mask -> COCO compressed RLE {"size": [H, W], "counts": str} (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def box_iou(boxes: Sequence[Sequence[float]], others: Sequence[Sequence[float]]) -> np.ndarray:
    """IoU of xywh `boxes` (N) against xywh `others` (M) -> (N, M) float, by pycocotools' rules."""
    from pycocotools import mask as mask_utils

    if not len(boxes) or not len(others):
        return np.zeros((len(boxes), len(others)))
    return np.asarray(mask_utils.iou([list(b) for b in boxes], [list(o) for o in others], [0] * len(others)))


def _load_results(coco_gt, results: Sequence[dict[str, Any]]):
    from pycocotools.coco import COCO

    if results:
        # loadRes adds area/bbox/id in place: give it copies so the caller's dicts stay untouched.
        return coco_gt.loadRes([dict(r) for r in results])
    empty = COCO()
    empty.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    empty.createIndex()
    return empty


def coco_mask_map(
    coco_gt,
    results: Sequence[dict[str, Any]],
    iou_type: str = "segm",
    img_ids: Iterable[int] | None = None,
) -> dict[str, float]:
    """COCOeval AP / AP50 / AP75 / APs / APm / APl (fractions in [0, 1]; −1 where undefined).

    `coco_gt` is a pycocotools `COCO`; `results` are dicts with image_id, category_id, score and
    `segmentation` (RLE, see `encode_rle`) or `bbox` (xywh) for iou_type="bbox"; `img_ids` restricts
    the evaluation to those images.
    """
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = _load_results(coco_gt, results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if img_ids is not None:
            evaluator.params.imgIds = sorted(img_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(AP_NAMES, evaluator.stats[:6], strict=True)}

"""Instance evaluation of the trained solver on the held-out split (PAPER_NOTES §5.2) and its references.

Every generated object -> COCO result (xywh box, score, category id, RLE mask) -> pycocotools bbox and segm
AP / AP50 / AP75 / APs / APm / APl. As mmdet, segm results are scored without their box (else pycocotools
takes the box area for APs/m/l) and bbox results without masks. Beside them the image-blind baseline:
every image gets the `num_query` most frequent training categories at their median training box
(relative to the image size), scored by their frequency, the box filled as the mask. A model that reads
nothing from the image scores about this. `hits` counts, for both, the GT objects some detection covers
at box IoU >= 0.5 (and with the right class): what a near-zero AP still found. Panels: predicted masks /
boxes / class names (score >= `panel_score`) beside the GT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from pipeline.core.viz import instance_colors, overlay_instances, panel
from pipeline.data.coco import coco_from_records, segmentation_to_mask
from pipeline.data.nyu import read_rgb
from pipeline.tasks.base import Panel, Progress, sharded_chunks
from pipeline.tasks.insseg.masks import paste_mask
from pipeline.tasks.insseg.metrics import box_iou, coco_mask_map, encode_rle

# -------------------------------------------------------------------------------------------------
# instances


def coco_results(image_id: int, prediction: dict[str, np.ndarray]) -> list[dict]:
    """One image's predictions (`infer_instances`) -> COCO result dicts with xywh bbox and RLE masks."""
    out = []
    for box, cat, score, mask in zip(prediction["boxes_xyxy"], prediction["category_ids"],
                                     prediction["scores"], prediction["masks"], strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        out.append({"image_id": int(image_id), "category_id": int(cat), "score": float(score),
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "segmentation": encode_rle(mask)})
    return out


def class_prior(train_records: Sequence[dict], k: int) -> list[tuple[int, float, np.ndarray]]:
    """The image-blind instance baseline fitted on the training split: the `k` most frequent non-crowd
    categories as (category id, share of the training objects, median box [x, y, w, h] / [W, H, W, H])."""
    boxes: dict[int, list[np.ndarray]] = {}
    for r in train_records:
        size = np.array([r["width"], r["height"]] * 2, np.float64)
        for a in r["annotations"]:
            if not a.get("iscrowd", 0):
                boxes.setdefault(a["category_id"], []).append(np.asarray(a["bbox"], np.float64) / size)
    total = sum(len(b) for b in boxes.values())
    ranked = sorted(boxes, key=lambda c: (-len(boxes[c]), c))[:k]  # ties: lower id first, deterministic
    return [(c, len(boxes[c]) / total, np.median(np.stack(boxes[c]), axis=0)) for c in ranked]


def prior_results(records: Sequence[dict], prior: Sequence[tuple[int, float, np.ndarray]]) -> list[dict]:
    """COCO results of `class_prior` on every image: the same boxes (filled as masks), scored by share."""
    out = []
    for r in records:
        w, h = r["width"], r["height"]
        for cat, share, rel in prior:
            x, y, bw, bh = (rel * np.array([w, h, w, h])).tolist()
            mask = np.zeros((h, w), bool)
            mask[round(y) : round(y + bh), round(x) : round(x + bw)] = True
            out.append({"image_id": int(r["image_id"]), "category_id": int(cat), "score": float(share),
                        "bbox": [x, y, bw, bh], "segmentation": encode_rle(mask)})
    return out


def coco_metrics(records: Sequence[dict], categories: Sequence[dict], results: Sequence[dict]) -> dict:
    """{"bbox": AP..., "segm": AP...} of COCO results against prepared insseg records (PAPER_NOTES §5.2)."""
    gt = coco_from_records(list(records), list(categories))
    ids = [r["image_id"] for r in records]
    # mmdet's rule: a segm result that keeps its bbox gets the box area in APs/m/l, so drop it
    boxes = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    masks = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    return {"bbox": coco_mask_map(gt, boxes, "bbox", ids), "segm": coco_mask_map(gt, masks, "segm", ids)}


def box_hits(records: Sequence[dict], results: Sequence[dict], threshold: float = 0.5) -> dict[str, int]:
    """Counts behind a near-zero AP: how many non-crowd GT objects some detection covers at box
    IoU >= `threshold` (any class, and with the right class), and how many detections cover one."""
    by_image: dict[int, list[dict]] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    counts = dict.fromkeys(("gt_objects", "gt_found", "gt_found_right_class", "detections",
                            "detections_on_an_object"), 0)
    for record in records:
        gts = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
        dets = by_image.get(record["image_id"], [])
        counts["gt_objects"] += len(gts)
        counts["detections"] += len(dets)
        if not gts or not dets:
            continue
        hit = box_iou([d["bbox"] for d in dets], [a["bbox"] for a in gts]) >= threshold
        classes = np.array([d["category_id"] for d in dets]), np.array([a["category_id"] for a in gts])
        same = classes[0][:, None] == classes[1][None]
        counts["gt_found"] += int(hit.any(0).sum())
        counts["gt_found_right_class"] += int((hit & same).any(0).sum())
        counts["detections_on_an_object"] += int(hit.any(1).sum())
    return {"iou": threshold, **counts}


def evaluate_insseg(predict: Callable[[int, list[np.ndarray]], list[dict]], records: Sequence[dict],
                    categories: Sequence[dict], train_records: Sequence[dict], num_query: int, opts,
                    panel_score: float, progress: Progress | None = None) -> tuple[dict | None, list[dict], list[Panel]]:
    """COCO bbox / segm AP of `predict`'s objects (batch index, images -> `infer_instances` dicts) next to
    the image-blind baseline (`class_prior` with `num_query` detections per image); also the results list
    and panels. `opts`: EvalConfig (batch_images, num_panels); instances scoring at least `panel_score` are drawn. Batches are shared out
    over the processes (`sharded_chunks`); rank 0 scores the merged results, the others get (None, [], [])."""
    names = {c["id"]: c["name"] for c in categories}

    def detect(first: int, chunk: Sequence[dict]) -> tuple[list[dict], list[Panel]]:
        images = [read_rgb(r["image"]) for r in chunk]
        results: list[dict] = []
        panels: list[Panel] = []
        for i, (r, image, pred) in enumerate(zip(chunk, images, predict(first, images), strict=True)):
            results += coco_results(r["image_id"], pred)
            if first + i < opts.num_panels:
                panels.append((r["key"], instance_panel(image, pred, r, names, panel_score)))
        return results, panels

    parts = sharded_chunks(records, opts.batch_images, detect, progress)
    if parts is None:
        return None, [], []
    results = [d for part_results, _ in parts for d in part_results]
    metrics = coco_metrics(records, categories, results) | {"hits": box_hits(records, results)}
    prior = prior_results(records, class_prior(train_records, num_query))
    baseline = coco_metrics(records, categories, prior) | {"hits": box_hits(records, prior)}
    counts = {"num_images": len(records), "num_detections": len(results)}
    return {**metrics, **counts, "prior_baseline": baseline}, results, [p for _, ps in parts for p in ps]


def _draw_boxes(image: np.ndarray, boxes_xywh: Sequence[Sequence[float]]) -> np.ndarray:
    """Outline each xywh box in its instance colour (the colours `overlay_instances` uses)."""
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    for (x, y, w, h), color in zip(boxes_xywh, instance_colors(len(boxes_xywh)), strict=True):
        draw.rectangle((x, y, x + max(w - 1, 0), y + max(h - 1, 0)), outline=tuple(int(c) for c in color))
    return np.asarray(im)


def _overlay(image: np.ndarray, masks: np.ndarray, labels: list[str], boxes: list[list[float]]) -> np.ndarray:
    masks = masks if len(masks) else np.zeros((0, *image.shape[:2]), bool)
    return _draw_boxes(overlay_instances(image, masks, labels, boxes), boxes)


def instance_panel(image: np.ndarray, pred: dict[str, np.ndarray], record: dict, names: dict[int, str],
                   min_score: float) -> np.ndarray:
    """Predicted masks / boxes / class names with score >= min_score | the GT instances."""
    keep = pred["scores"] >= min_score
    boxes = [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
             for x1, y1, x2, y2 in pred["boxes_xyxy"][keep]]
    labels = [f"{names.get(int(c), c)} {s:.2f}"
              for c, s in zip(pred["category_ids"][keep], pred["scores"][keep], strict=True)]
    predicted = _overlay(image, pred["masks"][keep], labels, boxes)
    anns = [a for a in record["annotations"] if not a.get("iscrowd")]
    h, w = image.shape[:2]
    gt_masks = np.array([segmentation_to_mask(a["segmentation"], h, w) for a in anns]).reshape(-1, h, w)
    truth = _overlay(image, gt_masks, [names.get(a["category_id"], str(a["category_id"])) for a in anns],
                     [list(a["bbox"]) for a in anns])
    return panel([predicted, truth], [f"prediction (score >= {min_score:g})", "GT"])


def instance_panel_cached(sample: dict, model, names: dict[int, str], grid: tuple[int, int]) -> np.ndarray:
    """image | GT masks | the cached tokens of the unflipped crops, hard-decoded and pasted into their boxes
    (`ait inspect sample` of an instance cache)."""
    ann, image = sample["annotations"], sample["image"]
    hw = (ann["height"], ann["width"])
    pos = {a: i for i, a in enumerate(ann["ann_ids"])}
    rows = [pos[a] for a in ann["token_ann_ids"]]
    boxes = [ann["boxes"][i] for i in rows]
    labels = [names.get(ann["category_ids"][i], str(ann["category_ids"][i])) for i in rows]
    gt = np.zeros((len(rows), *hw), np.uint8)
    for k, i in enumerate(rows):
        gt[k] = segmentation_to_mask(ann["segmentations"][i], *hw)
    pred = np.zeros((0, *hw), np.uint8)
    if rows:
        tokens = sample["tokens"][:, 0].astype(np.int64).reshape(-1, *grid)  # unflipped crop, (n, h, w)
        crops = model.decode(torch.from_numpy(tokens))[:, 0].numpy()
        pred = np.stack([paste_mask(c, b, hw) for c, b in zip(crops, boxes, strict=True)])
    overlays = [overlay_instances(image, masks, labels, boxes) for masks in (gt, pred)]
    return panel([image, *overlays], ["image", f"GT masks ({len(rows)})", "decoded tokens"])

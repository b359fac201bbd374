"""Evaluation of the trained task-solver on held-out splits: NYU depth and COCO instances (AiT ref §5).

- depth (ref §5.1): the official window/flip protocol (`infer.infer_depth`), the nine NYU metrics over
  the (scaled) Eigen crop, averaged per image. Two references sit next to the model: the baseline
  "predict the training-set mean depth map" (per-pixel mean of the TRAIN split's valid GT; pixels never
  valid take the global mean), and the tokenizer's own hard reconstruction of the full GT frame (padded
  to a multiple of r, no TTA; the system's upper bound, ref §5.1 last bullet). `rmse_gain_vs_mean` is
  1 − RMSE_model / RMSE_mean.
- instances (ref §5.2): every generated object -> COCO result (xywh box, score, category id, RLE mask)
  -> pycocotools bbox and segm AP / AP50 / AP75 / APs / APm / APl. As mmdet, segm results are scored
  without their box (else pycocotools takes the box area for APs/m/l) and bbox results without masks.
  Beside them the image-blind baseline: every image gets the `num_query` most frequent training
  categories at their median training box (relative to the image size), scored by their frequency, the
  box filled as the mask. A model that reads nothing from the image scores about this.
- panels for the first few samples: image | GT | prediction | |error| (GT and prediction share one
  colour scale), and predicted masks / boxes / class names (score >= `panel_score`) beside the GT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from pipeline.config import EvalConfig, InssegTaskConfig
from pipeline.data.coco import coco_from_records, segmentation_to_mask
from pipeline.data.errors import DataError
from pipeline.data.nyu import read_depth_metres, read_rgb
from pipeline.metrics.depth import MAX_DEPTH, MIN_DEPTH, depth_metrics, mean_metrics
from pipeline.metrics.masks import coco_mask_map, encode_rle
from pipeline.models.ait import AiT
from pipeline.models.vqvae import VQVAE
from pipeline.solver.infer import infer_depth, infer_instances
from pipeline.viz import colorize, colorize_depth, instance_colors, overlay_instances, panel, shared_range
from pipeline.vocab import Vocab

Progress = Callable[[int, int], None]
Panel = tuple[str, np.ndarray]  # (sample key, (H, W, 3) uint8 picture)


def _chunks(records: Sequence[dict], size: int) -> Iterable[Sequence[dict]]:
    for start in range(0, len(records), max(size, 1)):
        yield records[start : start + max(size, 1)]


# -------------------------------------------------------------------------------------------------
# depth


def mean_depth_map(depths: Iterable[np.ndarray]) -> np.ndarray:
    """(H, W) GT maps in metres -> (H, W) float32 per-pixel mean over valid pixels (MIN < gt < MAX);
    pixels valid in no map take the mean of all valid pixels."""
    total = count = None
    for depth in depths:
        depth = np.asarray(depth, dtype=np.float64)
        if total is None:
            total, count = np.zeros(depth.shape), np.zeros(depth.shape)
        elif depth.shape != total.shape:
            raise ValueError(f"depth map of shape {depth.shape} among maps of shape {total.shape}")
        valid = (depth > MIN_DEPTH) & (depth < MAX_DEPTH)
        total += np.where(valid, depth, 0.0)
        count += valid
    if total is None or count.sum() == 0:
        raise ValueError("no valid depth pixel to average")
    overall = total.sum() / count.sum()
    return np.where(count > 0, total / np.maximum(count, 1), overall).astype(np.float32)


def train_mean_depth(records: Sequence[dict], progress: Progress | None = None) -> np.ndarray:
    """The mean-depth baseline map of a prepared depth split (its `depth` PNGs); see `mean_depth_map`."""
    def maps():
        for i, record in enumerate(records, 1):
            yield read_depth_metres(record["depth"])
            if progress:
                progress(i, len(records))

    try:
        return mean_depth_map(maps())
    except ValueError as e:
        raise DataError(f"training depth maps: {e}") from None


@torch.no_grad()
def tokenizer_reconstruction(tokenizer: VQVAE, depth: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) GT metres -> (B, 1, H, W) hard encode/decode of the full frame (padded to r), >= 1e-3."""
    r = tokenizer.cfg.downsample_ratio
    H, W = depth.shape[-2:]
    padded = F.pad(depth, (0, -W % r, 0, -H % r))
    return tokenizer.decode(tokenizer.encode(padded))[..., :H, :W].clamp_min(MIN_DEPTH)


def evaluate_depth(model: AiT, tokenizer: VQVAE, vocab: Vocab, records: Sequence[dict],
                   mean_map: np.ndarray, size: int, opts: EvalConfig | None = None,
                   progress: Progress | None = None) -> tuple[dict, list[Panel]]:
    """Per-image-averaged NYU metrics of the model, the mean-depth baseline and the tokenizer bound."""
    opts = opts or EvalConfig()
    device = next(model.parameters()).device
    per: dict[str, list[dict]] = {"model": [], "mean_depth_baseline": [], "tokenizer_upper_bound": []}
    panels: list[Panel] = []
    for chunk in _chunks(records, opts.batch_images):
        rgbs = [read_rgb(r["rgb"]) for r in chunk]
        gts = [read_depth_metres(r["depth"]) for r in chunk]
        for r, gt in zip(chunk, gts, strict=True):
            if gt.shape != mean_map.shape:
                raise DataError(f"{r['depth']}: {gt.shape} test depth, {mean_map.shape} training mean map")
        preds = infer_depth(model, tokenizer, vocab, opts.depth, rgbs, size)
        gt_batch = torch.from_numpy(np.stack(gts))[:, None].to(device)
        recons = tokenizer_reconstruction(tokenizer, gt_batch)[:, 0].float().cpu().numpy()
        for r, rgb, gt, pred, recon in zip(chunk, rgbs, gts, preds, recons, strict=True):
            per["model"].append(depth_metrics(pred, gt))
            per["mean_depth_baseline"].append(depth_metrics(mean_map, gt))
            per["tokenizer_upper_bound"].append(depth_metrics(recon, gt))
            if len(panels) < opts.num_panels:
                panels.append((r["key"], depth_panel(rgb, gt, pred)))
        if progress:
            progress(len(per["model"]), len(records))
    out: dict = {name: mean_metrics(rows) for name, rows in per.items()}
    out["rmse_gain_vs_mean"] = 1.0 - out["model"]["rmse"] / out["mean_depth_baseline"]["rmse"]
    out["num_images"] = len(records)
    return out, panels


def depth_panel(rgb: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """image | GT | prediction (one shared colour scale) | |prediction − GT| on valid GT pixels."""
    vmin, vmax = shared_range(gt, pred)
    valid = np.isfinite(gt) & (gt > 0)
    error = np.where(valid, np.abs(pred - gt), 0.0)
    top = float(error.max()) if valid.any() else 1.0
    return panel([rgb, colorize_depth(gt, vmin, vmax), colorize_depth(pred, vmin, vmax),
                  colorize(error, 0.0, max(top, 1e-6), valid=valid)],
                 ["image", f"GT {vmin:.1f}-{vmax:.1f} m", "prediction", f"|error| <= {top:.2f} m"])


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
    """{"bbox": AP..., "segm": AP...} of COCO results against prepared insseg records (ref §5.2)."""
    gt = coco_from_records(list(records), list(categories))
    ids = [r["image_id"] for r in records]
    # mmdet's rule: a segm result that keeps its bbox gets the box area in APs/m/l, so drop it
    boxes = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    masks = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    return {"bbox": coco_mask_map(gt, boxes, "bbox", ids), "segm": coco_mask_map(gt, masks, "segm", ids)}


def evaluate_insseg(model: AiT, tokenizer: VQVAE, vocab: Vocab, cfg: InssegTaskConfig,
                    records: Sequence[dict], categories: Sequence[dict], category_ids: Sequence[int],
                    train_records: Sequence[dict], opts: EvalConfig | None = None,
                    generator: torch.Generator | None = None,
                    progress: Progress | None = None) -> tuple[dict, list[dict], list[Panel]]:
    """COCO bbox / segm AP of the model's generated objects next to the image-blind baseline (`class_prior`
    with the model's `num_query` detections per image); also the results list and panels."""
    opts = opts or EvalConfig()
    names = {c["id"]: c["name"] for c in categories}
    results: list[dict] = []
    panels: list[Panel] = []
    done = 0
    for chunk in _chunks(records, opts.batch_images):
        images = [read_rgb(r["image"]) for r in chunk]
        preds = infer_instances(model, tokenizer, vocab, cfg, opts.insseg, images, category_ids, generator)
        for r, image, pred in zip(chunk, images, preds, strict=True):
            results += coco_results(r["image_id"], pred)
            if len(panels) < opts.num_panels:
                panels.append((r["key"], instance_panel(image, pred, r, names, opts.insseg.panel_score)))
        done += len(chunk)
        if progress:
            progress(done, len(records))
    metrics = coco_metrics(records, categories, results)
    prior = prior_results(records, class_prior(train_records, cfg.num_query))
    counts = {"num_images": len(records), "num_detections": len(results)}
    return {**metrics, **counts, "prior_baseline": coco_metrics(records, categories, prior)}, results, panels


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

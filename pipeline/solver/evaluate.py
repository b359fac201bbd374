"""Evaluation of the trained task-solver on held-out splits: NYU depth and COCO instances (AiT ref §5).

- depth (ref §5.1): the official window/flip protocol (`infer.infer_depth`), the nine NYU metrics over
  the (scaled) Eigen crop, averaged per image. References sit next to the model: two image-blind
  baselines, "predict the training-set mean depth map" and "... median depth map" (per pixel over the
  TRAIN split's valid GT; pixels never valid take the global statistic), and the tokenizer's own hard
  reconstruction of the full GT frame (padded to a multiple of r, no TTA; the system's upper bound, ref
  §5.1 last bullet). `rmse_gain_vs_mean` is 1 − RMSE_model / RMSE_mean; `spread_vs_mean_map` tells a
  model that learnt something from one that collapsed to the mean map.
- instances (ref §5.2): every generated object -> COCO result (xywh box, score, category id, RLE mask)
  -> pycocotools bbox and segm AP / AP50 / AP75 / APs / APm / APl. As mmdet, segm results are scored
  without their box (else pycocotools takes the box area for APs/m/l) and bbox results without masks.
  Beside them the image-blind baseline: every image gets the `num_query` most frequent training
  categories at their median training box (relative to the image size), scored by their frequency, the
  box filled as the mask. A model that reads nothing from the image scores about this. `hits` counts, for
  both, the GT objects some detection covers at box IoU >= 0.5 (and with the right class): what a
  near-zero AP still found.
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
from pipeline.metrics.depth import MAX_DEPTH, MIN_DEPTH, depth_metrics, eval_mask, mean_metrics
from pipeline.metrics.masks import box_iou, coco_mask_map, encode_rle
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


MEDIAN_BINS = 256  # the median map's histogram bins over (MIN_DEPTH, MAX_DEPTH): 3.9 cm, interpolated


class TrainDepthStats:
    """Per-pixel statistics of the valid training depth (MIN < gt < MAX), streamed map by map: the sum and
    count for the mean, and a MEDIAN_BINS histogram for the median (uint32, so 315 MB at 480x640)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.total, self.count = np.zeros(shape), np.zeros(shape, np.int64)
        self.hist = np.zeros((MEDIAN_BINS, *shape), np.uint32)

    def add(self, depth: np.ndarray) -> None:
        depth = np.asarray(depth, dtype=np.float64)
        if depth.shape != self.shape:
            raise ValueError(f"depth map of shape {depth.shape} among maps of shape {self.shape}")
        valid = (depth > MIN_DEPTH) & (depth < MAX_DEPTH)
        self.total += np.where(valid, depth, 0.0)
        self.count += valid
        bins = self._bin(depth[valid])
        # one increment per valid pixel of this map, so the flat indices never repeat
        self.hist.reshape(MEDIAN_BINS, -1)[bins, np.flatnonzero(valid)] += 1

    @staticmethod
    def _bin(values: np.ndarray) -> np.ndarray:
        scaled = (values - MIN_DEPTH) / (MAX_DEPTH - MIN_DEPTH) * MEDIAN_BINS
        return np.clip(scaled.astype(np.int64), 0, MEDIAN_BINS - 1)

    def mean(self) -> np.ndarray:
        """Per-pixel mean; pixels valid in no map take the mean of all valid pixels."""
        self._check()
        overall = self.total.sum() / self.count.sum()
        return np.where(self.count > 0, self.total / np.maximum(self.count, 1), overall).astype(np.float32)

    def median(self) -> np.ndarray:
        """Per-pixel median, linear inside its histogram bin; pixels valid in no map take the median of all
        valid pixels."""
        self._check()
        flat = self.hist.reshape(MEDIAN_BINS, -1)
        overall = _hist_median(flat.sum(1, dtype=np.uint64)[:, None])[0]
        return np.where(self.count > 0, _hist_median(flat).reshape(self.shape), overall).astype(np.float32)

    def _check(self) -> None:
        if self.count.sum() == 0:
            raise ValueError("no valid depth pixel to average")


def _hist_median(hist: np.ndarray) -> np.ndarray:
    """(bins, N) counts -> (N,) medians in metres: the mean of the two middle order statistics, each placed
    linearly inside its bin (within one bin of the exact median; NaN where a column is empty)."""
    cum = np.cumsum(hist, axis=0, dtype=np.int64)
    n = cum[-1]
    with np.errstate(invalid="ignore"):
        return (_order_statistic(hist, cum, (n - 1) // 2) + _order_statistic(hist, cum, n // 2)) / 2


def _order_statistic(hist: np.ndarray, cum: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per column, the position of its k-th smallest value (0-based) inside the histogram, in metres."""
    width = (MAX_DEPTH - MIN_DEPTH) / MEDIAN_BINS
    b = np.argmax(cum > k, axis=0)
    cols = np.arange(hist.shape[1])
    below = np.where(b > 0, cum[np.maximum(b - 1, 0), cols], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return MIN_DEPTH + (b + (k - below + 0.5) / hist[b, cols]) * width


def depth_statistics(depths: Iterable[np.ndarray]) -> TrainDepthStats:
    """Stream (H, W) GT maps in metres into a `TrainDepthStats` (ValueError if there is none)."""
    stats = None
    for depth in depths:
        stats = stats or TrainDepthStats(np.shape(depth))
        stats.add(depth)
    if stats is None:
        raise ValueError("no valid depth pixel to average")
    return stats


def mean_depth_map(depths: Iterable[np.ndarray]) -> np.ndarray:
    """(H, W) GT maps in metres -> (H, W) float32 per-pixel mean over valid pixels (MIN < gt < MAX);
    pixels valid in no map take the mean of all valid pixels."""
    return depth_statistics(depths).mean()


def train_depth_baselines(records: Sequence[dict], progress: Progress | None = None) -> dict[str, np.ndarray]:
    """The image-blind depth baselines of a prepared depth split (its `depth` PNGs): the per-pixel mean
    (`mean_depth_baseline`, the RMSE-optimal constant map) and median (`median_depth_baseline`)."""
    def maps():
        for i, record in enumerate(records, 1):
            yield read_depth_metres(record["depth"])
            if progress:
                progress(i, len(records))

    try:
        stats = depth_statistics(maps())
        return {"mean_depth_baseline": stats.mean(), "median_depth_baseline": stats.median()}
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
                   baselines: dict[str, np.ndarray], size: int, opts: EvalConfig | None = None,
                   progress: Progress | None = None) -> tuple[dict, list[Panel]]:
    """Per-image-averaged NYU metrics of the model, each image-blind baseline map (`train_depth_baselines`)
    and the tokenizer bound; `spread_vs_mean_map` says whether the model moved away from the mean map."""
    opts = opts or EvalConfig()
    device = next(model.parameters()).device
    mean_map = baselines["mean_depth_baseline"]
    per: dict[str, list[dict]] = {name: [] for name in ("model", *baselines, "tokenizer_upper_bound")}
    spread = SpreadVsMap(mean_map)
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
            for name, base in baselines.items():
                per[name].append(depth_metrics(base, gt))
            per["tokenizer_upper_bound"].append(depth_metrics(recon, gt))
            spread.add(pred, gt)
            if len(panels) < opts.num_panels:
                panels.append((r["key"], depth_panel(rgb, gt, pred)))
        if progress:
            progress(len(per["model"]), len(records))
    out: dict = {name: mean_metrics(rows) for name, rows in per.items()}
    out["rmse_gain_vs_mean"] = 1.0 - out["model"]["rmse"] / out["mean_depth_baseline"]["rmse"]
    out["spread_vs_mean_map"] = spread.result()
    out["num_images"] = len(records)
    return out, panels


class SpreadVsMap:
    """Did the model learn anything beyond the training mean map? Over the valid eval-crop pixels of every
    test image, pooled: the RMS deviation of the prediction from the map and of the GT from the map, their
    ratio (0: the model outputs the map, a collapse) and the correlation of the two deviations (> 0: the
    model moves away from the map in the direction the scene does)."""

    def __init__(self, reference: np.ndarray) -> None:
        self.reference = reference.astype(np.float64)
        self.sums = np.zeros(4)  # Σ pred_dev², Σ gt_dev², Σ pred_dev·gt_dev, n

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        keep = eval_mask(gt)
        p = pred[keep].astype(np.float64) - self.reference[keep]
        g = gt[keep].astype(np.float64) - self.reference[keep]
        self.sums += [p @ p, g @ g, p @ g, keep.sum()]

    def result(self) -> dict[str, float]:
        pp, gg, pg, n = self.sums
        n = max(n, 1.0)
        return {"pred_rms_deviation": float(np.sqrt(pp / n)), "gt_rms_deviation": float(np.sqrt(gg / n)),
                "deviation_ratio": float(np.sqrt(pp / gg)) if gg > 0 else 0.0,
                "deviation_correlation": float(pg / np.sqrt(pp * gg)) if pp > 0 and gg > 0 else 0.0}


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
    metrics = coco_metrics(records, categories, results) | {"hits": box_hits(records, results)}
    prior = prior_results(records, class_prior(train_records, cfg.num_query))
    baseline = coco_metrics(records, categories, prior) | {"hits": box_hits(records, prior)}
    counts = {"num_images": len(records), "num_detections": len(results)}
    return {**metrics, **counts, "prior_baseline": baseline}, results, panels


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

"""NYUv2 depth metrics, as the official AiT / GLPDepth `metrics.py` (PAPER_NOTES §5.1).

Per image, over valid pixels (MIN_DEPTH < gt < MAX_DEPTH inside the Eigen crop), with
d = pred − gt, e = ln pred − ln gt and thr = max(gt/pred, pred/gt):
  d1/d2/d3 = frac(thr < 1.25^k), abs_rel = mean |d|/gt, sq_rel = mean d²/gt, rmse = sqrt(mean d²),
  rmse_log = sqrt(mean e²), log10 = mean |log10 pred − log10 gt|,
  silog = sqrt(mean e² − 0.5 (mean e)²).
Datasets are scored by averaging the per-image values (`mean_metrics`), not by pooling pixels.

Choices: everything is NumPy float64 (inputs may be NumPy arrays or CPU tensors). As the reference,
predictions have ±inf -> MAX_DEPTH and NaN -> MIN_DEPTH but are *not* clamped (BTS clamps; tiny
difference). SILog uses λ = 0.5 and no x100 (BTS uses λ = 1 and x100).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pipeline.data.nyu import MAX_DEPTH, MIN_DEPTH  # the one valid range, applied when depth is read

# The one home of the evaluation constants (big_vision wrote the crop twice, as 45 and as 54).
NYU_EVAL_CROP = (slice(45, 471), slice(41, 601))  # Eigen crop (rows, cols) on the 480x640 map
NYU_EVAL_HW = (480, 640)
METRIC_NAMES = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def eval_crop(H: int, W: int) -> tuple[slice, slice]:
    """The Eigen crop scaled to an H x W map: each bound × (H/480 or W/640), rounded half up."""
    rows, cols = NYU_EVAL_CROP
    sy, sx = H / NYU_EVAL_HW[0], W / NYU_EVAL_HW[1]
    return (
        slice(_round_half_up(rows.start * sy), _round_half_up(rows.stop * sy)),
        slice(_round_half_up(cols.start * sx), _round_half_up(cols.stop * sx)),
    )


def eval_mask(gt: np.ndarray) -> np.ndarray:
    """`(H, W)` gt depth in metres -> `(H, W)` bool: MIN_DEPTH < gt < MAX_DEPTH inside the Eigen crop."""
    gt = np.asarray(gt)
    crop = np.zeros(gt.shape, dtype=bool)
    crop[eval_crop(*gt.shape)] = True
    return crop & (gt > MIN_DEPTH) & (gt < MAX_DEPTH)


# --------------------------------------------------------------------------------------------------
# per-image metrics on 1-D arrays of valid pixels (pred > 0, gt > 0), metres


def delta_accuracy(pred: np.ndarray, gt: np.ndarray, power: int) -> float:
    """Fraction of pixels with max(gt/pred, pred/gt) < 1.25**power."""
    thr = np.maximum(gt / pred, pred / gt)
    return float(np.mean(thr < 1.25**power))


def abs_rel(pred: np.ndarray, gt: np.ndarray) -> float:
    """mean |pred − gt| / gt."""
    return float(np.mean(np.abs(pred - gt) / gt))


def sq_rel(pred: np.ndarray, gt: np.ndarray) -> float:
    """mean (pred − gt)² / gt."""
    return float(np.mean((pred - gt) ** 2 / gt))


def rmse(pred: np.ndarray, gt: np.ndarray) -> float:
    """sqrt(mean (pred − gt)²), metres."""
    return float(np.sqrt(np.mean((pred - gt) ** 2)))


def rmse_log(pred: np.ndarray, gt: np.ndarray) -> float:
    """sqrt(mean (ln pred − ln gt)²)."""
    return float(np.sqrt(np.mean((np.log(pred) - np.log(gt)) ** 2)))


def log10_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """mean |log10 pred − log10 gt|."""
    return float(np.mean(np.abs(np.log10(pred) - np.log10(gt))))


def silog(pred: np.ndarray, gt: np.ndarray, lam: float = 0.5) -> float:
    """sqrt(mean e² − lam (mean e)²), e = ln pred − ln gt (λ = 0.5, no x100, as the official code)."""
    e = np.log(pred) - np.log(gt)
    return float(np.sqrt(np.mean(e**2) - lam * np.mean(e) ** 2))


def depth_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """`(H, W)` prediction and gt in metres -> the nine metrics over valid pixels of this image."""
    pred = np.asarray(pred, dtype=np.float64).squeeze()
    gt = np.asarray(gt, dtype=np.float64).squeeze()
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"expected two (H, W) maps of one shape, got {pred.shape} and {gt.shape}")
    # As the reference `cropping_img`: repair non-finite predictions, but do not clamp.
    pred = np.where(np.isinf(pred), MAX_DEPTH, pred)  # the reference maps -inf here too
    pred = np.where(np.isnan(pred), MIN_DEPTH, pred)
    valid = eval_mask(gt)
    if not valid.any():
        raise ValueError("no valid ground-truth pixel inside the evaluation crop")
    p, g = pred[valid], gt[valid]
    return {
        "d1": delta_accuracy(p, g, 1),
        "d2": delta_accuracy(p, g, 2),
        "d3": delta_accuracy(p, g, 3),
        "abs_rel": abs_rel(p, g),
        "sq_rel": sq_rel(p, g),
        "rmse": rmse(p, g),
        "rmse_log": rmse_log(p, g),
        "log10": log10_error(p, g),
        "silog": silog(p, g),
    }


def mean_metrics(per_image: Sequence[dict[str, float]]) -> dict[str, float]:
    """Average a list of per-image metric dicts key by key (the NYU protocol averages over images)."""
    if not per_image:
        raise ValueError("no per-image metrics to average")
    return {k: float(np.mean([m[k] for m in per_image])) for k in per_image[0]}

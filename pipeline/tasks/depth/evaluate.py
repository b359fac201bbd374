"""Depth evaluation of the trained solver on the held-out split (PAPER_NOTES §5.1) and its references.

The official window/flip protocol (`depth.infer_depth`), the nine NYU metrics over the (scaled) Eigen crop,
averaged per image. References sit next to the model: two image-blind baselines, "predict the
training-set mean depth map" and "... median depth map" (per pixel over the TRAIN split's valid GT; pixels
never valid take the global statistic), and the tokenizer's own hard reconstruction of the full GT frame
(padded to a multiple of r, no TTA; the system's upper bound, PAPER_NOTES §5.1 last bullet). `rmse_gain_vs_mean`
is 1 − RMSE_model / RMSE_mean; `spread_vs_mean_map` tells a model that learnt something from one that
collapsed to the mean map. Panels: image | GT | prediction | |error| (GT and prediction share one colour
scale).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.errors import DataError
from pipeline.core.viz import colorize, panel, shared_range
from pipeline.data.nyu import read_depth_metres, read_rgb
from pipeline.models.vqvae import VQVAE
from pipeline.tasks.base import Panel, Progress, sharded_chunks
from pipeline.tasks.depth.metrics import MAX_DEPTH, MIN_DEPTH, depth_metrics, eval_mask, mean_metrics

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


def evaluate_depth(predict: Callable[[list[np.ndarray]], np.ndarray], tokenizer: VQVAE,
                   records: Sequence[dict], baselines: dict[str, np.ndarray], opts,
                   progress: Progress | None = None
                   ) -> tuple[dict | None, list[Panel]]:
    """Per-image-averaged NYU metrics of `predict` (RGB frames -> (N, H, W) metres), each image-blind
    baseline map (`train_depth_baselines`) and the tokenizer bound; `spread_vs_mean_map` says whether the
    model moved away from the mean map. `opts`: EvalConfig (batch_images, num_panels). Batches are shared
    out over the processes (`sharded_chunks`); rank 0 gets the metrics, the others (None, [])."""
    device = next(tokenizer.parameters()).device
    mean_map = baselines["mean_depth_baseline"]
    spread = SpreadVsMap(mean_map)

    def score(first: int, chunk: Sequence[dict]) -> list[dict]:
        rgbs = [read_rgb(r["rgb"]) for r in chunk]
        gts = [read_depth_metres(r["depth"]) for r in chunk]
        for r, gt in zip(chunk, gts, strict=True):
            if gt.shape != mean_map.shape:
                raise DataError(f"{r['depth']}: {gt.shape} test depth, {mean_map.shape} training mean map")
        preds = predict(rgbs)
        gt_batch = torch.from_numpy(np.stack(gts))[:, None].to(device)
        recons = tokenizer_reconstruction(tokenizer, gt_batch)[:, 0].float().cpu().numpy()
        rows = []
        for i, (r, rgb, gt, pred, recon) in enumerate(zip(chunk, rgbs, gts, preds, recons, strict=True)):
            row = {"model": depth_metrics(pred, gt),
                   **{name: depth_metrics(base, gt) for name, base in baselines.items()},
                   "tokenizer_upper_bound": depth_metrics(recon, gt), "spread": spread.terms(pred, gt)}
            if first + i < opts.num_panels:
                row["panel"] = (r["key"], depth_panel(rgb, gt, pred))
            rows.append(row)
        return rows

    parts = sharded_chunks(records, opts.batch_images, score, progress)
    if parts is None:
        return None, []
    rows = [row for part in parts for row in part]
    for row in rows:
        spread.add_terms(row["spread"])
    out: dict = {name: mean_metrics([row[name] for row in rows])
                 for name in ("model", *baselines, "tokenizer_upper_bound")}
    out["rmse_gain_vs_mean"] = 1.0 - out["model"]["rmse"] / out["mean_depth_baseline"]["rmse"]
    out["spread_vs_mean_map"] = spread.result()
    out["num_images"] = len(records)
    return out, [row["panel"] for row in rows if "panel" in row]


class SpreadVsMap:
    """Did the model learn anything beyond the training mean map? Over the valid eval-crop pixels of every
    test image, pooled: the RMS deviation of the prediction from the map and of the GT from the map, their
    ratio (0: the model outputs the map, a collapse) and the correlation of the two deviations (> 0: the
    model moves away from the map in the direction the scene does)."""

    def __init__(self, reference: np.ndarray) -> None:
        self.reference = reference.astype(np.float64)
        self.sums = np.zeros(4)  # Σ pred_dev², Σ gt_dev², Σ pred_dev·gt_dev, n

    def terms(self, pred: np.ndarray, gt: np.ndarray) -> list[float]:
        """One image's share of the sums: Σ pred_dev², Σ gt_dev², Σ pred_dev·gt_dev, n."""
        keep = eval_mask(gt)
        p = pred[keep].astype(np.float64) - self.reference[keep]
        g = gt[keep].astype(np.float64) - self.reference[keep]
        return [p @ p, g @ g, p @ g, keep.sum()]

    def add_terms(self, terms: list[float]) -> None:
        self.sums += terms

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self.add_terms(self.terms(pred, gt))

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


def colorize_depth(depth: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """`(H, W)` depth in metres -> RGB; pixels <= 0 (no sensor return) or NaN are black."""
    return colorize(depth, vmin, vmax, valid=np.isfinite(depth) & (depth > 0))

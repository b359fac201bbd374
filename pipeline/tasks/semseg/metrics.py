"""Semantic segmentation metrics and the image-blind per-pixel majority baseline.

Label maps are `(H, W)` integer class ids 1..N with 0 = unlabelled. Everything is scored over the
labelled pixels only (GT != 0), pooled over the whole dataset (a streaming confusion matrix), as the
standard mIoU of PASCAL / ADE20K / NYUv2-40:
  IoU_c = TP_c / (TP_c + FP_c + FN_c), mIoU = mean over classes with a non-zero union (classes that
  occur in neither the GT nor the prediction of the evaluated pixels are left out, reported as None),
  pixel accuracy = sum TP / #pixels, mean class accuracy = mean over GT-present classes of TP_c / GT_c.

Choices:
- a predicted 0 ("no class", e.g. the interpolation baseline sampling an unlabelled pixel) is allowed
  and is simply wrong: a false negative of the GT class, a false positive of no class;
- with no labelled pixel at all the summary numbers are NaN (nothing was measured);
- `PixelMajority` breaks ties towards the LOWER class id (numpy's argmax keeps the first maximum),
  and pixels never labelled in the training set take the global majority class (same tie rule).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def _check_ids(labels: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > num_classes):
        raise ValueError(f"{what}: class ids must be in 0..{num_classes}, got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64, copy=False)


class ConfusionMatrix:
    """Streaming `(N+1, N+1)` confusion counts [gt, pred] over labelled pixels (row 0 stays empty)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Count one `(H, W)` prediction (ids 0..N) against its `(H, W)` GT (ids 0..N, 0 ignored)."""
        if np.shape(pred) != np.shape(gt):
            raise ValueError(f"pred shape {np.shape(pred)} != gt shape {np.shape(gt)}")
        n = self.num_classes + 1
        gt = _check_ids(gt, self.num_classes, "gt")
        pred = _check_ids(pred, self.num_classes, "pred")
        labelled = gt != 0
        # One bincount over the flat pair index gt·(N+1) + pred fills the whole matrix at once.
        pairs = gt[labelled] * n + pred[labelled]
        self.matrix += np.bincount(pairs, minlength=n * n).reshape(n, n)

    def result(self) -> dict:
        """{"miou", "pixel_accuracy", "mean_class_accuracy", "per_class_iou": {id: float | None},
        "num_pixels"}; ids are 1..N."""
        m = self.matrix[1:]  # (N, N+1): GT rows 1..N, predicted columns 0..N
        tp = np.diagonal(m, offset=1).astype(np.float64)  # m[c-1, c]
        gt_count = m.sum(1)  # includes predicted 0
        pred_count = m[:, 1:].sum(0)
        union = gt_count + pred_count - tp
        num_pixels = int(m.sum())
        iou = {c + 1: (float(tp[c] / union[c]) if union[c] else None) for c in range(self.num_classes)}
        present = gt_count > 0
        return {
            "miou": _mean([v for v in iou.values() if v is not None]),
            "pixel_accuracy": float(tp.sum() / num_pixels) if num_pixels else float("nan"),
            "mean_class_accuracy": _mean(list(tp[present] / gt_count[present])),
            "per_class_iou": iou,
            "num_pixels": num_pixels,
        }


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def class_histogram(labels_iter: Iterable[np.ndarray], num_classes: int) -> np.ndarray:
    """Iterable of `(H, W)` label maps (ids 0..N) -> `(N+1,)` int64 pixel counts; index 0 = unlabelled."""
    counts = np.zeros(num_classes + 1, dtype=np.int64)
    for labels in labels_iter:
        counts += np.bincount(_check_ids(labels, num_classes, "labels").ravel(), minlength=num_classes + 1)
    return counts


class PixelMajority:
    """Per-pixel majority class over a stream of `(H, W)` training label maps: the image-blind baseline.

    `counts` is `(N+1, H, W)` uint32 (plane 0 stays zero: unlabelled pixels are not votes), allocated on
    the first `add`; every later map must have the same H x W.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.counts: np.ndarray | None = None

    def add(self, label: np.ndarray) -> None:
        """Add the votes of one `(H, W)` label map (ids 0..N)."""
        label = _check_ids(label, self.num_classes, "label")
        if self.counts is None:
            self.counts = np.zeros((self.num_classes + 1, *label.shape), dtype=np.uint32)
        if label.shape != self.counts.shape[1:]:
            raise ValueError(f"label shape {label.shape} != {self.counts.shape[1:]} of the first map")
        # Flat index id·H·W + pixel: every pixel appears once, so a fancy-index += cannot collide,
        # and the cost is O(H·W) per map instead of O(N·H·W) for N per-class comparisons.
        pixels = np.flatnonzero(label)
        self.counts.reshape(-1)[label.ravel()[pixels] * label.size + pixels] += 1

    def result(self) -> np.ndarray:
        """`(H, W)` int64 majority ids 1..N (ties -> lower id; never-labelled pixels -> global majority)."""
        if self.counts is None:
            raise ValueError("PixelMajority.result() before any add()")
        votes = self.counts[1:]  # (N, H, W)
        majority = votes.argmax(0) + 1  # argmax keeps the first maximum: ties go to the lower id
        global_majority = votes.sum((1, 2), dtype=np.int64).argmax() + 1
        return np.where(votes.any(0), majority, global_majority).astype(np.int64)

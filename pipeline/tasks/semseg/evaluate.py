"""Semantic-segmentation evaluation: the tokenizer's reconstructions and the solver's predictions.

Both score per-pixel class ids 1..N on the labelled pixels (GT != 0) with one confusion matrix over the
whole split (`metrics.py`: mIoU over the classes present, pixel accuracy).
- tokenizer (`evaluate_semseg_tokenizer`): every held-out label map padded to a multiple of r, encoded,
  decoded hard and soft (argmax of the class logits), next to the interpolation tokenizer: the label
  map sampled at each token cell's centre and upsampled back (as many values as the tokenizer has
  tokens; `interp.label_interp_reconstruct`);
- solver (`evaluate_semseg`): the depth protocol's windows and flips (`geometry.windows.predict_windows`, class
  probabilities averaged, then the argmax), next to the image-blind baseline, the training split's
  per-pixel majority class (`PixelMajority`), and the tokenizer's own hard reconstruction of the full GT
  frame (the system's upper bound). Panels: image | GT | prediction | errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.errors import DataError
from pipeline.core.viz import colorize_labels, panel
from pipeline.data.nyu import read_rgb
from pipeline.models.vqvae import VQVAE, labels_from_logits
from pipeline.tasks.base import Panel, Progress, sharded_chunks
from pipeline.tasks.semseg.interp import label_interp_reconstruct
from pipeline.tasks.semseg.metrics import ConfusionMatrix, PixelMajority
from pipeline.tokenizer_training.evaluate import codebook_usage, reconstruct

LabelReader = Callable[[str], np.ndarray]  # label file -> (H, W) int64 ids 0..N


@torch.no_grad()
def evaluate_semseg_tokenizer(model: VQVAE, records: Sequence[dict], read: LabelReader, tau: float,
                              device: torch.device, progress: Progress | None = None) -> dict:
    """Split-level mIoU / pixel accuracy of the hard and soft reconstructions and the interpolation
    tokenizer."""
    model.eval().to(device)
    n = model.cfg.channels
    scores = {name: ConfusionMatrix(n) for name in ("vqvae_hard", "vqvae_soft", "interp_baseline")}
    used = []
    for i, record in enumerate(records, 1):
        gt = read(record["label"])
        x = torch.from_numpy(gt).float()[None, None].to(device)
        recon = reconstruct(model, x, tau)
        used.append(recon.pop("indices"))
        r = model.cfg.downsample_ratio
        grid = (-(-gt.shape[0] // r), -(-gt.shape[1] // r))
        preds = {name: labels_from_logits(logits)[0] for name, logits in recon.items()}
        preds["interp_baseline"] = label_interp_reconstruct(torch.from_numpy(gt)[None], grid)[0]
        for name, pred in preds.items():
            scores[name].add(pred.cpu().numpy(), gt)
        if progress:
            progress(i, len(records))
    out = {name: cm.result() for name, cm in scores.items()}
    out["codebook"] = codebook_usage(model, torch.cat([u.flatten() for u in used]))
    return out


def train_majority(records: Sequence[dict], read: LabelReader, num_classes: int,
                   progress: Progress | None = None) -> np.ndarray:
    """The image-blind baseline: per pixel, the training split's most frequent class (ties: lower id)."""
    majority = PixelMajority(num_classes)
    for i, record in enumerate(records, 1):
        majority.add(read(record["label"]))
        if progress:
            progress(i, len(records))
    if not records:
        raise DataError("training label maps: none to count the majority class from")
    return majority.result()


@torch.no_grad()
def tokenizer_bound(tokenizer: VQVAE, labels: np.ndarray) -> np.ndarray:
    """(H, W) GT ids -> its hard encode/decode (padded to a multiple of r): what the tokens can express."""
    r = tokenizer.cfg.downsample_ratio
    H, W = labels.shape
    device = next(tokenizer.parameters()).device
    x = F.pad(torch.from_numpy(labels).float()[None, None], (0, -W % r, 0, -H % r)).to(device)
    return labels_from_logits(tokenizer.decode(tokenizer.encode(x)))[0, :H, :W].cpu().numpy()


def evaluate_semseg(predict: Callable[[list[np.ndarray]], np.ndarray], tokenizer: VQVAE,
                    records: Sequence[dict], read: LabelReader, majority: np.ndarray, opts,
                    progress: Progress | None = None
                    ) -> tuple[dict | None, list[Panel]]:
    """mIoU / pixel accuracy of `predict` (RGB frames -> (N, H, W) ids), the per-pixel majority map and the
    tokenizer bound over the held-out records; `opts`: EvalConfig (batch_images, num_panels). Batches are
    shared out over the processes (`sharded_chunks`): rank 0 sums their confusion counts (integers, so
    the split's scores do not depend on the process count); the other ranks get (None, [])."""
    n = tokenizer.cfg.channels
    names = ("model", "majority_baseline", "tokenizer_upper_bound")

    def score(first: int, chunk: Sequence[dict]) -> tuple[dict[str, np.ndarray], list[Panel]]:
        rgbs, gts = [read_rgb(r["rgb"]) for r in chunk], [read(r["label"]) for r in chunk]
        for r, gt in zip(chunk, gts, strict=True):
            if gt.shape != majority.shape:
                raise DataError(f"{r['label']}: {gt.shape} test labels, "
                                f"{majority.shape} training majority map")
        counts = {name: ConfusionMatrix(n) for name in names}
        panels: list[Panel] = []
        for i, (r, rgb, gt, pred) in enumerate(zip(chunk, rgbs, gts, predict(rgbs), strict=True)):
            counts["model"].add(pred, gt)
            counts["majority_baseline"].add(majority, gt)
            counts["tokenizer_upper_bound"].add(tokenizer_bound(tokenizer, gt), gt)
            if first + i < opts.num_panels:
                panels.append((r["key"], semseg_panel(rgb, gt, pred, n)))
        return {name: cm.matrix for name, cm in counts.items()}, panels

    parts = sharded_chunks(records, opts.batch_images, score, progress)
    if parts is None:
        return None, []
    scores = {name: ConfusionMatrix(n) for name in names}
    for counts, _ in parts:
        for name, matrix in counts.items():
            scores[name].matrix += matrix
    out: dict = {name: cm.result() for name, cm in scores.items()}
    out["num_images"] = len(records)
    return out, [p for _, panels in parts for p in panels]


def semseg_panel(rgb: np.ndarray, gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """image | GT classes | predicted classes | wrong labelled pixels (white)."""
    wrong = (gt > 0) & (pred != gt)
    errors = np.where(wrong[..., None], 255, 0).astype(np.uint8).repeat(3, axis=2)
    acc = 1.0 - wrong.sum() / max((gt > 0).sum(), 1)
    return panel([rgb, colorize_labels(gt, num_classes), colorize_labels(pred, num_classes), errors],
                 ["image", "GT classes", "prediction", f"errors (pixel acc {acc:.2f})"])

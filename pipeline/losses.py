"""Training losses of AiT, one definition each (the official code defines SiLog three times).

- `mse_ignore_zero`: depth tokenizer reconstruction (PAPER_NOTES §1.3, `MseIgnoreZeroLoss`);
- `silog_loss`: scale-invariant log loss of the depth aux term (PAPER_NOTES §3.3, λ = 0.5, no x100);
- `dice_loss`: mask aux term (PAPER_NOTES §3.3, `insseg_head.dice_loss`, +1 smoothing, per-instance mean);
- `label_ce_loss`: semseg tokenizer reconstruction (not in the paper), cross-entropy over labelled pixels.

Depth tensors are metres with 0 = invalid, so "valid" always means target > 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse_ignore_zero(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of (target − pred)² over pixels with target > 0; same-shape inputs, scalar out (0 if none)."""
    valid = target > 0
    sq = torch.where(valid, target - pred, torch.zeros_like(pred)).pow(2)
    # Sum / count rather than a masked mean: an all-invalid batch gives 0 (not NaN) and keeps the graph.
    return sq.sum() / valid.sum().clamp_min(1)


def silog_loss(pred: torch.Tensor, target: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """sqrt(mean d² − lam (mean d)²), d = ln target − ln max(pred, 1e-3) over target > 0 (NaN if none)."""
    valid = target > 0
    # PAPER_NOTES §3.3: the aux prediction is clipped at 1e-3 before the log.
    d = torch.log(target[valid]) - torch.log(pred.clamp_min(1e-3)[valid])
    return torch.sqrt(d.pow(2).mean() - lam * d.mean().pow(2))


def dice_loss(pred: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """`(N, ...)` soft masks, `(N, ...)` {0,1} targets -> mean over N of 1 − (2|pt| + s)/(|p| + |t| + s)."""
    p = pred.clamp(0.0, 1.0).flatten(1)  # the official code clips instead of a sigmoid
    t = target.flatten(1).to(p.dtype)
    numerator = 2.0 * (p * t).sum(-1) + smooth
    denominator = p.sum(-1) + t.sum(-1) + smooth
    return (1.0 - numerator / denominator).mean()


def label_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`(B, N, H, W)` class logits, `(B, 1, H, W)` or `(B, H, W)` ids 0..N -> mean CE over ids != 0.

    Class id c is logit plane c − 1; unlabelled pixels (0) are ignored, and none labelled gives 0.
    """
    if labels.dim() == 4:
        labels = labels[:, 0]
    target = labels.round().long() - 1  # unlabelled -> -1 = ignore_index
    ce = F.cross_entropy(logits.float(), target, ignore_index=-1, reduction="sum")
    # Sum / count as `mse_ignore_zero`: F.cross_entropy's "mean" is NaN when every pixel is ignored.
    return ce / (target >= 0).sum().clamp_min(1)

"""The mask aux term's Dice (PAPER_NOTES §3.3, `insseg_head.dice_loss`: +1 smoothing, per-instance mean)."""

from __future__ import annotations

import torch


def dice_loss(pred: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """`(N, ...)` soft masks, `(N, ...)` {0,1} targets -> mean over N of 1 − (2|pt| + s)/(|p| + |t| + s)."""
    p = pred.clamp(0.0, 1.0).flatten(1)  # the official code clips instead of a sigmoid
    t = target.flatten(1).to(p.dtype)
    numerator = 2.0 * (p * t).sum(-1) + smooth
    denominator = p.sum(-1) + t.sum(-1) + smooth
    return (1.0 - numerator / denominator).mean()

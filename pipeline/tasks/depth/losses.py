"""The depth losses, one definition each (the official code defines SiLog three times).

- `mse_ignore_zero`: the tokenizer's reconstruction (PAPER_NOTES §1.3, `MseIgnoreZeroLoss`);
- `silog_loss`: scale-invariant log loss of the solver's aux term (PAPER_NOTES §3.3, λ = 0.5, no x100).

Depth tensors are metres with 0 = invalid, so "valid" always means target > 0.
"""

from __future__ import annotations

import torch


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

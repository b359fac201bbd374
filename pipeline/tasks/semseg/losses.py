"""The class-map loss (not in the paper): cross-entropy over labelled pixels, for the tokenizer's
reconstruction and the solver's aux loss of the soft-decoded class logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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

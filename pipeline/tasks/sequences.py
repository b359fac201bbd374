"""The sequence helpers every task shares (pure tensor code: no file I/O, no params).

The full-vocabulary cross-entropy sum (PAPER_NOTES §4.3: training CE is never restricted to the legal
sub-range), the token accuracy, and the raster order and code logits of the dense tasks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100  # the official target padding / "not supervised" value (PAPER_NOTES §4.3, §4.5)


def num_supervised(targets: Tensor) -> Tensor:
    """(B, L) int64 targets -> scalar float count of targets != IGNORE_INDEX (at least 1)."""
    return (targets != IGNORE_INDEX).sum().float().clamp_min(1.0)


def sequence_ce_sum(logits: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
    """(B, L, V) logits, (B, L) targets, optional (B, L) weights -> scalar Σ w·CE over supervised targets.

    Computed in fp32 outside autocast: the official code forces the sequence losses to fp32 (PAPER_NOTES §4.6).
    """
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match targets {tuple(targets.shape)}")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        ce = F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
        )  # (B*L,), exactly 0 at ignored targets
        if weights is not None:
            ce = ce * weights.flatten().to(ce.dtype)
        return ce.sum()


@torch.no_grad()
def token_hits(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(B, L, V) logits, (B, L) targets -> (hits, supervised) (B, L) bool; hits by the full-V argmax."""
    supervised = targets != IGNORE_INDEX
    return (logits.argmax(dim=-1) == targets) & supervised, supervised


def hit_rate(hits: Tensor, supervised: Tensor) -> Tensor:
    """Scalar fraction of supervised positions that are hits (0 when nothing is supervised)."""
    return hits.sum().float() / supervised.sum().clamp_min(1).float()


def token_accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """(B, L, V) logits, (B, L) targets -> scalar fraction of supervised targets hit by the full-V argmax."""
    return hit_rate(*token_hits(logits, targets))


def raster_sequence(indices: Tensor, vocab, kind: str) -> tuple[Tensor, Tensor]:
    """(B, h, w) local codes of a dense task -> tokens_in (B, L−1) = targets[:, :-1], targets (B, L) in
    row-major raster order (PAPER_NOTES §4.4); position 0 of the decoder input is the task embedding."""
    if indices.ndim != 3:
        raise ValueError(f"expected (B, h, w) {kind} indices, got shape {tuple(indices.shape)}")
    targets = vocab.to_global(indices.long().flatten(1), kind)
    return targets[:, :-1], targets


def grid_code_logits(logits: Tensor, vocab, kind: str, grid_hw: tuple[int, int]) -> Tensor:
    """(B, L, V) solver logits -> (B, K, h, w) logits of `kind`'s codes, as `VQVAE.decode_soft` takes them."""
    h, w = grid_hw
    B, L, _ = logits.shape
    if L != h * w:
        raise ValueError(f"{L} {kind} positions do not fill a {h}x{w} token grid")
    r = vocab.task_range(kind)
    return logits[..., r.start : r.stop].reshape(B, h, w, len(r)).permute(0, 3, 1, 2)

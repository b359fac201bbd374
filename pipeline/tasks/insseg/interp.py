"""The mask interpolation "tokenizer" of AiT paper Table 12 (PAPER_NOTES §8): nearest-neighbour
downsample 64x64 -> 4x4 (binarised at 0.5, so 2 token values) and nearest upsample back."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mask_interp_encode(masks: torch.Tensor, grid: int = 4) -> torch.Tensor:
    """`(N, S, S)` masks in [0, 1] -> `(N, grid, grid)` int64 {0, 1} by nearest downsampling."""
    small = F.interpolate(masks.float()[:, None], size=(grid, grid), mode="nearest")[:, 0]
    return (small >= 0.5).long()


def mask_interp_decode(tokens: torch.Tensor, size: int = 64) -> torch.Tensor:
    """`(N, g, g)` {0, 1} tokens -> `(N, size, size)` float masks by nearest upsampling."""
    return F.interpolate(tokens.float()[:, None], size=(size, size), mode="nearest")[:, 0]


def mask_interp_reconstruct(masks: torch.Tensor, grid: int = 4) -> torch.Tensor:
    """`(N, S, S)` masks -> their nearest 4x4 interpolation-tokenizer reconstruction, same shape."""
    return mask_interp_decode(mask_interp_encode(masks, grid), masks.shape[-1])

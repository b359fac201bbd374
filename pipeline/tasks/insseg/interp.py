"""The mask interpolation "tokenizer": the no-learning baseline of AiT paper Table 12 (PAPER_NOTES §8).

Reduce the 64x64 crop to the 4x4 token grid and binarise at 0.5 (2 token values), then nearest upsample
back. Two reductions, as for depth:
- `fair` (the headline baseline): each cell's area average, so a cell is on when most of it is;
- `literal`: nearest sampling of one pixel per cell, which misses anything between the sampled pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _cell_means(masks: torch.Tensor, grid: int) -> torch.Tensor:
    return F.adaptive_avg_pool2d(masks.float()[:, None], (grid, grid))[:, 0]


def _nearest_cells(masks: torch.Tensor, grid: int) -> torch.Tensor:
    return F.interpolate(masks.float()[:, None], size=(grid, grid), mode="nearest")[:, 0]


MASK_REDUCE = {"fair": _cell_means, "literal": _nearest_cells}


def mask_interp_encode(masks: torch.Tensor, grid: int = 4, method: str = "fair") -> torch.Tensor:
    """`(N, S, S)` masks in [0, 1] -> `(N, grid, grid)` int64 {0, 1}: the reduced cells, >= 0.5."""
    return (MASK_REDUCE[method](masks, grid) >= 0.5).long()


def mask_interp_decode(tokens: torch.Tensor, size: int = 64) -> torch.Tensor:
    """`(N, g, g)` {0, 1} tokens -> `(N, size, size)` float masks by nearest upsampling."""
    return F.interpolate(tokens.float()[:, None], size=(size, size), mode="nearest")[:, 0]


def mask_interp_reconstruct(masks: torch.Tensor, grid: int = 4, method: str = "fair") -> torch.Tensor:
    """`(N, S, S)` masks -> their 4x4 interpolation-tokenizer reconstruction (`method`: fair / literal)."""
    return mask_interp_decode(mask_interp_encode(masks, grid, method), masks.shape[-1])

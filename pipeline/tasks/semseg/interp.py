"""The label-map interpolation "tokenizer" (not in the paper; the semseg analogue of Table 12's).

A label map with as many values as the tokenizer has tokens: each grid cell takes the label at its
centre pixel (row floor((i + ½)·H/h), likewise columns; for even cell sizes that is the pixel just
below/right of the true centre) and every pixel of the cell gets it back. A cell whose centre is
unlabelled reconstructs as 0, which the semseg metrics score as wrong.
"""

from __future__ import annotations

import torch


def _cell_centres(size: int, cells: int) -> torch.Tensor:
    """Pixel index of each cell's centre, floor((i + ½)·size/cells), in exact integer arithmetic."""
    return (2 * torch.arange(cells) + 1) * size // (2 * cells)


def _cell_of_pixel(size: int, cells: int) -> torch.Tensor:
    """Cell index of each pixel, floor(p·cells/size): cell i covers [i·size/cells, (i+1)·size/cells)."""
    return torch.arange(size) * cells // size


def label_interp_encode(labels: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """`(B, H, W)` int64 class ids -> `(B, h, w)` ids sampled at the cell centres (nearest downsample)."""
    H, W = labels.shape[-2:]
    rows = _cell_centres(H, grid_hw[0]).to(labels.device)
    cols = _cell_centres(W, grid_hw[1]).to(labels.device)
    return labels[:, rows][:, :, cols]


def label_interp_decode(tokens: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """`(B, h, w)` ids -> `(B, H, W)`: every pixel takes the id of the cell it lies in (nearest upsample)."""
    h, w = tokens.shape[-2:]
    rows = _cell_of_pixel(out_hw[0], h).to(tokens.device)
    cols = _cell_of_pixel(out_hw[1], w).to(tokens.device)
    return tokens[:, rows][:, :, cols]


def label_interp_reconstruct(labels: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """`(B, H, W)` int64 class ids -> its interpolation-tokenizer reconstruction, same shape and dtype."""
    return label_interp_decode(label_interp_encode(labels, grid_hw), tuple(labels.shape[-2:]))

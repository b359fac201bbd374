"""Interpolation "tokenizers": the no-learning baselines of AiT paper Table 12 (PAPER_NOTES §8).

- depth: reduce the map to the token grid, quantise each value into one of 128 uniform bins over
  0-10 m (the index is the token), and bilinear upsample the bin centres back. The paper gives no more
  detail, and two reductions are kept:
  - `fair` (the headline baseline): each cell is the area average of its VALID pixels (depth > 0; the
    sensor's holes are 0 m), a cell with no valid pixel takes the value of the nearest cell that has
    one (Euclidean distance on the grid, ties to the lower row-major index). A hole then costs what a
    learned tokenizer's in-painting would have to beat, not "predict 0 m".
  - `literal`: the paper's words taken literally, a plain bilinear resample to the grid
    (align_corners=False, no antialiasing) that samples the holes as 0 m depth.
- masks: nearest-neighbour downsample 64x64 -> 4x4 (binarised at 0.5, so 2 token values) and nearest
  upsample back.
- semseg labels (not in the paper): a label map with as many values as the tokenizer has tokens. Each
  grid cell takes the label at its centre pixel (row floor((i + ½)·H/h), likewise columns; for even cell
  sizes that is the pixel just below/right of the true centre) and every pixel of the cell gets it back.
  A cell whose centre is unlabelled reconstructs as 0, which the semseg metrics score as wrong.

Bins are [i·Δ, (i+1)·Δ) with Δ = 10/128 m, decoded to their centres; depth beyond 10 m falls in the
last bin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEPTH_BINS = 128
DEPTH_RANGE = 10.0  # metres


def valid_cell_means(depth: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """`(B, 1, H, W)` depth (0 = invalid) -> `(B, h, w)` area average of each cell's valid pixels;
    cells without one take their nearest valid cell's value (0 when the whole map is invalid)."""
    depth = depth.float()
    valid = (depth > 0).float()
    total = F.adaptive_avg_pool2d(depth * valid, grid_hw)[:, 0]
    count = F.adaptive_avg_pool2d(valid, grid_hw)[:, 0]
    means = total / count.clamp_min(1e-12)
    return torch.stack([_nearest_fill(m, c > 0) for m, c in zip(means, count, strict=True)])


def _nearest_fill(values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """`(h, w)` values, `(h, w)` bool -> values where unknown cells copy their nearest known cell."""
    if known.all() or not known.any():
        return torch.where(known, values, torch.zeros_like(values))
    h, w = values.shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cells = torch.stack((yy.flatten(), xx.flatten()), 1).float()
    flat_known = known.flatten().cpu()
    nearest = torch.cdist(cells, cells[flat_known]).argmin(1)  # first minimum: lowest row-major index
    return values.flatten()[flat_known.nonzero()[:, 0][nearest]].reshape(h, w)


def _bilinear_cells(depth: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(depth.float(), size=grid_hw, mode="bilinear", align_corners=False)[:, 0]


DEPTH_REDUCE = {"fair": valid_cell_means, "literal": _bilinear_cells}


def depth_interp_encode(depth: torch.Tensor, grid_hw: tuple[int, int], method: str = "fair",
                        num_bins: int = DEPTH_BINS, max_depth: float = DEPTH_RANGE) -> torch.Tensor:
    """`(B, 1, H, W)` depth in metres -> `(B, h, w)` int64 bin indices on the token grid."""
    small = DEPTH_REDUCE[method](depth, grid_hw)
    return (small / max_depth * num_bins).floor().long().clamp(0, num_bins - 1)


def depth_interp_decode(
    indices: torch.Tensor, out_hw: tuple[int, int], num_bins: int = DEPTH_BINS, max_depth: float = DEPTH_RANGE
) -> torch.Tensor:
    """`(B, h, w)` bin indices -> `(B, 1, H, W)` depth in metres (bin centres, bilinear upsampled)."""
    centres = (indices.float() + 0.5) * (max_depth / num_bins)
    return F.interpolate(centres[:, None], size=out_hw, mode="bilinear", align_corners=False)


def depth_interp_reconstruct(depth: torch.Tensor, grid_hw: tuple[int, int],
                             method: str = "fair") -> torch.Tensor:
    """`(B, 1, H, W)` depth -> its interpolation-tokenizer reconstruction (`method`: fair / literal)."""
    return depth_interp_decode(depth_interp_encode(depth, grid_hw, method), tuple(depth.shape[-2:]))


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

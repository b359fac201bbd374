"""The depth interpolation "tokenizer": the no-learning baseline of AiT paper Table 12 (PAPER_NOTES §8).

Reduce the map to the token grid, quantise each value into one of 128 uniform bins over 0-10 m (the
index is the token), and bilinear upsample the bin centres back. The paper gives no more detail, and two
reductions are kept:
- `fair` (the headline baseline): each cell is the area average of its VALID pixels (depth > 0; the
  sensor's holes are 0 m), a cell with no valid pixel takes the value of the nearest cell that has one
  (Euclidean distance on the grid, ties to the lower row-major index). A hole then costs what a learned
  tokenizer's in-painting would have to beat, not "predict 0 m".
- `literal`: the paper's words taken literally, a plain bilinear resample to the grid
  (align_corners=False, no antialiasing) that samples the holes as 0 m depth.

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

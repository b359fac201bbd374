"""Interpolation "tokenizers": the no-learning baselines of AiT paper Table 12 (AiT ref §8).

- depth: bilinear downsample to the token grid, quantise each value into one of 128 uniform bins over
  0-10 m (the index is the token), and bilinear upsample the bin centres back;
- masks: nearest-neighbour downsample 64x64 -> 4x4 (binarised at 0.5, so 2 token values) and nearest
  upsample back.

The paper gives no more detail. Choices: bilinear uses align_corners=False without antialiasing (a
plain resample, so zero holes in the depth are sampled as they are); bins are [i·Δ, (i+1)·Δ) with
Δ = 10/128 m, decoded to their centres; depth beyond 10 m falls in the last bin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEPTH_BINS = 128
DEPTH_RANGE = 10.0  # metres


def depth_interp_encode(
    depth: torch.Tensor, grid_hw: tuple[int, int], num_bins: int = DEPTH_BINS, max_depth: float = DEPTH_RANGE
) -> torch.Tensor:
    """`(B, 1, H, W)` depth in metres -> `(B, h, w)` int64 bin indices on the token grid."""
    small = F.interpolate(depth.float(), size=grid_hw, mode="bilinear", align_corners=False)[:, 0]
    return (small / max_depth * num_bins).floor().long().clamp(0, num_bins - 1)


def depth_interp_decode(
    indices: torch.Tensor, out_hw: tuple[int, int], num_bins: int = DEPTH_BINS, max_depth: float = DEPTH_RANGE
) -> torch.Tensor:
    """`(B, h, w)` bin indices -> `(B, 1, H, W)` depth in metres (bin centres, bilinear upsampled)."""
    centres = (indices.float() + 0.5) * (max_depth / num_bins)
    return F.interpolate(centres[:, None], size=out_hw, mode="bilinear", align_corners=False)


def depth_interp_reconstruct(depth: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """`(B, 1, H, W)` depth -> its interpolation-tokenizer reconstruction, same shape."""
    return depth_interp_decode(depth_interp_encode(depth, grid_hw), tuple(depth.shape[-2:]))


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

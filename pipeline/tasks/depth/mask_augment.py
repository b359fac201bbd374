"""Mask augmentation of the depth tokenizer input (AiT paper §3.4, Table 8; PAPER_NOTES §2).

Zero a fixed number of random patch x patch squares of each depth map, independently per sample. The
tokenizer encodes the masked map and is trained to reconstruct the clean one (in-painting), which makes
its tokens robust to the task-solver's prediction errors. Masked pixels become 0 m, the same value as
invalid sensor pixels; there is no learned mask token.

Deliberate differences from the official `MaskGenerator` (vae/dataset/nyudepthv2.py):
- the count is round(ratio x num_patches) (half up), as the issue asks; the official code uses ceil.
  Both give 450 of 900 at the default 480² / ratio 0.5;
- the official code asserts H and W are multiples of the patch size. We allow any size: the patch grid
  is ceil(H/patch) x ceil(W/patch), and a partial patch on the bottom/right edge counts as one patch
  and is zeroed up to the border;
- randomness comes from an explicit `torch.Generator`, not the global NumPy state.
"""

from __future__ import annotations

import math

import torch


def num_masked_patches(H: int, W: int, ratio: float, patch: int = 16) -> tuple[int, int]:
    """(patches zeroed per sample, total patches) for an H x W map: round-half-up(ratio · total)."""
    total = math.ceil(H / patch) * math.ceil(W / patch)
    return int(math.floor(ratio * total + 0.5)), total


def random_patch_mask(
    depth: torch.Tensor, ratio: float, patch: int = 16, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`(B, 1, H, W)` depth -> masked copy with round(ratio · num_patches) random patches set to 0."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    B, _, H, W = depth.shape
    gh, gw = math.ceil(H / patch), math.ceil(W / patch)
    count, total = num_masked_patches(H, W, ratio, patch)
    device = generator.device if generator is not None else depth.device
    # A random permutation per sample: rank uniform scores, keep the first `count` patches.
    scores = torch.rand(B, total, generator=generator, device=device)
    chosen = scores.argsort(dim=1)[:, :count]
    keep = torch.ones(B, total, dtype=torch.bool, device=device)
    keep.scatter_(1, chosen, False)
    # (B, gh·gw) -> (B, 1, H, W): repeat each patch flag patch x patch times, trim the partial edge.
    keep = keep.view(B, 1, gh, gw).repeat_interleave(patch, 2).repeat_interleave(patch, 3)[..., :H, :W]
    # `where`, not the reference's multiply, so masked pixels are exactly 0 even where depth is inf/NaN.
    return torch.where(keep.to(depth.device), depth, torch.zeros_like(depth))

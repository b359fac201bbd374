"""Paste box-relative soft masks into full images, detectron2 style (PAPER_NOTES §4.5 "Mask", step 2-3).

The official `InsSegHead.decode_mask` calls mmdet's copy of detectron2's `_do_paste_mask`: for every
image pixel centre (x + 0.5, y + 0.5), map it into the box's [−1, 1] frame and bilinearly sample the
S x S map with `grid_sample(align_corners=False)` and zero padding, then binarise at >= 0.5. A box-filling
all-ones map therefore pastes to exactly the pixels whose centres fall inside the box.

As detectron2 on CPU, each chunk is sampled only inside the region bounding its boxes (+1 px); chunks
bound the memory at `max_elements` floats. Deliberate difference: a zero-width box maps to +inf
(the official code patches infs to 0, which would paint the box's column); we clamp the side to a tiny
positive value, so such a box samples only padding and pastes nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PASTE_THRESHOLD = 0.5  # "version change to >= 0.5" in the official decode_mask


def paste_masks(
    masks: Tensor,
    boxes_xyxy: Tensor,
    image_hw: tuple[int, int],
    threshold: float = PASTE_THRESHOLD,
    max_elements: int = 1 << 26,
) -> Tensor:
    """(n, S, S) float maps in ~[0, 1], (n, 4) xyxy px boxes -> (n, H, W) bool masks (>= threshold)."""
    if masks.ndim != 3 or boxes_xyxy.shape != (masks.shape[0], 4):
        raise ValueError(f"expected (n, S, S) masks and (n, 4) boxes, got {tuple(masks.shape)}, "
                         f"{tuple(boxes_xyxy.shape)}")
    H, W = image_hw
    n = masks.shape[0]
    out = torch.zeros(n, H, W, dtype=torch.bool, device=masks.device)
    chunk = max(1, max_elements // max(H * W, 1))
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        region = _paste_region(boxes_xyxy[rows], H, W)
        if region is None:  # every box of the chunk lies outside the image
            continue
        values = _sample(masks[rows], boxes_xyxy[rows], *region)
        (y0, y1), (x0, x1) = region
        out[rows, y0:y1, x0:x1] = values >= threshold
    return out


def _paste_region(boxes: Tensor, H: int, W: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Integer pixel rows/cols bounding the boxes (+1 px margin), clamped to the image; None if empty."""
    x0 = max(int(torch.floor(boxes[:, 0].min())) - 1, 0)
    y0 = max(int(torch.floor(boxes[:, 1].min())) - 1, 0)
    x1 = min(int(torch.ceil(boxes[:, 2].max())) + 1, W)
    y1 = min(int(torch.ceil(boxes[:, 3].max())) + 1, H)
    if x1 <= x0 or y1 <= y0:
        return None
    return (y0, y1), (x0, x1)


def _sample(masks: Tensor, boxes: Tensor, rows: tuple[int, int], cols: tuple[int, int]) -> Tensor:
    """(n, S, S) maps sampled at the pixel centres of rows x cols -> (n, h', w') float32."""
    boxes = boxes.float()
    x0, y0, x1, y1 = boxes.split(1, dim=1)  # each (n, 1)
    ys = torch.arange(*rows, device=boxes.device, dtype=torch.float32) + 0.5
    xs = torch.arange(*cols, device=boxes.device, dtype=torch.float32) + 0.5
    # pixel centres in the box frame: −1 at the box's left/top edge, +1 at its right/bottom edge
    gy = (ys - y0) / (y1 - y0).clamp_min(1e-6) * 2 - 1  # (n, h')
    gx = (xs - x0) / (x1 - x0).clamp_min(1e-6) * 2 - 1  # (n, w')
    n, h, w = boxes.shape[0], gy.shape[1], gx.shape[1]
    grid = torch.stack((gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)), dim=3)
    sampled = F.grid_sample(masks[:, None].float(), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
    return sampled[:, 0]

"""Shared image geometry of inference: sliding windows with flips for dense tasks, the letterbox for
instances (PAPER_NOTES §5).

Dense tasks (depth, semantic labels) follow the official depth test protocol (PAPER_NOTES §5.1,
`AiT.forward_test`, `DepthHead` defaults `shift_window_test=True, shift_size=2, flip_test=True`): S x S
windows at x = linspace(0, W − S, n), each also horizontally flipped; predictions are un-flipped and
averaged per flip pair, then the windows are stitched by summing and dividing by the per-column count.
Deliberate choices: n = ceil(W / S) windows (the official n = 2 for 640/480 and the demo's 160/120, and
still a full cover for wider frames); `shift_windows=False` decodes ONE centred window and fills the
columns it does not cover with its nearest predicted column (a cheap ablation of the sliding windows; the
official code has no full-frame alternative, its token grid is square, PAPER_NOTES §7.3). Every window and flip of
a batch of images goes through one `predict` call.

Instances (PAPER_NOTES §4.5 / §5.2): `letterbox` resizes so the long side is `image_size` (aspect kept) and
zero-pads bottom/right to a square (the padding is black in both training and inference).

Shapes: N images, V views per image (windows x flips), B = N·V, S crop side, H x W pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

DenseFn = Callable[[Tensor], Tensor]  # (B, 3, S, S) images in [0, 1] -> (B, C, S, S) dense prediction


# -------------------------------------------------------------------------------------------------
# dense tasks: windows, flips and stitching (pure tensor code; the model enters as `predict`)


def window_offsets(width: int, size: int, shift: bool = True) -> list[int]:
    """Left columns of the S-wide test windows: linspace(0, W − S, ceil(W/S)), or one centred window."""
    if width < size:
        raise ValueError(f"image width {width} is smaller than the crop size {size}")
    if width == size:
        return [0]
    if not shift:
        return [(width - size) // 2]
    n = max(2, math.ceil(width / size))  # official shift_size = 2 at 640/480 (PAPER_NOTES §5.1)
    return [int(round(x)) for x in np.linspace(0, width - size, n)]


def tta_views(images: Tensor, size: int, offsets: Sequence[int], flip: bool) -> Tensor:
    """(N, 3, H, W) -> (N·V, 3, H, S) views, image-major: per window the crop then (if flip) its mirror."""
    views = []
    for x in offsets:
        crop = images[..., x : x + size]
        views.append(torch.stack((crop, crop.flip(-1)), 1) if flip else crop[:, None])
    return torch.cat(views, 1).flatten(0, 1)  # (N, windows·flips, 3, H, S) -> (N·V, ...)


def stitch(preds: Tensor, width: int, offsets: Sequence[int], flip: bool) -> Tensor:
    """(N·V, 1, H, S) view predictions -> (N, 1, H, W): un-flip, average flip pairs, average overlaps."""
    flips = 2 if flip else 1
    size = preds.shape[-1]
    views = preds.unflatten(0, (-1, len(offsets), flips))  # (N, windows, flips, 1, H, S)
    windows = views[:, :, 0] if not flip else (views[:, :, 0] + views[:, :, 1].flip(-1)) / 2
    N, _, C, H, _ = windows.shape
    total = preds.new_zeros(N, C, H, width)
    count = preds.new_zeros(width)
    for k, x in enumerate(offsets):
        total[..., x : x + size] += windows[:, k]
        count[x : x + size] += 1
    # columns no window covers (only with shift_windows=False): the nearest covered column
    lo, hi = min(offsets), max(offsets) + size - 1
    nearest = torch.arange(width, device=preds.device).clamp(lo, hi)
    return (total / count.clamp_min(1))[..., nearest]


def predict_windows(images: Tensor, predict: DenseFn, size: int, flip_tta: bool = True,
                    shift_windows: bool = True) -> Tensor:
    """(N, 3, S, W) images in [0, 1] -> (N, C, S, W) stitched predictions (depth; class probabilities),
    every view in ONE `predict` call."""
    H, W = images.shape[-2:]
    if H != size:
        raise ValueError(f"image height {H} is not the crop size {size} (the protocol slides along x only)")
    offsets = window_offsets(W, size, shift_windows)
    preds = predict(tta_views(images, size, offsets, flip_tta))
    return stitch(preds, W, offsets, flip_tta)


def to_tensor(images: Sequence[np.ndarray] | np.ndarray, device: torch.device | str) -> Tensor:
    """(N, H, W, 3) uint8 (or a list of same-size images) -> (N, 3, H, W) float32 in [0, 1] on device."""
    batch = np.stack([np.asarray(im) for im in images])
    return torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float() / 255.0


# -------------------------------------------------------------------------------------------------
# instances


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 -> ((size, size, 3) float32 in [0, 1], scale): long side = size, 0-pad bottom/right."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
    # the same PIL bilinear resize as the training jitter (pipeline.solver_training.augment.Jitter.image)
    resized = np.asarray(Image.fromarray(image).resize((rw, rh), Image.BILINEAR), dtype=np.float32) / 255.0
    out = np.zeros((size, size, 3), np.float32)
    out[:rh, :rw] = resized
    return out, scale

"""Box-cropped instance masks for the mask tokenizer, and pasting them back (PAPER_NOTES §1.5).

The official "maskcoco" preprocessing was never released; this follows the official *evaluation* rule
(vae/utils/eval_coco.py), which is the only documented crop rule:
1. round the GT box: x1 = round(x), y1 = round(y), x2 = round(x + w), y2 = round(y + h);
   skip the instance if a side is < 2 px;
2. crop the full-image binary mask to [y1:y2, x1:x2] and resize it to 64x64 bilinearly;
3. (tokenize / reconstruct);
4. resize the 64x64 map back to the rounded box bilinearly, threshold >= 0.5, paste into zeros.

Choices and deliberate differences:
- resizing is torch bilinear with align_corners=False and no antialiasing, i.e. cv2.INTER_LINEAR
  sampling, but on floats: crops keep soft values in [0, 1] (cv2 on the uint8 {0,1} array rounded
  them back to {0,1}). The tokenizer was trained on soft bilinear masks anyway (PAPER_NOTES §1.5);
- boxes are clamped to the image (the official LVIS path clamps x2/y2; its COCO path would fail to
  paste a box that overhangs the image);
- `round` is Python's round (half to even), exactly as the official script.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MASK_CROP_SIZE = 64  # PAPER_NOTES §1.1: the mask tokenizer's input side


def rounded_box(bbox_xywh: tuple[float, float, float, float], image_hw: tuple[int, int]):
    """COCO xywh box -> integer (x1, y1, x2, y2) clamped to the image, or None if a side is < 2 px."""
    x, y, w, h = bbox_xywh
    H, W = image_hw
    x1, y1 = max(round(x), 0), max(round(y), 0)
    x2, y2 = min(round(x + w), W), min(round(y + h), H)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return x1, y1, x2, y2


def _resize(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    # Bilinear, align_corners=False, no antialias: the same sampling grid as cv2.INTER_LINEAR.
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return F.interpolate(t, size=hw, mode="bilinear", align_corners=False)[0, 0].numpy()


def crop_instance_mask(
    mask: np.ndarray, bbox_xywh: tuple[float, float, float, float], size: int = MASK_CROP_SIZE
) -> np.ndarray | None:
    """`(H, W)` uint8 {0,1} mask + COCO box -> `(size, size)` float32 soft crop in [0, 1], or None."""
    box = rounded_box(bbox_xywh, mask.shape)
    if box is None:
        return None
    x1, y1, x2, y2 = box
    crop = _resize(mask[y1:y2, x1:x2], (size, size))
    return np.clip(crop, 0.0, 1.0)


def flip_crop(crop: np.ndarray) -> np.ndarray:
    """`(S, S)` crop -> its horizontal mirror (the crop of the flipped image's flipped box)."""
    return np.ascontiguousarray(crop[:, ::-1])


def paste_mask(
    crop: np.ndarray,
    bbox_xywh: tuple[float, float, float, float],
    image_hw: tuple[int, int],
    threshold: float = 0.5,
) -> np.ndarray:
    """`(S, S)` float mask -> `(H, W)` uint8 {0,1}: resized to the rounded box, >= threshold, pasted."""
    out = np.zeros(image_hw, dtype=np.uint8)
    box = rounded_box(bbox_xywh, image_hw)
    if box is None:
        return out
    x1, y1, x2, y2 = box
    out[y1:y2, x1:x2] = _resize(crop, (y2 - y1, x2 - x1)) >= threshold
    return out

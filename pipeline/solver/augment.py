"""Image augmentation of the task-solver, consistent with what the token caches hold.

- depth (AiT ref §6.1): a horizontal flip of the full frame and a crop of columns [x, x + S) over all
  rows, exactly the views the cache tokenised; the solver draws one of the CACHED views, so with a
  coarse `cache.depth.crop_stride` the crop offsets are snapped to that grid (stride 1 is exact);
- instances (§6.2): large-scale jitter — resize by s ~ U(scale_range) keeping the aspect, flip,
  then a random S×S window (zero-padded bottom/right when the image is smaller). A mask in box
  coordinates does not change under scaling or translation, so cached mask tokens stay exact unless
  the window truncates the box; `Jitter.to_original` maps any box back to the original frame so the
  caller can crop the GT mask there (truncated boxes, jittered duplicates, aux-loss crops);
- photometric: brightness, contrast and saturation factors in [1 − j, 1 + j] (the official code uses
  albumentations' RandomBrightnessContrast / HueSaturationValue; we keep the three that matter and
  no hue shift). CutDepth is not implemented.

All functions are pure NumPy given an explicit `np.random.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


def color_jitter(rgb: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] -> jittered copy (brightness, contrast, saturation), clipped."""
    if strength <= 0:
        return rgb
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    out = rgb * b
    out = (out - out.mean()) * c + out.mean()
    gray = out.mean(axis=2, keepdims=True)
    out = (out - gray) * s + gray
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def depth_view(rgb: np.ndarray, depth: np.ndarray, flip: int, x: int, size: int):
    """The cached view (flip of the full frame, then columns [x, x+size)) of an image and its depth."""
    if flip:
        rgb, depth = rgb[:, ::-1], depth[:, ::-1]
    return (np.ascontiguousarray(rgb[:, x : x + size]), np.ascontiguousarray(depth[:, x : x + size]))


@dataclass(frozen=True)
class Jitter:
    """One large-scale-jitter draw: scale, flip and the S×S window's top-left in the resized frame."""

    scale: float
    flip: bool
    x0: int
    y0: int
    size: int
    resized_hw: tuple[int, int]

    @staticmethod
    def draw(image_hw: tuple[int, int], size: int, scale_range: tuple[float, float],
             rng: np.random.Generator) -> Jitter:
        h, w = image_hw
        # Scale relative to "long side = size", as mmdet's Resize(640·U(lo, hi), keep_ratio).
        scale = float(rng.uniform(*scale_range)) * size / max(h, w)
        rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
        x0 = int(rng.integers(0, rw - size + 1)) if rw > size else 0
        y0 = int(rng.integers(0, rh - size + 1)) if rh > size else 0
        return Jitter(scale, bool(rng.random() < 0.5), x0, y0, size, (rh, rw))

    def image(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (S, S, 3) float32 in [0, 1]: resize, flip, window, zero-pad."""
        rh, rw = self.resized_hw
        resized = np.asarray(Image.fromarray(rgb).resize((rw, rh), Image.BILINEAR), dtype=np.float32) / 255.0
        if self.flip:
            resized = resized[:, ::-1]
        out = np.zeros((self.size, self.size, 3), np.float32)
        window = resized[self.y0 : self.y0 + self.size, self.x0 : self.x0 + self.size]
        out[: window.shape[0], : window.shape[1]] = window
        return out

    def boxes(self, xyxy: np.ndarray) -> np.ndarray:
        """(n, 4) boxes in the original frame -> the augmented frame (not clipped)."""
        b = np.asarray(xyxy, dtype=np.float64) * self.scale
        if self.flip:
            b = np.stack([self.resized_hw[1] - b[:, 2], b[:, 1], self.resized_hw[1] - b[:, 0], b[:, 3]], 1)
        return b - np.array([self.x0, self.y0, self.x0, self.y0], dtype=np.float64)

    def clip(self, xyxy: np.ndarray) -> np.ndarray:
        """Clip augmented boxes to the visible part of the window."""
        rh, rw = self.resized_hw
        hi = np.array([min(self.size, rw - self.x0), min(self.size, rh - self.y0)] * 2, dtype=np.float64)
        return np.clip(xyxy, 0.0, hi)

    def to_original(self, xyxy: np.ndarray) -> np.ndarray:
        """(n, 4) boxes in the augmented frame -> the original frame (inverse of `boxes`)."""
        b = np.asarray(xyxy, dtype=np.float64) + np.array([self.x0, self.y0, self.x0, self.y0])
        if self.flip:
            b = np.stack([self.resized_hw[1] - b[:, 2], b[:, 1], self.resized_hw[1] - b[:, 0], b[:, 3]], 1)
        return b / self.scale

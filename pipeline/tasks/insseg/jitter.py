"""The instance solver's geometric augmentation (PAPER_NOTES §6.2).

Large-scale jitter — resize by s ~ U(scale_range) keeping the aspect, flip,
then a random S×S window (zero-padded bottom/right when the image is smaller). A mask in box
coordinates does not change under scaling or translation, so cached mask tokens stay exact unless
the window truncates the box; `Jitter.to_original` maps any box back to the original frame so the
caller can crop the GT mask there (truncated boxes, jittered duplicates, aux-loss crops);
Randomness comes only from an explicit `np.random.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


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
        """(H, W, 3) uint8 -> (S, S, 3) uint8: resize, flip, window, zero-pad (bottom/right).

        Only the source region under the window is resampled (PIL's `box`, with the full resize's
        scale and filter support, so the pixels are those of resizing the whole frame and cropping, up
        to rounding: at most 2 of 255 on about 0.2 % of values): at scale 3 a full resize produced up
        to 9 times the pixels the window keeps.
        """
        rh, rw = self.resized_hw
        h, w = rgb.shape[:2]
        top, bottom = self.y0, min(self.y0 + self.size, rh)
        left, right = self.x0, min(self.x0 + self.size, rw)
        if self.flip:  # the window's columns in the unflipped resized frame
            left, right = rw - right, rw - left
        sx, sy = w / rw, h / rh
        box = (left * sx, top * sy, right * sx, bottom * sy)
        size = (right - left, bottom - top)
        window = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR, box=box))
        out = np.zeros((self.size, self.size, 3), np.uint8)
        out[: bottom - top, : right - left] = window[:, ::-1] if self.flip else window
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

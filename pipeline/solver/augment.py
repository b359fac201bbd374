"""Image augmentation of the task-solver, consistent with what the token caches hold.

- depth (AiT ref §6.1): a horizontal flip of the full frame and a crop of columns [x, x + S) over all
  rows, exactly the views the cache tokenised; the solver draws one of the CACHED views, so with a
  coarse `cache.depth.crop_stride` the crop offsets are snapped to that grid (stride 1 is exact).
  On the RGB only (the depth target and its cached tokens are never touched), in the official order:
  GLPDepth's vertical CutDepth on the full frame (`cut_depth`), then the view, then albumentations'
  RandomBrightnessContrast, RandomGamma and HueSaturationValue, each firing with its own p
  (`photometric`, knobs in `DepthAugmentConfig`);
- instances (§6.2): large-scale jitter — resize by s ~ U(scale_range) keeping the aspect, flip,
  then a random S×S window (zero-padded bottom/right when the image is smaller). A mask in box
  coordinates does not change under scaling or translation, so cached mask tokens stay exact unless
  the window truncates the box; `Jitter.to_original` maps any box back to the original frame so the
  caller can crop the GT mask there (truncated boxes, jittered duplicates, aux-loss crops);
  photometric: `color_jitter`, brightness, contrast and saturation factors in [1 − j, 1 + j] (the
  official COCO pipeline has no colour augmentation).

Deliberate deviations from the official depth recipe:
- CutDepth writes depth / 10 m (the NYU cap, clipped to [0, 1]; holes stay 0) into the strip. The
  official code writes depth in mm into a uint8 image, which wraps modulo 256 (1000 mm -> 232): a bug
  we do not copy (AiT ref §7.3). It fires with probability `cutdepth_p` instead of on every 4th call
  of each worker process, so the rate does not depend on the number of workers;
- the photometric ops work on float RGB in [0, 1], not on uint8, so nothing is rounded between them
  and hue is continuous (OpenCV's uint8 hue has 2° steps); their parameters are albumentations'
  uint8 ones mapped exactly to that scale (see `photometric`).

Randomness comes only from an explicit `np.random.Generator`; the depth photometric ops run on a
CPU float tensor with torchvision's functional API where it has the same semantics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from pipeline.metrics.depth import MAX_DEPTH


@dataclass(frozen=True)
class DepthAugmentConfig:
    """The depth solver's per-sample RGB augmentation (AiT ref §6.1); defaults are the official ones.

    Shift limits are on albumentations' uint8 scales: a value ± x draws U(−x, x).
    """

    p_photometric: float = 0.5  # each of brightness/contrast, gamma and HSV fires independently with this p
    brightness_contrast: float = 0.2  # RandomBrightnessContrast: gain 1 ± x, additive shift ± x (0 = off)
    gamma: tuple[float, float] = (0.8, 1.2)  # RandomGamma: rgb ** U(lo, hi) (albumentations 80-120 / 100)
    hue: float = 20.0  # HueSaturationValue, OpenCV hue units (180 a turn): 20 = ±40°
    saturation: float = 30.0  # additive on HSV saturation, in 1/255
    value: float = 20.0  # additive on HSV value, in 1/255
    cutdepth_p: float = 0.25  # GLPDepth vertical CutDepth (official: every 4th call per worker)


def color_jitter(rgb: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] -> jittered copy (brightness, contrast, saturation), clipped (insseg)."""
    if strength <= 0:
        return rgb
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    out = rgb * b
    out = (out - out.mean()) * c + out.mean()
    gray = out.mean(axis=2, keepdims=True)
    out = (out - gray) * s + gray
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def cut_depth(rgb: np.ndarray, depth: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """GLPDepth's vertical CutDepth: with probability p, a copy of the (H, W, 3) float RGB whose
    full-height strip of columns [l, l + w) holds clip(depth / 10 m, 0, 1) in all three channels.

    `depth` is (H, W) metres and is not modified. Draws: one coin U(0, 1) < p, then α, β ~ U(0, 1);
    l = ⌊α·W⌋ and w = max(⌊(W − α·W)·β·0.75⌋, 1), as the official code (AiT ref §6.1).
    """
    if p <= 0 or rng.random() >= p:
        return rgb
    width = rgb.shape[1]
    alpha, beta = rng.random(2)
    left = int(alpha * width)
    strip = max(int((width - alpha * width) * beta * 0.75), 1)
    out = rgb.copy()
    # Deviation: depth scaled by the 10 m cap, not mm wrapped mod 256 in uint8 (see the module docstring).
    out[:, left : left + strip] = np.clip(depth[:, left : left + strip] / MAX_DEPTH, 0.0, 1.0)[..., None]
    return out


def photometric(rgb: np.ndarray, cfg: DepthAugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] -> a copy after albumentations' RandomBrightnessContrast,
    RandomGamma and HueSaturationValue in that order, each applied with probability cfg.p_photometric.

    The mapping from albumentations' uint8 defaults to float [0, 1]:
    - brightness/contrast: its uint8 LUT is clip(x·α + β·255) with α = 1 + U(±c), β = U(±b): a gain
      about 0 and an additive shift (not torchvision's blend with the grey mean), so here clip(x·α + β);
    - gamma: x ** g with g ~ U(gamma), exactly torchvision's adjust_gamma on floats;
    - HSV: OpenCV's uint8 HSV has H in [0, 180) and S, V in [0, 255]; albumentations adds the three
      shifts (H modulo 180, S and V clipped), so here H += U(±hue)/180 of a turn (torchvision's
      adjust_hue units, ±20 -> ±40°), S += U(±saturation)/255 and V += U(±value)/255, clipped.
    An op whose limits make it the identity (0, or gamma (1, 1)) draws nothing beyond its coin.
    """
    fire = rng.random(3) < cfg.p_photometric
    if not fire.any():
        return rgb
    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)  # (3, H, W)
    if fire[0] and cfg.brightness_contrast > 0:
        gain, shift = rng.uniform(-cfg.brightness_contrast, cfg.brightness_contrast, size=2)
        x = (x * (1.0 + float(gain)) + float(shift)).clamp(0.0, 1.0)
    if fire[1] and cfg.gamma != (1.0, 1.0):
        x = TF.adjust_gamma(x, float(rng.uniform(*cfg.gamma)))
    if fire[2] and (cfg.hue > 0 or cfg.saturation > 0 or cfg.value > 0):
        dh, ds, dv = rng.uniform(-1.0, 1.0, size=3) * np.array([cfg.hue, cfg.saturation, cfg.value])
        x = shift_hsv(x, float(dh) / 180.0, float(ds) / 255.0, float(dv) / 255.0)
    return np.ascontiguousarray(x.permute(1, 2, 0).numpy(), dtype=np.float32)


def shift_hsv(image: torch.Tensor, hue: float, saturation: float, value: float) -> torch.Tensor:
    """(3, H, W) float RGB in [0, 1] -> the same with H += hue (turns, modulo 1) and S += saturation,
    V += value (clipped to [0, 1]) in HSV; with only a hue shift it equals torchvision's adjust_hue."""
    r, g, b = image
    v = image.amax(0)
    chroma = v - image.amin(0)
    safe = chroma.clamp_min(1e-12)
    # Hexcone hue in sixths of a turn; grey pixels (chroma 0) get hue 0 and saturation 0, as OpenCV.
    h = torch.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    h = torch.where(v == r, (g - b) / safe, h)
    h = torch.where(chroma > 0, h / 6.0, torch.zeros_like(h))
    s = torch.where(v > 0, chroma / v.clamp_min(1e-12), torch.zeros_like(v))
    h = torch.remainder(h + hue, 1.0)
    s = (s + saturation).clamp(0.0, 1.0)
    v = (v + value).clamp(0.0, 1.0)
    # HSV -> RGB: v − v·s·clip(min(k, 4 − k), 0, 1), k = (n + 6h) mod 6, n = 5, 3, 1 for R, G, B.
    k = torch.remainder(torch.tensor([5.0, 3.0, 1.0]).view(3, 1, 1) + 6.0 * h, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


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

"""Image augmentation of the task-solver, consistent with what the token caches hold.

Geometry runs in the DataLoader workers (it decides which cached tokens are exact); the photometric
ops are drawn there too (one small row per image, from the worker's generator) but applied batched on
the training device, to uint8 images that cost the loader no float work and the host-to-device copy a
quarter of the bytes.

- depth (PAPER_NOTES §6.1): a horizontal flip of the full frame and a crop of columns [x, x + S) over all
  rows, exactly the views the cache tokenised; the solver draws one of the CACHED views, so with a
  coarse `cache.depth.crop_stride` the crop offsets are snapped to that grid (stride 1 is exact).
  On the RGB only (the depth target and its cached tokens are never touched), in the official order:
  GLPDepth's vertical CutDepth on the full frame, then the view, then albumentations'
  RandomBrightnessContrast, RandomGamma and HueSaturationValue, each firing with its own p
  (`draw_depth` in the worker, `augment_depth` on the device; knobs in `DepthAugmentConfig`);
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
  we do not copy (PAPER_NOTES §7.3). It fires with probability `cutdepth_p` instead of on every 4th call
  of each worker process, so the rate does not depend on the number of workers;
- the photometric ops work on float RGB in [0, 1], not on uint8, so nothing is rounded between them
  and hue is continuous (OpenCV's uint8 hue has 2° steps); their parameters are albumentations'
  uint8 ones mapped exactly to that scale (see `augment_depth`).

Randomness comes only from an explicit `np.random.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from pipeline.config import DepthAugmentConfig
from pipeline.metrics.depth import MAX_DEPTH

# Per-sample draws of the depth photometric augmentation, one float32 row per image (`draw_depth`),
# applied batched on the training device by `augment_depth`: the loader ships the uint8 view, and the
# float work (4 ops over S² pixels) runs where the model does instead of in every DataLoader worker.
CUT_LO, CUT_HI, BC_ON, GAIN, SHIFT, GAMMA_ON, GAMMA, HSV_ON, HUE, SAT, VAL = range(11)
DEPTH_DRAW_SIZE = 11


def draw_depth(cfg: DepthAugmentConfig, frame_width: int, flip: int, x: int,
               rng: np.random.Generator) -> np.ndarray:
    """The augmentation of one depth view as a (DEPTH_DRAW_SIZE,) float32 row, drawn in the official
    order (CutDepth on the full frame, then brightness/contrast, gamma, HSV; PAPER_NOTES §6.1).

    CutDepth: one coin U(0, 1) < cutdepth_p, then α, β ~ U(0, 1); on the full frame of width W the strip
    is columns [l, l + w), l = ⌊α·W⌋, w = max(⌊(W − α·W)·β·0.75⌋, 1), as the official code; it precedes
    the flip and crop, so it is stored as the columns [CUT_LO, CUT_HI) of the view (possibly empty).
    Photometric: three coins < p_photometric, then gain and shift ~ U(±brightness_contrast), the
    exponent ~ U(gamma), and the HSV shifts U(±hue)/180 turns, U(±saturation)/255, U(±value)/255,
    each drawn only when its coin fired and its limits are not the identity.
    """
    row = np.zeros(DEPTH_DRAW_SIZE, np.float32)
    row[GAMMA] = 1.0
    if cfg.cutdepth_p > 0 and rng.random() < cfg.cutdepth_p:
        alpha, beta = rng.random(2)
        left = int(alpha * frame_width)
        right = left + max(int((frame_width - alpha * frame_width) * beta * 0.75), 1)
        if flip:
            left, right = frame_width - right, frame_width - left
        row[[CUT_LO, CUT_HI]] = left - x, right - x
    fire = rng.random(3) < cfg.p_photometric
    if fire[0] and cfg.brightness_contrast > 0:
        row[[BC_ON, GAIN, SHIFT]] = 1.0, *rng.uniform(-cfg.brightness_contrast, cfg.brightness_contrast, 2)
    if fire[1] and cfg.gamma != (1.0, 1.0):
        row[[GAMMA_ON, GAMMA]] = 1.0, rng.uniform(*cfg.gamma)
    if fire[2] and (cfg.hue > 0 or cfg.saturation > 0 or cfg.value > 0):
        shifts = rng.uniform(-1.0, 1.0, 3) * np.array([cfg.hue / 180, cfg.saturation / 255, cfg.value / 255])
        row[[HSV_ON, HUE, SAT, VAL]] = 1.0, *shifts
    return row


def augment_depth(images: torch.Tensor, depth: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) uint8 views, (B, 1, S, S) depth in metres, (B, DEPTH_DRAW_SIZE) draws ->
    (B, 3, S, S) float in [0, 1]: CutDepth, then albumentations' RandomBrightnessContrast, RandomGamma
    and HueSaturationValue, each only on the images whose row says it fired.

    The mapping from albumentations' uint8 defaults to float [0, 1]:
    - CutDepth writes clip(depth / 10 m, 0, 1) into all three channels of the strip (holes stay 0;
      the official mm-in-uint8 wrap is not copied, see the module docstring);
    - brightness/contrast: its uint8 LUT is clip(x·α + β·255) with α = 1 + gain, β = shift: a gain
      about 0 and an additive shift (not torchvision's blend with the grey mean), so clip(x·α + β);
    - gamma: x ** g, torchvision's adjust_gamma on floats;
    - HSV: OpenCV's uint8 HSV has H in [0, 180) and S, V in [0, 255]; albumentations adds the shifts
      (H modulo 180, S and V clipped), so H moves by the drawn turns and S, V are shifted and clipped.
    """
    fired = draws.cpu()[:, [CUT_HI, BC_ON, GAMMA_ON, HSV_ON]].ne(0).any(0).tolist()  # host copy: no sync
    d = draws.to(device=images.device, dtype=torch.float32)[:, :, None, None, None].unbind(1)
    x = images.float() / 255.0
    if fired[0]:  # an empty strip has CUT_LO = CUT_HI = 0
        cols = torch.arange(x.shape[-1], device=x.device, dtype=torch.float32)
        strip = (cols >= d[CUT_LO]) & (cols < d[CUT_HI])  # (B, 1, 1, S)
        x = torch.where(strip, (depth.float() / MAX_DEPTH).clamp(0.0, 1.0), x)
    if fired[1]:
        x = torch.where(d[BC_ON] > 0, (x * (1.0 + d[GAIN]) + d[SHIFT]).clamp(0.0, 1.0), x)
    if fired[2]:
        x = torch.where(d[GAMMA_ON] > 0, x.pow(d[GAMMA]), x)
    if fired[3]:
        x = torch.where(d[HSV_ON] > 0, shift_hsv(x, d[HUE][:, 0], d[SAT][:, 0], d[VAL][:, 0]), x)
    return x


def color_jitter(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) uint8, (B, 3) brightness/contrast/saturation factors -> float in [0, 1] (insseg):
    scale by b, stretch about the image mean by c, blend each pixel with its grey by s, clip."""
    b, c, s = factors.to(device=images.device, dtype=torch.float32)[:, :, None, None, None].unbind(1)
    x = images.float() / 255.0 * b
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * c + mean
    gray = x.mean(dim=1, keepdim=True)
    return ((x - gray) * s + gray).clamp(0.0, 1.0)


def draw_color_jitter(strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation factors in [1 − strength, 1 + strength] (ones when off)."""
    if strength <= 0:
        return np.ones(3, np.float32)
    return rng.uniform(1 - strength, 1 + strength, size=3).astype(np.float32)


def shift_hsv(image: torch.Tensor, hue, saturation, value) -> torch.Tensor:
    """(..., 3, H, W) float RGB in [0, 1] -> the same with H += hue (turns, modulo 1) and S += saturation,
    V += value (clipped to [0, 1]) in HSV; with only a hue shift it equals torchvision's adjust_hue.
    The shifts are floats or tensors broadcastable to (..., H, W)."""
    r, g, b = image.unbind(-3)
    v = image.amax(-3)
    chroma = v - image.amin(-3)
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
    n = torch.tensor([5.0, 3.0, 1.0], device=image.device).view(3, 1, 1)
    k = torch.remainder(n + 6.0 * h.unsqueeze(-3), 6.0)
    return v.unsqueeze(-3) - (v * s).unsqueeze(-3) * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


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

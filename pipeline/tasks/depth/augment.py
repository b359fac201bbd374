"""The depth solver's image augmentation, consistent with what the token caches hold.

PAPER_NOTES §6.1: a horizontal flip of the full frame and a crop of columns [x, x + S) over all
rows, exactly the views the cache tokenised; the solver draws one of the CACHED views, so with a
coarse `cache.depth.crop_stride` the crop offsets are snapped to that grid (stride 1 is exact).
On the RGB only (the depth target and its cached tokens are never touched), in the official order:
GLPDepth's vertical CutDepth on the full frame, then the view, then albumentations'
RandomBrightnessContrast, RandomGamma and HueSaturationValue, each firing with its own p
(`draw_depth` in the worker, `augment_depth` on the device; knobs in `DepthAugmentConfig`).

Deliberate deviations from the official depth recipe:
- CutDepth writes depth / 10 m (the NYU cap, clipped to [0, 1]; holes stay 0) into the strip. The
  official code writes depth in mm into a uint8 image, which wraps modulo 256 (1000 mm -> 232): a bug
  we do not copy (PAPER_NOTES §7.3). It fires with probability `cutdepth_p` instead of on every 4th call
  of each worker process, so the rate does not depend on the number of workers;
- the photometric ops work on float RGB in [0, 1], not on uint8, so nothing is rounded between them
  and hue is continuous (OpenCV's uint8 hue has 2° steps); their parameters are albumentations'
  uint8 ones mapped exactly to that scale (see `augment_depth`).

Geometry and the draws run in the DataLoader workers; the photometric ops are applied batched on the
training device (`solver_training/augment.py`). Randomness comes only from an explicit `np.random.Generator`.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.tasks.dense import view_crop
from pipeline.tasks.depth.config import DepthAugmentConfig
from pipeline.tasks.depth.metrics import MAX_DEPTH

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
    return view_crop(rgb, flip, x, size), view_crop(depth, flip, x, size)

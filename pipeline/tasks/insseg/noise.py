"""Noise objects of Pix2Seq "sequence augmentation" for the instance sequence (PAPER_NOTES §4.5).

Follows the official `InsSegHead.build_input_seq` (itself Pix2Seq, Chen et al. 2022, §3.3):
- n_dup ~ U{0 .. n_noise} (0 without real objects), n_bad = n_noise − n_dup;
- bad boxes: a pool of n_bad random boxes (centre U(0,1)², half-size |truncnormal(±2σ)|/4, scaled by the
  image w, h) and up to n_bad shifted GT boxes (a GT w, h at a random centre), of which a random n_bad
  are kept;
- duplicate boxes: GT boxes drawn without replacement from the GT list tiled n_noise // n + 1 times,
  jittered per coordinate by (w, h, w, h) · truncnormal / 2 · 0.1, then clipped to the image;
- the noise boxes are shuffled among themselves and clipped to the image.
Every random draw comes from an explicit `torch.Generator` (the official code used the global RNGs of
torch and Python's `random`, so its sequences are not reproducible; PAPER_NOTES §7.2).

Boxes are float (x1, y1, x2, y2) pixels of the (augmented) input image of size image_hw = (H, W).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

JITTER_RANGE = 0.1  # `jitter_bbox(max_range=0.1)`: jitter = (w, h, w, h) * truncnormal / 2 * 0.1
TRUNCATION = 2.0  # timm `trunc_normal_` defaults: std 1, cut at ±2


@dataclass(frozen=True)
class NoiseObjects:
    """The noise slots of one image, in sequence order."""

    boxes: Tensor  # (m, 4) float xyxy px, clipped to the image
    source: Tensor  # (m,) int64: the GT object a duplicate was jittered from, −1 for a bad box


def truncated_normal(shape: tuple[int, ...], generator: torch.Generator, bound: float = TRUNCATION) -> Tensor:
    """Standard normal truncated to [−bound, bound] (inverse CDF) -> float32 on generator.device."""
    cdf = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))  # noqa: E731
    low, high = cdf(-bound), cdf(bound)
    u = low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)
    return (math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)).clamp(-bound, bound)


def _scale(image_hw: tuple[int, int], like: Tensor) -> Tensor:
    H, W = image_hw
    return like.new_tensor([W, H, W, H])


def clip_boxes(boxes: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """(m, 4) xyxy px -> the same, clamped to [0, W] x [0, H]."""
    return boxes.clamp_min(0.0).minimum(_scale(image_hw, boxes))


def random_boxes(n: int, image_hw: tuple[int, int], generator: torch.Generator) -> Tensor:
    """(n, 4) random boxes: centre U(0,1)², half-size |truncnormal|/4, times the image (W, H) (unclipped)."""
    centre = torch.rand((n, 2), generator=generator, device=generator.device)
    half = truncated_normal((n, 2), generator).abs() / 4
    return torch.cat((centre - half, centre + half), dim=1) * _scale(image_hw, centre)


def shifted_boxes(boxes: Tensor, image_hw: tuple[int, int], generator: torch.Generator) -> Tensor:
    """(n, 4) GT boxes -> (n, 4) boxes of the same w, h at a uniformly random centre (unclipped)."""
    centre = torch.rand((boxes.shape[0], 2), generator=generator, device=generator.device)
    centre = centre.to(boxes) * _scale(image_hw, boxes)[:2]
    half = (boxes[:, 2:] - boxes[:, :2]) / 2
    return torch.cat((centre - half, centre + half), dim=1)


def jittered_boxes(boxes: Tensor, generator: torch.Generator, max_range: float = JITTER_RANGE) -> Tensor:
    """(n, 4) boxes -> each coordinate moved by its box side · truncnormal / 2 · max_range (unclipped)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    sides = torch.stack((w, h, w, h), dim=1)
    rate = truncated_normal(tuple(boxes.shape), generator).to(boxes) / 2 * max_range
    return boxes + sides * rate


def noise_objects(
    gt_boxes: Tensor, num_noise: int, image_hw: tuple[int, int], generator: torch.Generator
) -> NoiseObjects:
    """(n, 4) GT boxes -> `num_noise` noise boxes (bad + duplicates, shuffled, clipped) and sources."""
    device, n = gt_boxes.device, gt_boxes.shape[0]
    gen_device = generator.device

    def randperm(k: int) -> Tensor:
        return torch.randperm(k, generator=generator, device=gen_device).to(device)

    num_dup = 0 if n == 0 else int(torch.randint(num_noise + 1, (), generator=generator, device=gen_device))
    num_bad = num_noise - num_dup
    # The official code draws both GT subsets from the GT list tiled so that it has > num_noise rows.
    pool = torch.arange(n, device=device).repeat(1 if n == 0 else num_noise // n + 1)
    shift_source = pool[randperm(len(pool))[:num_bad]]
    random_pool = random_boxes(num_bad, image_hw, generator).to(gt_boxes)
    bad_pool = torch.cat((random_pool, shifted_boxes(gt_boxes[shift_source], image_hw, generator)))
    bad = bad_pool[randperm(len(bad_pool))[:num_bad]]
    dup_source = pool[randperm(len(pool))[:num_dup]]
    dup = clip_boxes(jittered_boxes(gt_boxes[dup_source], generator), image_hw)
    shuffle = randperm(num_noise)
    boxes = torch.cat((bad, dup))[shuffle]
    source = torch.cat((torch.full((num_bad,), -1, dtype=torch.long, device=device), dup_source))[shuffle]
    return NoiseObjects(boxes=clip_boxes(boxes, image_hw), source=source)

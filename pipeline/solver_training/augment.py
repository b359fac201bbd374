"""Image augmentation of the task-solver that every task shares: the photometric colour jitter.

Each task's geometric augmentation, consistent with what its token cache holds, lives in its folder
(`pipeline/tasks/depth/augment.py`, `pipeline/tasks/insseg/jitter.py`). The photometric factors are drawn
in the DataLoader workers (one small row per image, from the worker's generator) but applied batched on
the training device, to uint8 images that cost the loader no float work and the host-to-device copy a
quarter of the bytes. `color_jitter`: brightness, contrast and saturation factors in [1 − j, 1 + j] (the
official COCO pipeline has no colour augmentation).

Randomness comes only from an explicit `np.random.Generator`.
"""

from __future__ import annotations

import numpy as np
import torch


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



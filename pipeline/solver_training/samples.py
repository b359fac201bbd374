"""Helpers of the tasks' training-example decoders (`Task.examples`), which run inside DataLoader workers.

Randomness comes from one generator per (seed, rank, worker), created lazily in the worker.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.core.runtime import dist_info


def worker_rng(seed: int) -> np.random.Generator:
    """The generator of this (seed, rank, DataLoader worker)."""
    info = torch.utils.data.get_worker_info()
    return np.random.default_rng([seed, dist_info().rank, info.id if info else 0])


def stack_images(images: list[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 images -> (B, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()

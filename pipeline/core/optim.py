"""Optimisers and learning-rate schedules of the paper's recipes, as small configs + pure functions.

Schedules are multiplicative factors of the base lr per optimiser step (a `LambdaLR`), so the same
code serves the tokenizers (PAPER_NOTES §1.4: Adam, ×0.98 every 500 iterations; §1.5: AdamW, cosine per
iteration with a 500-step warm-up) and the task-solver (§4.6: warm-up then step or linear decay).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from pipeline.core.config import OptimConfig


def build_optimizer(params: Iterable, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over `params` (tensors or param-group dicts) with the config's lr/betas/wd."""
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def lr_factor(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Multiplier of the base lr at optimiser step `step` of `total_steps`."""
    if step < cfg.warmup_steps:
        ramp = step / max(1, cfg.warmup_steps)
        return cfg.warmup_start_factor + (1.0 - cfg.warmup_start_factor) * ramp
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "exp_step":
        # The official code also steps at iteration 0 (one extra ×0.98); we start at the base lr.
        return cfg.decay ** (step // cfg.decay_every)
    if cfg.schedule == "cosine":
        return cfg.final_factor + (1 - cfg.final_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return cfg.gamma ** sum(step >= m * total_steps for m in cfg.milestones)
    if cfg.schedule == "linear":
        return 1.0 + (cfg.final_factor - 1.0) * progress
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, total_steps))


def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float) -> float:
    """Clip to `max_norm` (no-op when 0) and return the pre-clip global L2 norm for logging."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))

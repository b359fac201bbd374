"""The tokenizer training loop: one code path for CPU, CUDA and torchrun DDP (PAPER_NOTES §1.4, §1.5).

Losses are the task's (`Task.tokenizer` -> `TokenizerRecipe.loss`; PAPER_NOTES §1.3: depth = MSE against
the clean GT on valid
(> 0) pixels of the reconstruction of the *mask-augmented* input (§2); masks = plain MSE in the network's
[-1, 1] space; class maps = CE on labelled pixels). All add the quantizer's 0.25-weighted commitment term.
The quantizer all-reduces its EMA statistics itself, so DDP only has to average the gradients of the conv
weights (buffers are not broadcast).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from pipeline.core.config import TokenizerTaskConfig
from pipeline.core.optim import build_optimizer, build_scheduler, clip_gradients
from pipeline.core.runtime import DistInfo, autocast_ctx, wrap_ddp
from pipeline.models.vqvae import VQVAE

LogFn = Callable[[int, dict[str, float]], None]
TokenizerLoss = Callable[[torch.nn.Module, torch.Tensor, torch.Generator],
                         tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass(frozen=True)
class Placement:
    """Where a training runs: its process group, its device and the run's seed."""

    info: DistInfo
    device: torch.device
    seed: int


def fit_tokenizer(model: VQVAE, batches: Iterable[torch.Tensor], loss_fn: TokenizerLoss,
                  cfg: TokenizerTaskConfig, where: Placement, log: LogFn) -> dict[str, float]:
    """Train `model` in place for `cfg.train.steps` batches with the task's loss (`TokenizerRecipe.loss`);
    returns the last logged values."""
    steps, optim, device = cfg.train.steps, cfg.optim, where.device
    model.to(device).train()
    net = wrap_ddp(model, where.info, device)
    optimizer = build_optimizer(model.parameters(), optim)
    scheduler = build_scheduler(optimizer, optim, steps)
    # Mask-augmentation randomness: seeded per rank, on the device that draws it.
    generator = torch.Generator(device=device).manual_seed(where.seed * 1000 + where.info.rank)
    last: dict[str, float] = {}
    for step, batch in enumerate(batches):
        batch = batch.to(device, non_blocking=True)
        with autocast_ctx(device):
            loss, parts = loss_fn(net, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_gradients(model.parameters(), optim.grad_clip)
        optimizer.step()
        if step % cfg.train.log_every == 0 or step == steps - 1:
            last = {"loss": float(loss.detach()), "recon": float(parts["recon"]),
                    "commit": float(parts["commit"]), "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
                    **model.quantizer.usage()}
            log(step, last)
        scheduler.step()
    return last

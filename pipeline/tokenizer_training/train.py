"""The tokenizer training loop: one code path for CPU, CUDA and torchrun DDP (PAPER_NOTES §1.4, §1.5).

Losses are the task's (`Task.tokenizer_loss`; PAPER_NOTES §1.3: depth = MSE against the clean GT on valid
(> 0) pixels of the reconstruction of the *mask-augmented* input (§2); masks = plain MSE in the network's
[-1, 1] space; class maps = CE on labelled pixels). All add the quantizer's 0.25-weighted commitment term.
The quantizer all-reduces its EMA statistics itself, so DDP only has to average the gradients of the conv
weights (buffers are not broadcast).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from pipeline.core.optim import OptimConfig, build_optimizer, build_scheduler, clip_gradients
from pipeline.core.runtime import DistInfo, autocast_ctx, wrap_ddp
from pipeline.models.vqvae import VQVAE
from pipeline.tasks.base import Task

LogFn = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class LossSpec:
    task: Task  # decides the loss (`Task.tokenizer_loss`)
    mask_ratio: float = 0.0
    patch_size: int = 16


def tokenizer_loss(model: torch.nn.Module, batch: torch.Tensor, spec: LossSpec,
                   generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts for one `(B, C, S, S)` crop batch of the spec's task."""
    return spec.task.tokenizer_loss(model, batch, spec.mask_ratio, spec.patch_size, generator)


def fit_tokenizer(model: VQVAE, batches: Iterable[torch.Tensor], steps: int, optim: OptimConfig,
                  spec: LossSpec, info: DistInfo, device: torch.device, seed: int,
                  log: LogFn, log_every: int) -> dict[str, float]:
    """Train `model` in place for `steps` batches; returns the last logged values."""
    model.to(device).train()
    net = wrap_ddp(model, info, device)
    optimizer = build_optimizer(model.parameters(), optim)
    scheduler = build_scheduler(optimizer, optim, steps)
    # Mask-augmentation randomness: seeded per rank, on the device that draws it.
    generator = torch.Generator(device=device).manual_seed(seed * 1000 + info.rank)
    last: dict[str, float] = {}
    for step, batch in enumerate(batches):
        batch = batch.to(device, non_blocking=True)
        with autocast_ctx(device):
            loss, parts = tokenizer_loss(net, batch, spec, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_gradients(model.parameters(), optim.grad_clip)
        optimizer.step()
        if step % log_every == 0 or step == steps - 1:
            last = {"loss": float(loss.detach()), "recon": float(parts["recon"]), "commit": float(parts["commit"]),
                    "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
                    **model.quantizer.usage()}
            log(step, last)
        scheduler.step()
    return last

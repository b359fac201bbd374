"""One training step of the task-solver over one batch per task (paper §3.2-3.3, Table 10).

`TrainStep` is the module DDP wraps: a single forward computes every task's loss (the loss adapter of
each task's `TrainingRecipe`) and returns their weighted sum, so joint training is one forward and one
backward per step whatever the number of tasks. The frozen tokenizers live inside it without gradients:
the aux losses differentiate through their decoders into the logits only (PAPER_NOTES §3.3).

"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.core.vocab import Vocab
from pipeline.models.ait import AiT
from pipeline.models.vqvae import VQVAE
from pipeline.tasks.base import LossAdapter


def freeze(model: VQVAE) -> VQVAE:
    """Eval mode, no gradients for its parameters (gradients still flow *through* it)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class TrainStep(nn.Module):
    """Weighted sum of the task losses of one step; the module that DDP wraps."""

    def __init__(self, model: AiT, heads: dict[str, LossAdapter], weights: dict[str, float],
                 vocab: Vocab) -> None:
        super().__init__()
        self.model = model
        self.heads = heads
        self.weights = weights
        self.vocab = vocab
        # Registered so .to(device) moves them; frozen, so DDP ignores their parameters.
        self.tokenizers = nn.ModuleList(freeze(h.tokenizer) for h in heads.values())

    def train(self, mode: bool = True) -> TrainStep:
        super().train(mode)
        self.tokenizers.eval()  # frozen detokenizers stay in eval mode (no EMA, no dropout)
        return self

    def forward(self, batches: dict[str, dict], generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        device = next(self.model.parameters()).device
        total, logs = 0.0, {}
        for task, batch in batches.items():
            loss, parts = self.heads[task].loss(self.model, batch, self.vocab, device, generator)
            total = total + self.weights.get(task, 1.0) * loss
            logs |= {f"{task}/loss": float(loss.detach())} | {f"{task}/{k}": float(v) for k, v in parts.items()}
        return total, logs

"""One training step of the task-solver over one batch per task (paper §3.2-3.3, Table 10).

`TrainStep` is the module DDP wraps: a single forward computes every task's loss (depth and/or
instances) and returns their weighted sum, so joint training is one forward and one backward per
step whatever the number of tasks. The frozen tokenizers live inside it without gradients: the aux
losses differentiate through their decoders into the logits only (AiT ref §3.3).

Instance targets come from the cache; the documented exceptions are encoded here on the fly with the
frozen mask tokenizer: objects whose box the jitter window truncated, and the jittered duplicate
boxes of the noise objects (AiT ref §7.1). `parts["fallback_fraction"]` reports how often.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.config import DepthTaskConfig, InssegTaskConfig
from pipeline.models.ait import AiT
from pipeline.models.vqvae import VQVAE
from pipeline.solver.augment import augment_depth, color_jitter
from pipeline.solver.samples import crop_from_original
from pipeline.tasks import depth as depth_task
from pipeline.tasks import insseg as insseg_task
from pipeline.vocab import Vocab


def freeze(model: VQVAE) -> VQVAE:
    """Eval mode, no gradients for its parameters (gradients still flow *through* it)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass
class DepthHead:
    tokenizer: VQVAE
    cfg: DepthTaskConfig

    def loss(self, model: AiT, batch: dict, vocab: Vocab, device: torch.device,
             generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        tokens_in, targets = depth_task.depth_sequence(batch["indices"].to(device), vocab)
        depth = batch["depth"].to(device)
        logits = model(augment_depth(batch["images"].to(device), depth, batch["augment"]), depth_task.TASK_ID,
                       tokens_in)
        aux = self.cfg.aux_weight > 0
        return depth_task.depth_loss(logits, targets, vocab=vocab, tokenizer=self.tokenizer if aux else None,
                                     gt_depth=depth if aux else None,
                                     aux_weight=self.cfg.aux_weight, tau=self.cfg.tau)


@dataclass
class InssegHead:
    tokenizer: VQVAE
    cfg: InssegTaskConfig
    mask_size: int
    _zero: Tensor | None = field(default=None, repr=False)

    @torch.no_grad()
    def encode_crops(self, crops: list[np.ndarray], device: torch.device) -> Tensor:
        """(m, S, S) GT crops -> (m, h·w) local mask codes with the frozen tokenizer."""
        if not crops:
            return torch.zeros(0, self.grid_tokens, dtype=torch.long, device=device)
        x = torch.from_numpy(np.stack(crops)).float()[:, None].to(device)
        return self.tokenizer.encode(x).flatten(1)

    def zero_mask(self, device: torch.device) -> Tensor:
        """The codes of the all-zero mask (padding and noise objects' targets), encoded once per device:
        the tokenizer is frozen, so they never change."""
        if self._zero is None or self._zero.device != device:
            blank = np.zeros((self.mask_size, self.mask_size), np.float32)
            self._zero = self.encode_crops([blank], device)[0]
        return self._zero

    @property
    def grid_tokens(self) -> int:
        h, w = insseg_task.mask_grid(self.tokenizer)
        return h * w

    def targets(self, batch: dict, device: torch.device) -> tuple[list, list[Tensor], float]:
        """ImageTargets per image (cached tokens or fallback encodes), GT crops, fallback fraction."""
        missing = [o["crop"] for objs in batch["objects"] for o in objs if o["indices"] is None]
        fallback = iter(self.encode_crops(missing, device))
        out, crops, total = [], [], 0
        for objs in batch["objects"]:
            total += len(objs)
            indices = [torch.as_tensor(o["indices"], device=device) if o["indices"] is not None
                       else next(fallback) for o in objs]
            out.append(insseg_task.ImageTargets(
                boxes_xyxy=torch.tensor(np.array([o["box"] for o in objs]).reshape(-1, 4), device=device),
                labels=torch.tensor([o["label"] for o in objs], dtype=torch.long, device=device),
                mask_indices=torch.stack(indices) if indices else
                torch.zeros(0, self.grid_tokens, dtype=torch.long, device=device),
                image_hw=(self.cfg.image_size, self.cfg.image_size), norm=float(self.cfg.image_size)))
            crops.append(torch.from_numpy(np.stack([o["crop"] for o in objs]) if objs else
                                          np.zeros((0, self.mask_size, self.mask_size), np.float32)))
        return out, crops, len(missing) / max(total, 1)

    def loss(self, model: AiT, batch: dict, vocab: Vocab, device: torch.device,
             generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        targets, crops, fallback = self.targets(batch, device)
        zero = self.zero_mask(device)

        def duplicates(b: int, sources: Tensor, boxes: Tensor) -> Tensor:
            # Jittered duplicates: crop the GT mask at the jittered box (not cacheable, ref §7.1).
            objs, jitter = batch["objects"][b], batch["jitters"][b]
            masks = [batch["masks"][b][objs[int(i)]["mask"]] for i in sources]
            return self.encode_crops([crop_from_original(m, box.cpu().numpy(), jitter, self.mask_size)
                                      for m, box in zip(masks, boxes, strict=True)], device)

        seq = insseg_task.build_sequences(targets, vocab, self.cfg.num_query, generator, duplicates, zero,
                                          mask_weight=self.cfg.mask_weight, order=self.cfg.order)
        images = color_jitter(batch["images"].to(device), batch["color"])
        logits = model(images, insseg_task.TASK_ID, seq.tokens_in)
        aux = self.cfg.aux_weight > 0
        loss, parts = insseg_task.insseg_loss(
            logits, seq, vocab=vocab, tokenizer=self.tokenizer if aux else None,
            gt_crops=[c.to(device) for c in crops] if aux else None, aux_weight=self.cfg.aux_weight,
            mask_weight=self.cfg.mask_weight, tau=self.cfg.tau)
        parts |= insseg_task.slot_accuracy(logits, seq.targets, insseg_task.tokens_per_object(self.grid_tokens))
        parts["fallback_fraction"] = torch.tensor(fallback)
        return loss, parts


class TrainStep(nn.Module):
    """Weighted sum of the task losses of one step; the module that DDP wraps."""

    def __init__(self, model: AiT, heads: dict[str, DepthHead | InssegHead], weights: dict[str, float],
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

"""The model side of inference shared by the tasks: one decoding pass over a dense task's code sequence
(AiT-P's parallel pass or greedy auto-regressive `generate` with soft inputs, PAPER_NOTES §3.1, §4.4). The image
geometry around it (windows, flips, letterbox) is `pipeline/geometry/windows.py`; the tasks decode their
own outputs (`Task.evaluate`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.core.vocab import Vocab
from pipeline.models.ait import AiT

# -------------------------------------------------------------------------------------------------
# dense tasks: the model as the predictor of one window


def soft_inputs(model: AiT, soft_kinds: frozenset[str], cfg) -> frozenset[str]:
    """The kinds fed back as soft tokens (PAPER_NOTES §3.1): none for AiT-P, which has no auto-regressive inputs
    (its `cfg.soft_input` is not even read, so DVC's params record says it does not matter), or when
    `cfg.soft_input` is off."""
    return soft_kinds if not model.solver.cfg.parallel and cfg.soft_input else frozenset()


@torch.no_grad()
def generate_dense(model: AiT, images: Tensor, task_id: int, length: int, kinds: list[tuple[str, ...]],
                   vocab: Vocab, soft_kinds: frozenset[str]) -> Tensor:
    """(B, 3, S, S) images -> (B, L, V) logits of a dense task's code sequence: ONE `generate_parallel`
    pass for AiT-P (PAPER_NOTES §4.4), else greedy auto-regressive `generate` (top_p 0 in the official dense
    configs, PAPER_NOTES §3.1) with soft inputs at `soft_kinds`."""
    memory = model.encode(images)
    if model.solver.cfg.parallel:
        return model.solver.generate_parallel(memory, task_id, length)
    _, logits = model.solver.generate(memory, task_id, length, kinds, vocab, soft_kinds=soft_kinds)
    return logits

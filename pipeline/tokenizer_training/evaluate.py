"""Tokenizer reconstruction, task-blind: the upper bound of the whole system (paper §3.1, Tables 1/8/12).

Each task scores the reconstructions of its labels next to its interpolation tokenizer (paper Table 12)
in its folder (`pipeline/tasks/<task>/tokenizer.py`); this module gives them the hard and soft
reconstructions and the codebook usage. The soft decode of a tokenizer on its own needs logits: we use
the negative squared distances of each latent to the codes, so softmax(tau · logits) weighs nearby codes
(tau → ∞ is the hard decode).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.models.vqvae import VQVAE
from pipeline.tokenizer_training.codes import usage_stats

Progress = Callable[[int, int], None]


@torch.no_grad()
def code_logits(model: VQVAE, x: torch.Tensor) -> torch.Tensor:
    """`(B, C, H, W)` data -> `(B, K, h, w)` logits = −‖z − e_k‖² of each latent to each code (fp32)."""
    z = model.encoder(model.normalize(x)).float()  # (B, D, h, w)
    cb = model.quantizer.codebook.float()  # (K, D)
    dist = (z.pow(2).sum(1, keepdim=True) + cb.pow(2).sum(1)[None, :, None, None]
            - 2.0 * torch.einsum("bdhw,kd->bkhw", z, cb))
    return -dist


@torch.no_grad()
def reconstruct(model: VQVAE, x: torch.Tensor, tau: float) -> dict[str, torch.Tensor]:
    """Hard and soft reconstructions of `(B, C, H, W)` inputs; pads to a multiple of r, crops back."""
    r = model.cfg.downsample_ratio
    H, W = x.shape[-2:]
    padded = F.pad(x, (0, -W % r, 0, -H % r))
    indices = model.encode(padded)
    hard = model.decode(indices)
    soft = model.decode_soft(code_logits(model, padded), tau)
    return {"vqvae_hard": hard[..., :H, :W], "vqvae_soft": soft[..., :H, :W], "indices": indices}


def codebook_usage(model: VQVAE, indices: torch.Tensor) -> dict[str, float]:
    """Perplexity and unused-code count of a set of `(…)` indices."""
    counts = np.bincount(indices.flatten().cpu().numpy(), minlength=model.cfg.num_embeddings)
    stats = usage_stats(counts)
    return {"perplexity": stats["perplexity"], "unused_codes": stats["unused_codes"]}

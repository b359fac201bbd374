"""Soft token lookup: a probability-weighted average of table rows (AiT paper §3.3, PAPER_NOTES §3).

The same operation serves both soft-token sites of AiT:
- the detokenizer (`VQVAE.decode_soft`): softmax(τ·logits) @ codebook, τ = 0.8 for depth, 1.0 for masks;
- the task-solver's next-step input: softmax(logits) @ token embeddings (τ = 1).

Note that τ *multiplies* the logits as in the official `decode_soft`: τ < 1 is softer (PAPER_NOTES §3.2).
"""

from __future__ import annotations

import torch


def soft_lookup(logits: torch.Tensor, table: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """`(..., K)` logits, `(K, D)` table -> `(..., D)` = softmax(tau · logits) @ table."""
    if logits.shape[-1] != table.shape[0]:
        raise ValueError(f"logits have {logits.shape[-1]} classes but the table has {table.shape[0]} rows")
    probs = torch.softmax(tau * logits, dim=-1)
    return probs @ table.to(probs.dtype)

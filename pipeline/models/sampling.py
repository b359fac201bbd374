"""Per-step token choice for the task-solver: legal-range masking, greedy and nucleus (top-p) sampling.

Follows PAPER_NOTES §3.1 / §4.5: at inference the logits are always restricted to the sub-range legal for the
position (box bins, class ids, mask or depth codes) before choosing; `top_p=0` is greedy argmax (depth),
`top_p>0` is nucleus sampling (0.3 insseg, 0.4 detection). Deliberate deviations: sampling draws from an
explicit `torch.Generator` (the official code uses the global RNG, so COCO results are not reproducible,
PAPER_NOTES §7.2), and the nucleus filter is vectorised instead of a Python loop over the batch.

Shapes: B batch, L sequence length, V vocabulary size.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.core.vocab import Vocab


def restrict_logits(logits: Tensor, legal_mask: Tensor) -> Tensor:
    """(..., V) logits, broadcastable (..., V) bool mask -> logits with -inf outside the legal tokens."""
    return logits.masked_fill(~legal_mask, float("-inf"))


@dataclass(frozen=True)
class Nucleus:
    """How a decoder chooses each token: greedily (`top_p` 0) or by nucleus sampling from `generator`."""

    top_p: float = 0.0
    generator: torch.Generator | None = None


GREEDY = Nucleus()


def choose(logits: Tensor, top_p: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """(B, V) logits -> (B,) int64 tokens: argmax when top_p <= 0, else a nucleus sample (Holtzman et al.)."""
    if top_p <= 0.0:
        return logits.argmax(dim=-1)
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # drop a token once the mass BEFORE it already exceeds top_p, so the top-1 token is always kept
    # (the official shift-right of `cumulative > top_p`, AiT `transformer.py` depth/insseg branches)
    mass_before = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], dim=-1)
    drop_sorted = mass_before > top_p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    probs = logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def decoding_plan(
    vocab: Vocab,
    kinds_per_position: Sequence[tuple[str, ...] | str],
    length: int,
    soft_kinds: Set[str] = frozenset(),
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-position kinds (a pattern tiled to `length`) -> legal (L, V) bool and soft (L,) bool.

    A position is soft (next input = softmax(restricted logits) @ token embeddings, PAPER_NOTES §3.1) when all
    of its kinds are in `soft_kinds`; e.g. the insseg pattern is 4 x ("coord",), ("class",), 16 x ("mask",)
    with soft_kinds={"mask"}, and depth is [("depth",)] with soft_kinds={"depth"}.
    """
    period = len(kinds_per_position)
    if period == 0 or length % period:
        raise ValueError(f"kinds pattern of length {period} does not tile a sequence of length {length}")
    kinds = [(k,) if isinstance(k, str) else tuple(k) for k in kinds_per_position]
    legal = torch.stack([vocab.legal_mask(k, device=device) for k in kinds])  # (period, V)
    soft = torch.tensor([set(k) <= set(soft_kinds) for k in kinds], dtype=torch.bool, device=device)
    repeats = length // period
    return legal.repeat(repeats, 1), soft.repeat(repeats)

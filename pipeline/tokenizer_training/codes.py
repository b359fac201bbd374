"""Codebook usage of a set of token indices: the health check of a VQ tokenizer (paper §3.1)."""

from __future__ import annotations

import numpy as np


def usage_stats(counts: np.ndarray) -> dict[str, float]:
    """Code-usage summary: min/median/max count, perplexity exp(H(p)) and the number of unused codes."""
    total = counts.sum()
    p = counts[counts > 0] / max(total, 1)
    return {"min": int(counts.min()), "median": float(np.median(counts)), "max": int(counts.max()),
            "perplexity": float(np.exp(-(p * np.log(p)).sum())) if total else 0.0,
            "unused_codes": int((counts == 0).sum())}

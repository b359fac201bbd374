"""Layers of the AiT task-solver transformer: 2-D sine positions, attention, pre-LN blocks, KV cache.

Follows PAPER_NOTES §4.2 (official `ait/code/model/transformer.py`, `Attention` / `EncoderBlock` /
`DecoderBlock` / `ARTransformer.add_enc_embed`):
- attention has separate q/k/v projections with bias and an output projection, no attention dropout;
- the MLP is Linear-GELU-Dropout-Linear (timm `Mlp` with `drop=(dropout, 0)`);
- blocks are pre-LN with a constant drop-path rate on every residual branch;
- the decoder's cross-attention applies the SAME LayerNorm (`norm2`) to the query and to the memory.
Deliberate deviation: attention runs through `F.scaled_dot_product_attention`, and the decoder keeps a
pre-allocated per-layer self-attention KV cache and computes the memory keys/values once per sequence
(the official code recomputes them at every step).

Shapes: B batch, S source length (h*w memory tokens), L target length, D model dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sine_positions_2d(
    height: int, width: int, dim: int, temperature: float = 10000.0, device: torch.device | None = None
) -> Tensor:
    """Fixed 2-D sine encoding, (height*width, dim) float32, row-major; first dim/2 channels encode y.

    Integer (un-normalised) positions; each half interleaves sin/cos pairs sharing a frequency
    temperature^(2*(i//2)/(dim/2)), as `add_enc_embed(pos_enc='sine')` (PAPER_NOTES §4.2 step 3). Works for
    any height x width, so a 15x20 feature map needs no new table (PAPER_NOTES §7.3).
    """
    if dim % 4:
        raise ValueError(f"sine positions need dim divisible by 4, got {dim}")
    half = dim // 2
    i = torch.arange(half, dtype=torch.float32, device=device)
    freq = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)

    def axis(n: int) -> Tensor:  # (n, half): [sin(p/f0), cos(p/f0), sin(p/f1), cos(p/f1), ...]
        p = torch.arange(n, dtype=torch.float32, device=device)[:, None] / freq
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=-1).flatten(1)

    y = axis(height)[:, None, :].expand(height, width, half)
    x = axis(width)[None, :, :].expand(height, width, half)
    return torch.cat((y, x), dim=-1).reshape(height * width, dim)


class DropPath(nn.Module):
    """Stochastic depth per sample (scaled by 1/keep), identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Sequential):
    """Linear(D->F), GELU, Dropout, Linear(F->D): dropout only on the hidden units, as the official Mlp."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, dim)


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections (official names wq/wk/wv/proj)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.wq = nn.Linear(dim, dim)
        self.wk = nn.Linear(dim, dim)
        self.wv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:  # (B, S, D) -> (B, heads, S, D/heads)
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def keys_values(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S, D) -> keys and values, each (B, heads, S, D/heads)."""
        return self._split(self.wk(source)), self._split(self.wv(source))

    def attend(self, x: Tensor, keys: Tensor, values: Tensor, causal: bool = False) -> Tensor:
        """(B, L, D) queries against precomputed keys/values -> (B, L, D)."""
        out = F.scaled_dot_product_attention(self._split(self.wq(x)), keys, values, is_causal=causal)
        return self.proj(out.transpose(1, 2).flatten(2))

    def forward(self, x: Tensor, source: Tensor | None = None, causal: bool = False) -> Tensor:
        """Self-attention (source=None) or attention of x (B, L, D) over source (B, S, D) -> (B, L, D)."""
        return self.attend(x, *self.keys_values(x if source is None else source), causal=causal)


class KVCache:
    """Pre-allocated self-attention keys/values of one decoder layer, (B, heads, max_len, D/heads)."""

    def __init__(self, batch: int, num_heads: int, max_len: int, head_dim: int, like: Tensor) -> None:
        # `like` supplies device and dtype
        self.keys = like.new_empty(batch, num_heads, max_len, head_dim)
        self.values = like.new_empty(batch, num_heads, max_len, head_dim)
        self.length = 0

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store (B, heads, n, D/heads) new keys/values; return all keys/values so far."""
        n = keys.shape[2]
        if n > 1 and self.length > 0:
            # a multi-position chunk is only causal-correct on an empty cache (SDPA's is_causal is top-left)
            raise ValueError("KVCache takes one position per step after the first chunk")
        self.keys[:, :, self.length : self.length + n] = keys
        self.values[:, :, self.length : self.length + n] = values
        self.length += n
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]


class EncoderBlock(nn.Module):
    """Pre-LN self-attention + MLP block (PAPER_NOTES §4.2 encoder step 4)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, ffn_dim, dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """(B, S, D) -> (B, S, D)."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DecoderBlock(nn.Module):
    """Pre-LN causal self-attention, cross-attention to the memory, MLP (PAPER_NOTES §4.2 decoder)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, num_heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, ffn_dim, dropout)
        self.drop_path = DropPath(drop_path)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S, D) memory -> this layer's cross-attention keys/values; `norm2` is shared with the query."""
        return self.cross_attn.keys_values(self.norm2(memory))

    def forward(self, x: Tensor, memory_kv: tuple[Tensor, Tensor], cache: KVCache | None = None) -> Tensor:
        """(B, L, D) -> (B, L, D); with a cache, x holds only the newest position(s) of the sequence."""
        h = self.norm1(x)
        if cache is None:
            y = self.attn(h, causal=True)
        else:
            keys, values = cache.append(*self.attn.keys_values(h))
            y = self.attn.attend(h, keys, values, causal=h.shape[1] > 1)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.cross_attn.attend(self.norm2(x), *memory_kv))
        return x + self.drop_path(self.mlp(self.norm3(x)))

"""EMA vector quantiser of the AiT VQ-VAE tokenizers (PAPER_NOTES §1.2; van den Oord et al. 2017, App. A.1).

Shape letters: B batch, D code dim, h x w latent grid, K codebook size, N = B·h·w latent vectors.

What it does, as in the official `VectorQuantizerEMA` (vae/models/VQVAE.py):
- nearest code by squared L2 in expanded form ‖x‖² + ‖e‖² − 2x·e, then argmin;
- codebook / EMA sums / EMA counts are buffers: codebook and ema_w drawn N(0,1) independently, counts 0;
- in training mode only: EMA of counts and sums (decay 0.99), Laplace smoothing (ε = 1e-5),
  codebook = ema_w / counts; the codebook gets no gradient;
- loss = commitment (0.25) · MSE(stopgrad(quantized), latents); straight-through estimator.

Deliberate differences:
- distances are computed in fp32 even under autocast (the official solver ran them under fp16; PAPER_NOTES §7.2);
- the batch counts and sums are all-reduced before the EMA update, so every rank keeps the same
  codebook (the official code does not, and each GPU drifts to its own codebook; PAPER_NOTES §1.2, §7.2);
- optional dead-code restart (off by default, as in the paper): codes whose EMA count falls below
  `dead_code_threshold` are re-seeded from random batch latents chosen on rank 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core import runtime

Collective = Callable[[torch.Tensor], torch.Tensor]


class VectorQuantizerEMA(nn.Module):
    """`(B, D, h, w)` latents -> (straight-through codes `(B, D, h, w)`, indices `(B, h, w)`, commit loss)."""

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        decay: float = 0.99,
        eps: float = 1e-5,
        commitment: float = 0.25,
        dead_code_threshold: float = 0.0,  # EMA count below which a code is restarted; 0 = off
        all_reduce: Collective | None = None,  # sums over ranks; default runtime.all_reduce_sum
        broadcast: Collective | None = None,  # rank 0 -> all; default runtime.broadcast_from_rank0
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.dim = dim
        self.decay = decay
        self.eps = eps
        self.commitment = commitment
        self.dead_code_threshold = dead_code_threshold
        self.all_reduce = all_reduce or runtime.all_reduce_sum
        self.broadcast = broadcast or runtime.broadcast_from_rank0
        # PAPER_NOTES §1.2: buffers, not parameters; codebook and ema_w are independent N(0,1) draws.
        # Ranks must build these from the same seed (or let DDP sync buffers at wrap time).
        self.register_buffer("codebook", torch.randn(num_embeddings, dim))
        self.register_buffer("ema_w", torch.randn(num_embeddings, dim))
        self.register_buffer("ema_cluster_size", torch.zeros(num_embeddings))
        # Code counts of the last batch (all ranks in training), for logging only.
        self.register_buffer("last_counts", torch.zeros(num_embeddings), persistent=False)

    # ----------------------------------------------------------------------------------------------
    # lookups

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """`(N, D)` latents -> `(N,)` int64 index of the nearest code (squared L2, fp32)."""
        with torch.autocast(device_type=flat.device.type, enabled=False):
            x = flat.float()
            cb = self.codebook.float()
            # Expanded form as in the reference; cancellation-prone, hence fp32 (PAPER_NOTES §1.2).
            dist = x.pow(2).sum(1, keepdim=True) + cb.pow(2).sum(1) - 2.0 * (x @ cb.t())  # (N, K)
            return dist.argmin(dim=1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """`(...)` int64 indices -> `(...,  D)` fp32 code vectors (inverse of `codes_to_indices`)."""
        return F.embedding(indices, self.codebook)

    def codes_to_indices(self, z: torch.Tensor) -> torch.Tensor:
        """`(B, D, h, w)` latents -> `(B, h, w)` int64 indices; never updates the codebook."""
        B, D, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, D)  # (N, D), raster order
        return self.nearest(flat).view(B, h, w)

    # ----------------------------------------------------------------------------------------------
    # forward

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(B, D, h, w)` -> (quantized `(B, D, h, w)` fp32, indices `(B, h, w)` int64, commit loss)."""
        B, D, h, w = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.permute(0, 2, 3, 1).reshape(-1, D).float()  # (N, D)
            indices = self.nearest(flat)
            # Codes are looked up before the EMA update, as in the reference.
            codes = self.indices_to_codes(indices)  # (N, D)
            if self.training:
                self._ema_update(flat.detach(), indices)
            else:
                self.last_counts.copy_(torch.bincount(indices, minlength=self.num_embeddings))
            commit_loss = self.commitment * F.mse_loss(codes.detach(), flat)
            # Straight-through: value is exactly `codes` (x − x == 0), gradient w.r.t. z is the identity.
            quantized = codes + (flat - flat.detach())
        quantized = quantized.view(B, h, w, D).permute(0, 3, 1, 2)
        return quantized, indices.view(B, h, w), commit_loss

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        K, D = self.num_embeddings, self.dim
        # Per-code count and sum of this batch, packed into one (K, D+1) tensor for a single collective.
        stats = torch.zeros(K, D + 1, device=flat.device, dtype=torch.float32)
        stats[:, :D].index_add_(0, indices, flat)
        stats[:, D].index_add_(0, indices, torch.ones_like(indices, dtype=torch.float32))
        # Deliberate fix (PAPER_NOTES §1.2): sum over ranks BEFORE the update so all codebooks stay identical.
        stats = self.all_reduce(stats)
        dw, counts = stats[:, :D], stats[:, D]
        self.last_counts.copy_(counts)

        self.ema_cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        # Laplace smoothing of the counts, exactly as the reference: (c + ε) / (n + Kε) · n.
        n = self.ema_cluster_size.sum()
        self.ema_cluster_size.copy_((self.ema_cluster_size + self.eps) / (n + K * self.eps) * n)
        self.ema_w.mul_(self.decay).add_(dw, alpha=1.0 - self.decay)
        self.codebook.copy_(self.ema_w / self.ema_cluster_size.unsqueeze(1))
        if self.dead_code_threshold > 0:
            self._restart_dead_codes(flat)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> None:
        # The counts are all-reduced, so every rank finds the same dead set (and the same n_dead).
        dead = self.ema_cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())  # host sync; only paid when restarts are on
        if n_dead == 0:
            return
        pick = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
        new = self.broadcast(flat[pick].contiguous())  # rank 0's latents win, so ranks agree
        # As lucidrains' expire_codes_: the restarted code starts with count = threshold.
        self.codebook[dead] = new
        self.ema_w[dead] = new * self.dead_code_threshold
        self.ema_cluster_size[dead] = self.dead_code_threshold

    # ----------------------------------------------------------------------------------------------
    # logging

    def usage(self) -> dict[str, float]:
        """Perplexity of the code distribution and number of unused codes in the last batch."""
        counts = self.last_counts.float()
        probs = counts / counts.sum().clamp_min(1.0)
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return {"perplexity": float(perplexity), "dead_codes": float((counts == 0).sum())}

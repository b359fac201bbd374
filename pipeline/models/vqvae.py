"""Convolutional VQ-VAE tokenizer/detokenizer of AiT (paper §3.1; PAPER_NOTES §1.1, §9).

Shape letters: B batch, C channels (1), H x W input, h x w = H/r x W/r latent grid, D code dim,
K codebook size, r downsample ratio, L = log2(r) − 1 extra stride-2 stages.

Architecture, exactly as the official `vae/models/VQVAE.py` (layer order and `encoder.*` / `decoder.*`
state-dict indices match it, see `from_official_state_dict`):
- encoder: Conv(C->h, k4 s2 p1) ReLU, L x [Conv(c->2c, k4 s2 p1) ReLU], n x ResBlock(c), Conv1x1(c->D);
- decoder: Conv1x1(D->c) ReLU, n x ResBlock(c), ConvT(c->c, k4 s2 p1) ReLU, L x [ConvT(c->c/2) ReLU],
  Conv1x1(h->C), no output activation; c = h·r/2 at the bottleneck;
- ResBlock: conv3-ReLU-conv3-ReLU-conv1 + identity, no normalisation anywhere;
- input scaling "none" (depth: metres in, metres out) or "symmetric" (masks: x -> 2x−1 in, y·0.5+0.5 out);
- "onehot" (semantic segmentation, not in the paper): C = N classes; the data is a `(B, 1, H, W)` map of
  class ids 0..N (0 = unlabelled), the network sees its `(B, N, H, W)` one-hot of id − 1 (all zeros where
  unlabelled) and the decoder's output is N class LOGITS, returned as they are (`labels_from_logits`
  turns them into ids; the reconstruction loss is `losses.label_ce_loss`).

Deliberate differences:
- the paper says kernel 3; we follow the code (kernel 4, pad 1), which the parameter counts pin;
- `decode` works on any h x w grid (the official hard decode assumes a square sqrt(n) grid, which is why
  its depth inference used two 480² windows; PAPER_NOTES §7.3). A 480x640 map gives a 15x20 grid;
- one config with explicit (hidden_dim, downsample_ratio, K, D); the official second copy in the solver
  re-derived these from (mask_size, token_length) with a different meaning of `hidden_dim`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core import checkpoint
from pipeline.core.config import VQVAEConfig
from pipeline.models.quantizer import VectorQuantizerEMA
from pipeline.models.soft import soft_lookup

# PAPER_NOTES §1.1 table: the two tokenizers of the paper.
DEPTH_VQVAE = VQVAEConfig(hidden_dim=16, downsample_ratio=32, num_embeddings=128, embedding_dim=512)
MASK_VQVAE = VQVAEConfig(
    hidden_dim=16, downsample_ratio=16, num_embeddings=128, embedding_dim=512, input_scale="symmetric"
)


def _num_stages(cfg: VQVAEConfig) -> int:
    r = cfg.downsample_ratio
    if r < 2 or r & (r - 1):
        raise ValueError(f"downsample_ratio must be a power of two >= 2, got {r}")
    return int(math.log2(r)) - 1  # L; there are L + 1 stride-2 convs in total


def grid_shape(cfg: VQVAEConfig, H: int, W: int) -> tuple[int, int]:
    """Token grid (h, w) of an H x W input; H and W must be multiples of the downsample ratio."""
    r = cfg.downsample_ratio
    _num_stages(cfg)
    if H % r or W % r:
        raise ValueError(f"input {H}x{W} is not a multiple of the downsample ratio {r}")
    return H // r, W // r


def onehot_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """`(B, 1, H, W)` class ids 0..N (any dtype) -> `(B, N, H, W)` float one-hot of id − 1; 0 -> zeros."""
    if labels.dim() != 4 or labels.shape[1] != 1:
        raise ValueError(f"onehot input must be (B, 1, H, W) class ids, got {tuple(labels.shape)}")
    ids = labels[:, 0].round().long()  # float maps from the data loader carry exact integers
    # One-hot over 0..N then drop plane 0: unlabelled pixels become the zero vector, not a class.
    # F.one_hot raises on ids outside 0..N.
    planes = F.one_hot(ids, num_classes + 1)[..., 1:]  # (B, H, W, N)
    dtype = labels.dtype if labels.is_floating_point() else torch.get_default_dtype()
    return planes.permute(0, 3, 1, 2).to(dtype)


def labels_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """`(B, N, H, W)` class logits -> `(B, H, W)` int64 ids 1..N (argmax + 1; never 0)."""
    return logits.argmax(1) + 1


class ResBlock(nn.Module):
    """conv3-ReLU-conv3-ReLU-conv1 plus identity; no norm, no ReLU after the add (PAPER_NOTES §1.1)."""

    def __init__(self, chan: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(chan, chan, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(chan, chan, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(chan, chan, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + x


def _encoder(cfg: VQVAEConfig) -> nn.Sequential:
    c = cfg.hidden_dim
    layers: list[nn.Module] = [nn.Conv2d(cfg.channels, c, 4, stride=2, padding=1), nn.ReLU()]
    for _ in range(_num_stages(cfg)):
        layers += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.ReLU()]
        c *= 2
    layers += [ResBlock(c) for _ in range(cfg.num_res_blocks)]
    layers.append(nn.Conv2d(c, cfg.embedding_dim, 1))  # pre-quantisation latents, no activation
    return nn.Sequential(*layers)


def _decoder(cfg: VQVAEConfig) -> nn.Sequential:
    c = cfg.hidden_dim * cfg.downsample_ratio // 2  # bottleneck width
    layers: list[nn.Module] = [nn.Conv2d(cfg.embedding_dim, c, 1), nn.ReLU()]
    layers += [ResBlock(c) for _ in range(cfg.num_res_blocks)]
    layers += [nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.ReLU()]
    for _ in range(_num_stages(cfg)):
        layers += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1), nn.ReLU()]
        c //= 2
    layers.append(nn.Conv2d(c, cfg.channels, 1))  # linear output for depth and masks alike
    return nn.Sequential(*layers)


class VQVAE(nn.Module):
    """VQ-VAE tokenizer: `(B, C, H, W)` maps <-> `(B, h, w)` int64 codebook indices."""

    def __init__(self, cfg: VQVAEConfig, *, dead_code_threshold: float = 0.0, all_reduce=None) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = _encoder(cfg)
        self.decoder = _decoder(cfg)
        # PAPER_NOTES §1.2: EMA decay 0.99, eps 1e-5, commitment 0.25 (hard-coded in the official solver copy).
        self.quantizer = VectorQuantizerEMA(
            cfg.num_embeddings,
            cfg.embedding_dim,
            dead_code_threshold=dead_code_threshold,
            all_reduce=all_reduce,
        )

    # Input/output scaling (PAPER_NOTES §1.1 `use_norm`): masks live in [-1, 1] inside the network.
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Data space -> network space (identity for depth, x -> 2x − 1 for masks, `(B, 1, H, W)` ids
        -> `(B, N, H, W)` one-hot for onehot)."""
        if self.cfg.input_scale == "onehot":
            return onehot_labels(x, self.cfg.channels)
        return 2.0 * x - 1.0 if self.cfg.input_scale == "symmetric" else x

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        """Network space -> data space (identity for depth, y -> 0.5y + 0.5 for masks; onehot logits
        stay logits)."""
        return 0.5 * y + 0.5 if self.cfg.input_scale == "symmetric" else y

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(B, C, H, W)` -> (reconstruction `(B, C, H, W)` in data space, indices `(B, h, w)`, commit).

        onehot: `(B, 1, H, W)` ids in, `(B, N, H, W)` logits out.
        """
        z = self.encoder(self.normalize(x))  # (B, D, h, w)
        quantized, indices, commit_loss = self.quantizer(z)
        return self.denormalize(self.decoder(quantized)), indices, commit_loss

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` data -> `(B, h, w)` int64 indices (raster order); never updates the codebook."""
        return self.quantizer.codes_to_indices(self.encoder(self.normalize(x)))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """`(B, h, w)` int64 indices -> `(B, C, h·r, w·r)` reconstruction in data space; any h x w."""
        codes = self.quantizer.indices_to_codes(indices).permute(0, 3, 1, 2)  # (B, D, h, w)
        return self.denormalize(self.decoder(codes))

    def decode_soft(self, logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        """`(B, K, h, w)` logits -> `(B, C, h·r, w·r)` = decoder(softmax(tau·logits) @ codebook)."""
        # PAPER_NOTES §3.2: a convex combination of codebook vectors per position, straight into the decoder.
        codes = soft_lookup(logits.permute(0, 2, 3, 1), self.quantizer.codebook, tau)  # (B, h, w, D)
        return self.denormalize(self.decoder(codes.permute(0, 3, 1, 2)))


# Official quantizer buffer names (vae/models/VQVAE.py) -> ours; encoder/decoder keys already match.
_OFFICIAL_KEYS = {
    "_vq_vae._embedding": "quantizer.codebook",
    "_vq_vae._ema_w": "quantizer.ema_w",
    "_vq_vae._ema_cluster_size": "quantizer.ema_cluster_size",
}


def from_official_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official AiT VQ-VAE state dict (`ckpt["weights"]`, maybe `module.`-prefixed) -> ours."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")  # saved from a DDP wrapper (PAPER_NOTES §1.4)
        out[_OFFICIAL_KEYS.get(key, key)] = value
    return out


TOKENIZER_PRODUCER = "`dvc repro train_tokenizer`"


def load_vqvae(directory: Path, variant: str | None = None):
    """Rebuild a VQ-VAE tokenizer from its checkpoint dir (config.json, hash-checked); eval mode.

    Returns `(model, config)`; a missing or corrupt checkpoint, or (with `variant`) one trained as another
    variant, raises `checkpoint.CheckpointError` naming the file.
    """
    config = checkpoint.read_config(directory, TOKENIZER_PRODUCER)
    if variant is not None and config.get("variant") != variant:
        raise checkpoint.CheckpointError(f"{directory}: checkpoint is tokenizer variant "
                                         f"{config.get('variant')!r}, not {variant!r}")
    model = checkpoint.build_from_config(directory, lambda c: VQVAE(VQVAEConfig(**c["architecture"])), config,
                              TOKENIZER_PRODUCER)
    checkpoint.load_weights(directory, model, producer=TOKENIZER_PRODUCER)
    return model.eval(), config

"""Depth task adapter: depth codes -> token sequence, loss, logits/tokens -> depth (AiT ref §4.4, §3).

The UViM-style trio (STYLE §1.3, big_vision `depth_task.py`):
- `depth_sequence`: cached tokenizer indices (B, h, w) -> decoder input / targets in row-major raster
  order; position 0 of the decoder input is the task embedding, added by the solver;
- `depth_loss`: CE over the FULL vocabulary (ref §4.3), summed and divided by the number of target
  tokens, plus the aux SiLog (λ = 0.5) of the soft decode through the frozen tokenizer (ref §3.3);
- `predict_depth`: detokenizer-side soft (`decode_soft`, softmax(τ·logits) @ codebook) or hard
  (`decode` of the restricted argmax) decode, clipped at 1e-3 m.

Table 7 of the paper is the product of two independent switches: solver-side soft inputs are
`Solver.generate(soft_kinds=SOFT_KINDS)` (or not); detokenizer-side soft decode is `soft_decode` here.

Normalisation (ref §3.3 "normalisation"): the official loss is (CE_sum + aux·n_tokens) / N where N is the
all-reduced mean token count per GPU, i.e. CE_mean + aux_weight·SiLog on one process. `num_targets` lets
the trainer pass that N; the default is the local count. The tokenizer must be frozen by the caller
(requires_grad False): gradients still flow through its decoder into the logits, never into it.

Shapes: B batch, h x w token grid, L = h·w, V vocabulary, K depth codebook size, H x W pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.losses import silog_loss
from pipeline.models.vqvae import VQVAE, grid_shape
from pipeline.tasks import num_supervised, sequence_ce_sum, token_accuracy
from pipeline.vocab import Vocab

__all__ = [
    "TASK_ID", "SOFT_KINDS", "MIN_DEPTH", "generation_kinds", "depth_sequence", "depth_code_logits",
    "depth_loss", "token_accuracy", "predict_depth",
]

TASK_ID = 2  # task embeddings: det 0, insseg 1, depth 2 (AiT ref §9)
SOFT_KINDS = frozenset({"depth"})  # solver-side soft token at every depth position (ref §3.1)
MIN_DEPTH = 1e-3  # predictions are clipped at 1e-3 m (ref §4.4 inference step 3)
SILOG_LAMBDA = 0.5  # variance weight of the aux SiLog (ref §3.3)


def generation_kinds() -> list[tuple[str, ...]]:
    """Per-position token kinds for `Solver.generate` (one pattern entry, tiled to any length)."""
    return [("depth",)]


def depth_sequence(indices: Tensor, vocab: Vocab) -> tuple[Tensor, Tensor]:
    """(B, h, w) local depth codes -> tokens_in (B, L−1) = targets[:, :-1], targets (B, L), L = h·w."""
    if indices.ndim != 3:
        raise ValueError(f"expected (B, h, w) depth indices, got shape {tuple(indices.shape)}")
    targets = vocab.to_global(indices.long().flatten(1), "depth")  # row-major raster (ref §4.4)
    return targets[:, :-1], targets


def depth_code_logits(logits: Tensor, vocab: Vocab, grid_hw: tuple[int, int]) -> Tensor:
    """(B, L, V) solver logits -> (B, K, h, w) logits of the depth codes, as `decode_soft` takes them."""
    h, w = grid_hw
    B, L, _ = logits.shape
    if L != h * w:
        raise ValueError(f"{L} depth positions do not fill a {h}x{w} token grid")
    r = vocab.task_range("depth")
    return logits[..., r.start : r.stop].reshape(B, h, w, len(r)).permute(0, 3, 1, 2)


def depth_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    vocab: Vocab,
    tokenizer: VQVAE | None = None,
    gt_depth: Tensor | None = None,
    aux_weight: float = 1.0,
    tau: float = 1.0,
    num_targets: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """(B, L, V) logits, (B, L) targets [, frozen tokenizer, (B, 1, H, W) GT metres] -> (loss, parts).

    loss = CE_sum / N + aux_weight · SiLog · n / N with n the local target count and N = `num_targets`
    (default n); parts holds detached "ce", "accuracy" and, with the aux term, "silog".
    """
    if (tokenizer is None) != (gt_depth is None):
        raise ValueError("the aux loss needs both the tokenizer and gt_depth (or neither)")
    count = num_supervised(targets)
    norm = count if num_targets is None else torch.as_tensor(num_targets, dtype=count.dtype)
    loss = sequence_ce_sum(logits, targets) / norm
    parts = {"ce": loss.detach(), "accuracy": token_accuracy(logits, targets)}
    if tokenizer is not None:
        silog = depth_aux_loss(logits, tokenizer, gt_depth, vocab, tau)
        loss = loss + aux_weight * silog * count / norm  # official: aux · n_tokens, then / N (ref §3.3)
        parts["silog"] = silog.detach()
    return loss, parts


def depth_aux_loss(
    logits: Tensor, tokenizer: VQVAE, gt_depth: Tensor, vocab: Vocab, tau: float = 1.0
) -> Tensor:
    """SiLog(λ 0.5) of decode_soft(depth-code logits, τ) vs (B, 1, H, W) GT metres, GT > 0 (ref §3.3)."""
    grid = grid_shape(tokenizer.cfg, *gt_depth.shape[-2:])
    # fp32 outside autocast: the detokenizer is VQ math (ref §4.6 forces the losses to fp32)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        pred = tokenizer.decode_soft(depth_code_logits(logits.float(), vocab, grid), tau)
        return silog_loss(pred, gt_depth.float(), lam=SILOG_LAMBDA)  # clips pred at 1e-3 inside


@torch.no_grad()
def predict_depth(
    logits_or_tokens: Tensor,
    tokenizer: VQVAE,
    grid_hw: tuple[int, int],
    vocab: Vocab,
    soft_decode: bool = True,
    tau: float = 1.0,
) -> Tensor:
    """(B, L, V) logits or (B, L) tokens -> (B, 1, H, W) depth in metres, clipped at MIN_DEPTH.

    soft_decode: decode_soft(softmax(τ · depth-code logits) @ codebook) (needs logits; τ 0.8 in the
    paper's depth configs, ref §3.2); else decode the argmax over the depth codes (or the given tokens).
    """
    is_logits = logits_or_tokens.is_floating_point()
    if soft_decode and not is_logits:
        raise ValueError("the soft decode needs logits, not tokens")
    with torch.autocast(device_type=logits_or_tokens.device.type, enabled=False):
        if soft_decode:
            depth = tokenizer.decode_soft(depth_code_logits(logits_or_tokens.float(), vocab, grid_hw), tau)
        else:
            if is_logits:  # argmax restricted to the depth codes = local code index
                indices = depth_code_logits(logits_or_tokens, vocab, grid_hw).argmax(dim=1)
            else:
                indices = vocab.to_local(logits_or_tokens, "depth").view(-1, *grid_hw)
            depth = tokenizer.decode(indices)
    return depth.clamp_min(MIN_DEPTH)

"""Trained task-solver inference: images -> depth maps (metres) / instances (AiT ref §4.4, §4.5, §5).

Depth follows the official test protocol (AiT ref §5.1, `AiT.forward_test`, `DepthHead` defaults
`shift_window_test=True, shift_size=2, flip_test=True`): S x S windows at x = linspace(0, W − S, n), each
also horizontally flipped; predictions are un-flipped and averaged per flip pair, then the windows are
stitched by summing and dividing by the per-column count; clip >= 1e-3. Each window is decoded with
greedy auto-regressive `generate` (soft inputs when `soft_input`, ref §3.1) or ONE `generate_parallel`
pass for AiT-P (ref §4.4), then detokenized soft or hard (`soft_decode`, τ; ref §3.2). RGB goes in as [0, 1],
as in training; the backbone standardises it itself (`BackboneConfig.normalize`, see backbone.py).

Instances follow ref §4.5 / §5.2: resize so the long side is `image_size` (aspect kept), zero-pad
bottom/right to a square, generate `num_query` objects, decode boxes / scores / pasted masks back in
original pixels. Images are [0, 1] here too; the backbone applies the mean/std (the padding is black in
both training and inference).

Deliberate choices: n = ceil(W / S) windows (the official n = 2 for 640/480 and the demo's 160/120, and
still a full cover for wider frames); `shift_windows=False` decodes ONE centred window and fills the
columns it does not cover with its nearest predicted column (a cheap ablation of the sliding windows; the
official code has no full-frame alternative, its token grid is square, ref §7.3). Every window and flip of
a batch of images goes through one generate call.

Shapes: N images, V views per image (windows x flips), B = N·V, S crop side, H x W pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pipeline.config import DepthInferConfig, InssegInferConfig, InssegTaskConfig
from pipeline.models.ait import AiT
from pipeline.models.sampling import choose, decoding_plan, restrict_logits
from pipeline.models.vqvae import VQVAE, grid_shape
from pipeline.tasks import depth as depth_task
from pipeline.tasks import insseg as insseg_task
from pipeline.vocab import Vocab

DepthFn = Callable[[Tensor], Tensor]  # (B, 3, S, S) images in [0, 1] -> (B, 1, S, S) metres


# -------------------------------------------------------------------------------------------------
# depth: windows, flips and stitching (pure tensor code; the model enters as `predict`)


def window_offsets(width: int, size: int, shift: bool = True) -> list[int]:
    """Left columns of the S-wide test windows: linspace(0, W − S, ceil(W/S)), or one centred window."""
    if width < size:
        raise ValueError(f"image width {width} is smaller than the crop size {size}")
    if width == size:
        return [0]
    if not shift:
        return [(width - size) // 2]
    n = max(2, math.ceil(width / size))  # official shift_size = 2 at 640/480 (ref §5.1)
    return [int(round(x)) for x in np.linspace(0, width - size, n)]


def tta_views(images: Tensor, size: int, offsets: Sequence[int], flip: bool) -> Tensor:
    """(N, 3, H, W) -> (N·V, 3, H, S) views, image-major: per window the crop then (if flip) its mirror."""
    views = []
    for x in offsets:
        crop = images[..., x : x + size]
        views.append(torch.stack((crop, crop.flip(-1)), 1) if flip else crop[:, None])
    return torch.cat(views, 1).flatten(0, 1)  # (N, windows·flips, 3, H, S) -> (N·V, ...)


def stitch(preds: Tensor, width: int, offsets: Sequence[int], flip: bool) -> Tensor:
    """(N·V, 1, H, S) view predictions -> (N, 1, H, W): un-flip, average flip pairs, average overlaps."""
    flips = 2 if flip else 1
    size = preds.shape[-1]
    views = preds.unflatten(0, (-1, len(offsets), flips))  # (N, windows, flips, 1, H, S)
    windows = views[:, :, 0] if not flip else (views[:, :, 0] + views[:, :, 1].flip(-1)) / 2
    N, _, C, H, _ = windows.shape
    total = preds.new_zeros(N, C, H, width)
    count = preds.new_zeros(width)
    for k, x in enumerate(offsets):
        total[..., x : x + size] += windows[:, k]
        count[x : x + size] += 1
    # columns no window covers (only with shift_windows=False): the nearest covered column
    lo, hi = min(offsets), max(offsets) + size - 1
    nearest = torch.arange(width, device=preds.device).clamp(lo, hi)
    return (total / count.clamp_min(1))[..., nearest]


def predict_windows(images: Tensor, predict: DepthFn, size: int, flip_tta: bool = True,
                    shift_windows: bool = True) -> Tensor:
    """(N, 3, S, W) images in [0, 1] -> (N, 1, S, W) stitched depth, every view in ONE `predict` call."""
    H, W = images.shape[-2:]
    if H != size:
        raise ValueError(f"image height {H} is not the crop size {size} (the protocol slides along x only)")
    offsets = window_offsets(W, size, shift_windows)
    preds = predict(tta_views(images, size, offsets, flip_tta))
    return stitch(preds, W, offsets, flip_tta).clamp_min(depth_task.MIN_DEPTH)


# -------------------------------------------------------------------------------------------------
# depth: the model as a window predictor


def depth_predictor(model: AiT, tokenizer: VQVAE, vocab: Vocab, cfg: DepthInferConfig, size: int) -> DepthFn:
    """A `predict` for `predict_windows`: (B, 3, S, S) -> (B, 1, S, S) metres through solver + detokenizer."""
    grid = grid_shape(tokenizer.cfg, size, size)
    length = grid[0] * grid[1]

    @torch.no_grad()
    def predict(images: Tensor) -> Tensor:
        memory = model.encode(images)
        if model.solver.cfg.parallel:  # AiT-P: one pass, no sampling (ref §4.4)
            logits = model.solver.generate_parallel(memory, depth_task.TASK_ID, length)
        else:  # greedy (top_p 0 in the depth configs, ref §3.1)
            soft = depth_task.SOFT_KINDS if cfg.soft_input else frozenset()
            _, logits = model.solver.generate(memory, depth_task.TASK_ID, length,
                                              depth_task.generation_kinds(), vocab, soft_kinds=soft)
        return depth_task.predict_depth(logits, tokenizer, grid, vocab, soft_decode=cfg.soft_decode,
                                        tau=cfg.tau)

    return predict


def to_tensor(images: Sequence[np.ndarray] | np.ndarray, device: torch.device | str) -> Tensor:
    """(N, H, W, 3) uint8 (or a list of same-size images) -> (N, 3, H, W) float32 in [0, 1] on device."""
    batch = np.stack([np.asarray(im) for im in images])
    return torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def infer_depth(model: AiT, tokenizer: VQVAE, vocab: Vocab, cfg: DepthInferConfig,
                images: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """(N, S, W, 3) uint8 RGB -> (N, S, W) float32 depth in metres by the official window/flip protocol
    (or the windows and flips `cfg` chooses)."""
    device = next(model.parameters()).device
    predict = depth_predictor(model, tokenizer, vocab, cfg, size)
    depth = predict_windows(to_tensor(images, device), predict, size, cfg.flip_tta, cfg.shift_windows)
    return depth[:, 0].float().cpu().numpy()


# -------------------------------------------------------------------------------------------------
# instances


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 -> ((size, size, 3) float32 in [0, 1], scale): long side = size, 0-pad bottom/right."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
    # the same PIL bilinear resize as the training jitter (pipeline.solver.augment.Jitter.image)
    resized = np.asarray(Image.fromarray(image).resize((rw, rh), Image.BILINEAR), dtype=np.float32) / 255.0
    out = np.zeros((size, size, 3), np.float32)
    out[:rh, :rw] = resized
    return out, scale


def _instance_tokens(model: AiT, memory: Tensor, vocab: Vocab, cfg: InssegInferConfig, num_query: int,
                     mask_tokens: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Encoder memory -> generated (B, L) tokens and raw (B, L, V) logits, L = num_query·T (ref §4.5)."""
    kinds = insseg_task.generation_kinds(num_query, mask_tokens)
    length = len(kinds)
    if model.solver.cfg.parallel:  # one pass; choose per position inside its legal range
        logits = model.solver.generate_parallel(memory, insseg_task.TASK_ID, length)
        legal, _ = decoding_plan(vocab, kinds, length, device=memory.device)
        restricted = restrict_logits(logits, legal).flatten(0, 1)
        return choose(restricted, cfg.top_p, generator).view(logits.shape[:2]), logits
    soft = insseg_task.SOFT_KINDS if cfg.soft_input else frozenset()
    return model.solver.generate(memory, insseg_task.TASK_ID, length, kinds, vocab, soft_kinds=soft,
                                 top_p=cfg.top_p, generator=generator)


@torch.no_grad()
def infer_instances(model: AiT, tokenizer: VQVAE, vocab: Vocab, task: InssegTaskConfig,
                    cfg: InssegInferConfig, images: Sequence[np.ndarray], category_ids: Sequence[int],
                    generator: torch.Generator | None = None) -> list[dict[str, np.ndarray]]:
    """(H_i, W_i, 3) uint8 images -> per image boxes_xyxy (n, 4) original px, category_ids (n,),
    scores (n,), masks (n, H_i, W_i) bool; `category_ids[k]` is the dataset id of contiguous class k.
    `task` is how the model was trained (query count, input side), `cfg` how it decodes."""
    if len(category_ids) != vocab.num_classes:
        raise ValueError(f"{len(category_ids)} category ids for a vocabulary of {vocab.num_classes} classes")
    device = next(model.parameters()).device
    boxed = [letterbox(im, task.image_size) for im in images]
    batch = torch.from_numpy(np.stack([b for b, _ in boxed])).permute(0, 3, 1, 2).to(device)
    gh, gw = insseg_task.mask_grid(tokenizer)
    memory = model.encode(batch)
    tokens, logits = _instance_tokens(model, memory, vocab, cfg, task.num_query, gh * gw, generator)
    objects = insseg_task.decode_objects(
        tokens, logits, vocab, tokenizer, task.num_query, image_hw=[im.shape[:2] for im in images],
        norm=float(task.image_size), soft_decode=cfg.soft_decode, tau=cfg.tau,
        scale_factors=[s for _, s in boxed])
    ids = np.asarray(category_ids, dtype=np.int64)
    return [{"boxes_xyxy": o["boxes_xyxy"].float().cpu().numpy(),
             "category_ids": ids[o["labels"].cpu().numpy()],
             "scores": o["scores"].float().cpu().numpy(),
             "masks": o["masks"].cpu().numpy()} for o in objects]

"""Tokenizer reconstruction quality: the upper bound of the whole system (paper §3.1, Tables 1/8/12).

- depth: every test image goes through encode → hard `decode` and soft `decode_soft`, scored with
  the NYU protocol (Eigen crop, per-image means; PAPER_NOTES §5.1). On data that ships a complete,
  hole-free depth (the demo), the RMSE *inside the sensor's invalid regions* is reported as well: how
  well the tokenizer in-paints holes, which cannot be measured on NYUv2.
- masks: every non-crowd instance is cropped at its rounded GT box, reconstructed, pasted back,
  thresholded at 0.5 and scored with COCO mask AP using the GT class and score 1 (PAPER_NOTES §1.5).

Both report the interpolation-tokenizer baseline of the paper's Table 12 next to the VQ-VAE; for depth
`interp_baseline` is the fair reduction that ignores the sensor's holes and `interp_literal` the plain
bilinear resample that samples them as 0 m (`baselines.py`).
The soft decode of a tokenizer on its own needs logits: we use the negative squared distances of
each latent to the codes, so softmax(tau · logits) weighs nearby codes (tau → ∞ is the hard decode).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.coco import coco_from_records
from pipeline.data.nyu import read_depth_metres
from pipeline.geometry.masks import paste_mask
from pipeline.metrics.codes import usage_stats
from pipeline.metrics.depth import MIN_DEPTH, depth_metrics, eval_mask, mean_metrics
from pipeline.metrics.masks import coco_mask_map, encode_rle
from pipeline.models.vqvae import VQVAE
from pipeline.tokenizers.baselines import depth_interp_reconstruct, mask_interp_reconstruct
from pipeline.tokenizers.data import MaskCrops

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


def _hole_rmse(pred: np.ndarray, gt: np.ndarray, complete: np.ndarray) -> float | None:
    holes = (gt <= 0) & eval_mask(complete)  # invalid for the sensor, valid in the complete depth
    if not holes.any():
        return None
    return float(np.sqrt(np.mean((pred[holes] - complete[holes]) ** 2)))


@torch.no_grad()
def evaluate_depth(model: VQVAE, records: Sequence[dict], tau: float, device: torch.device,
                   progress: Progress | None = None) -> dict[str, dict[str, float]]:
    """Per-method mean NYU metrics (+ `hole_rmse` where a complete depth exists) over `records`."""
    model.eval().to(device)
    per: dict[str, list[dict]] = {}
    holes: dict[str, list[float]] = {}
    used: list[torch.Tensor] = []
    for i, record in enumerate(records, 1):
        gt = read_depth_metres(record["depth"])
        x = torch.from_numpy(gt)[None, None].to(device)
        preds = reconstruct(model, x, tau)
        used.append(preds.pop("indices"))
        grid = (-(-gt.shape[0] // model.cfg.downsample_ratio), -(-gt.shape[1] // model.cfg.downsample_ratio))
        preds["interp_baseline"] = depth_interp_reconstruct(x, grid, "fair")
        preds["interp_literal"] = depth_interp_reconstruct(x, grid, "literal")
        complete = read_depth_metres(record["complete_depth"]) if record.get("complete_depth") else None
        for name, pred in preds.items():
            pred = pred[0, 0].float().cpu().numpy().clip(min=MIN_DEPTH)  # AiT clips at 1e-3
            per.setdefault(name, []).append(depth_metrics(pred, gt))
            if complete is not None and (value := _hole_rmse(pred, gt, complete)) is not None:
                holes.setdefault(name, []).append(value)
        if progress:
            progress(i, len(records))
    out = {name: mean_metrics(rows) for name, rows in per.items()}
    for name, values in holes.items():
        out[name]["hole_rmse"] = float(np.mean(values))
    out["codebook"] = codebook_usage(model, torch.cat([u.flatten() for u in used]))
    return out


@torch.no_grad()
def evaluate_masks(model: VQVAE, records: Sequence[dict], categories: Sequence[dict], crop_size: int,
                   tau: float, device: torch.device, batch_size: int = 256,
                   progress: Progress | None = None) -> dict[str, dict[str, float]]:
    """COCO mask AP of GT-box reconstructions (GT class, score 1) per method over `records`."""
    model.eval().to(device)
    crops = MaskCrops(records, crop_size, seed=0, flip=False)
    results: dict[str, list[dict]] = {"vqvae_hard": [], "vqvae_soft": [], "interp_baseline": []}
    used: list[torch.Tensor] = []
    for start in range(0, len(crops), batch_size):
        idx = range(start, min(start + batch_size, len(crops)))
        x = torch.from_numpy(np.stack([crops.crop(i) for i in idx]))[:, None].to(device)  # (N, 1, S, S)
        recon = reconstruct(model, x, tau)
        used.append(recon.pop("indices"))
        recon["interp_baseline"] = mask_interp_reconstruct(x[:, 0], crop_size // model.cfg.downsample_ratio)[:, None]
        for name, masks in recon.items():
            masks = masks[:, 0].float().cpu().numpy()
            for i, m in zip(idx, masks):
                results[name].append(_paste_result(crops, i, m))
        if progress:
            progress(idx[-1] + 1, len(crops))
    gt = coco_from_records(list(records), list(categories))
    out = {name: coco_mask_map(gt, rows) for name, rows in results.items()}
    out["codebook"] = codebook_usage(model, torch.cat([u.flatten() for u in used]))
    return out


def _paste_result(crops: MaskCrops, index: int, crop: np.ndarray) -> dict:
    r, a = crops.instances[index]
    record, ann = crops.records[r], crops.records[r]["annotations"][a]
    mask = paste_mask(crop, ann["bbox"], (record["height"], record["width"]))
    return {"image_id": record["image_id"], "category_id": ann["category_id"],
            "segmentation": encode_rle(mask), "score": 1.0}


def codebook_usage(model: VQVAE, indices: torch.Tensor) -> dict[str, float]:
    """Perplexity and unused-code count of a set of `(…)` indices."""
    counts = np.bincount(indices.flatten().cpu().numpy(), minlength=model.cfg.num_embeddings)
    stats = usage_stats(counts)
    return {"perplexity": stats["perplexity"], "unused_codes": stats["unused_codes"]}

"""What the depth VQ-VAE learns from and how its reconstructions are scored (paper §3.1, Table 12).

- crops (PAPER_NOTES §1.4): the GT depth in metres, restricted to the Eigen column band (columns 41..601
  at 640 px, scaled to the image width), horizontally flipped with p = 0.5 and randomly cropped to a
  square of `crop_size`; the tokenizer never sees RGB. Randomness is `sample_rng(seed, epoch, index)`.
- scoring: every test image goes through encode → hard `decode` and soft `decode_soft`, scored with the
  NYU protocol (Eigen crop, per-image means; PAPER_NOTES §5.1), next to the interpolation tokenizer
  (`interp.py`: `interp_baseline` the fair reduction that ignores the sensor's holes, `interp_literal`
  the plain bilinear resample that samples them as 0 m). On data that ships a complete, hole-free depth
  (the demo), the RMSE *inside the sensor's invalid regions* is reported as well: how well the
  tokenizer in-paints holes, which cannot be measured on NYUv2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.nyu import read_depth_metres
from pipeline.models.vqvae import VQVAE
from pipeline.tasks.depth.interp import depth_interp_reconstruct
from pipeline.tasks.depth.metrics import MIN_DEPTH, depth_metrics, eval_crop, eval_mask, mean_metrics
from pipeline.tokenizer_training.data import sample_rng
from pipeline.tokenizer_training.evaluate import Progress, codebook_usage, reconstruct


class DepthCrops(Dataset):
    """`(1, S, S)` float32 depth crops in metres (0 = invalid) from depth manifest records."""

    def __init__(self, records: Sequence[dict], crop_size: int, seed: int) -> None:
        self.records, self.crop_size, self.seed = list(records), crop_size, seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        index, epoch = item
        depth = read_depth_metres(self.records[index]["depth"])
        rng = sample_rng(self.seed, epoch, index)
        return torch.from_numpy(random_square_crop(depth, self.crop_size, rng)[None].copy())


def random_square_crop(depth: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Flip (p = 0.5) then crop `size`² inside the Eigen column band (PAPER_NOTES §1.4)."""
    h, w = depth.shape
    cols = eval_crop(h, w)[1]
    c0, c1 = cols.start, cols.stop
    if c1 - c0 < size:  # narrow images: fall back to the full width
        c0, c1 = 0, w
    if h < size or c1 - c0 < size:
        raise ValueError(f"depth map {h}x{w} is smaller than the {size}x{size} training crop")
    band = depth[:, c0:c1]
    if rng.random() < 0.5:
        band = band[:, ::-1]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, band.shape[1] - size + 1))
    return np.ascontiguousarray(band[y : y + size, x : x + size], dtype=np.float32)


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

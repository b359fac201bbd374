"""What the mask VQ-VAE learns from and how its reconstructions are scored (paper §3.1, Table 12).

- crops (PAPER_NOTES §1.5; the official "maskcoco" preprocessing was never released): every non-crowd
  instance mask cropped at its rounded GT box and resized to `crop_size`², flipped with p = 0.5
  (randomness `sample_rng(seed, epoch, index)`).
- scoring: every non-crowd instance is cropped at its rounded GT box, reconstructed, pasted back,
  thresholded at 0.5 and scored with COCO mask AP using the GT class and score 1, next to the 4x4
  interpolation tokenizer (`interp.py`: `interp_baseline` each cell's area average, `interp_literal`
  nearest sampling).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.coco import coco_from_records, segmentation_to_mask
from pipeline.models.vqvae import VQVAE
from pipeline.tasks.insseg.interp import mask_interp_reconstruct
from pipeline.tasks.insseg.masks import crop_instance_mask, flip_crop, paste_mask, rounded_box
from pipeline.tasks.insseg.metrics import coco_mask_map, encode_rle
from pipeline.tokenizer_training.data import sample_rng
from pipeline.tokenizer_training.evaluate import Progress, codebook_usage, reconstruct


def instance_index(records: Sequence[dict]) -> list[tuple[int, int]]:
    """(record, annotation) positions of every non-crowd instance whose rounded box is ≥ 2 px."""
    out = []
    for r, record in enumerate(records):
        hw = (record["height"], record["width"])
        for a, ann in enumerate(record["annotations"]):
            if not ann["iscrowd"] and rounded_box(ann["bbox"], hw) is not None:
                out.append((r, a))
    return out


class MaskCrops(Dataset):
    """`(1, S, S)` float32 instance-mask crops in [0, 1] from insseg manifest records."""

    def __init__(self, records: Sequence[dict], crop_size: int, seed: int, flip: bool = True) -> None:
        self.records, self.crop_size, self.seed, self.flip = list(records), crop_size, seed, flip
        self.instances = instance_index(self.records)

    def __len__(self) -> int:
        return len(self.instances)

    def crop(self, index: int) -> np.ndarray:
        """The unflipped `(S, S)` crop of instance `index`."""
        r, a = self.instances[index]
        record = self.records[r]
        ann = record["annotations"][a]
        mask = segmentation_to_mask(ann["segmentation"], record["height"], record["width"])
        return crop_instance_mask(mask, ann["bbox"], self.crop_size)

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        index, epoch = item
        crop = self.crop(index)
        if self.flip and sample_rng(self.seed, epoch, index).random() < 0.5:
            crop = flip_crop(crop)
        return torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32)[None])


@torch.no_grad()
def evaluate_masks(model: VQVAE, records: Sequence[dict], categories: Sequence[dict], crop_size: int,
                   tau: float, device: torch.device, batch_size: int = 256,
                   progress: Progress | None = None) -> dict[str, dict[str, float]]:
    """COCO mask AP of GT-box reconstructions (GT class, score 1) per method over `records`."""
    model.eval().to(device)
    crops = MaskCrops(records, crop_size, seed=0, flip=False)
    interp = {"interp_baseline": "fair", "interp_literal": "literal"}  # name -> interp.py reduction
    results: dict[str, list[dict]] = {name: [] for name in ("vqvae_hard", "vqvae_soft", *interp)}
    grid = crop_size // model.cfg.downsample_ratio
    used: list[torch.Tensor] = []
    for start in range(0, len(crops), batch_size):
        idx = range(start, min(start + batch_size, len(crops)))
        x = torch.from_numpy(np.stack([crops.crop(i) for i in idx]))[:, None].to(device)  # (N, 1, S, S)
        recon = reconstruct(model, x, tau)
        used.append(recon.pop("indices"))
        for name, method in interp.items():
            recon[name] = mask_interp_reconstruct(x[:, 0], grid, method)[:, None]
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

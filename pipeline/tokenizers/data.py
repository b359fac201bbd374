"""Training data of the tokenizers, read from the prepared manifests (never from raw list files).

- depth (PAPER_NOTES §1.4): the GT depth in metres, restricted to the Eigen column band (columns 41..601
  at 640 px, scaled to the image width), horizontally flipped with p = 0.5 and randomly cropped to a
  square of `crop_size`; the tokenizer never sees RGB;
- masks (§1.5; the official "maskcoco" preprocessing was never released): every non-crowd instance
  mask cropped at its rounded GT box and resized to `crop_size`², flipped with p = 0.5.

Randomness is a pure function of (seed, epoch, index): `EpochSampler` yields `(index, epoch)` pairs,
so crops are identical whatever the number of DataLoader workers or ranks (one code path).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pipeline.data.coco import segmentation_to_mask
from pipeline.data.nyu import read_depth_metres
from pipeline.geometry.masks import crop_instance_mask, flip_crop, rounded_box
from pipeline.metrics.depth import eval_crop


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The per-sample random stream: independent of worker count and process layout."""
    return np.random.default_rng([seed, epoch, index])


class EpochSampler(Sampler):
    """Yields `(index, epoch)` for `num_draws` draws of this rank's share of seeded permutations.

    Each epoch is a permutation of range(n) seeded by (seed, epoch); rank r takes positions
    r, r + world, ... of its first `n // world * world` entries, so every rank sees the same number
    of samples (DDP needs equal step counts) and no sample twice within an epoch.
    """

    def __init__(self, n: int, num_draws: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if n < world_size:
            raise ValueError(f"{n} samples cannot be split over {world_size} ranks")
        self.n, self.num_draws, self.seed, self.rank, self.world = n, num_draws, seed, rank, world_size

    def __len__(self) -> int:
        return self.num_draws

    def __iter__(self) -> Iterator[tuple[int, int]]:
        drawn, epoch = 0, 0
        while True:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            usable = perm[: self.n // self.world * self.world][self.rank :: self.world]
            for i in usable:
                if drawn == self.num_draws:
                    return
                yield int(i), epoch
                drawn += 1
            epoch += 1


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

"""Token-cache samples -> augmented training examples (run inside DataLoader workers).

The decoders are module-level callable classes so the WebDataset pipeline pickles into workers.
Randomness comes from one generator per (seed, rank, worker), created lazily in the worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.data.coco import segmentation_to_mask
from pipeline.runtime import dist_info
from pipeline.solver.augment import DepthAugmentConfig, Jitter, depth_view, draw_color_jitter, draw_depth
from pipeline.tokenizers.mask_crops import crop_instance_mask
from pipeline.tokens.read import decode_sample


def _worker_rng(seed: int) -> np.random.Generator:
    info = torch.utils.data.get_worker_info()
    return np.random.default_rng([seed, dist_info().rank, info.id if info else 0])


@dataclass
class DepthDecoder:
    """Cached depth sample -> one randomly drawn cached view: image, GT depth, its tokens and the
    drawn RGB augmentation (AiT ref §6.1).

    The image is the (S, S, 3) uint8 view; `augment` is its `draw_depth` row, applied on the training
    device by `augment_depth` (CutDepth on the full frame, then the view, then the photometric ops).
    """

    crop_size: int
    augment: DepthAugmentConfig
    seed: int
    _rng: np.random.Generator | None = field(default=None, repr=False)

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        self._rng = self._rng or _worker_rng(self.seed)
        s = decode_sample(raw)
        v = int(self._rng.integers(len(s["views"])))
        flip, x = s["views"][v]["flip"], s["views"][v]["x"]
        rgb, depth = depth_view(s["rgb"], s["depth"], flip, x, self.crop_size)
        draws = draw_depth(self.augment, s["rgb"].shape[1], flip, x, self._rng)
        return {"key": s["key"], "image": rgb, "depth": depth, "indices": s["tokens"][v].astype(np.int64),
                "augment": draws}


def collate_depth(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack depth examples: images (B, 3, S, S) uint8, depth (B, 1, S, S) metres, indices (B, h, w),
    augment (B, DEPTH_DRAW_SIZE) draws for `augment_depth`."""
    return {
        "keys": [s["key"] for s in samples],
        "images": torch.from_numpy(np.stack([s["image"] for s in samples])).permute(0, 3, 1, 2).contiguous(),
        "depth": torch.from_numpy(np.stack([s["depth"] for s in samples]))[:, None],
        "indices": torch.from_numpy(np.stack([s["indices"] for s in samples])),
        "augment": torch.from_numpy(np.stack([s["augment"] for s in samples])),
    }


@dataclass
class InssegDecoder:
    """Cached instance sample -> a large-scale-jittered uint8 image with its objects and its drawn
    `color_jitter` factors (applied on the training device).

    Per object (non-crowd, tokenised in the cache): the box in the augmented frame (clipped), its
    class index, the cached mask tokens when they are exact (box not truncated by the window) or
    None, and the 64×64 GT crop at the clipped box (aux-loss target and on-the-fly fallback input).
    The full GT masks travel with the example so jittered duplicate boxes can be cropped later.
    """

    image_size: int
    scale_range: tuple[float, float]
    color_jitter: float
    category_ids: list[int]
    mask_size: int
    seed: int
    _rng: np.random.Generator | None = field(default=None, repr=False)

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        self._rng = self._rng or _worker_rng(self.seed)
        s = decode_sample(raw)
        ann = s["annotations"]
        h, w = ann["height"], ann["width"]
        jitter = Jitter.draw((h, w), self.image_size, self.scale_range, self._rng)
        image, color = jitter.image(s["image"]), draw_color_jitter(self.color_jitter, self._rng)
        index = {a: i for i, a in enumerate(ann["ann_ids"])}
        rows = [index[a] for a in ann["token_ann_ids"]]
        xywh = np.array([ann["boxes"][i] for i in rows], dtype=np.float64).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        aug = jitter.boxes(xyxy)
        clipped = jitter.clip(aug)
        keep = ((clipped[:, 2] - clipped[:, 0]) >= 1) & ((clipped[:, 3] - clipped[:, 1]) >= 1)
        exact = keep & np.all(np.isclose(aug, clipped), axis=1)
        masks = [segmentation_to_mask(ann["segmentations"][i], h, w) for i in rows]
        cached = s["tokens"][:, int(jitter.flip)].astype(np.int64)  # (n, 16): flipped crop second
        objects = []
        for j in np.flatnonzero(keep):
            crop = crop_from_original(masks[j], clipped[j], jitter, self.mask_size)
            objects.append({"box": clipped[j].astype(np.float32),
                            "label": self.category_ids.index(ann["category_ids"][rows[j]]),
                            "indices": cached[j] if exact[j] else None, "crop": crop, "mask": j})
        return {"key": s["key"], "image": image, "color": color, "objects": objects, "masks": masks,
                "jitter": jitter}


def crop_from_original(mask: np.ndarray, box_aug: np.ndarray, jitter: Jitter, size: int) -> np.ndarray:
    """The `size`² crop of an original-resolution mask at a box given in the augmented frame."""
    x1, y1, x2, y2 = jitter.to_original(box_aug[None])[0]
    crop = crop_instance_mask(mask, (x1, y1, x2 - x1, y2 - y1), size)
    if crop is None:  # box under 2 px in the original frame: an all-zero target
        crop = np.zeros((size, size), np.float32)
    return crop[:, ::-1].copy() if jitter.flip else crop


def collate_insseg(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images (B, 3, S, S) uint8 and colour factors (B, 3); keep the ragged per-image objects
    as lists."""
    return {
        "keys": [s["key"] for s in samples],
        "images": torch.from_numpy(np.stack([s["image"] for s in samples])).permute(0, 3, 1, 2).contiguous(),
        "color": torch.from_numpy(np.stack([s["color"] for s in samples])),
        "objects": [s["objects"] for s in samples],
        "masks": [s["masks"] for s in samples],
        "jitters": [s["jitter"] for s in samples],
    }

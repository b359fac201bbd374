"""What one cached instance sample stores (PAPER_NOTES §7.1, option 1): the image bytes,
`annotations.json` and `(n_tok, 2, h·w)` tokens of the GT-box crop of every tokenised instance,
unflipped and flipped; zarr flat `tokens`, `ann_ids` and `offsets`. `token_cache/build.py` drives it through
the same interface as the dense `ViewLayout`. Everything here travels into DataLoader workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from torch.utils.data import Dataset

from pipeline.data.coco import segmentation_to_mask
from pipeline.tasks.insseg.masks import crop_instance_mask, flip_crop
from pipeline.tasks.insseg.tokenizer import instance_index
from pipeline.token_cache import write
from pipeline.token_cache.layouts import Item, image_file, sample_tokens

INSTANCE_NOTE = ("mask tokens of the GT-box crop, unflipped and flipped; exact under scale jitter and "
                 "translation, except for boxes the solver's crop truncates and for jittered duplicate "
                 "boxes, which the solver encodes on the fly")


@dataclass(frozen=True)
class InstanceLayout:
    """Instance masks: the GT-box crop of every tokenised instance, unflipped and flipped."""

    crop_size: int  # the mask tokenizer's training crop
    grid: tuple[int, int]
    dtype: np.dtype
    categories: tuple[dict, ...]
    zarr_fields: frozenset[str] = frozenset({"tokens.npy", "annotations.json"})

    def items(self, records: list[dict]) -> Dataset:
        return InstanceItems(records, self.crop_size)

    def shape_tokens(self, codes: np.ndarray) -> np.ndarray:
        return codes.reshape(-1, 2, self.grid[0] * self.grid[1])  # unflipped then flipped crop

    def sample(self, item: Item, tokens: np.ndarray) -> dict[str, bytes | str]:
        return {"__key__": item.key, **item.files, "tokens.npy": write.encode_npy(tokens),
                "annotations.json": write.encode_json(item.meta)}

    def write_split(self, root: zarr.Group, split: str, rows: list[dict], samples: list[dict],
                    shard_max: int) -> dict[str, int]:
        tokens = [sample_tokens(s) for s in samples]
        ann_ids = [json.loads(s["annotations.json"])["token_ann_ids"] for s in samples]
        write.write_instance_tokens(root, split, [r["key"] for r in rows], tokens, ann_ids,
                                    self.grid[0] * self.grid[1], self.dtype)
        return _instance_counts(rows, sum(len(t) for t in tokens))

    def manifest_entry(self) -> dict[str, Any]:
        return {"mask_crop_size": self.crop_size, "tokens_shape": [2, self.grid[0] * self.grid[1]],
                "categories": [{"id": c["id"], "name": c["name"]} for c in self.categories],
                "note": INSTANCE_NOTE}

    def tokens_per_item(self, manifest: dict) -> int:
        return int(np.prod(manifest["tokens_shape"]))


def _instance_counts(rows: list[dict], tokenised: int) -> dict[str, int]:
    anns = [a for r in rows for a in r["annotations"]]
    crowd = sum(1 for a in anns if a["iscrowd"])
    return {"samples": len(rows), "instances": len(anns), "tokenised_instances": tokenised,
            "crowd_instances": crowd, "too_small_instances": len(anns) - crowd - tokenised}


class InstanceItems(Dataset):
    """Instance records -> `Item`s: image bytes, annotations, `(2 n_tok, S, S)` crops (unflipped, flipped)."""

    def __init__(self, records: list[dict], crop_size: int) -> None:
        self.records, self.crop_size = records, crop_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Item:
        r = self.records[i]
        anns = r["annotations"]
        crops, token_ids = [], []
        for _, a in instance_index([r]):
            mask = segmentation_to_mask(anns[a]["segmentation"], r["height"], r["width"])
            crop = crop_instance_mask(mask, anns[a]["bbox"], self.crop_size)
            crops += [crop, flip_crop(crop)]
            token_ids.append(anns[a]["id"])
        meta = {"image_id": r["image_id"], "width": r["width"], "height": r["height"],
                "boxes": [a["bbox"] for a in anns], "category_ids": [a["category_id"] for a in anns],
                "ann_ids": [a["id"] for a in anns], "iscrowd": [a["iscrowd"] for a in anns],
                "segmentations": [a["segmentation"] for a in anns], "token_ann_ids": token_ids}
        inputs = np.stack(crops) if crops else np.zeros((0, self.crop_size, self.crop_size), np.float32)
        return Item(r["key"], image_file("image", r["image"]), meta, inputs.astype(np.float32))

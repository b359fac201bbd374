"""What one cached sample stores, per kind of label: the two layouts of the token caches.

A task picks its layout (`Task.cache_layout`); `build.py` drives either without knowing the task.

- `ViewLayout`, dense labels (depth, semantic classes): the image and label file bytes, `(V, h, w)`
  tokens of every cached view (flip x crop offset, `geometry/views.py`; PAPER_NOTES §7.1) and `views.json`; zarr
  `tokens` (N, V, h, w). The encoder input of a view is the label map crop as the task reads it
  (`read`: depth in metres with its zero holes, class ids as floats).
- `InstanceLayout`, per-object labels (instance masks): the image bytes, `annotations.json` and
  `(n_tok, 2, h·w)` tokens of the GT-box crop of every tokenised instance, unflipped and flipped
  (PAPER_NOTES §7.1, option 1); zarr flat `tokens`, `ann_ids` and `offsets`.

Everything here travels into DataLoader workers, so the label readers are module-level functions.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from torch.utils.data import Dataset

from pipeline.data.coco import segmentation_to_mask
from pipeline.geometry.masks import crop_instance_mask, flip_crop
from pipeline.geometry.views import View, dense_views, extract_views, views_to_json
from pipeline.models.vqvae import grid_shape
from pipeline.tokenizers.data import instance_index
from pipeline.tokens import write
from pipeline.tokens.manifest import CacheError, token_dtype

VIEW_NOTE = ("crop_stride 1 caches every x-offset the solver's random crop can draw (exact targets); a "
             "coarser stride makes the solver snap its offset to the nearest cached one (views.nearest_view)")
INSTANCE_NOTE = ("mask tokens of the GT-box crop, unflipped and flipped; exact under scale jitter and "
                 "translation, except for boxes the solver's crop truncates and for jittered duplicate "
                 "boxes, which the solver encodes on the fly")


@dataclass
class Item:
    """One decoded record: the sample's stored bytes, JSON metadata and `(n, S, S)` encoder inputs."""

    key: str
    files: dict[str, bytes]
    meta: dict[str, Any]
    inputs: np.ndarray = field(repr=False)


def _image_file(name: str, path: str) -> dict[str, bytes]:
    return {f"{name}.{write.file_ext(path)}": Path(path).read_bytes()}


# --------------------------------------------------------------------------------------------------
# dense labels, cached per view


@dataclass(frozen=True)
class ViewLayout:
    """Dense labels cached for every view of a fixed view set (all frames share one size)."""

    label: str  # record key of the label file, and its name in the sample (`<label>.png`)
    read: Callable[[str], np.ndarray]  # label file -> (H, W) float32 encoder input
    crop_size: int  # the solver's square crop (= the frame height)
    stride: int  # x-offset stride of the cached views
    grid: tuple[int, int]  # token grid (h, w) of one crop
    dtype: np.dtype
    views: tuple[View, ...]
    image_size: tuple[int, int]  # the shared (H, W) of every frame
    extra: dict = field(default_factory=dict)  # manifest additions (e.g. the class list)
    zarr_fields: frozenset[str] = frozenset({"tokens.npy"})

    def items(self, records: list[dict]) -> Dataset:
        return ViewItems(records, self)

    def shape_tokens(self, codes: np.ndarray) -> np.ndarray:
        return codes  # (V, h, w)

    def sample(self, item: Item, tokens: np.ndarray) -> dict[str, bytes | str]:
        return {"__key__": item.key, **item.files, "tokens.npy": write.encode_npy(tokens),
                "views.json": write.encode_json(item.meta["views"])}

    def write_split(self, root: zarr.Group, split: str, rows: list[dict], samples: list[dict],
                    shard_max: int) -> dict[str, int]:
        tokens = [_npy(s) for s in samples]
        bounds = write.shard_bounds(len(rows), shard_max)
        blocks = (np.stack(tokens[a:b]) for a, b in bounds)
        shape = (len(self.views), *self.grid)
        write.write_view_tokens(root, split, [r["key"] for r in rows], blocks, shape, self.dtype, shard_max)
        return {"samples": len(rows)}

    def manifest_entry(self) -> dict[str, Any]:
        views = {"crop_size": self.crop_size, "crop_stride": self.stride, "image_size": list(self.image_size),
                 "list": views_to_json(list(self.views)), "tokens_shape": [len(self.views), *self.grid],
                 "note": VIEW_NOTE}
        return {"views": views, **self.extra}

    def tokens_per_item(self, manifest: dict) -> int:
        return int(np.prod(manifest["views"]["tokens_shape"]))


def view_layout(task: str, label: str, read: Callable[[str], np.ndarray], splits: dict[str, list[dict]],
                tok: Any, cfg: Any, extra: dict | None = None) -> ViewLayout:
    """The `ViewLayout` of a dense task whose records name the label file under `label`: one frame size
    for the fixed view set, the views of `cache.<task>` (crop_size, crop_stride)."""
    sizes = {(r["height"], r["width"]) for rows in splits.values() for r in rows}
    if len(sizes) != 1:
        raise CacheError(f"{task} frames must share one size for a fixed view set, found {sorted(sizes)}")
    (h, w), = sizes
    views = dense_views(h, w, cfg.crop_size, cfg.crop_stride, f"cache.{task}.crop_size")
    grid = token_grid(tok.model.cfg, cfg.crop_size)
    return ViewLayout(label, read, cfg.crop_size, cfg.crop_stride, grid,
                      token_dtype(tok.model.cfg.num_embeddings), tuple(views), (h, w), extra or {})


def token_grid(model_cfg: Any, size: int) -> tuple[int, int]:
    """The token grid of a `size`² crop; a size the tokenizer cannot tile is a one-line `CacheError`."""
    try:
        return grid_shape(model_cfg, size, size)
    except ValueError as e:
        raise CacheError(f"crop size {size}: {e}") from None


class ViewItems(Dataset):
    """Records -> `Item`s: RGB and label file bytes, `(V, S, S)` view crops of the read label."""

    def __init__(self, records: list[dict], layout: ViewLayout) -> None:
        self.records, self.layout = records, layout

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Item:
        r, lay = self.records[i], self.layout
        files = {**_image_file("rgb", r["rgb"]), f"{lay.label}.png": Path(r[lay.label]).read_bytes()}
        crops = extract_views(lay.read(r[lay.label]), list(lay.views), lay.crop_size)
        return Item(r["key"], files, {"views": views_to_json(list(lay.views))}, crops)


def _npy(sample: dict) -> np.ndarray:
    return np.load(io.BytesIO(sample["tokens.npy"]), allow_pickle=False)


# --------------------------------------------------------------------------------------------------
# per-object labels


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
        tokens = [_npy(s) for s in samples]
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
        return Item(r["key"], _image_file("image", r["image"]), meta, inputs.astype(np.float32))

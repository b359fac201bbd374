"""What one cached sample stores: the dense layout of the token caches and what every layout shares.

A task picks its layout (`Task.cache_layout`); `build.py` drives any layout without knowing the task.

- `ViewLayout`, dense labels (depth, semantic classes): the image and label file bytes, `(V, h, w)`
  tokens of every cached view (flip x crop offset, `geometry/views.py`; PAPER_NOTES §7.1) and `views.json`; zarr
  `tokens` (N, V, h, w). The encoder input of a view is the label map crop as the task reads it
  (`read`: depth in metres with its zero holes, class ids as floats).
- per-object labels (instance masks) have their own layout in their task's folder
  (`pipeline/tasks/insseg/layout.py`).

Everything here travels into DataLoader workers, so the label readers are module-level functions.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zarr
from torch.utils.data import Dataset

from pipeline.geometry.views import View, dense_views, extract_views, views_to_json
from pipeline.models.vqvae import grid_shape
from pipeline.token_cache import write
from pipeline.token_cache.manifest import CacheError, token_dtype

VIEW_NOTE = ("crop_stride 1 caches every x-offset the solver's random crop can draw (exact targets); a "
             "coarser stride makes the solver snap its offset to the nearest cached one (views.nearest_view)")


@dataclass
class Item:
    """One decoded record: the sample's stored bytes, JSON metadata and `(n, S, S)` encoder inputs."""

    key: str
    files: dict[str, bytes]
    meta: dict[str, Any]
    inputs: np.ndarray = field(repr=False)


def image_file(name: str, path: str) -> dict[str, bytes]:
    return {f"{name}.{write.file_ext(path)}": Path(path).read_bytes()}


class Layout(Protocol):
    """What `build.py` asks of a layout: its items, how codes become a sample, how a split is stored."""

    zarr_fields: frozenset[str]

    def items(self, records: list[dict]) -> Dataset: ...

    def shape_tokens(self, codes: np.ndarray) -> np.ndarray: ...

    def sample(self, item: Item, tokens: np.ndarray) -> dict[str, bytes | str]: ...

    def write_split(self, root: zarr.Group, split: str, rows: list[dict], samples: list[dict],
                    shard_max: int) -> dict[str, int]: ...

    def manifest_entry(self) -> dict[str, Any]: ...

    def tokens_per_item(self, manifest: dict) -> int: ...


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
        tokens = [sample_tokens(s) for s in samples]
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
        files = {**image_file("rgb", r["rgb"]), f"{lay.label}.png": Path(r[lay.label]).read_bytes()}
        crops = extract_views(lay.read(r[lay.label]), list(lay.views), lay.crop_size)
        return Item(r["key"], files, {"views": views_to_json(list(lay.views))}, crops)


def sample_tokens(sample: dict) -> np.ndarray:
    return np.load(io.BytesIO(sample["tokens.npy"]), allow_pickle=False)




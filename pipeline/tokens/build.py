"""Tokenise the prepared splits of one task with one frozen tokenizer into a token cache (AiT ref §7.1).

Work split (one code path for 1 or N processes; 1 process = rank 0 of 1):
- records are sorted by key and cut into fixed shards of `shard_max_samples` (`write.shard_bounds`);
- rank r builds the whole shards i with i % world == r, into one scratch dir that rank 0 opened with
  `atomic_dir` and broadcast; a DataLoader with `num_workers` workers reads and decodes the labels
  (depth views / instance mask crops) in order, and the tokenizer encodes them on `device` in batches of
  `batch_size` encoder inputs (depth: view crops, insseg: mask crops);
- encoder batches never cross a shard boundary, so a shard's bytes do not depend on how many
  processes built the cache; each process encodes with a fixed number of torch CPU threads
  (`CACHE_THREADS`), so they do not depend on the machine's core count either;
- every rank then reports success through an all-reduce (the barrier); if any rank failed all raise, and
  rank 0's `atomic_dir` deletes the scratch. Otherwise rank 0 alone writes the zarr store (reading the
  tokens back from the shards, so both always agree), marks it complete, and writes `manifest.json`
  last. No shard or zarr chunk ever has two writers.

Depth inputs are the GT with its zero holes (AiT ref §2); see `views.py` for the view set. Insseg
tokens cover the non-crowd instances whose rounded box is >= 2 px (`instance_index`), each cropped at its
GT box to the tokenizer's training crop size, unflipped and flipped (AiT ref §7.1, option 1).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.config import DepthCacheConfig, InssegCacheConfig
from pipeline.data.coco import segmentation_to_mask
from pipeline.data.nyu import read_depth_metres
from pipeline.io import atomic_dir, write_json
from pipeline.models.vqvae import VQVAE, grid_shape
from pipeline.runtime import all_reduce_sum, broadcast_from_rank0, intra_op_threads
from pipeline.tokenizers.data import instance_index
from pipeline.tokenizers.mask_crops import crop_instance_mask, flip_crop
from pipeline.tokens import write
from pipeline.tokens.manifest import (
    MANIFEST,
    SCHEMA_VERSION,
    ZARR_STORE,
    CacheError,
    shard_entry,
    token_dtype,
    tokenizer_entry,
)
from pipeline.tokens.read import iter_tar_samples
from pipeline.tokens.views import View, depth_views, extract_views, views_to_json

Progress = Callable[[int, int], None]
# torch CPU threads of every cache build, whatever the machine's core count (runtime.intra_op_threads):
# a fixed count, not 1, so a 2-core machine stays busy; more parallelism comes from ranks and workers.
CACHE_THREADS = 2
INSSEG_NOTE = ("mask tokens of the GT-box crop, unflipped and flipped; exact under scale jitter and "
               "translation, except for boxes the solver's crop truncates and for jittered duplicate boxes, "
               "which the solver encodes on the fly")
VIEW_NOTE = ("crop_stride 1 caches every x-offset the solver's random crop can draw (exact targets); a "
             "coarser stride makes the solver snap its offset to the nearest cached one (views.nearest_view)")


@dataclass(frozen=True)
class Tokenizer:
    """A frozen tokenizer as loaded by `checkpoint.load_vqvae`, plus the dir it came from."""

    model: VQVAE
    config: dict[str, Any]
    model_dir: str


@dataclass
class Item:
    """One decoded record: the sample's stored bytes, JSON metadata and `(n, S, S)` encoder inputs."""

    key: str
    files: dict[str, bytes]
    meta: dict[str, Any]
    inputs: np.ndarray = field(repr=False)


def _as_is(item: Item) -> Item:
    return item  # DataLoader(batch_size=None) would otherwise convert numpy arrays to tensors


class DepthItems(Dataset):
    """Depth records -> `Item`s: RGB and depth PNG bytes, `(V, S, S)` view crops in metres."""

    def __init__(self, records: list[dict], views: list[View], crop_size: int) -> None:
        self.records, self.views, self.crop_size = records, views, crop_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Item:
        r = self.records[i]
        files = {f"rgb.{write.file_ext(r['rgb'])}": Path(r["rgb"]).read_bytes(),
                 "depth.png": Path(r["depth"]).read_bytes()}
        crops = extract_views(read_depth_metres(r["depth"]), self.views, self.crop_size)
        return Item(r["key"], files, {"views": views_to_json(self.views)}, crops)


class InssegItems(Dataset):
    """Insseg records -> `Item`s: image bytes, annotations, `(2 n_tok, S, S)` crops (unflipped, flipped)."""

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
        files = {f"image.{write.file_ext(r['image'])}": Path(r["image"]).read_bytes()}
        return Item(r["key"], files, meta, inputs.astype(np.float32))


# --------------------------------------------------------------------------------------------------
# encoding and shard writing


@dataclass(frozen=True)
class Plan:
    """What the cache of one task holds, fixed before any work starts."""

    task: str
    crop_size: int  # depth: the solver's square crop; insseg: the tokenizer's mask crop size
    grid: tuple[int, int]  # token grid (h, w) of one crop
    dtype: np.dtype
    views: tuple[View, ...] = ()  # depth only
    image_size: tuple[int, int] = (0, 0)  # depth only: the shared (H, W) of every frame

    def shape_tokens(self, codes: np.ndarray) -> np.ndarray:
        """`(n, h, w)` codes of one item -> depth `(V, h, w)`; insseg `(n_tok, 2, h·w)`."""
        if self.task == "depth":
            return codes
        return codes.reshape(-1, 2, self.grid[0] * self.grid[1])  # unflipped then flipped crop


def encode_inputs(model: VQVAE, inputs: np.ndarray, batch_size: int, device: torch.device,
                  dtype: np.dtype) -> np.ndarray:
    """`(n, S, S)` float32 inputs -> `(n, h, w)` indices in `dtype`, `batch_size` inputs per forward."""
    out = [np.zeros((0, *grid_shape(model.cfg, *inputs.shape[1:])), dtype)]
    for s in range(0, len(inputs), batch_size):
        x = torch.from_numpy(inputs[s : s + batch_size])[:, None].to(device)
        out.append(model.encode(x).cpu().numpy().astype(dtype))
    return np.concatenate(out)


def _to_sample(plan: Plan, item: Item, tokens: np.ndarray) -> dict[str, bytes | str]:
    sample: dict[str, bytes | str] = {"__key__": item.key, **item.files,
                                      "tokens.npy": write.encode_npy(tokens)}
    if plan.task == "depth":
        sample["views.json"] = write.encode_json(item.meta["views"])
    else:
        sample["annotations.json"] = write.encode_json(item.meta)
    return sample


def _encoded_samples(plan: Plan, items: Iterator[Item], n: int, model: VQVAE, batch_size: int,
                     device: torch.device) -> Iterator[dict[str, bytes | str]]:
    """The next `n` items as encoded samples; encoder batches are filled within these `n` only."""
    buffer: list[Item] = []
    for k in range(n):
        buffer.append(next(items))
        if sum(len(b.inputs) for b in buffer) < batch_size and k < n - 1:
            continue
        inputs = np.concatenate([b.inputs for b in buffer])
        codes = encode_inputs(model, inputs, batch_size, device, plan.dtype)
        start = 0
        for b in buffer:
            yield _to_sample(plan, b, plan.shape_tokens(codes[start : start + len(b.inputs)]))
            start += len(b.inputs)
        buffer = []


def _build_rank_shards(plan: Plan, split: str, records: list[dict], mine: list[int], scratch: Path,
                       model: VQVAE, cfg: Any, device: torch.device, tick: Callable[[int], None]) -> None:
    """Write this rank's shards `mine` of `split` (whole shards; DataLoader workers decode in order)."""
    (scratch / split).mkdir(parents=True, exist_ok=True)
    bounds = write.shard_bounds(len(records), cfg.shard_max_samples)
    own = [r for i in mine for r in records[bounds[i][0] : bounds[i][1]]]
    if not own:
        return
    dataset = (DepthItems(own, list(plan.views), plan.crop_size) if plan.task == "depth"
               else InssegItems(own, plan.crop_size))
    loader = DataLoader(dataset, batch_size=None, num_workers=cfg.num_workers, collate_fn=_as_is)
    items = iter(loader)
    for i in mine:
        n = bounds[i][1] - bounds[i][0]
        write.write_shard(scratch / write.shard_rel(split, i),
                          _encoded_samples(plan, items, n, model, cfg.batch_size, device))
        tick(n)


# --------------------------------------------------------------------------------------------------
# the whole cache


def make_plan(task: str, splits: dict[str, list[dict]], tok: Tokenizer, cfg: Any) -> Plan:
    """Validate the inputs against the cache config and fix views, grid and token dtype."""
    model_cfg = tok.model.cfg
    dtype = token_dtype(model_cfg.num_embeddings)
    if task == "insseg":
        s = int(tok.config["train"]["crop_size"])
        return Plan(task, s, _grid(model_cfg, s), dtype)
    sizes = {(r["height"], r["width"]) for rows in splits.values() for r in rows}
    if len(sizes) != 1:
        raise CacheError(f"depth images must share one size for a fixed view set, found {sorted(sizes)}")
    (h, w), = sizes
    views = depth_views(h, w, cfg.crop_size, cfg.crop_stride)
    return Plan(task, cfg.crop_size, _grid(model_cfg, cfg.crop_size), dtype, tuple(views), (h, w))


def _grid(model_cfg: Any, size: int) -> tuple[int, int]:
    try:
        return grid_shape(model_cfg, size, size)
    except ValueError as e:
        raise CacheError(f"crop size {size}: {e}") from None


def _share_path(path: Path | None, device: torch.device) -> Path:
    """Rank 0's `path`, on every rank (a broadcast; the identity with one process)."""
    buf = torch.zeros(4096, dtype=torch.uint8)
    if path is not None:
        raw = str(Path(path).resolve()).encode()
        buf[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    buf = broadcast_from_rank0(buf.to(device)).cpu()
    return Path(bytes(buf.tolist()).rstrip(b"\0").decode())


def build_cache(out: Path, task: str, splits: dict[str, list[dict]], tok: Tokenizer,
                cfg: DepthCacheConfig | InssegCacheConfig, device: torch.device, *,
                categories: list[dict] | None = None, rank: int = 0, world_size: int = 1,
                progress: Progress | None = None) -> dict[str, Any] | None:
    """Build the cache of `splits` (split -> prepared records) at `out`; returns the manifest on rank 0."""
    splits = {name: sorted(rows, key=lambda r: r["key"]) for name, rows in splits.items()}
    plan = make_plan(task, splits, tok, cfg)
    tok.model.eval().to(device)
    layout = {name: write.shard_bounds(len(rows), cfg.shard_max_samples) for name, rows in splits.items()}
    mine = {name: list(range(rank, len(b), world_size)) for name, b in layout.items()}
    total = sum(layout[name][i][1] - layout[name][i][0] for name in mine for i in mine[name])
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    with atomic_dir(out) if rank == 0 else nullcontext(None) as scratch:
        scratch = _share_path(scratch, device)
        error: Exception | None = None
        try:
            with intra_op_threads(CACHE_THREADS):  # cache bytes independent of the machine's core count
                for name, rows in splits.items():
                    _build_rank_shards(plan, name, rows, mine[name], scratch, tok.model, cfg, device, tick)
        except Exception as e:  # reported to every rank below, then re-raised
            error = e
        failed = all_reduce_sum(torch.tensor([float(error is not None)], device=device))  # the barrier
        if error is not None:
            raise error
        if failed.item() > 0:
            raise CacheError(f"{out}: another rank failed while building the cache")
        if rank != 0:
            return None
        counts = _write_zarr(plan, splits, scratch, cfg.shard_max_samples)
        manifest = _manifest(plan, splits, layout, counts, scratch, tok, cfg, categories)
        write_json(scratch / MANIFEST, manifest)  # last: a reader accepts the cache only now
    return manifest


def _write_zarr(plan: Plan, splits: dict[str, list[dict]], scratch: Path, shard_max: int) -> dict:
    """Fill tokens.zarr from the finished shards (rank 0 only); returns per-split instance counts."""
    root = write.create_store(scratch / ZARR_STORE)
    counts = {}
    for name, rows in splits.items():
        keys = [r["key"] for r in rows]
        bounds = write.shard_bounds(len(rows), shard_max)
        shards = [scratch / write.shard_rel(name, i) for i in range(len(bounds))]
        fields = {"tokens.npy"} if plan.task == "depth" else {"tokens.npy", "annotations.json"}
        samples = [s for path in shards for s in iter_tar_samples(path, fields)]
        if [s["__key__"] for s in samples] != keys:
            raise CacheError(f"{scratch / name}: shard keys do not match the prepared records")
        tokens = [np.load(io.BytesIO(s["tokens.npy"]), allow_pickle=False) for s in samples]
        if plan.task == "depth":
            blocks = (np.stack(tokens[a:b]) for a, b in bounds)
            shape = (len(plan.views), *plan.grid)
            write.write_depth_tokens(root, name, keys, blocks, shape, plan.dtype, shard_max)
            counts[name] = {"samples": len(rows)}
        else:
            ann_ids = [json.loads(s["annotations.json"])["token_ann_ids"] for s in samples]
            seq_len = plan.grid[0] * plan.grid[1]
            write.write_insseg_tokens(root, name, keys, tokens, ann_ids, seq_len, plan.dtype)
            counts[name] = _insseg_counts(rows, sum(len(t) for t in tokens))
    write.mark_complete(root, {"task": plan.task, "splits": sorted(splits)})
    return counts


def _insseg_counts(rows: list[dict], tokenised: int) -> dict[str, int]:
    anns = [a for r in rows for a in r["annotations"]]
    crowd = sum(1 for a in anns if a["iscrowd"])
    return {"samples": len(rows), "instances": len(anns), "tokenised_instances": tokenised,
            "crowd_instances": crowd, "too_small_instances": len(anns) - crowd - tokenised}


def _manifest(plan: Plan, splits: dict[str, list[dict]], layout: dict[str, list[tuple[int, int]]],
              counts: dict[str, dict], scratch: Path, tok: Tokenizer, cfg: Any,
              categories: list[dict] | None) -> dict[str, Any]:
    """The manifest dict (see `manifest.py`), shard sizes and sha256 read from the finished files."""
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "task": plan.task,
        "variant": tok.config.get("variant"),
        "tokenizer": tokenizer_entry(tok.config, tok.model_dir, plan.grid),
        "variant_params": {"mask_ratio": float(tok.config.get("mask_ratio", 0.0))},
        "token_dtype": str(plan.dtype),
        "shard_max_samples": cfg.shard_max_samples,
        "zarr": ZARR_STORE,
        "splits": {name: {**counts[name], "shards": [
            shard_entry(scratch, write.shard_rel(name, i), b - a) for i, (a, b) in enumerate(layout[name])]}
            for name in splits},
    }
    if plan.task == "depth":
        manifest["views"] = {"crop_size": plan.crop_size, "crop_stride": cfg.crop_stride,
                             "image_size": list(plan.image_size), "list": views_to_json(list(plan.views)),
                             "tokens_shape": [len(plan.views), *plan.grid], "note": VIEW_NOTE}
    else:
        manifest["mask_crop_size"] = plan.crop_size
        manifest["tokens_shape"] = [2, plan.grid[0] * plan.grid[1]]
        manifest["categories"] = [{"id": c["id"], "name": c["name"]} for c in categories or []]
        manifest["note"] = INSSEG_NOTE
    return manifest

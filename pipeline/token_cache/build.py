"""Tokenise the prepared splits of one task with one frozen tokenizer into a token cache (PAPER_NOTES §7.1).

Work split (one code path for 1 or N processes; 1 process = rank 0 of 1):
- records are sorted by key and cut into fixed shards of `shard_max_samples` (`write.shard_bounds`);
- rank r builds the whole shards i with i % world == r, into one scratch dir that rank 0 opened with
  `atomic_dir` and broadcast; a DataLoader with `num_workers` workers reads and decodes the labels
  (view crops / instance mask crops) in order, and the tokenizer encodes them on `device` in batches of
  `batch_size` encoder inputs;
- encoder batches never cross a shard boundary, so a shard's bytes do not depend on how many
  processes built the cache; each process encodes with a fixed number of torch CPU threads
  (`CACHE_THREADS`), so they do not depend on the machine's core count either;
- every rank then reports success through an all-reduce (the barrier); if any rank failed all raise, and
  rank 0's `atomic_dir` deletes the scratch. Otherwise rank 0 alone writes the zarr store (reading the
  tokens back from the shards, so both always agree), marks it complete, and writes `manifest.json`
  last. No shard or zarr chunk ever has two writers.

What a sample holds and how its labels become encoder inputs is the task's layout (`layouts.py`): dense
labels per cached view, or per-object mask crops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.core.io import atomic_dir, write_json
from pipeline.core.runtime import all_reduce_sum, broadcast_from_rank0, intra_op_threads
from pipeline.models.vqvae import VQVAE, grid_shape
from pipeline.token_cache import write
from pipeline.token_cache.layouts import Item, Layout
from pipeline.token_cache.manifest import (
    MANIFEST,
    SCHEMA_VERSION,
    ZARR_STORE,
    CacheError,
    shard_entry,
    tokenizer_entry,
    zarr_entries,
)
from pipeline.token_cache.read import iter_tar_samples

Progress = Callable[[int, int], None]
# torch CPU threads of every cache build, whatever the machine's core count (runtime.intra_op_threads):
# a fixed count, not 1, so a 2-core machine stays busy; more parallelism comes from ranks and workers.
CACHE_THREADS = 2


@dataclass(frozen=True)
class Tokenizer:
    """A frozen tokenizer as loaded by `models.vqvae.load_vqvae`, plus the dir it came from."""

    model: VQVAE
    config: dict[str, Any]
    model_dir: str


def _as_is(item: Item) -> Item:
    return item  # DataLoader(batch_size=None) would otherwise convert numpy arrays to tensors


def encode_inputs(model: VQVAE, inputs: np.ndarray, batch_size: int, device: torch.device,
                  dtype: np.dtype) -> np.ndarray:
    """`(n, S, S)` float32 inputs -> `(n, h, w)` indices in `dtype`, `batch_size` inputs per forward."""
    out = [np.zeros((0, *grid_shape(model.cfg, *inputs.shape[1:])), dtype)]
    for s in range(0, len(inputs), batch_size):
        x = torch.from_numpy(inputs[s : s + batch_size])[:, None].to(device)
        out.append(model.encode(x).cpu().numpy().astype(dtype))
    return np.concatenate(out)


def _encoded_samples(layout: Layout, items: Iterator[Item], n: int, model: VQVAE, batch_size: int,
                     device: torch.device) -> Iterator[dict[str, bytes | str]]:
    """The next `n` items as encoded samples; encoder batches are filled within these `n` only."""
    buffer: list[Item] = []
    for k in range(n):
        buffer.append(next(items))
        if sum(len(b.inputs) for b in buffer) < batch_size and k < n - 1:
            continue
        inputs = np.concatenate([b.inputs for b in buffer])
        codes = encode_inputs(model, inputs, batch_size, device, layout.dtype)
        start = 0
        for b in buffer:
            yield layout.sample(b, layout.shape_tokens(codes[start : start + len(b.inputs)]))
            start += len(b.inputs)
        buffer = []


@dataclass(frozen=True)
class CacheJob:
    """One cache build: the task and its layout, the sorted records per split, the tokenizer,
    `cache.<task>`."""

    task: str
    layout: Layout
    splits: dict[str, list[dict]]
    tok: Tokenizer
    cfg: Any


def _build_rank_shards(job: CacheJob, split: str, mine: list[int], scratch: Path, device: torch.device,
                       tick: Callable[[int], None]) -> None:
    """Write this rank's shards `mine` of `split` (whole shards; DataLoader workers decode in order)."""
    layout, records, cfg = job.layout, job.splits[split], job.cfg
    (scratch / split).mkdir(parents=True, exist_ok=True)
    bounds = write.shard_bounds(len(records), cfg.shard_max_samples)
    own = [r for i in mine for r in records[bounds[i][0] : bounds[i][1]]]
    if not own:
        return
    loader = DataLoader(layout.items(own), batch_size=None, num_workers=cfg.num_workers, collate_fn=_as_is)
    items = iter(loader)
    for i in mine:
        n = bounds[i][1] - bounds[i][0]
        write.write_shard(scratch / write.shard_rel(split, i),
                          _encoded_samples(layout, items, n, job.tok.model, cfg.batch_size, device))
        tick(n)


# --------------------------------------------------------------------------------------------------
# the whole cache


def _share_path(path: Path | None, device: torch.device) -> Path:
    """Rank 0's `path`, on every rank (a broadcast; the identity with one process)."""
    buf = torch.zeros(4096, dtype=torch.uint8)
    if path is not None:
        raw = str(Path(path).resolve()).encode()
        buf[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    buf = broadcast_from_rank0(buf.to(device)).cpu()
    return Path(bytes(buf.tolist()).rstrip(b"\0").decode())


def build_cache(out: Path, job: CacheJob, device: torch.device, *, rank: int = 0, world_size: int = 1,
                progress: Progress | None = None) -> dict[str, Any] | None:
    """Build the cache of `job` at `out`; returns the manifest on rank 0."""
    splits, tok, cfg = job.splits, job.tok, job.cfg
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
                for name in splits:
                    _build_rank_shards(job, name, mine[name], scratch, device, tick)
        except Exception as e:  # reported to every rank below, then re-raised
            error = e
        failed = all_reduce_sum(torch.tensor([float(error is not None)], device=device))  # the barrier
        if error is not None:
            raise error
        if failed.item() > 0:
            raise CacheError(f"{out}: another rank failed while building the cache")
        if rank != 0:
            return None
        counts = _write_zarr(job, scratch)
        manifest = _manifest(job, layout, counts, scratch)
        write_json(scratch / MANIFEST, manifest)  # last: a reader accepts the cache only now
    return manifest


def _write_zarr(job: CacheJob, scratch: Path) -> dict:
    """Fill tokens.zarr from the finished shards (rank 0 only); returns per-split counts."""
    root = write.create_store(scratch / ZARR_STORE)
    shard_max = job.cfg.shard_max_samples
    counts = {}
    for name, rows in job.splits.items():
        shards = [scratch / write.shard_rel(name, i)
                  for i in range(len(write.shard_bounds(len(rows), shard_max)))]
        samples = [s for path in shards for s in iter_tar_samples(path, set(job.layout.zarr_fields))]
        if [s["__key__"] for s in samples] != [r["key"] for r in rows]:
            raise CacheError(f"{scratch / name}: shard keys do not match the prepared records")
        counts[name] = job.layout.write_split(root, name, rows, samples, shard_max)
    write.mark_complete(root, {"task": job.task, "splits": sorted(job.splits)})
    return counts


def _manifest(job: CacheJob, layout: dict[str, list[tuple[int, int]]], counts: dict[str, dict],
              scratch: Path) -> dict[str, Any]:
    """The manifest dict (see `manifest.py`), shard sizes and sha256 read from the finished files."""
    tok = job.tok
    return {
        "schema_version": SCHEMA_VERSION,
        "task": job.task,
        "variant": tok.config.get("variant"),
        "tokenizer": tokenizer_entry(tok.config, tok.model_dir, job.layout.grid),
        "variant_params": {"mask_ratio": float(tok.config.get("mask_ratio", 0.0))},
        "token_dtype": str(job.layout.dtype),
        "shard_max_samples": job.cfg.shard_max_samples,
        "zarr": ZARR_STORE,
        "zarr_files": zarr_entries(scratch),
        "splits": {name: {**counts[name], "shards": [
            shard_entry(scratch, write.shard_rel(name, i), b - a) for i, (a, b) in enumerate(layout[name])]}
            for name in job.splits},
        **job.layout.manifest_entry(),
    }

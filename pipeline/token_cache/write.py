"""Deterministic writing of token-cache shards (WebDataset tar) and the zarr v3 token store.

Byte-stability (DVC re-runs everything downstream of an output whose bytes change):
- tar members get a fixed mtime (0), user/group and mode; members of a sample are written in sorted
  extension order by `TarWriter`; samples come in the caller's (sorted-key) order; `verbose` output and
  `ShardWriter`'s size-based rolling are avoided: shard i holds samples [i·S, (i+1)·S) of the split,
  S = `shard_max_samples`, so shard boundaries depend only on the record list;
- values are encoded here (npy via numpy's format writer, JSON with sorted keys and fixed separators),
  never by WebDataset's auto-encoder;
- the zarr arrays use an explicit codec (zstd level 3) and are written in whole zarr shards, in order.

Sample layout (`__key__` has no dots: WebDataset splits a member name at its first dot):
- depth: `rgb.<jpg|png>` and `depth.png` (the stored file bytes), `tokens.npy` (V, h, w) uint8/uint16,
  `views.json` ([{"flip", "x"}]);
- insseg: `image.<ext>` (stored bytes), `annotations.json`, `tokens.npy` (n_tok, 2, h·w): row-major
  codes of the unflipped (index 0) and flipped (index 1) box crop of each tokenised instance.

zarr layout, one group per split:
- depth: `tokens` (N, V, h, w) in chunks of (1, V, h, w), so one sample is one chunk; zarr shards of
  `shard_max_samples` chunks line up with the tar shards (file count stays small for DVC);
- insseg: flat `tokens` (instances, 2, h·w) + `ann_ids` (instances,) in chunks of `INSTANCE_CHUNK`
  instances, `offsets` (N + 1,) int64; a sample's instances are `tokens[offsets[i]:offsets[i+1]]`.
  v3 has no ragged arrays. Bound: one sample with n <= INSTANCE_CHUNK instances touches
  at most 2 token chunks (1 unless it straddles a chunk boundary); readers keep offsets in memory;
- `keys` (N,) variable-length strings in both;
- the root attribute `complete` is written last.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
import zarr
from zarr.codecs import ZstdCodec
from zarr.storage import LocalStore

from pipeline.token_cache.manifest import COMPLETE_ATTR, SHARD_PATTERN

TAR_MTIME = 0  # fixed header time: identical inputs give identical shard bytes
INSTANCE_CHUNK = 4096  # insseg instances per zarr chunk (4096 x 2 x 16 uint8 = 128 KiB)
_CODEC = ZstdCodec(level=3, checksum=False)


# --------------------------------------------------------------------------------------------------
# sample encoding


def encode_npy(a: np.ndarray) -> bytes:
    """The .npy file bytes of `a` (numpy's own format writer, no pickle)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def encode_json(obj: Any) -> bytes:
    """Canonical compact JSON bytes (sorted keys)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def file_ext(path: str | Path) -> str:
    """The lower-case extension of a stored file without its dot (`jpg`, `png`)."""
    return Path(path).suffix.lower().lstrip(".")


# --------------------------------------------------------------------------------------------------
# shards


def shard_bounds(num_samples: int, shard_max_samples: int) -> list[tuple[int, int]]:
    """`[start, stop)` of every shard: fixed-size shards of `shard_max_samples`, only the last short."""
    if shard_max_samples < 1:
        raise ValueError(f"shard_max_samples must be >= 1, got {shard_max_samples}")
    return [(s, min(s + shard_max_samples, num_samples)) for s in range(0, num_samples, shard_max_samples)]


def shard_rel(split: str, index: int) -> str:
    """Path of shard `index` of `split`, relative to the cache root."""
    return f"{split}/{SHARD_PATTERN % index}"


def write_shard(path: Path, samples: Iterable[dict[str, bytes | str]]) -> int:
    """Write `samples` (already-encoded bytes) to the tar at `path`, reproducibly; returns the count."""
    n = 0
    with open(path, "wb") as f, wds.TarWriter(f, encoder=False, mtime=TAR_MTIME) as tar:
        for sample in samples:
            tar.write(sample)
            n += 1
    return n


# --------------------------------------------------------------------------------------------------
# zarr


def create_store(path: Path) -> zarr.Group:
    """A new, empty zarr v3 group on a LocalStore at `path` (overwriting)."""
    return zarr.open_group(LocalStore(str(path)), mode="w", zarr_format=3)


def _keys_array(group: zarr.Group, keys: list[str]) -> None:
    arr = group.create_array("keys", shape=(len(keys),), chunks=(max(len(keys), 1),), dtype=str,
                             compressors=_CODEC)
    if keys:
        arr[:] = np.asarray(keys, dtype=str)


def write_view_tokens(root: zarr.Group, split: str, keys: list[str], blocks: Iterable[np.ndarray],
                       view_shape: tuple[int, int, int], dtype: np.dtype, shard_max_samples: int) -> None:
    """Group `split`: `tokens` (N, V, h, w) from per-tar-shard blocks (in order), and `keys`."""
    group = root.create_group(split)
    n = len(keys)
    arr = group.create_array("tokens", shape=(n, *view_shape), chunks=(1, *view_shape),
                             shards=(shard_max_samples, *view_shape), dtype=dtype, compressors=_CODEC,
                             fill_value=0)
    start = 0
    for block in blocks:  # each block is one tar shard = one whole zarr shard: the unit of writing
        arr[start : start + len(block)] = block
        start += len(block)
    if start != n:
        raise ValueError(f"zarr {split}: wrote {start} samples, expected {n}")
    _keys_array(group, keys)


def write_instance_tokens(root: zarr.Group, split: str, keys: list[str], tokens: list[np.ndarray],
                        ann_ids: list[list[int]], seq_len: int, dtype: np.dtype) -> None:
    """Group `split`: flat `tokens` (I, 2, L), `ann_ids` (I,), `offsets` (N + 1,) and `keys`."""
    group = root.create_group(split)
    counts = [len(t) for t in tokens]
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
    flat = np.concatenate(tokens) if tokens else np.zeros((0, 2, seq_len), dtype)
    ids = np.asarray([i for row in ann_ids for i in row], dtype=np.int64)
    arr = group.create_array("tokens", shape=flat.shape, chunks=(INSTANCE_CHUNK, 2, seq_len), dtype=dtype,
                             compressors=_CODEC, fill_value=0)
    ids_arr = group.create_array("ann_ids", shape=ids.shape, chunks=(INSTANCE_CHUNK,), dtype=np.int64,
                                 compressors=_CODEC, fill_value=0)
    off_arr = group.create_array("offsets", shape=offsets.shape, chunks=offsets.shape, dtype=np.int64,
                                 compressors=_CODEC, fill_value=0)
    if len(flat):
        arr[:] = flat.astype(dtype, copy=False)
        ids_arr[:] = ids
    off_arr[:] = offsets
    _keys_array(group, keys)


def mark_complete(root: zarr.Group, attrs: dict[str, Any]) -> None:
    """Write the completion attribute (plus `attrs`) last: a store without it is partial."""
    root.attrs.update({**attrs, COMPLETE_ATTR: True})

"""Token-cache readers: the WebDataset training pipeline and the zarr random-access reader.

Both start from `open_cache`, which refuses (one-line `CacheError`) a cache without manifest, of an
unknown schema version, with an incomplete zarr store, with shards missing, or made by a tokenizer other
than `expected_hash` (the checkpoint the solver is configured with).

`token_pipeline` follows the explicit `wds.DataPipeline` form that open_clip and ml-4m use:
shard list -> `split_by_node` -> `split_by_worker` -> tar expansion -> seeded sample shuffle
on the still-encoded bytes (before decode: a buffer of decoded images is 10-50x larger) -> pluggable
`decode` -> `batched(partial=False)`, with `with_epoch(n)` so that every (rank, worker) yields exactly n
batches per epoch: DDP needs equal step counts on every rank or collectives hang. n is computed from the
manifest's per-shard counts for the fixed shard -> (rank, worker) assignment (shard i goes to rank
i % world, then worker (i // world) % workers) as the smallest per-consumer batch count, so no consumer
repeats a sample within an epoch; with equal shards and num_shards a multiple of world x workers every
sample is read exactly once. Shards are not shuffled (a fixed assignment keeps n exact); pass
`seed + epoch` for a different sample order each epoch (open_clip's detshuffle2 idea).

Every callable that travels into DataLoader workers is a module-level function (no lambdas), so the
pipeline pickles under spawn/forkserver as well as fork.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
import zarr
from PIL import Image
from torch.utils.data import Dataset
from zarr.storage import LocalStore

from pipeline.token_cache.manifest import (
    COMPLETE_ATTR,
    ZARR_STORE,
    CacheError,
    check_shards,
    check_tokenizer,
    check_zarr,
    read_manifest,
)


@dataclass(frozen=True)
class CacheInfo:
    """A validated cache: its root and manifest, with the per-split views readers need."""

    root: Path
    manifest: dict[str, Any]

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def tokenizer_hash(self) -> str:
        return self.manifest["tokenizer"]["hash"]

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def split(self, split: str) -> dict[str, Any]:
        """The manifest entry of `split`; an unknown split is a one-line error listing the known ones."""
        if split not in self.manifest["splits"]:
            raise CacheError(f"{self.root}: no split {split!r} (has {', '.join(self.splits)})")
        return self.manifest["splits"][split]

    def shards(self, split: str) -> list[Path]:
        return [self.root / s["path"] for s in self.split(split)["shards"]]

    def shard_sizes(self, split: str) -> list[int]:
        return [s["samples"] for s in self.split(split)["shards"]]


def open_cache(path: str | Path, expected_hash: str | None = None, verify: bool = False,
               variant: str | None = None) -> CacheInfo:
    """Validate the cache at `path` (manifest, schema, zarr completion, shards, tokenizer hash); `verify`
    also hashes every shard and zarr file against the manifest's sha256 (training and `ait inspect cache
    --verify` read every byte anyway: bench/bench_verify.py measures the cost); `variant` refuses another variant's
    cache (a copied folder)."""
    root = Path(path)
    manifest = read_manifest(root)
    if variant is not None and manifest.get("variant") != variant:
        raise CacheError(f"{root / 'manifest.json'}: cache of variant {manifest.get('variant')!r}, expected "
                         f"{variant!r}; rebuild it (`dvc repro cache_tokens@{variant}`)")
    check_tokenizer(manifest, expected_hash, root)
    store = root / ZARR_STORE
    try:
        group = zarr.open_group(LocalStore(str(store), read_only=True), mode="r")
        complete = group.attrs.get(COMPLETE_ATTR) is True
    except (FileNotFoundError, zarr.errors.NodeNotFoundError, ValueError):
        complete = False
    if not complete:
        raise CacheError(f"{store}: zarr store is incomplete (no '{COMPLETE_ATTR}' attribute); rebuild it")
    check_shards(manifest, root, verify)
    check_zarr(manifest, root, verify)
    return CacheInfo(root, manifest)


# --------------------------------------------------------------------------------------------------
# samples


def iter_tar_samples(path: Path, fields: set[str] | None = None) -> Iterator[dict[str, Any]]:
    """Raw samples of one shard in order: `{"__key__": key, "<ext>": bytes, ...}` (no decoding).

    With `fields`, only those members are read; the others are skipped by seeking, not read.
    """
    sample: dict[str, Any] = {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = Path(member.name).name.partition(".")  # key = basename up to the first dot
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            sample["__key__"] = key
            if fields is None or ext in fields:
                sample[ext] = tar.extractfile(member).read()
    if sample:
        yield sample


IMAGE_FIELDS = frozenset({"rgb", "image"})  # decoded as (H, W, 3) uint8 RGB whatever their mode
FieldDecoder = Callable[[bytes], Any]


def _decode_field(name: str, ext: str, data: bytes, fields: Mapping[str, FieldDecoder]) -> Any:
    if name in fields:
        return fields[name](data)
    if ext == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    if ext == "json":
        return json.loads(data)
    image = Image.open(io.BytesIO(data))
    if name in IMAGE_FIELDS:
        return np.array(image.convert("RGB"), dtype=np.uint8)  # writable, for torch
    return np.array(image)  # a label map as stored (uint8 / uint16)


def decode_sample(sample: dict[str, Any], fields: Mapping[str, FieldDecoder] | None = None) -> dict[str, Any]:
    """Default decode: `key`, images (`rgb`, `image`) as `(H, W, 3)` uint8, other PNGs as stored, `tokens`
    as stored (uint8/uint16), json fields (`views`, `annotations`) as objects; `fields` overrides the
    decoding of named fields (a task's label file, e.g. depth PNGs to metres)."""
    out: dict[str, Any] = {"key": sample["__key__"]}
    for field, data in sample.items():
        if field.startswith("__"):  # __key__, __url__, __local_path__ added by webdataset
            continue
        name, _, ext = field.partition(".")
        out[name] = _decode_field(name, ext, data, fields or {})
    return out


def collate_list(samples: list[Any]) -> list[Any]:
    """Default batch collation: the list of decoded samples (insseg samples have ragged fields)."""
    return list(samples)


# --------------------------------------------------------------------------------------------------
# WebDataset training pipeline


def consumer_batches(shard_sizes: list[int], batch_size: int, world_size: int, num_workers: int) -> list[int]:
    """Full batches each (rank, worker) can form from its shards, rank-major (split_by_node/worker)."""
    out = []
    for rank in range(world_size):
        mine = shard_sizes[rank::world_size]
        out += [sum(mine[w::num_workers]) // batch_size for w in range(num_workers)]
    return out


@dataclass(frozen=True)
class Sampling:
    """How a token pipeline draws its batches: the batch size, the shuffle seed and buffer (<= 1: file
    order), the batches per worker per epoch (None: as many as every rank and worker can fill), and the
    DataLoader workers and ranks it feeds (`world_size` None: what webdataset's `split_by_node` sees,
    RANK/WORLD_SIZE or an initialised process group)."""

    batch_size: int
    seed: int = 0
    shuffle: int = 1000
    epoch_batches: int | None = None
    num_workers: int = 0
    world_size: int | None = None


def token_pipeline(path: str | Path, split: str, sampling: Sampling,
                   decode: Callable[[dict[str, Any]], Any] = decode_sample,
                   collate: Callable[[list[Any]], Any] = collate_list,
                   expected_hash: str | None = None) -> wds.DataPipeline:
    """Batches of `decode`d samples from the shards of `split`, drawn as `sampling` says.

    `sampling.num_workers` must be the DataLoader's worker count (0 = in-process). Use
    `wds.WebLoader(pipeline, batch_size=None, num_workers=num_workers)`; each rank then gets
    `epoch_batches * max(num_workers, 1)` batches per epoch.
    """
    batch_size, seed, shuffle, epoch_batches = (sampling.batch_size, sampling.seed, sampling.shuffle,
                                                sampling.epoch_batches)
    num_workers, world_size = sampling.num_workers, sampling.world_size
    info = open_cache(path, expected_hash)
    shards, sizes = info.shards(split), info.shard_sizes(split)
    world = world_size if world_size is not None else wds.utils.pytorch_worker_info()[1]
    workers = max(num_workers, 1)
    if len(shards) < world * workers:
        # open_clip's rule: a (rank, worker) without shards never steps and DDP hangs.
        raise CacheError(f"{info.root}/{split}: {len(shards)} shards cannot feed {world} ranks x {workers} "
                         f"workers; lower cache.{info.task}.shard_max_samples or the worker count")
    if epoch_batches is None:
        epoch_batches = min(consumer_batches(sizes, batch_size, world, workers))
        if epoch_batches == 0:
            raise CacheError(f"{info.root}/{split}: some rank/worker gets fewer than {batch_size} samples; "
                             f"lower the batch size or the worker count")
    stages: list[Any] = [wds.SimpleShardList([str(p) for p in shards]), wds.split_by_node,
                         wds.split_by_worker, wds.tarfile_to_samples()]
    if shuffle > 1:
        stages.append(wds.shuffle(shuffle, initial=min(shuffle, 100), seed=seed))
    stages += [wds.map(decode), wds.batched(batch_size, collation_fn=collate, partial=False)]
    return wds.DataPipeline(*stages).with_epoch(epoch_batches)


# --------------------------------------------------------------------------------------------------
# zarr random access


class ZarrTokens(Dataset):
    """Map-style access to the tokens of one split: depth `(V, h, w)`, insseg `(n_tok, 2, L)` per item.

    Keys (and insseg offsets / annotation ids) are read once into memory; the token array is opened
    lazily in each process (zarr is opened inside DataLoader workers, not before the fork).
    """

    def __init__(self, path: str | Path, split: str, expected_hash: str | None = None) -> None:
        self.info = open_cache(path, expected_hash)
        self.info.split(split)
        self.split = split
        group = self._group()
        self.keys: list[str] = [str(k) for k in group["keys"][:]]
        self._index = {k: i for i, k in enumerate(self.keys)}
        ragged = "offsets" in group  # per-object layouts store offsets (tasks/insseg/layout.py)
        self.offsets = group["offsets"][:] if ragged else None
        self._ann_ids = group["ann_ids"][:] if ragged else None
        self._tokens: zarr.Array | None = None

    def _group(self) -> zarr.Group:
        store = LocalStore(str(self.info.root / ZARR_STORE), read_only=True)
        return zarr.open_group(store, mode="r")[self.split]

    @property
    def tokens(self) -> zarr.Array:
        """The zarr token array of this split (opened on first use in this process)."""
        if self._tokens is None:
            self._tokens = self._group()["tokens"]
        return self._tokens

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tokens"] = None  # reopen in the worker
        return state

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i %= len(self)
        if self.offsets is None:
            return self.tokens[i]
        return self.tokens[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def index_of(self, key: str) -> int:
        """Position of sample `key`; an unknown key is a one-line `CacheError`."""
        if key not in self._index:
            raise CacheError(f"{self.info.root}/{self.split}: no sample with key {key!r}")
        return self._index[key]

    def ann_ids(self, i: int) -> np.ndarray:
        """insseg: the annotation ids of the tokenised instances of sample `i`, in token order."""
        if self.offsets is None:
            raise CacheError(f"{self.info.root}: ann_ids exist only in per-object (instance) caches")
        return self._ann_ids[int(self.offsets[i]) : int(self.offsets[i + 1])]


def code_counts(tokens: ZarrTokens, num_embeddings: int) -> np.ndarray:
    """`(K,)` int64 usage count of every code over a whole split, read block by block."""
    arr = tokens.tokens
    counts = np.zeros(num_embeddings, dtype=np.int64)
    step = max(arr.shards[0] if arr.shards else arr.chunks[0], 1)
    for start in range(0, arr.shape[0], step):
        block = np.asarray(arr[start : start + step]).ravel()
        counts += np.bincount(block, minlength=num_embeddings)[:num_embeddings]
    return counts

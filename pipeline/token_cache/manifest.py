"""The token-cache manifest: schema, version, tokenizer identity and the one-line refusals.

A cache directory `data/tokens/<variant>/` holds
- `manifest.json` (this module): schema_version, task, variant, the tokenizer that made the tokens
  (content hash, architecture, K, token grid, downsample ratio r, checkpoint dir), the variant's params
  (mask_ratio), the depth view set (crop size and stride, with the snapping trade-off spelled out) or
  the insseg mask crop size and category names, counts per split and every shard with its path,
  sample count, size in bytes and sha256, and (schema 2) every file of `tokens.zarr` with its size and
  sha256, so `--verify` covers every byte a reader trusts;
- `<split>/shard-%06d.tar` WebDataset shards (`write.py`);
- `tokens.zarr`, a zarr v3 store with the same tokens for random access (`write.py`).

The manifest is written last, inside an `atomic_dir`, and the zarr store carries a completion attribute
written after its arrays, so a reader never accepts a partial cache (zarr reads
unwritten chunks as zeros). Readers refuse, each with one line naming the path: no manifest, an unknown
schema version, an incomplete zarr store, and a tokenizer hash other than the one the caller expects
(the solver's configured checkpoint; PAPER_NOTES §7.1: the official code never tied targets to a checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import CacheError
from pipeline.core.io import sha256_file

SCHEMA_VERSION = 2  # 2: the manifest records a digest of every tokens.zarr file
MANIFEST = "manifest.json"
ZARR_STORE = "tokens.zarr"
COMPLETE_ATTR = "complete"  # root attribute of tokens.zarr, written after every array
SHARD_PATTERN = "shard-%06d.tar"



def token_dtype(num_embeddings: int) -> np.dtype:
    """The smallest unsigned dtype holding indices in [0, K): uint8 for K <= 256, else uint16."""
    if num_embeddings <= 256:
        return np.dtype(np.uint8)
    if num_embeddings <= 65536:
        return np.dtype(np.uint16)
    raise CacheError(f"codebook size {num_embeddings} does not fit the uint16 token cache")


def tokenizer_entry(config: dict[str, Any], model_dir: str | Path, grid: tuple[int, int]) -> dict[str, Any]:
    """The manifest's `tokenizer` block from a checkpoint's config.json and the cached token grid."""
    arch = config["architecture"]
    return {
        "hash": config["content_hash"],
        "architecture": arch,
        "num_embeddings": arch["num_embeddings"],
        "downsample_ratio": arch["downsample_ratio"],
        "grid": list(grid),
        "task": config.get("task"),
        "variant": config.get("variant"),
        "checkpoint": str(model_dir),
    }


def shard_entry(root: Path, rel: str, samples: int) -> dict[str, Any]:
    """`{path, samples, bytes, sha256}` of the shard `root / rel` (path relative to the cache root)."""
    path = Path(root) / rel
    return {"path": rel, "samples": samples, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def zarr_entries(root: Path) -> dict[str, dict[str, Any]]:
    """`{relative path: {bytes, sha256}}` of every file of the cache's zarr store (sorted by path)."""
    store = Path(root) / ZARR_STORE
    files = sorted(p for p in store.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in files}


def check_zarr(manifest: dict[str, Any], root: Path, verify: bool = False) -> None:
    """Refuse a zarr store whose files are not those the manifest lists at the sizes it records; with
    `verify`, also a file whose sha256 differs."""
    expected = manifest["zarr_files"]
    present = {p.relative_to(root).as_posix() for p in (Path(root) / ZARR_STORE).rglob("*") if p.is_file()}
    extra = sorted(present - set(expected))
    if extra:
        raise CacheError(f"{Path(root) / extra[0]}: a zarr file the manifest does not list; rebuild the "
                         f"cache (`dvc repro cache_tokens`)")
    for rel, entry in expected.items():
        _check_file(Path(root) / rel, entry, "zarr file", verify)


def _check_file(path: Path, entry: dict[str, Any], what: str, verify: bool) -> None:
    """Refuse a cache file (`what`: shard, zarr file) that is missing or not the size its manifest `entry`
    records; with `verify`, also one whose sha256 differs (same size, other bytes)."""
    if not path.is_file() or path.stat().st_size != entry["bytes"]:
        raise CacheError(f"{path}: {what} missing or not {entry['bytes']} bytes as the manifest says; "
                         f"rebuild the cache (`dvc repro cache_tokens`)")
    if verify and sha256_file(path) != entry["sha256"]:
        raise CacheError(f"{path}: sha256 differs from the manifest's (the {what} was modified or corrupted); "
                         f"rebuild the cache (`dvc repro cache_tokens`)")


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the cache at `root`; refuses a missing/unreadable one and unknown schema versions."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise CacheError(f"{root}: not a complete token cache (no {MANIFEST}; the build did not finish "
                         f"or never ran: `dvc repro cache_tokens`)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheError(f"{path}: unreadable manifest ({type(e).__name__})") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise CacheError(f"{path}: cache schema version {version!r} is not the supported "
                         f"{SCHEMA_VERSION}; rebuild the cache with this code")
    return manifest


def check_tokenizer(manifest: dict[str, Any], expected_hash: str | None, where: Path) -> None:
    """Refuse a cache whose tokens were made by a tokenizer other than `expected_hash` (None: any)."""
    actual = manifest["tokenizer"]["hash"]
    if expected_hash is not None and actual != expected_hash:
        raise CacheError(f"{where}: tokens were made by tokenizer {actual}, but the configured checkpoint "
                         f"is {expected_hash}; rebuild the cache (`dvc repro cache_tokens`)")


def check_shards(manifest: dict[str, Any], root: Path, verify: bool = False) -> None:
    """Refuse a cache whose shard files are missing or not the size the manifest records; with `verify`,
    also any shard whose sha256 differs (same size, other bytes: a flipped or zeroed block)."""
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            _check_file(Path(root) / shard["path"], shard, "shard", verify)

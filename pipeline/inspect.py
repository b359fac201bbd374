"""Look inside what the stages produced (token caches), for people and for scripts (`ait inspect`).

- `summarize_cache`: per split samples, shards, bytes, tokens per sample and code usage (min/median/max
  count per code, perplexity, unused codes), computed from the zarr store;
- `sample_panel`: image | GT | hard-decoded cached tokens of one sample, drawn by its task
  (`Task.inspect_panel`: depth and class maps show view 0, instances their pasted masks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape
from rich.table import Table

from pipeline.models.vqvae import load_vqvae
from pipeline.tasks.registry import get_task
from pipeline.token_cache.manifest import CacheError
from pipeline.token_cache.read import (
    CacheInfo,
    ZarrTokens,
    code_counts,
    decode_sample,
    iter_tar_samples,
    open_cache,
)
from pipeline.tokenizer_training.codes import usage_stats

# What `--verify` reads and what it cannot: the manifest records a sha256 for every tar shard and every file
# of the zarr store; the manifest itself carries no digest of its own (DVC's lock file records the cache
# folder's hash: `dvc status` tells whether it changed).
VERIFIED = {"verified": "every tar shard's and tokens.zarr file's sha256 against the manifest",
            "not_verified": "manifest.json itself (`dvc status` compares the cache with dvc.lock)"}


def summarize_cache(path: Path, verify: bool = False) -> dict[str, Any]:
    """Per-split counts, sizes and code-usage statistics of the cache at `path` (`verify`: shard sha256)."""
    info = open_cache(path, verify=verify)
    m = info.manifest
    k = m["tokenizer"]["num_embeddings"]
    per_item = int(np.prod(m["views"]["tokens_shape"] if "views" in m else m["tokens_shape"]))
    splits = {}
    for split in info.splits:
        entry, tokens = info.split(split), ZarrTokens(path, split)
        n_items = len(tokens) if tokens.offsets is None else int(tokens.offsets[-1])
        counts = {c: entry[c] for c in ("instances", "tokenised_instances") if c in entry}
        splits[split] = {
            "samples": entry["samples"], "shards": len(entry["shards"]),
            "bytes": sum(s["bytes"] for s in entry["shards"]),
            "tokens_per_sample": per_item * n_items / max(len(tokens), 1), **counts,
            "code_usage": usage_stats(code_counts(tokens, k)),
        }
    return {"path": str(path), "task": m["task"], "variant": m["variant"],
            "tokenizer_hash": info.tokenizer_hash, "num_embeddings": k, "splits": splits,
            **(VERIFIED if verify else {"verified": False})}


def cache_table(summary: dict[str, Any]) -> Table:
    """The rich table `ait inspect cache` prints for a `summarize_cache` result."""
    checked = f"; verified: {summary['verified']}; not verified: {summary['not_verified']}" \
        if summary["verified"] else ""
    title = (f"{summary['path']}: {summary['task']} cache of {summary['variant']} "
             f"(tokenizer {summary['tokenizer_hash']}, K={summary['num_embeddings']}{checked})")
    table = Table(title=escape(title))
    for name in ("split", "samples", "shards", "bytes", "tokens/sample", "code count min/median/max",
                 "perplexity", "unused codes"):
        table.add_column(name, justify="left" if name == "split" else "right")
    for split, s in summary["splits"].items():
        u = s["code_usage"]
        table.add_row(split, str(s["samples"]), str(s["shards"]), f"{s['bytes']:,}",
                      f"{s['tokens_per_sample']:.1f}", f"{u['min']}/{u['median']:g}/{u['max']}",
                      f"{u['perplexity']:.2f}", str(u["unused_codes"]))
    return table


def foreign_variant(path: Path, variant: str | None) -> str | None:
    """A warning when the folder name is not the variant its manifest records (a copied or moved cache)."""
    name = Path(path).resolve().name
    if variant != name:
        return (f"warning: {path} holds the cache of variant {variant!r}, not {name!r}; "
                f"stages read data/tokens/<variant>, so rebuild it there (`dvc repro cache_tokens@{name}`)")
    return None



def cache_keys(path: Path, split: str | None = None) -> dict[str, list[str]]:
    """The sample keys of every split of the cache at `path` (or of `split`), in cache order: the keys
    `ait inspect sample` takes (dense tasks: the frame's path; instances: the COCO image id, 12 digits)."""
    info = open_cache(path)
    splits = info.splits if split is None else [split]
    for name in splits:
        info.split(name)  # an unknown split is a one-line CacheError naming the known ones
    return {name: ZarrTokens(path, name).keys for name in splits}


def find_sample(info: CacheInfo, key: str) -> tuple[str, int, dict[str, Any]]:
    """(split, index, decoded sample) of `key`, read from its shard."""
    for split in info.splits:
        tokens = ZarrTokens(info.root, split)
        if key not in tokens.keys:
            continue
        index = tokens.index_of(key)
        bounds = np.cumsum([0, *info.shard_sizes(split)])
        shard = info.shards(split)[int(np.searchsorted(bounds, index, side="right")) - 1]
        for sample in iter_tar_samples(shard):
            if sample["__key__"] == key:
                return split, index, decode_sample(sample, get_task(info.task).cache_fields)
    raise CacheError(f"{info.root}: no sample with key {key!r} in {', '.join(info.splits)}")



def sample_panel(path: Path, key: str, model_dir: Path | None = None) -> tuple[str, int, np.ndarray]:
    """(split, index, (H, W, 3) uint8 picture) of sample `key`: image | GT | its hard-decoded tokens."""
    info = open_cache(path)
    m = info.manifest
    model, tokenizer = load_vqvae(model_dir or Path(m["tokenizer"]["checkpoint"]))
    open_cache(path, expected_hash=tokenizer["content_hash"])  # refuse decoding with another tokenizer
    split, index, decoded = find_sample(info, key)
    with torch.no_grad():
        return split, index, get_task(info.task).inspect_panel(decoded, model, m)

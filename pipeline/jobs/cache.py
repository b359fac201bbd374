"""One `cache_tokens@<variant>`: the variant's checkpoint and its task's prepared splits to a token cache.

The task, variant and mask ratio come from the checkpoint's config.json, so only `cache.<task>` is read
from params: changing one tokenizer rebuilds only its own cache. The task decides the cache layout
(`Task.cache_layout`); `build.build_cache` writes it, the same under torchrun (each rank builds whole
shards, rank 0 writes zarr and the manifest; the bytes equal a 1-process build's).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.core.params import load_section
from pipeline.core.runtime import destroy_distributed, init_distributed
from pipeline.models.vqvae import load_vqvae
from pipeline.tasks.base import read_split
from pipeline.tasks.registry import get_task
from pipeline.token_cache.build import CacheJob, Tokenizer, build_cache


def cache_job(variant: str, params: Path, prepared: Path, model_dir: Path) -> CacheJob:
    """Everything one cache build needs, validated before any work (records sorted by key)."""
    model, config = load_vqvae(model_dir, variant)
    task = get_task(config["task"])
    cfg = load_section(params, f"cache.{task.name}", task.configs.cache)
    folder = prepared / task.name
    splits = {s: sorted(read_split(folder, s), key=lambda r: r["key"]) for s in task.splits}
    tok = Tokenizer(model, config, str(model_dir))
    return CacheJob(task.name, task.cache_layout(splits, tok, cfg, folder), splits, tok, cfg)


def cache_variant(job: CacheJob, out: Path, device: torch.device,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, Any] | None:
    """Build the cache at `out` (every rank); returns the manifest on rank 0."""
    info = init_distributed(device.type)
    try:
        return build_cache(out, job, device, rank=info.rank, world_size=info.world_size, progress=progress)
    finally:
        destroy_distributed()

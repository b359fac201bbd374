"""What the depth token cache costs at `cache.depth.crop_stride` 1 (exact crops) vs the preset's coarser one.

The solver crops a 480-px square at a random x-offset in [0, 160] of each 480×640 frame (PAPER_NOTES §6.1).
Stride 1 caches all 161 offsets × 2 flips = 322 views per image, so every crop the official code can
draw has exact target tokens; stride s caches ceil(161/s) offsets and snaps the solver's crop to them.
This bench builds the cache of the same real NYUv2 frames (`../shared/data/nyuv2_sample`, listed by
`--list`) with the paper depth tokenizer (random init: cost does not depend on training) at each stride
in `--strides`, one after the other in one run, and prints per stride: views per image, token bytes
per image (what the tokens add), shard bytes per image (tokens + the stored RGB and depth files), build
seconds per image on `--device` (as `cache_tokens` builds: the depth task's `cache_layout` over the
key-sorted records, then `build_cache`), and the ratios of the stride-1 figures to the coarser one.

    .venv/bin/python bench/bench_depth_stride.py --device cpu --strides 32 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml
from typer.testing import CliRunner

from pipeline.core import checkpoint
from pipeline.core.config import TokenizerTaskConfig
from pipeline.core.params import load_section
from pipeline.core.runtime import pick_device
from pipeline.models.vqvae import VQVAE, load_vqvae
from pipeline.presets import merged
from pipeline.tasks.base import read_split
from pipeline.tasks.registry import get_task
from pipeline.token_cache.build import CacheJob, Tokenizer, build_cache
from stages.cli import app

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared/data/nyuv2_sample"
TASK = get_task("depth")


def _paper_params(tmp: Path, root: Path, train_list: str) -> Path:
    """params.yaml + presets/paper.yaml with data.tasks.depth pointing at the real sample."""
    params = merged(yaml.safe_load((ROOT / "params.yaml").read_text()),
                    yaml.safe_load((ROOT / "presets/paper.yaml").read_text()))
    params = merged(params, {"data": {"tasks": {"depth": {
        "source": "nyuv2", "root": str(root), "layout": "sync", "train_list": train_list,
        "test_list": train_list}}}})
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _tokenizer(params: Path, out: Path) -> Tokenizer:
    cfg = load_section(params, "tokenizer.depth", TokenizerTaskConfig)
    torch.manual_seed(0)
    checkpoint.save(out, VQVAE(cfg.model), cfg.model, {"kind": "vqvae", "task": "depth", "variant": "bench",
                                                       "mask_ratio": 0.0, "train": {}})
    model, config = load_vqvae(out)
    return Tokenizer(model, config, str(out))


def _build(stride: int, records: list[dict], prepared: Path, tok: Tokenizer, cfg, device, out: Path) -> dict:
    """Build the train-split cache of `records` at `stride` into `out`; its per-image figures."""
    cfg = replace(cfg, crop_stride=stride)
    splits = {"train": records}
    start = time.perf_counter()
    job = CacheJob(TASK.name, TASK.cache_layout(splits, tok, cfg, prepared), splits, tok, cfg)
    manifest = build_cache(out, job, device)
    seconds = time.perf_counter() - start
    n = len(records)
    views = manifest["views"]["tokens_shape"][0]
    tokens = views * manifest["views"]["tokens_shape"][1] * manifest["views"]["tokens_shape"][2]
    shard_bytes = sum(s["bytes"] for s in manifest["splits"]["train"]["shards"])
    itemsize = np.dtype(manifest["token_dtype"]).itemsize
    return {"views_per_image": views, "token_bytes_per_image": tokens * itemsize,
            "shard_bytes_per_image": round(shard_bytes / n), "build_s_per_image": round(seconds / n, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--strides", type=int, nargs="+", default=[32, 1])
    ap.add_argument("--list", default="nyudepthv2_sample_train_files_with_gt.txt",
                    help="BTS list (relative to the sample root) of the frames to cache")
    args = ap.parse_args()
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        params = _paper_params(tmp, SAMPLE, args.list)
        result = CliRunner().invoke(app, ["prepare", "depth", "--params", str(params),
                                          "--out", str(tmp / "prepared")])
        if result.exit_code:
            raise SystemExit(result.output)
        prepared = tmp / "prepared"
        records = sorted(read_split(prepared, TASK.splits[0]), key=lambda r: r["key"])
        tok = _tokenizer(params, tmp / "tokenizer")
        cfg = load_section(params, "cache.depth", TASK.configs.cache)
        # warm-up: allocator, file cache
        _build(args.strides[0], records[:1], prepared, tok, cfg, device, tmp / "warmup")
        rows = {s: _build(s, records, prepared, tok, cfg, device, tmp / f"stride{s}") for s in args.strides}
    out = {"device": str(device), "images": len(records), "strides": rows}
    if len(args.strides) == 2:
        a, b = (rows[s] for s in args.strides)
        out["ratios_second_over_first"] = {k: round(b[k] / a[k], 2) for k in a}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

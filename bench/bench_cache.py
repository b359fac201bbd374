"""Token-cache throughput: what pre-tokenising costs, and what reading the cache saves the solver.

Prints one JSON object with, per task (depth, insseg):
(a) `decode_only_sps`: samples/s of the build's DataLoader alone (read files, decode labels, cut the depth
    views / mask crops); `tokenise_sps`: the same plus the batched tokenizer encode; `build_sps`: the
    whole `build_cache` (shards + zarr + manifest); and the ratios `tokenise_over_decode`,
    `build_over_decode`;
(b) `solver_cached_sps`: samples/s of a solver-like input pipeline over the cache (WebDataset pipeline:
    decode image + tokens, pick a random cached view / keep the instance tokens), against
    `solver_on_the_fly_sps`: decoding the raw labels and tokenising them with the frozen tokenizer on
    the same device per batch, as the official code does (AiT ref §7.1); and `cached_over_on_the_fly`.

Data: the embedded demo rendered into a temp dir from `--params` (default params.yaml), prepared, with
seeded random-init tokenizers of the params' architecture (throughput does not depend on training), or
an existing project with `--project DIR` (data/prepared + models/tokenizer/<variant>).

    .venv/bin/python bench/bench_cache.py --device cpu
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from typer.testing import CliRunner

from pipeline import checkpoint
from pipeline.config import CacheConfig, TokenizerTaskConfig, load_section
from pipeline.data.coco import segmentation_to_mask
from pipeline.data.nyu import read_depth_metres, read_rgb
from pipeline.io import read_jsonl
from pipeline.models.vqvae import VQVAE
from pipeline.runtime import pick_device
from pipeline.solver.augment import depth_view
from pipeline.tokenizers.data import instance_index
from pipeline.tokenizers.mask_crops import crop_instance_mask, flip_crop
from pipeline.tokens.build import DepthItems, InssegItems, Tokenizer, build_cache, encode_inputs, make_plan
from pipeline.tokens.read import decode_sample, token_pipeline
from stages.cli import app

VARIANTS = {"depth": "depth_mask50", "insseg": "insseg"}
SPLITS = {"depth": ("train", "test"), "insseg": ("train", "val")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _project(params: Path, root: Path) -> Path:
    """Render the demo, prepare it and save random-init tokenizers under `root`."""
    runner = CliRunner()
    steps = [["data", "demo", "--out", str(root / "data/demo")]]
    steps += [["prepare", t, "--out", str(root / "data/prepared" / t)] for t in ("depth", "insseg")]
    for args in steps:
        result = runner.invoke(app, [*args, "--params", str(params)])
        assert result.exit_code == 0, result.output
    for task, variant in VARIANTS.items():
        cfg = load_section(params, f"tokenizer.{task}", TokenizerTaskConfig)
        torch.manual_seed(0)
        checkpoint.save(root / "models/tokenizer" / variant, VQVAE(cfg.model), cfg.model,
                        {"kind": "vqvae", "task": task, "variant": variant, "mask_ratio": 0.0,
                         "train": {"crop_size": cfg.train.crop_size}})
    return root


def _as_is(x):
    return x


def bench_build(task: str, project: Path, cfg, tok: Tokenizer, device: torch.device, out: Path) -> dict:
    """(a) decode-only vs decode + encode vs the whole build, samples/s."""
    splits = {s: sorted(read_jsonl(project / f"data/prepared/{task}/{s}.jsonl"), key=lambda r: r["key"])
              for s in SPLITS[task]}
    records = splits["train"]
    plan = make_plan(task, splits, tok, cfg)
    data = (DepthItems(records, list(plan.views), plan.crop_size) if task == "depth"
            else InssegItems(records, plan.crop_size))

    def run(encode: bool) -> float:
        loader = DataLoader(data, batch_size=None, num_workers=cfg.num_workers, collate_fn=_as_is)
        start = time.perf_counter()
        batch: list[np.ndarray] = []
        for item in loader:
            batch.append(item.inputs)
            if encode and sum(len(b) for b in batch) >= cfg.batch_size:
                encode_inputs(tok.model, np.concatenate(batch), cfg.batch_size, device, plan.dtype)
                batch = []
        if encode and batch:
            encode_inputs(tok.model, np.concatenate(batch), cfg.batch_size, device, plan.dtype)
        _sync(device)
        return len(records) / (time.perf_counter() - start)

    tok.model.eval().to(device)
    run(True)  # warm-up: file cache, allocator, cudnn
    decode_sps, tokenise_sps = run(False), run(True)
    start = time.perf_counter()
    build_cache(out, task, splits, tok, cfg, device)
    build_sps = sum(len(r) for r in splits.values()) / (time.perf_counter() - start)
    return {"samples": len(records), "decode_only_sps": round(decode_sps, 1),
            "tokenise_sps": round(tokenise_sps, 1), "build_sps": round(build_sps, 1),
            "tokenise_over_decode": round(tokenise_sps / decode_sps, 3),
            "build_over_decode": round(build_sps / decode_sps, 3)}


class CachedDepthSample:
    """Solver-like decode of a cached depth sample: a random cached view's RGB crop and its tokens."""

    def __call__(self, sample: dict) -> dict:
        s = decode_sample(sample)
        rng = np.random.default_rng(zlib.crc32(s["key"].encode()))
        v = int(rng.integers(len(s["views"])))
        view = s["views"][v]
        rgb, _ = depth_view(s["rgb"], s["depth"], view["flip"], view["x"], s["depth"].shape[0])
        return {"rgb": rgb, "tokens": s["tokens"][v]}


class RawDepth(Dataset):
    """On-the-fly solver input: RGB + GT depth, random flip and full-height crop (AiT ref §6.1)."""

    def __init__(self, records: list[dict], crop: int) -> None:
        self.records, self.crop = records, crop

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        r = self.records[i]
        rgb, depth = read_rgb(r["rgb"]), read_depth_metres(r["depth"])
        rng = np.random.default_rng(i)
        if rng.random() < 0.5:
            rgb, depth = rgb[:, ::-1], depth[:, ::-1]
        x = int(rng.integers(depth.shape[1] - self.crop + 1))
        return (np.ascontiguousarray(rgb[:, x : x + self.crop]),
                np.ascontiguousarray(depth[:, x : x + self.crop], dtype=np.float32))


class RawInsseg(Dataset):
    """On-the-fly solver input: image + every tokenisable instance's box crop, flipped with p = 0.5."""

    def __init__(self, records: list[dict], crop: int) -> None:
        self.records, self.crop = records, crop

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        r = self.records[i]
        flip = np.random.default_rng(i).random() < 0.5
        crops = []
        for _, a in instance_index([r]):
            ann = r["annotations"][a]
            c = crop_instance_mask(segmentation_to_mask(ann["segmentation"], r["height"], r["width"]),
                                   ann["bbox"], self.crop)
            crops.append(flip_crop(c) if flip else c)
        stack = np.stack(crops) if crops else np.zeros((0, self.crop, self.crop), np.float32)
        return read_rgb(r["image"]), stack.astype(np.float32)


def _collate(batch: list) -> list:
    return batch


def bench_solver_input(task: str, project: Path, cache: Path, tok: Tokenizer, device: torch.device,
                       batch_size: int, workers: int) -> dict:
    """(b) samples/s of reading the cache vs decoding labels and tokenising on the fly."""
    records = read_jsonl(project / f"data/prepared/{task}/train.jsonl")
    decode = CachedDepthSample() if task == "depth" else decode_sample
    pipeline = token_pipeline(cache, "train", batch_size, seed=0, shuffle=100, decode=decode,
                              num_workers=workers, world_size=1)
    start = time.perf_counter()
    cached = sum(len(b) for b in DataLoader(pipeline, batch_size=None, num_workers=workers))
    cached_sps = cached / (time.perf_counter() - start)

    manifest = json.loads((cache / "manifest.json").read_text())
    crop = manifest["views"]["crop_size"] if task == "depth" else manifest["mask_crop_size"]
    data = RawDepth(records, crop) if task == "depth" else RawInsseg(records, crop)
    loader = DataLoader(data, batch_size=batch_size, drop_last=True, num_workers=workers, collate_fn=_collate)
    start, n = time.perf_counter(), 0
    for batch in loader:
        inputs = torch.from_numpy(np.concatenate([b[1][None] if task == "depth" else b[1] for b in batch]))
        if len(inputs):
            tok.model.encode(inputs[:, None].to(device))
        n += len(batch)
    _sync(device)
    fly_sps = n / (time.perf_counter() - start)
    return {"batch_size": batch_size, "solver_cached_sps": round(cached_sps, 1),
            "solver_on_the_fly_sps": round(fly_sps, 1),
            "cached_over_on_the_fly": round(cached_sps / fly_sps, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (demo + cache)")
    parser.add_argument("--project", type=Path, default=None, help="existing project dir (else a temp demo)")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: AIT_DEVICE or auto)")
    parser.add_argument("--batch-size", type=int, default=8, help="solver batch (images)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the solver pipelines")
    args = parser.parse_args()

    device = pick_device(args.device)
    cache_cfg = load_section(args.params, "cache", CacheConfig)
    report: dict = {"device": str(device), "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        project = args.project or _project(args.params, Path(tmp) / "project")
        for task, variant in VARIANTS.items():
            model, config = checkpoint.load_vqvae(project / "models/tokenizer" / variant)
            tok = Tokenizer(model, config, str(project / "models/tokenizer" / variant))
            cache = Path(tmp) / "tokens" / variant
            report[task] = bench_build(task, project, getattr(cache_cfg, task), tok, device, cache)
            report[task].update(bench_solver_input(task, project, cache, tok, device, args.batch_size,
                                                   args.workers))
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()

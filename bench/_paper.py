"""Paper-size set-up shared by bench_train.py and bench_loader.py (a helper, not a bench).

- `paper_config`: params.yaml merged with presets/paper.yaml (`stages.preset.merged`) and validated by
  `pipeline.params.load_all`, written to a temp params file: no hyper-parameter is typed again here;
- `paper_data`: seeded random-init tokenizers of the paper's `tokenizer.{depth,insseg}.model` (saved and
  reloaded through `pipeline.checkpoint`, so the caches carry a real content hash) and small
  paper-resolution token caches built with `pipeline.tokens.build.build_cache` from the shared real samples:
  the NYUv2 sample's BTS train list (480x640 JPEG/PNG RGB + 16-bit PNG depth, `cache.depth` of the preset:
  480 crops, stride 32) and the 40-image COCO sample (`cache.insseg`). Only the "train" split is built
  (the solver reads nothing else); label decoding runs in-process (`num_workers` 0) to spare the CPUs;
- `loader` / `head`: the solver's own loader (`token_pipeline` + `DepthDecoder`/`collate_depth` or
  `InssegDecoder`/`collate_insseg` in an endless `Batches`, as `stages.train_solver._batches` builds it)
  and heads (`stages.train_solver._head`). The depth decoder's augmentation fields are read by name
  from `solver.depth`, so the bench follows whatever augmentation knobs the decoder has.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import statistics
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
import webdataset as wds
import yaml

from pipeline import checkpoint
from pipeline.data import coco, nyu
from pipeline.data.prepare import DepthRules, prepare_depth_split, prepare_insseg_split
from pipeline.models.vqvae import VQVAE
from pipeline.params import load_all
from pipeline.solver.samples import DepthDecoder, InssegDecoder, collate_depth, collate_insseg
from pipeline.solver.train import Batches
from pipeline.tokens.build import Tokenizer, build_cache
from pipeline.tokens.read import CacheInfo, open_cache, token_pipeline
from stages.preset import merged
from stages.train_solver import TRAIN_SPLIT, _head

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data")
DEPTH_LIST = "nyudepthv2_sample_train_files_with_gt.txt"
COCO_JSON = "annotations/instances_sample.json"


def paper_config(tmp: Path, params: Path = ROOT / "params.yaml",
                 preset: Path = ROOT / "presets/paper.yaml") -> dict:
    """Every params section of params.yaml + the paper overlay, validated strictly."""
    combined = merged(yaml.safe_load(params.read_text()), yaml.safe_load(preset.read_text()))
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(combined))
    return load_all(path)


@dataclass
class PaperData:
    cfg: dict  # load_all() of the merged params
    caches: dict[str, CacheInfo]
    tokenizer_dirs: dict[str, Path]
    samples: dict[str, int]
    build_s: dict[str, float]

    def task_cfg(self, task: str):
        return getattr(self.cfg["solver"], task)

    def decoder(self, task: str, seed: int = 0):
        """(decode, collate) of the solver's loader for `task`."""
        m, cfg = self.caches[task].manifest, self.task_cfg(task)
        if task == "depth":
            knobs = {f.name: getattr(cfg, f.name) for f in fields(DepthDecoder) if f.name not in
                     ("crop_size", "seed", "_rng")}
            return DepthDecoder(m["views"]["crop_size"], seed=seed, **knobs), collate_depth
        ids = [c["id"] for c in m["categories"]]
        return InssegDecoder(cfg.image_size, cfg.scale_range, cfg.color_jitter, ids, m["mask_crop_size"],
                             seed), collate_insseg

    def loader(self, task: str, batch: int, seed: int = 0, workers: int = 0) -> Batches:
        """The solver's endless batches of `task` (decode + augment + collate), a fresh epoch when done."""
        decode, collate = self.decoder(task, seed)
        cache = self.caches[task]

        def make(epoch: int):
            pipe = token_pipeline(cache.root, TRAIN_SPLIT, batch, seed + epoch, decode=decode,
                                  expected_hash=cache.tokenizer_hash, num_workers=workers, collate=collate)
            return wds.WebLoader(pipe, batch_size=None, num_workers=workers) if workers else pipe

        return Batches(make)

    def head(self, task: str):
        """DepthHead / InssegHead with the frozen tokenizer the cache was built with (hash-checked)."""
        return _head(task, self.caches[task], self.tokenizer_dirs[task], self.task_cfg(task))


def _tokenizer(cfg: dict, task: str, variant: str, directory: Path) -> Tokenizer:
    tcfg = getattr(cfg["tokenizer"], task)
    known = cfg["tokenizer"].variants
    mask_ratio = known[variant].mask_ratio if variant in known else 0.0
    torch.manual_seed(0)
    checkpoint.save(directory, VQVAE(tcfg.model), tcfg.model,
                    {"kind": "vqvae", "task": task, "variant": variant, "mask_ratio": mask_ratio,
                     "train": {"crop_size": tcfg.train.crop_size}})
    model, config = checkpoint.load_vqvae(directory)
    return Tokenizer(model, config, str(directory))


def _records(cfg: dict, task: str, data: Path) -> tuple[list[dict], list[dict] | None]:
    """Prepared train records of the shared sample (the `prepare` stage's validation), categories."""
    if task == "depth":
        root = data / "nyuv2_sample"
        rules = DepthRules("train", cfg["tokenizer"].depth.train.crop_size, cfg["cache"].depth.crop_size)
        result = prepare_depth_split(nyu.list_depth_samples(root, DEPTH_LIST, "sync"), root, "sync", rules)
        categories = None
    else:
        root = data / "coco_sample"
        index = coco.load_coco(root / COCO_JSON, root / "images")
        result = prepare_insseg_split(index)
        categories = [{"id": c["id"], "name": c["name"]} for c in index.categories]
    if result.skipped:
        raise SystemExit(f"{root}: {len(result.skipped)} samples failed validation: {result.skipped[0]}")
    return result.records, categories


def paper_data(tmp: Path, tasks: list[str], device: torch.device, workers: int = 0,
               data: Path = DATA) -> PaperData:
    """Tokenizers + train-split caches of `tasks` under `tmp`; shards sized so `workers` each get one."""
    cfg = paper_config(tmp)
    variants = {"depth": cfg["tokenizer"].solver_depth_variant, "insseg": "insseg"}
    caches, dirs, samples, build_s = {}, {}, {}, {}
    for task in tasks:
        dirs[task] = tmp / "tokenizer" / variants[task]
        tok = _tokenizer(cfg, task, variants[task], dirs[task])
        records, categories = _records(cfg, task, data)
        per_shard = -(-len(records) // max(workers, 1))
        cache_cfg = replace(getattr(cfg["cache"], task), shard_max_samples=per_shard, num_workers=0)
        start = time.perf_counter()
        build_cache(tmp / "tokens" / variants[task], task, {"train": records}, tok, cache_cfg, device,
                    categories=categories)
        build_s[task] = round(time.perf_counter() - start, 2)
        caches[task], samples[task] = open_cache(tmp / "tokens" / variants[task]), len(records)
    return PaperData(cfg, caches, dirs, samples, build_s)


# --------------------------------------------------------------------------------------------------
# measuring


class Timed:
    """An iterator wrapper recording the wall time of every `next()` (the data wait)."""

    def __init__(self, it) -> None:
        self.it, self.waits = it, []

    def __next__(self):
        start = time.perf_counter()
        batch = next(self.it)
        self.waits.append(time.perf_counter() - start)
        return batch


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def peak_rss_bytes() -> int:
    """Peak resident set of this whole process since start or `reset_peak_rss` (ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Restart the peak RSS from the current RSS (Linux: "5" to /proc/self/clear_refs); False if unable."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc malloc_trim; a no-op elsewhere), so that
    memory a finished phase freed does not count in the next phase's RSS."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass

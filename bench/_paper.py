"""Paper-size set-up shared by bench_train.py and bench_loader.py (a helper, not a bench).

- `paper_config`: params.yaml merged with presets/paper.yaml (`pipeline.presets.merged`) and validated by
  `pipeline.core.params.load_all`, written to a temp params file: no hyper-parameter is typed again here;
- `paper_data`: seeded random-init tokenizers of the paper's `tokenizer.<task>.model` for the variants
  `tokenizer.solver_variants` names (saved and reloaded through `pipeline.core.checkpoint`, so the caches carry
  a real content hash) and small paper-resolution token caches built from the shared real samples the way
  `cache_tokens` builds them (`pipeline.jobs.cache.cache_job`): the task's `cache_layout` over the
  key-sorted prepared records, then `pipeline.token_cache.build.build_cache`. Samples: the NYUv2 sample's BTS
  train list (480x640 JPEG/PNG RGB + 16-bit PNG depth, `cache.depth` of the preset: 480 crops, stride 32)
  and the 40-image COCO sample (`cache.insseg`), validated by `pipeline.data.prepare` and written as
  `ait prepare` writes them (records, `categories.json`, report). Only the "train" split is built (the
  solver reads nothing else); label decoding runs in-process (`num_workers` 0) to spare the CPUs;
- `examples` / `loader` / `loss_adapter` / `run_spec`: the solver's own pieces from
  `pipeline.jobs.train_solver`, through the task protocol (`get_task(task)`): the task's (decode, collate)
  (`DepthExamples`/`collate_depth`, `InssegExamples`/`collate_insseg`) in the endless `Batches` of
  `run.batches`, its loss adapter (`DepthLoss` / `InssegLoss`) around the hash-checked frozen tokenizer
  (`run.loss_adapter`), and the `RunSpec` of a run built from the merged params.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml

from pipeline.core import checkpoint
from pipeline.core.params import load_all
from pipeline.data import coco, nyu
from pipeline.data.prepare import FrameRules, SplitResult
from pipeline.data.prepare_run import Prepared, write_prepared
from pipeline.jobs.train_solver import TRAIN_SPLIT, RunSpec, batches, loss_adapter
from pipeline.models.vqvae import VQVAE, load_vqvae
from pipeline.presets import merged
from pipeline.solver_training.train import Batches
from pipeline.tasks.base import TrainingRecipe, read_split
from pipeline.tasks.depth.prepare import prepare_depth_split
from pipeline.tasks.insseg.prepare import prepare_insseg_split
from pipeline.tasks.registry import get_task
from pipeline.token_cache.build import CacheJob, Tokenizer, build_cache
from pipeline.token_cache.read import CacheInfo, open_cache

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
        """params `solver.<task>` (the task's `configs.solver`)."""
        return getattr(self.cfg["solver"], task)

    def recipe(self, task: str) -> TrainingRecipe:
        """`Task.training` of `task` on its cache."""
        return get_task(task).training(self.caches[task].manifest, self.task_cfg(task))

    def examples(self, task: str, seed: int = 0):
        """(decode, collate) of the solver's loader for `task` (`TrainingRecipe.examples` and `collate`)."""
        recipe = self.recipe(task)
        return recipe.examples(seed), recipe.collate

    def loader(self, task: str, batch: int, seed: int = 0, workers: int = 0) -> Batches:
        """The solver's endless batches of `task` (decode + augment + collate), a fresh epoch when done."""
        return batches(self.recipe(task), self.caches[task], batch, workers, seed)

    def loss_adapter(self, task: str):
        """The task's loss adapter (`DepthLoss` / `InssegLoss`) with the frozen tokenizer the cache was
        built with (hash-checked)."""
        return loss_adapter(self.recipe(task), self.caches[task], self.tokenizer_dirs[task])

    def run_spec(self, run: str) -> RunSpec:
        """The `RunSpec` of `solver.runs.<run>` from the merged params, as `pipeline.jobs.train_solver.load_run`
        reads it (but from `cfg`, so a bench's overrides of it apply)."""
        solver, cfg = self.cfg["solver"], self.cfg["solver"].runs[run]
        tasks = {t: self.task_cfg(t) for t in cfg.tasks}
        variants = {t: self.cfg["tokenizer"].solver_variants[t] for t in cfg.tasks}
        return RunSpec(run, cfg, tasks, variants, solver.backbone, solver.model, solver.num_bins,
                       solver.spare_codes, self.cfg["base"].seed)


def _tokenizer(cfg: dict, task: str, variant: str, directory: Path) -> Tokenizer:
    tcfg = getattr(cfg["tokenizer"], task)
    known = cfg["tokenizer"].variants
    mask_ratio = known[variant].mask_ratio if variant in known else 0.0
    torch.manual_seed(0)
    checkpoint.save(directory, VQVAE(tcfg.model), tcfg.model,
                    {"kind": "vqvae", "task": task, "variant": variant, "mask_ratio": mask_ratio,
                     "train": {"crop_size": tcfg.train.crop_size}})
    model, config = load_vqvae(directory)
    return Tokenizer(model, config, str(directory))


def _depth_sample(cfg: dict, data: Path) -> tuple[Path, SplitResult, dict]:
    root = data / "nyuv2_sample"
    rules = FrameRules("train", cfg["tokenizer"].depth.train.crop_size, cfg["cache"].depth.crop_size)
    entries = nyu.list_depth_samples(root, DEPTH_LIST, "sync")
    return root, prepare_depth_split(entries, root, "sync", rules), {}


def _insseg_sample(cfg: dict, data: Path) -> tuple[Path, SplitResult, dict]:
    root = data / "coco_sample"
    index = coco.load_coco(root / COCO_JSON, root / "images")
    categories = [{"id": c["id"], "name": c["name"]} for c in index.categories]
    return root, prepare_insseg_split(index), {"categories.json": categories}


# the shared sample of each task's dataset, validated as `ait prepare <task>` validates it (a data source,
# not a task method: the task protocol starts at the prepared records)
SAMPLES = {"depth": _depth_sample, "insseg": _insseg_sample}


def _prepare(cfg: dict, task: str, data: Path, out: Path) -> Path:
    """The shared sample's train split of `task`, written to `out` as `ait prepare` writes it."""
    if task not in SAMPLES:
        raise SystemExit(f"no shared sample for task {task!r} (known: {', '.join(SAMPLES)})")
    root, result, extra = SAMPLES[task](cfg, data)
    if result.skipped:
        raise SystemExit(f"{root}: {len(result.skipped)} samples failed validation: {result.skipped[0]}")
    write_prepared(task, Prepared(f"bench sample {root}", {TRAIN_SPLIT: result}, extra),
                   cfg["data"].max_bad_fraction, out, log=lambda _line: None)
    return out


def paper_data(tmp: Path, tasks: list[str], device: torch.device, workers: int = 0,
               data: Path = DATA) -> PaperData:
    """Tokenizers + train-split caches of `tasks` under `tmp`; shards sized so `workers` each get one."""
    cfg = paper_config(tmp)
    variants = cfg["tokenizer"].solver_variants
    caches, dirs, samples, build_s = {}, {}, {}, {}
    for task in tasks:
        dirs[task] = tmp / "tokenizer" / variants[task]
        tok = _tokenizer(cfg, task, variants[task], dirs[task])
        prepared = _prepare(cfg, task, data, tmp / "prepared" / task)
        splits = {TRAIN_SPLIT: sorted(read_split(prepared, TRAIN_SPLIT), key=lambda r: r["key"])}
        per_shard = -(-len(splits[TRAIN_SPLIT]) // max(workers, 1))
        cache_cfg = replace(getattr(cfg["cache"], task), shard_max_samples=per_shard, num_workers=0)
        layout = get_task(task).cache_layout(splits, tok, cache_cfg, prepared)
        job = CacheJob(task, layout, splits, tok, cache_cfg)
        start = time.perf_counter()
        build_cache(tmp / "tokens" / variants[task], job, device)
        build_s[task] = round(time.perf_counter() - start, 2)
        caches[task], samples[task] = open_cache(tmp / "tokens" / variants[task]), len(splits[TRAIN_SPLIT])
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

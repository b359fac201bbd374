"""Token-cache throughput: what pre-tokenising costs, and what reading the cache saves the solver.

Prints one JSON object with, per task (depth, insseg):
(a) `decode_only_sps`: samples/s of the build's DataLoader alone (read files, decode labels, cut the depth
    views / mask crops); `tokenise_sps`: the same plus the batched tokenizer encode; `build_sps`: the
    whole `build_cache` (shards + zarr + manifest); and the ratios `tokenise_over_decode`,
    `build_over_decode`;
(b) `solver_cached_sps`: samples/s of the solver's own input pipeline over the cache (the task's
    `examples`, `DepthExamples` / `InssegExamples`, with the params' `solver.<task>` augmentation: a random
    cached view; the configured LSJ jitter), including the fallback encodes the solver performs for
    instance boxes the jitter window truncates (`InssegLoss.targets`; `fallback_fraction` is the share of
    objects encoded so), against
    `solver_on_the_fly_sps`: the same pipeline with every depth view / object crop encoded by the frozen
    tokenizer on the same device per batch, as the official code does (PAPER_NOTES §7.1); and
    `cached_over_on_the_fly`. Jittered duplicate boxes are encoded on the fly in both and left out of both.

Every path runs once as a warm-up, then `--repeats` times: `*_sps` is the best run, `*_sps_median` the
median; ratios use the best of each side. `precision` says whether CUDA fp32 may use TF32 (off unless
`--allow-tf32`).

Data: the embedded demo rendered into a temp dir from `--params` (default params.yaml), prepared, with
seeded random-init tokenizers of the params' architecture for the variants `tokenizer.solver_variants`
names (throughput does not depend on training), or an existing project with `--project DIR`
(data/prepared + models/tokenizer/<variant>). The cache is built as `cache_tokens` builds it: the task's
`cache_layout` over the key-sorted prepared splits, then `build_cache` (`pipeline.jobs.cache.cache_job`).

    .venv/bin/python bench/bench_cache.py --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from _timing import rates, set_precision, times
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from pipeline.core import checkpoint
from pipeline.core.config import TokenizerTaskConfig
from pipeline.core.params import load_section, load_value
from pipeline.core.runtime import pick_device
from pipeline.models.vqvae import VQVAE, load_vqvae
from pipeline.tasks.base import read_split
from pipeline.tasks.registry import get_task
from pipeline.token_cache.build import CacheJob, Tokenizer, build_cache, encode_inputs
from pipeline.token_cache.read import Sampling, token_pipeline
from stages.cli import app

TASKS = ("depth", "insseg")  # the tasks with an on-the-fly path below (`ON_THE_FLY`)


def _variant(params: Path, task: str) -> str:
    """The tokenizer variant the task-solver trains `task` on (params `tokenizer.solver_variants`)."""
    return load_value(params, f"tokenizer.solver_variants.{task}")


def _project(params: Path, root: Path) -> Path:
    """Render the demo, prepare it and save random-init tokenizers under `root`."""
    runner = CliRunner()
    root.mkdir(parents=True)
    os.chdir(root)  # the params' dataset roots and the prepared records' paths are relative to it
    for args in (["data", "demo"], *(["prepare", task] for task in TASKS)):
        result = runner.invoke(app, [*args, "--params", str(params)])
        assert result.exit_code == 0, result.output
    for task in TASKS:
        variant = _variant(params, task)
        cfg = load_section(params, f"tokenizer.{task}", TokenizerTaskConfig)
        torch.manual_seed(0)
        checkpoint.save(root / "models/tokenizer" / variant, VQVAE(cfg.model), cfg.model,
                        {"kind": "vqvae", "task": task, "variant": variant, "mask_ratio": 0.0,
                         "train": {"crop_size": cfg.train.crop_size}})
    return root


def _as_is(x):
    return x


def bench_build(task: str, project: Path, cfg, tok: Tokenizer, device: torch.device, out: Path,
                repeats: int) -> dict:
    """(a) decode-only vs decode + encode vs the whole build, samples/s (best and median)."""
    spec, prepared = get_task(task), project / "data/prepared" / task
    splits = {s: sorted(read_split(prepared, s), key=lambda r: r["key"]) for s in spec.splits}
    records = splits[spec.splits[0]]
    layout = spec.cache_layout(splits, tok, cfg, prepared)
    data = layout.items(records)

    def run(encode: bool) -> None:
        loader = DataLoader(data, batch_size=None, num_workers=cfg.num_workers, collate_fn=_as_is)
        batch: list[np.ndarray] = []
        for item in loader:
            batch.append(item.inputs)
            if encode and sum(len(b) for b in batch) >= cfg.batch_size:
                encode_inputs(tok.model, np.concatenate(batch), cfg.batch_size, device, layout.dtype)
                batch = []
        if encode and batch:
            encode_inputs(tok.model, np.concatenate(batch), cfg.batch_size, device, layout.dtype)

    tok.model.eval().to(device)
    total = sum(len(r) for r in splits.values())
    paths = (out.with_name(f"{out.name}-{i}") for i in range(repeats + 1))  # build_cache needs a new dir
    report = {"samples": len(records)}

    def build() -> None:  # as `cache_tokens`: the layout from the records, then the shards, zarr, manifest
        job = CacheJob(task, spec.cache_layout(splits, tok, cfg, prepared), splits, tok, cfg)
        build_cache(next(paths), job, device)

    for name, fn, n in (("decode_only", lambda: run(False), len(records)),
                        ("tokenise", lambda: run(True), len(records)), ("build", build, total)):
        report |= rates(name, n, times(fn, repeats, device))
    shutil.copytree(out.with_name(f"{out.name}-0"), out)  # the cache (b) reads
    return report | {"tokenise_over_decode": round(report["tokenise_sps"] / report["decode_only_sps"], 3),
                     "build_over_decode": round(report["build_sps"] / report["decode_only_sps"], 3)}


def _solver_inputs(task: str, cache: Path, cfg, batch_size: int, workers: int):
    """The solver's own loader over the cache: the task's `examples` (`DepthExamples` / `InssegExamples`:
    the configured LSJ jitter, flips, colour draws) and its collate, as `pipeline.jobs.train_solver.batches`
    wires them."""
    m = json.loads((cache / "manifest.json").read_text())
    recipe = get_task(task).training(m, cfg)
    pipe = token_pipeline(cache, get_task(task).splits[0], Sampling(batch_size, shuffle=100, num_workers=workers,
                                                                  world_size=1), recipe.examples(0), recipe.collate)
    return DataLoader(pipe, batch_size=None, num_workers=workers) if workers else pipe


def _depth_tokens(head, batch: dict, device: torch.device, cached: bool) -> float:
    """Cached: the view's tokens, nothing to encode; on the fly: the drawn view through the tokenizer."""
    if not cached:
        head.tokenizer.encode(batch["depth"].to(device))
    return 0.0 if cached else 1.0


def _insseg_tokens(head, batch: dict, device: torch.device, cached: bool) -> float:
    """Cached: the fallback encodes `InssegLoss.targets` really performs; on the fly: every object crop."""
    if not cached:
        batch = {**batch, "objects": [[{**o, "indices": None} for o in objs] for objs in batch["objects"]]}
    return head.targets(batch, device)[2]


# What each task's training step would encode without a cache (bench knowledge, not a task method):
# mask / depth tokens of one solver batch -> the share of its labels encoded on the fly. Cached: the
# cache's tokens plus the fallback encodes the solver really performs (instance boxes the LSJ window
# truncates); on the fly: every depth view / every object crop goes through the frozen tokenizer, as the
# official code does for all of them (PAPER_NOTES §7.1).
ON_THE_FLY = {"depth": _depth_tokens, "insseg": _insseg_tokens}


def _epoch_rate(task: str, cache: Path, cfg, head, device: torch.device, loader: tuple[int, int],
                repeats: int, cached: bool) -> tuple[list[float], int, float]:
    """Wall times of one pass over the cache's train split, its sample count, the mean fallback share."""
    counts, fractions = [], []

    def epoch() -> None:
        n = 0
        with torch.no_grad():
            for batch in _solver_inputs(task, cache, cfg, *loader):
                fractions.append(ON_THE_FLY[task](head, batch, device, cached))
                n += len(batch["keys"])
        counts.append(n)

    return times(epoch, repeats, device), counts[-1], float(np.mean(fractions))


def bench_solver_input(task: str, cache: Path, tok: Tokenizer, cfg, device: torch.device,
                       loader: tuple[int, int], repeats: int) -> dict:
    """(b) solver input samples/s, `loader` = (batch size, workers): cached tokens (+ the real fallback
    encodes) vs tokenising on the fly."""
    tok.model.eval().to(device)
    m = json.loads((cache / "manifest.json").read_text())
    head = get_task(task).training(m, cfg).loss(tok.model)  # DepthLoss / InssegLoss
    out: dict = {"batch_size": loader[0]}
    for name, cached in (("solver_cached", True), ("solver_on_the_fly", False)):
        t, n, fallback = _epoch_rate(task, cache, cfg, head, device, loader, repeats, cached)
        out |= rates(name, n, t)
        if cached:
            out["fallback_fraction"] = round(fallback, 4)
    out["cached_over_on_the_fly"] = round(out["solver_cached_sps"] / out["solver_on_the_fly_sps"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (demo + cache)")
    parser.add_argument("--project", type=Path, default=None, help="existing project dir (else a temp demo)")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: AIT_DEVICE or auto)")
    parser.add_argument("--batch-size", type=int, default=8, help="solver batch (images)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the solver pipelines")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path after a warm-up")
    parser.add_argument("--allow-tf32", action="store_true", help="let CUDA fp32 matmuls/convs use TF32")
    args = parser.parse_args()

    device = pick_device(args.device)
    report: dict = {"device": str(device), "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
                    "precision": set_precision(args.allow_tf32)}
    with tempfile.TemporaryDirectory() as tmp:
        params, here = args.params.resolve(), Path.cwd()
        project = args.project.resolve() if args.project else _project(params, Path(tmp) / "project")
        os.chdir(project)  # the prepared records' paths are relative to the project
        for task in TASKS:
            spec, variant = get_task(task), _variant(params, task)
            model, config = load_vqvae(project / "models/tokenizer" / variant)
            tok = Tokenizer(model, config, str(project / "models/tokenizer" / variant))
            cache = Path(tmp) / "tokens" / variant
            solver_cfg = load_section(params, f"solver.{task}", spec.configs.solver)
            build_cfg = load_section(params, f"cache.{task}", spec.configs.cache)
            report[task] = bench_build(task, project, build_cfg, tok, device, cache, args.repeats)
            report[task] |= bench_solver_input(task, cache, tok, solver_cfg, device,
                                               (args.batch_size, args.workers), args.repeats)
        os.chdir(here)
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()

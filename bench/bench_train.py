"""Training throughput of the paper's task-solver runs (depth, insseg, joint); prints one JSON object.

Built through the real code from params.yaml + presets/paper.yaml (never typed again): `build_ait`
(SwinV2-B, d256 6+6 solver), `param_groups` + `build_optimizer` + `build_scheduler`, `TrainStep` with
the tasks' loss adapters (`Task.loss_adapter`: `DepthLoss` / `InssegLoss`) holding seeded random-init
paper-size tokenizers, and the real `pipeline.solver_training.train.fit` loop (autocast_ctx, backward, grad clip,
AdamW step, schedule); vocabulary, sequence length and backbone input side through the task protocol, as
`pipeline.jobs.train_solver` derives them. Inputs are REAL batches of the solver's own loader (bench/_paper.py)
over small paper-resolution token caches built in a temp dir from the shared samples: 4 NYUv2 frames
(480x640, 480 crops), 40 COCO images (LSJ 0.1-3.0 at 640, 100 queries), repeated as epochs.

Per run: images/s; step time split into data wait (`next()` on the loader: in-process unless --workers,
which needs workers x batch <= samples) and compute (the rest, incl. the loss adapters' host-side
target building), medians over the timed steps after --warmup; peak memory over the timed steps (CUDA:
max_memory_allocated; CPU: the process-wide ru_maxrss, restarted via /proc/self/clear_refs after freed
heap is handed back, else since start); FLOPs per image of one forward + backward of the whole
TrainStep on a real batch (FlopCounterMode, the forward split into backbone, solver and the rest:
tokenizer encodes / soft decodes, losses; no optimizer), counted in the first warm-up step (which makes
no optimizer step; under the counter's dispatch mode it takes ~1.8x a plain step's memory), or one extra
step with --warmup 0. With `solver.backbone.grad_checkpointing` (params, or --grad-checkpointing, for
host memory at 640²) the recomputed Swin block forwards are left out of the model FLOPs (`recomputed`).
On CUDA, MFU against the bf16 dense peak (table below or --peak-tflops). And
`consume_images_per_s_at_40pct_h100_mfu` = 0.4 x 989e12 / flops_per_image, the rate one GPU would eat
images, to compare with bench_loader.py without a GPU. A CUDA sync closes every step (exact split).
Each run's JSON also goes to stderr as soon as it is done.

Batch per process: 1 per task on CPU; on CUDA rank 0's share when train-solver deals the paper's global
batch over --gpus ranks (default 8; pipeline/solver_training/shares.py): depth 24/8 = 3, insseg 16/8 = 2, joint
4 NYU + 60 COCO -> 1 + 7 (ranks 4-7 get 0 + 8). --batch N overrides. The task losses are weighted by
their share of the step's images, as the stage does.

    .venv/bin/python bench/bench_train.py --device cpu --runs depth --steps 2 --warmup 1
    .venv/bin/python bench/bench_train.py --device cpu --runs insseg,joint --grad-checkpointing
    torchrun --nproc_per_node=1 bench/bench_train.py --device cuda
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from _paper import (
    DATA,
    PaperData,
    Timed,
    median,
    paper_config,
    paper_data,
    peak_rss_bytes,
    release_memory,
    reset_peak_rss,
)
from _timing import sync
from torch.utils.flop_counter import FlopCounterMode

from pipeline.core.optim import build_optimizer, build_scheduler
from pipeline.core.runtime import (
    autocast_ctx,
    dist_info,
    init_distributed,
    pick_device,
    seed_everything,
    wrap_ddp,
)
from pipeline.jobs.train_solver import run_backbone
from pipeline.models.ait import build_ait, param_groups, solver_config
from pipeline.solver_training.shares import rank_batches, rank_loss_weights
from pipeline.solver_training.steps import TrainStep
from pipeline.solver_training.train import Cadence, Trainer, fit
from pipeline.tasks.registry import get_task, vocab_for

H100_PEAK = 989e12  # H100 SXM bf16 dense FLOP/s
TARGET_MFU = 0.4
PREFIX = "TrainStep.model."  # FlopCounterMode's module names inside the TrainStep
BLOCK = re.compile(re.escape(PREFIX) + r"backbone\.body\.layers\.\d+\.blocks\.\d+")  # timm's checkpoint unit
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # bf16 dense; H100 SXM (PCIe: 756)


def consume_images_per_s(flops_per_image: float, mfu: float = TARGET_MFU, peak: float = H100_PEAK) -> float:
    """Images/s one GPU trains at `mfu` of `peak` FLOP/s when an image costs `flops_per_image` (fwd+bwd)."""
    return mfu * peak / flops_per_image


def device_peak(device: torch.device, override: float | None) -> tuple[float | None, str | None]:
    """(bf16 dense peak FLOP/s, where it came from) for MFU; (None, None) on CPU."""
    if override:
        return override * 1e12, f"--peak-tflops {override}"
    if device.type != "cuda":
        return None, None
    name = torch.cuda.get_device_name(device)
    key = next((k for k in PEAK_TFLOPS if k in name), None)
    return (PEAK_TFLOPS[key] * 1e12, f"{key} ({name})") if key else (None, f"unknown {name}: --peak-tflops")


def per_process_batch(global_batch: dict[str, int], gpus: int) -> tuple[dict[str, int], int]:
    """Rank 0's images per task when the paper's global batch is dealt over `gpus` ranks (as train-solver
    does: pipeline/solver_training/shares.py); tasks it gets none of are left out."""
    local = rank_batches(global_batch, 0, gpus)
    return {t: n for t, n in local.items() if n}, gpus


def build_run(data: PaperData, run: str, device: torch.device):
    """(TrainStep, AiT, optimizer, scheduler, run config) exactly as pipeline/jobs/train_solver.py wires them."""
    spec = data.run_spec(run)
    cfg = spec.cfg
    manifests = {t: data.caches[t].manifest for t in spec.tasks}
    vocab = vocab_for(spec.num_bins, manifests, spec.spare_codes)
    recipes = {t: get_task(t).training(manifests[t], c) for t, c in spec.tasks.items()}
    length = max(r.sequence_length for r in recipes.values())
    backbone = run_backbone(spec.backbone, recipes)
    model = build_ait(backbone, solver_config(spec.model, length, cfg.parallel), vocab)
    weights = rank_loss_weights(cfg.batch_size, cfg.loss_weights, 0, 1)  # the whole step's task shares
    step = TrainStep(model, {t: data.loss_adapter(t) for t in spec.tasks}, weights, vocab).to(device)
    optimizer = build_optimizer(param_groups(model, cfg.optim.lr, cfg.optim.weight_decay, cfg.layer_decay),
                                cfg.optim)
    return step, model, optimizer, build_scheduler(optimizer, cfg.optim, cfg.steps), cfg


def count_flops(net: torch.nn.Module, batch: dict, generator: torch.Generator, device: torch.device) -> dict:
    """FLOPs of one TrainStep forward (split by module) and its backward, as fit runs them (no optimizer).

    Two counters: FlopCounterMode attributes forward ops to modules reliably, backward ops not always.
    With gradient checkpointing the backward recomputes every Swin block's forward: `fwd_bwd` leaves
    that out (model FLOPs), `recomputed` says how much it was.
    """
    with FlopCounterMode(display=False) as fwd, autocast_ctx(device):
        loss, _ = net(batch, generator)
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    net.zero_grad(set_to_none=True)
    counts = {k: sum(v.values()) for k, v in fwd.get_flop_counts().items()}
    f, b = fwd.get_total_flops(), bwd.get_total_flops()
    backbone, solver = counts.get(PREFIX + "backbone", 0), counts.get(PREFIX + "solver", 0)
    blocks = sum(v for k, v in counts.items() if BLOCK.fullmatch(k))
    stages = net.model.backbone.body.layers
    recomputed = blocks if any(getattr(stage, "grad_checkpointing", False) for stage in stages) else 0
    return {"fwd_bwd": f + b - recomputed, "forward": f, "backward": b, "recomputed": recomputed,
            "forward_backbone": backbone, "forward_solver": solver, "forward_other": f - backbone - solver}


def flops_per_image(data: PaperData, run: str, device: torch.device, batch: dict[str, int]) -> dict:
    """Per-image model FLOPs (fwd+bwd) of `run` at `batch`, one real batch per task; for bench_loader.

    Counted with the backbone's gradient checkpointing on: the same model FLOPs (the recompute is left
    out, see `count_flops`) in a fraction of the memory.
    """
    solver = data.cfg["solver"]
    cfg = dict(data.cfg, solver=replace(solver, backbone=replace(solver.backbone, grad_checkpointing=True)))
    step, *_ = build_run(replace(data, cfg=cfg), run, device)
    b = {t: next(data.loader(t, n, seed=1)) for t, n in batch.items()}
    flops = count_flops(step.train(), b, torch.Generator().manual_seed(0), device)
    return {k: v / sum(batch.values()) for k, v in flops.items()}


def _steps(ends: list[float], start: float, waits: list[float]) -> dict:
    """Median step time, data wait and compute (= step - wait) from the step end times."""
    durations = [b - a for a, b in zip([start, *ends[:-1]], ends, strict=True)]
    compute = [d - w for d, w in zip(durations, waits, strict=True)]
    return {"step_s": median(durations), "data_wait_s": median(waits), "compute_s": median(compute)}


def bench_run(data: PaperData, run: str, device: torch.device, args, peak: float | None) -> dict:
    torch.manual_seed(0)
    step, model, optimizer, scheduler, cfg = build_run(data, run, device)
    batch, g = per_process_batch(cfg.batch_size, args.gpus)
    if device.type == "cpu" or args.batch:
        batch = {t: args.batch or 1 for t in cfg.tasks}
    images = sum(batch.values())
    loaders = {t: Timed(data.loader(t, n, seed=0, workers=args.workers)) for t, n in batch.items()}
    generator, ends = torch.Generator().manual_seed(0), []

    def log(_step: int, _values: dict) -> None:
        sync(device)
        ends.append(time.perf_counter())

    net, flops = wrap_ddp(step, dist_info(), device), None
    trainer = Trainer(net, model, optimizer, scheduler, generator, device)

    cadence = functools.partial(Cadence, grad_clip=cfg.optim.grad_clip, log_every=1, checkpoint_every=10**9)

    if args.warmup:  # the first warm-up step is the FLOP count (forward + backward, no optimizer step)
        flops = count_flops(net.train(), {t: next(it) for t, it in loaders.items()}, generator, device)
        release_memory()  # the count ran under a dispatch mode that keeps more tensors for backward
        fit(trainer, loaders, cadence(0, args.warmup - 1), log, lambda _s: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_reset = device.type == "cpu" and reset_peak_rss()
    ends.clear()
    start = time.perf_counter()
    last = fit(trainer, loaders, cadence(args.warmup - 1 if args.warmup else 0,
                                         args.warmup + args.steps - (1 if args.warmup else 0)), log, lambda _s: None)
    waits = [sum(w) for w in zip(*(t.waits[args.warmup:] for t in loaders.values()), strict=True)]
    times = _steps(ends, start, waits)
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes()
    flops = flops or count_flops(net, {t: next(it) for t, it in loaders.items()}, generator, device)
    per_image = {k: v / images for k, v in flops.items()}
    out = {"tasks": list(cfg.tasks), "batch_per_process": batch, "global_batch_paper": cfg.batch_size,
           "gpus_for_paper_batch": g, "images_per_step": images, "steps_timed": args.steps,
           "warmup": args.warmup, **{f"{k}_median": round(v, 4) for k, v in times.items()},
           "images_per_s": round(images / times["step_s"], 3),
           "images_per_s_compute_only": round(images / times["compute_s"], 3),
           "peak_memory_bytes": memory,
           "peak_memory_kind": "cuda max_memory_allocated, timed steps" if device.type == "cuda" else
           f"process-wide peak RSS (ru_maxrss), {'timed steps' if rss_reset else 'since start'}",
           "flops_per_image_fwd_bwd": per_image["fwd_bwd"],
           "flops_per_image_detail": {k: per_image[k] for k in per_image if k != "fwd_bwd"},
           "mfu": round(flops["fwd_bwd"] / times["step_s"] / peak, 4) if peak else None,
           "consume_images_per_s_at_40pct_h100_mfu": round(consume_images_per_s(per_image["fwd_bwd"]), 2),
           "backbone_grad_checkpointing": getattr(data.cfg["solver"].backbone, "grad_checkpointing", False),
           "params": {"backbone": sum(p.numel() for p in model.backbone.parameters()),
                      "solver": sum(p.numel() for p in model.solver.parameters())},
           "last_step_logs": {k: float(f"{v:.4g}") for k, v in last.items() if math.isfinite(v)}}
    del step, model, optimizer, scheduler, loaders, net, trainer
    release_memory()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu / cuda (default: AIT_DEVICE or auto)")
    parser.add_argument("--runs", default="depth,insseg,joint", help="comma-separated keys of solver.runs")
    parser.add_argument("--batch", type=int, default=0, help="images per task per step (0: see docstring)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs the paper's global batch is split over")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the 1st: FLOP count)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers per task loader")
    parser.add_argument("--grad-checkpointing", action="store_true",
                        help="turn on solver.backbone.grad_checkpointing for these runs (CPU memory)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak for MFU")
    parser.add_argument("--data", type=Path, default=DATA, help="shared samples root")
    args = parser.parse_args()

    device = pick_device(args.device)
    if init_distributed(device.type).world_size > 1:  # no-op without torchrun / with one process
        raise SystemExit("bench_train.py: one process only (torchrun --nproc_per_node=1)")
    seed_everything(0)  # as train_solver: seeds + deterministic kernels
    runs = args.runs.split(",")
    peak, peak_source = device_peak(device, args.peak_tflops)
    report: dict = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "peak_flops_used": peak, "peak_source": peak_source,
                    "inputs": "real batches of the solver loader over temp paper-resolution caches"}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        tasks = sorted({t for r in runs for t in paper_config(Path(tmp))["solver"].runs[r].tasks})
        data = paper_data(Path(tmp), tasks, device, workers=args.workers, data=args.data)
        if args.grad_checkpointing:
            solver = data.cfg["solver"]
            data.cfg["solver"] = replace(solver, backbone=replace(solver.backbone, grad_checkpointing=True))
        report["cache"] = {"samples": data.samples, "build_s": data.build_s,
                           "setup_s": round(time.perf_counter() - start, 2)}
        for run in runs:
            start = time.perf_counter()
            report[run] = bench_run(data, run, device, args, peak)
            report[run]["wall_s"] = round(time.perf_counter() - start, 2)
            print(json.dumps({run: report[run]}), file=sys.stderr, flush=True)  # survives a later OOM
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

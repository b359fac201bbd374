"""`ait train-solver RUN` — the `train_solver@{depth,insseg,joint}` DVC stages (paper §3.2-3.3, Table 10).

Reads the token caches of the run's tasks (never the raw labels), the frozen tokenizers they were
made with (aux losses, soft decoding, the documented insseg fallback encodes) and the params
`solver.backbone`, `solver.model`, `solver.num_bins`, `solver.spare_codes`, `solver.<task>`, `solver.runs.<run>`,
`base.seed`. Writes `models/solver/<run>/` (safetensors + config.json with the architecture, the
vocabulary layout and the tokenizer hashes it was trained against) and DVCLive logs. The resumable
state lives in `checkpoints/solver/<run>/` until the run completes (see pipeline/solver/train.py);
it is not a DVC out because a `persist` out would disable the stage's run-cache. The same command runs
under `torchrun`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
from pathlib import Path
from typing import Annotated

import torch
import typer
import webdataset as wds

from pipeline import checkpoint
from pipeline.config import (
    BackboneConfig,
    ConfigError,
    DepthTaskConfig,
    InssegTaskConfig,
    SolverModelConfig,
    SolverRunConfig,
)
from pipeline.data.errors import DataError
from pipeline.io import atomic_dir
from pipeline.models.ait import build_ait, param_groups, solver_config
from pipeline.optim import build_optimizer, build_scheduler
from pipeline.params import load_section, load_value, load_variant
from pipeline.runtime import destroy_distributed, init_distributed, pick_device, seed_everything, wrap_ddp
from pipeline.solver.samples import DepthDecoder, InssegDecoder, collate_depth, collate_insseg
from pipeline.solver.shares import rank_batches, rank_loss_weights
from pipeline.solver.steps import DepthHead, InssegHead, TrainStep
from pipeline.solver.train import Batches, fit, load_state, restore_live, save_state, snapshot_live
from pipeline.tasks import insseg as insseg_task
from pipeline.tokens.read import open_cache, token_pipeline
from pipeline.vocab import Vocab
from stages.live import log_step, open_live
from stages.ui import PARAMS_HELP, console, fail_cleanly

TASK_CONFIG = {"depth": DepthTaskConfig, "insseg": InssegTaskConfig}
TRAIN_SPLIT = "train"


def sequence_length(task: str, manifest: dict, cfg) -> int:
    """Decoder positions of one task: the depth token grid, or num_query × tokens per object."""
    h, w = manifest["tokenizer"]["grid"]
    return h * w if task == "depth" else cfg.num_query * insseg_task.tokens_per_object(h * w)


def input_side(task: str, manifest: dict, cfg) -> int:
    """Side of the square images a task feeds the backbone: the cached depth crop, or the instance input."""
    return manifest["views"]["crop_size"] if task == "depth" else cfg.image_size


def run_backbone(backbone: BackboneConfig, tasks: dict, manifests: dict[str, dict]) -> BackboneConfig:
    """The backbone config of a run: built for its largest input side (timm fixes each stage's window and
    shift at build time, so a 640² instance run must not be built for 480²: AiT ref §4.1 shifts all four
    stages on COCO; depth at 480² has one window, no shift, in stages 3-4)."""
    if backbone.img_size is not None:
        raise ConfigError("solver.backbone.img_size: derived from each run's input side (the depth crop, "
                          "solver.insseg.image_size); remove the key")
    side = max(input_side(t, manifests[t], cfg) for t, cfg in tasks.items())
    return dataclasses.replace(backbone, img_size=side)


def _head(task: str, cache, tokenizer_dir: Path, cfg):
    tokenizer, config = checkpoint.load_vqvae(tokenizer_dir)
    if config["content_hash"] != cache.tokenizer_hash:
        raise DataError(f"{cache.root}: cache was built with tokenizer {cache.tokenizer_hash}, but "
                        f"{tokenizer_dir} is {config['content_hash']}; rebuild the cache")
    if task == "depth":
        return DepthHead(tokenizer, cfg)
    return InssegHead(tokenizer, cfg, cache.manifest["mask_crop_size"])


def _batches(task: str, cache, cfg, batch: int, workers: int, seed: int) -> Batches:
    m = cache.manifest
    if task == "depth":
        decode, collate = DepthDecoder(m["views"]["crop_size"], cfg.augment, seed), collate_depth
    else:
        ids = [c["id"] for c in m["categories"]]
        decode = InssegDecoder(cfg.image_size, cfg.scale_range, cfg.color_jitter, ids, m["mask_crop_size"], seed)
        collate = collate_insseg

    def make(epoch: int):
        pipe = token_pipeline(cache.root, TRAIN_SPLIT, batch, seed + epoch, decode=decode,
                              expected_hash=cache.tokenizer_hash, num_workers=workers, collate=collate)
        return wds.WebLoader(pipe, batch_size=None, num_workers=workers) if workers else pipe

    return Batches(make)


@fail_cleanly
def main(
    run: Annotated[str, typer.Argument(help="a key of solver.runs (depth, insseg, joint)")],
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
    caches: Annotated[Path, typer.Option(help="token-cache root")] = Path("data/tokens"),
    tokenizers: Annotated[Path, typer.Option(help="tokenizer checkpoints root")] = Path("models/tokenizer"),
    out: Annotated[Path | None, typer.Option(help="final model dir")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="resumable state dir (persistent)")] = None,
    live_dir: Annotated[Path | None, typer.Option(help="DVCLive dir")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda (default: auto)")] = None,
) -> None:
    """Train the task-solver on the token caches of one run's tasks."""
    cfg = load_section(params, f"solver.runs.{run}", SolverRunConfig)
    tasks = {t: load_section(params, f"solver.{t}", TASK_CONFIG[t]) for t in cfg.tasks}
    backbone_cfg = load_section(params, "solver.backbone", BackboneConfig)
    model_cfg = load_section(params, "solver.model", SolverModelConfig)
    num_bins = load_value(params, "solver.num_bins")
    spare = load_value(params, "solver.spare_codes")
    seed = load_value(params, "base.seed")
    variants = {"depth": load_value(params, "tokenizer.solver_depth_variant"), "insseg": "insseg"}
    chosen_by = {"depth": "tokenizer.solver_depth_variant", "insseg": "tokenizer.variants"}
    for t in tasks:  # before any work: each cache must come from a configured variant of its task
        load_variant(params, variants[t], t, chosen_by[t])
    out, state_dir = out or Path("models/solver") / run, state_dir or Path("checkpoints/solver") / run
    live_dir = live_dir or Path("results/train_solver") / run

    dev = pick_device(device)
    info = init_distributed(dev.type)
    seed_everything(seed)
    opened = {t: open_cache(caches / variants[t], verify=True, variant=variants[t]) for t in tasks}
    vocab = Vocab.from_manifests(num_bins, **{t: c.manifest for t, c in opened.items()}, spare_codes=spare)
    length = max(sequence_length(t, opened[t].manifest, tasks[t]) for t in tasks)
    arch = solver_config(model_cfg, length, cfg.parallel)
    backbone_cfg = run_backbone(backbone_cfg, tasks, {t: c.manifest for t, c in opened.items()})
    model = build_ait(backbone_cfg, arch, vocab)  # same seed on every rank -> same initial weights
    heads = {t: _head(t, opened[t], tokenizers / variants[t], tasks[t]) for t in tasks}
    weights = rank_loss_weights(cfg.batch_size, cfg.loss_weights, info.rank, info.world_size)
    step = TrainStep(model, heads, weights, vocab).to(dev)
    net = wrap_ddp(step, info, dev)
    optimizer = build_optimizer(param_groups(model, cfg.optim.lr, cfg.optim.weight_decay, cfg.layer_decay),
                                cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.steps)
    generator = torch.Generator().manual_seed(seed * 1000 + info.rank)
    fingerprint = hashlib.sha256(json.dumps(
        [dataclasses.asdict(cfg), {t: dataclasses.asdict(c) for t, c in tasks.items()}, dataclasses.asdict(arch),
         dataclasses.asdict(backbone_cfg), dataclasses.asdict(vocab), seed, info.world_size,
         {t: c.tokenizer_hash for t, c in opened.items()}], sort_keys=True, default=str).encode()).hexdigest()
    start = load_state(state_dir, fingerprint, model, optimizer, scheduler, generator)
    local = rank_batches(cfg.batch_size, info.rank, info.world_size)
    batches = {t: _batches(t, opened[t], tasks[t], local[t], cfg.num_workers, seed + 7919 * (start + 1))
               for t in tasks if local[t]}
    if start > 0 and info.rank == 0:
        restore_live(state_dir, live_dir)  # DVC deleted the live folder before re-running the stage
    live = open_live(live_dir, info.rank == 0, resume=start > 0)
    console.print(f"train_solver {run}: tasks {list(tasks)}, V={vocab.size}, steps {start}->{cfg.steps}, "
                  f"device {dev}, {info.world_size} process(es)", highlight=False)
    save = functools.partial(_save_if_rank0, info.rank, state_dir, live_dir, fingerprint, model, optimizer,
                             scheduler, generator)
    last = fit(net, model, batches, optimizer, scheduler, start=start, steps=cfg.steps,
               grad_clip=cfg.optim.grad_clip, device=dev, generator=generator,
               log=lambda s, v: log_step(live, s, v), log_every=cfg.log_every, save=save,
               checkpoint_every=cfg.checkpoint_every)
    live.end()
    if info.rank == 0:
        meta = {"kind": "ait_solver", "run": run, "tasks": list(tasks), "backbone": dataclasses.asdict(backbone_cfg),
                "vocab": dataclasses.asdict(vocab), "tokenizers": {t: {"variant": variants[t],
                "hash": opened[t].tokenizer_hash} for t in tasks},
                "task_configs": {t: dataclasses.asdict(c) for t, c in tasks.items()}, "steps": cfg.steps}
        with atomic_dir(out) as tmp:
            config = checkpoint.save(tmp, model, arch, meta)
        shutil.rmtree(state_dir, ignore_errors=True)  # finished: nothing left to resume
        console.print(f"train_solver {run}: loss {last.get('loss', float('nan')):.4f}, hash "
                      f"{config['content_hash']} -> {out}", highlight=False)
    destroy_distributed()


def _save_if_rank0(rank: int, state_dir: Path, live_dir: Path, fingerprint: str, model, optimizer, scheduler,
                   generator, step: int) -> None:
    if rank == 0:
        save_state(state_dir, fingerprint, step, model, optimizer, scheduler, generator)
        snapshot_live(live_dir, state_dir)

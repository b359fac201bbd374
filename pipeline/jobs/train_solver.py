"""One `train_solver@<run>` from params to checkpoint: wiring, fingerprint, resume and metadata.

`load_run` reads everything the run needs from params and checks it before any work (each task's
variant exists and is of that task). `train_run` opens the caches (every shard sha256-verified), derives
the vocabulary, sequence length and backbone input side from them, builds the model, the tasks' loss
adapters and batch streams, resumes a matching state, trains (`train.fit`) and writes the checkpoint
with what evaluation needs to rebuild it. Nothing here knows a task by name: each is a `Task`.
The same code runs on CPU, CUDA and under torchrun (rank 0 writes; the others hold no-op loggers).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import webdataset as wds

from pipeline.core import checkpoint
from pipeline.core.config import BackboneConfig, ConfigError, SolverModelConfig, SolverRunConfig, check_name
from pipeline.core.errors import DataError
from pipeline.core.io import atomic_dir, sha256_file
from pipeline.core.live import log_step, open_live
from pipeline.core.optim import build_optimizer, build_scheduler
from pipeline.core.params import load_section, load_value, load_variant
from pipeline.core.runtime import destroy_distributed, init_distributed, seed_everything, wrap_ddp
from pipeline.models.ait import build_ait, param_groups, solver_config
from pipeline.models.pretrained import initialise
from pipeline.models.vqvae import load_vqvae
from pipeline.solver_training.shares import rank_batches, rank_loss_weights
from pipeline.solver_training.steps import TrainStep
from pipeline.solver_training.train import (
    Batches,
    Cadence,
    Trainer,
    clear_state,
    fit,
    load_state,
    restore_live,
    save_state,
    snapshot_live,
)
from pipeline.tasks.base import TrainingRecipe
from pipeline.tasks.registry import TASK_SLOTS, get_task, vocab_for
from pipeline.token_cache.read import CacheInfo, Sampling, open_cache, token_pipeline

TRAIN_SPLIT = "train"
EPOCH_SEED_STRIDE = 7919  # a resumed run draws its data order from seed + stride · (start step + 1)


@dataclass(frozen=True)
class RunSpec:
    """Everything params give one run: its config, per task the solver config and tokenizer variant."""

    name: str
    cfg: SolverRunConfig
    tasks: dict[str, Any]  # task name -> solver.<task> config
    variants: dict[str, str]  # task name -> tokenizer variant (tokenizer.solver_variants.<task>)
    backbone: BackboneConfig
    model: SolverModelConfig
    num_bins: int
    spare_codes: int
    seed: int


@dataclass(frozen=True)
class RunPaths:
    caches: Path  # data/tokens
    tokenizers: Path  # models/tokenizer
    out: Path  # models/solver/<run>
    state_dir: Path  # checkpoints/solver/<run> (resumable, deleted once the run completes)
    live_dir: Path  # results/train_solver/<run>


def load_run(params: Path, run: str) -> RunSpec:
    """The run's params, validated; each task's variant must be a configured variant of that task."""
    check_name(run, "solver.runs")
    cfg = load_section(params, f"solver.runs.{run}", SolverRunConfig)
    tasks = {t: load_section(params, f"solver.{t}", get_task(t).configs.solver) for t in cfg.tasks}
    variants = {t: load_value(params, f"tokenizer.solver_variants.{t}") for t in cfg.tasks}
    for t in tasks:
        load_variant(params, variants[t], t, f"tokenizer.solver_variants.{t}")
    return RunSpec(run, cfg, tasks, variants, run_init(load_section(params, "solver.backbone", BackboneConfig),
                                                       cfg, run),
                   load_section(params, "solver.model", SolverModelConfig),
                   load_value(params, "solver.num_bins"), load_value(params, "solver.spare_codes"),
                   load_value(params, "base.seed"))


def run_init(shared: BackboneConfig, cfg: SolverRunConfig, run: str) -> BackboneConfig:
    """The run's backbone config (its `backbone` overrides on the shared section), which must say where the
    weights start: a checkpoint, or scratch on purpose (PAPER_NOTES §4.6: no paper run starts at random)."""
    own = cfg.backbone.init is not None or cfg.backbone.weights is not None
    backbone = cfg.backbone.apply(shared)
    backbone.check_initialised(f"solver.runs.{run}.backbone" if own else "solver.backbone")
    return backbone


def run_backbone(backbone: BackboneConfig, recipes: dict[str, TrainingRecipe]) -> BackboneConfig:
    """The backbone config of a run: built for its largest input side (timm fixes each stage's window and
    shift at build time, so a 640² instance run must not be built for 480²: PAPER_NOTES §4.1 shifts all four
    stages on COCO; depth at 480² has one window, no shift, in stages 3-4)."""
    if backbone.img_size is not None:
        raise ConfigError("solver.backbone.img_size: derived from each run's input side (the dense crop, "
                          "solver.insseg.image_size); remove the key")
    return dataclasses.replace(backbone, img_size=max(r.input_side for r in recipes.values()))


def loss_adapter(recipe: TrainingRecipe, cache: CacheInfo, tokenizer_dir: Path):
    """The task's loss adapter around the frozen tokenizer its cache was built with (hash-checked)."""
    tokenizer, config = load_vqvae(tokenizer_dir)
    if config["content_hash"] != cache.tokenizer_hash:
        raise DataError(f"{cache.root}: cache was built with tokenizer {cache.tokenizer_hash}, but "
                        f"{tokenizer_dir} is {config['content_hash']}; rebuild the cache")
    return recipe.loss(tokenizer)


def batches(recipe: TrainingRecipe, cache: CacheInfo, batch: int, workers: int, seed: int) -> Batches:
    """Endless batches of one task's training examples from its cache (a fresh seeded epoch each pass)."""
    decode = recipe.examples(seed)

    def make(epoch: int):
        sampling = Sampling(batch, seed + epoch, num_workers=workers)
        pipe = token_pipeline(cache.root, TRAIN_SPLIT, sampling, decode, recipe.collate, cache.tokenizer_hash)
        return wds.WebLoader(pipe, batch_size=None, num_workers=workers) if workers else pipe

    return Batches(make)


def fingerprint(spec: RunSpec, arch, backbone: BackboneConfig, vocab, world_size: int,
                caches: dict[str, CacheInfo]) -> str:
    """The identity of a run's state: a saved state is resumed only by the run that wrote it."""
    parts = [dataclasses.asdict(spec.cfg), {t: dataclasses.asdict(c) for t, c in spec.tasks.items()},
             dataclasses.asdict(arch), dataclasses.asdict(backbone), dataclasses.asdict(vocab), spec.seed,
             world_size, {t: c.tokenizer_hash for t, c in caches.items()}]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def train_run(spec: RunSpec, paths: RunPaths, device: torch.device,
              echo: Callable[[str], None] = print) -> dict | None:
    """Train the run and write its checkpoint; returns (on rank 0) the final loss and content hash."""
    info = init_distributed(device.type)
    try:
        return _train(spec, paths, device, info, echo)
    finally:
        destroy_distributed()


def _train(spec: RunSpec, paths: RunPaths, device: torch.device, info, echo) -> dict | None:
    seed_everything(spec.seed)
    caches = {t: open_cache(paths.caches / v, verify=True, variant=v) for t, v in spec.variants.items()}
    recipes = {t: get_task(t).training(caches[t].manifest, cfg) for t, cfg in spec.tasks.items()}
    vocab = vocab_for(spec.num_bins, {t: c.manifest for t, c in caches.items()}, spec.spare_codes)
    length = max(r.sequence_length for r in recipes.values())
    arch = solver_config(spec.model, length, spec.cfg.parallel, TASK_SLOTS)
    backbone = run_backbone(spec.backbone, recipes)
    model = build_ait(backbone, arch, vocab)  # same seed on every rank -> same initial weights
    init = start_weights(model, backbone, echo if info.rank == 0 else lambda line: None)
    heads = {t: loss_adapter(recipes[t], caches[t], paths.tokenizers / spec.variants[t]) for t in spec.tasks}
    cfg = spec.cfg
    weights = rank_loss_weights(cfg.batch_size, cfg.loss_weights, info.rank, info.world_size)
    step = TrainStep(model, heads, weights, vocab).to(device)
    net = wrap_ddp(step, info, device)
    optimizer = build_optimizer(param_groups(model, cfg.optim.lr, cfg.optim.weight_decay, cfg.layer_decay),
                                cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.steps)
    generator = torch.Generator().manual_seed(spec.seed * 1000 + info.rank)
    print_ = fingerprint(spec, arch, backbone, vocab, info.world_size, caches)
    start = load_state(paths.state_dir, print_, model, optimizer, scheduler, generator)
    local = rank_batches(cfg.batch_size, info.rank, info.world_size)
    data_seed = spec.seed + EPOCH_SEED_STRIDE * (start + 1)
    streams = {t: batches(recipes[t], caches[t], local[t], cfg.num_workers, data_seed)
               for t in spec.tasks if local[t]}
    if start > 0 and info.rank == 0:
        restore_live(paths.state_dir, paths.live_dir)  # DVC deleted the live folder before re-running
    live = open_live(paths.live_dir, info.rank == 0, resume=start > 0)
    if info.rank == 0:
        echo(f"train_solver {spec.name}: tasks {list(spec.tasks)}, V={vocab.size}, "
             f"steps {start}->{cfg.steps}, device {device}, {info.world_size} process(es)")
    save = functools.partial(_save_if_rank0, info.rank, paths, print_, model, optimizer, scheduler, generator)
    last = fit(Trainer(net, model, optimizer, scheduler, generator, device), streams,
               Cadence(start, cfg.steps, cfg.optim.grad_clip, cfg.log_every, cfg.checkpoint_every),
               lambda s, v: log_step(live, s, v), save)
    live.end()
    if info.rank != 0:
        return None
    meta = {"kind": "ait_solver", "run": spec.name, "tasks": list(spec.tasks),
            "backbone": dataclasses.asdict(backbone), "init": init, "vocab": dataclasses.asdict(vocab),
            "tokenizers": {t: {"variant": spec.variants[t], "hash": caches[t].tokenizer_hash}
                           for t in spec.tasks},
            "task_configs": {t: dataclasses.asdict(c) for t, c in spec.tasks.items()}, "steps": cfg.steps}
    with atomic_dir(paths.out) as tmp:
        config = checkpoint.save(tmp, model, arch, meta)
    clear_state(paths.state_dir)  # finished: nothing left to resume
    return {"loss": last.get("loss", float("nan")), "hash": config["content_hash"]}


def start_weights(model, backbone: BackboneConfig, echo: Callable[[str], None]) -> dict:
    """Load the run's pretrained checkpoint, if it names one, into the backbone (and the encoder when the
    file carries this project's); returns what the checkpoint's config.json records about the start."""
    if backbone.weights is None:
        return {"init": backbone.init}
    report = initialise(model.backbone, backbone.weights, model.solver)
    for line in report.lines():
        echo(line)
    return {"init": "checkpoint", "sha256": sha256_file(Path(backbone.weights)), "layout": report.layout,
            "backbone_tensors": report.backbone_tensors, "encoder_tensors": report.encoder_tensors,
            "unused": report.unused}


def _save_if_rank0(rank: int, paths: RunPaths, print_: str, model, optimizer, scheduler, generator,
                   step: int) -> None:
    if rank == 0:
        save_state(paths.state_dir, print_, step, model, optimizer, scheduler, generator)
        snapshot_live(paths.live_dir, paths.state_dir)

"""One `train_tokenizer@<variant>` / `eval_tokenizer@<variant>`: params to checkpoint, checkpoint to metrics.

The task of a variant decides its crops, loss and reconstruction metrics (`Task.tokenizer`,
`Task.evaluate_tokenizer`); nothing
here knows a task by name. Training runs the same on CPU, CUDA and under torchrun (rank 0 writes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from pipeline.core import checkpoint
from pipeline.core.config import TokenizerEvalConfig, TokenizerTaskConfig, TokenizerVariant, check_name
from pipeline.core.errors import DataError
from pipeline.core.headline import headline_path, tokenizer_headline
from pipeline.core.io import atomic_dir, write_json, write_json_atomic
from pipeline.core.live import log_step, open_live
from pipeline.core.params import load_section, load_value
from pipeline.core.runtime import destroy_distributed, init_distributed, seed_everything
from pipeline.models.vqvae import VQVAE, load_vqvae
from pipeline.tasks.base import TokenizerEval, TokenizerJob, read_split
from pipeline.tasks.registry import get_task
from pipeline.tokenizer_training.data import EpochSampler
from pipeline.tokenizer_training.train import Placement, fit_tokenizer


@dataclass(frozen=True)
class TokenizerSpec:
    """What params give one tokenizer variant: its task, mask ratio, `tokenizer.<task>` and the seed."""

    variant: str
    spec: TokenizerVariant
    cfg: TokenizerTaskConfig
    seed: int


def load_tokenizer_spec(params: Path, variant: str) -> TokenizerSpec:
    check_name(variant, "tokenizer.variants")
    spec = load_section(params, f"tokenizer.variants.{variant}", TokenizerVariant)
    cfg = load_section(params, f"tokenizer.{spec.task}", TokenizerTaskConfig)
    return TokenizerSpec(variant, spec, cfg, load_value(params, "base.seed"))


def train_variant(ts: TokenizerSpec, prepared: Path, out: Path, live_dir: Path, device: torch.device,
                  echo: Callable[[str], None] = print) -> dict | None:
    """Train the variant on `<prepared>/<task>/train.jsonl`; rank 0 writes `out`; returns its summary."""
    info = init_distributed(device.type)
    try:
        return _train(ts, prepared, out, live_dir, device, info, echo)
    finally:
        destroy_distributed()


def _train(ts: TokenizerSpec, prepared: Path, out: Path, live_dir: Path, device: torch.device, info,
           echo) -> dict | None:
    seed_everything(ts.seed)
    task, t = get_task(ts.spec.task), ts.cfg.train
    folder = prepared / task.name
    records = read_split(folder, task.splits[0])
    recipe = task.tokenizer(TokenizerJob(records, ts.spec, ts.cfg, ts.seed, folder))
    data = recipe.crops
    if len(data) == 0:  # prepare refuses such a split; a hand-edited or foreign manifest may still have one
        raise DataError(f"{folder / task.splits[0]}.jsonl: no training sample for the {task.name} tokenizer; "
                        f"re-run `dvc repro prepare`")
    if t.batch_size % info.world_size:
        raise DataError(f"tokenizer.{task.name}.train.batch_size {t.batch_size} is not divisible by "
                        f"{info.world_size} processes")
    per_rank = t.batch_size // info.world_size
    sampler = EpochSampler(len(data), t.steps * per_rank, ts.seed, info.rank, info.world_size)
    loader = DataLoader(data, batch_size=per_rank, sampler=sampler, num_workers=t.num_workers,
                        drop_last=True, pin_memory=device.type == "cuda")
    arch = recipe.arch
    model = VQVAE(arch, dead_code_threshold=t.dead_code_threshold)  # same seed on every rank: same init
    live = open_live(live_dir, info.rank == 0)
    live.log_params({"variant": ts.variant, "task": task.name, "mask_ratio": ts.spec.mask_ratio,
                     "num_samples": len(data), "world_size": info.world_size})
    if info.rank == 0:
        echo(f"train_tokenizer {ts.variant}: {len(data)} samples, {t.steps} steps, batch {t.batch_size}, "
             f"device {device}, {info.world_size} process(es)")
    last = fit_tokenizer(model, loader, recipe.loss, ts.cfg, Placement(info, device, ts.seed),
                         lambda step, values: log_step(live, step, values))
    live.end()
    if info.rank != 0:
        return None
    with atomic_dir(out) as tmp:
        config = checkpoint.save(tmp, model, arch, {
            "kind": "vqvae", "task": task.name, "variant": ts.variant, "mask_ratio": ts.spec.mask_ratio,
            "train": asdict(t), "num_train_samples": len(data)})
    return {**last, "hash": config["content_hash"]}


def evaluate_variant(variant: str, params: Path, prepared: Path, model_dir: Path, out: Path, headline: Path,
                     device: torch.device, progress: Callable[[int, int], None] | None = None) -> dict:
    """Reconstruction metrics of the held-out split next to the interpolation baseline; writes
    `<out>/metrics.json` and the headline numbers. The task and crop side come from the checkpoint."""
    model, config = load_vqvae(model_dir, variant)
    task = get_task(config["task"])
    cfg = load_section(params, f"evaluate.tokenizer.{task.name}", TokenizerEvalConfig)
    records = read_split(prepared / task.name, task.splits[1])
    metrics: dict[str, Any] = task.evaluate_tokenizer(TokenizerEval(model, config, records,
                                                                    prepared / task.name, cfg.tau,
                                                                    device, progress))
    metrics = {"variant": variant, "task": task.name, "tokenizer_hash": config["content_hash"],
               "num_images": len(records), **metrics}
    with atomic_dir(out) as tmp:
        write_json(tmp / "metrics.json", metrics)
    score = task.tokenizer_score
    write_json_atomic(headline_path(headline, "eval_tokenizer", variant),
                      tokenizer_headline(variant, metrics, score.value[0], score.key))
    return metrics


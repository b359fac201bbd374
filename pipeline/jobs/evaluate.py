"""One `evaluate@<run>`: score a trained solver on every task it was trained for (paper Tables 2-4, 10).

Rebuilds the solver from `models/solver/<run>/config.json`, and per task the frozen tokenizer it names
(its content hash must equal the recorded one) and the token-cache manifest it was trained on (crop
size, class order; hash-checked too). Each task scores its held-out split through `Task.evaluate`
(decoding, metrics next to an image-blind baseline, panels). Writes `<out>/metrics.json`, the tasks'
extra result files (COCO results json), `<out>/panels/<task>_<key>.png`, the same panels as DVCLive
images under `<out>/live`, and the headline numbers. Reads only inference params (`evaluate`), so a
decoding switch re-scores without retraining; how the model was trained comes from its checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from pipeline.core.config import EvalConfig
from pipeline.core.errors import DataError
from pipeline.core.headline import headline_path
from pipeline.core.io import atomic_dir, write_json, write_json_atomic
from pipeline.core.live import open_live
from pipeline.core.params import check_value, from_dict, load_section, load_value
from pipeline.core.runtime import destroy_distributed, init_distributed
from pipeline.core.viz import save_png
from pipeline.models.ait import load_solver
from pipeline.models.vqvae import load_vqvae
from pipeline.tasks import scores
from pipeline.tasks.base import SolverEval, SolverResult, Task, read_split
from pipeline.tasks.registry import get_task
from pipeline.token_cache.manifest import check_tokenizer, read_manifest


@dataclass(frozen=True)
class EvalPaths:
    prepared: Path  # data/prepared
    model_dir: Path  # models/solver/<run>
    tokenizers: Path  # models/tokenizer
    caches: Path  # data/tokens (manifests only)
    out: Path  # results/evaluate/<run>
    headline: Path  # results/headline


@dataclass(frozen=True)
class EvalOptions:
    """What evaluate@<run> reads from params: the shared knobs now, each task's own decoding
    (`evaluate.<task>`) once the checkpoint names the run's tasks."""

    shared: EvalConfig
    params: Path

    def decoding(self, task: Task):
        return load_section(self.params, f"evaluate.{task.name}", task.configs.infer)


def load_options(params: Path, num_panels: int | None = None, max_images: int | None = None) -> EvalOptions:
    """The shared `evaluate` knobs, with command-line overrides for quick runs outside DVC."""
    overrides = {"num_panels": num_panels, "max_images": max_images}
    for name, value in overrides.items():
        if value is not None:
            check_value(f"evaluate.{name}", value, f"--{name.replace('_', '-')}")
    shared = {f.name: load_value(params, f"evaluate.{f.name}") for f in fields(EvalConfig)}
    return EvalOptions(EvalConfig(**(shared | {k: v for k, v in overrides.items() if v is not None})), params)


def frozen_tokenizer(entry: dict, tokenizers: Path, model_dir: Path):
    """The tokenizer the solver was trained with; a different content hash is a one-line error."""
    directory = tokenizers / entry["variant"]
    tokenizer, tok_config = load_vqvae(directory)
    if tok_config["content_hash"] != entry["hash"]:
        raise DataError(f"{directory}: tokenizer {tok_config['content_hash']} is not the {entry['hash']} "
                        f"that {model_dir} was trained with; retrain the solver or restore that tokenizer")
    return tokenizer


def trained_manifest(entry: dict, caches: Path) -> dict:
    """The token-cache manifest the solver was trained on (crop size, class order), hash-checked."""
    root = caches / entry["variant"]
    manifest = read_manifest(root)
    check_tokenizer(manifest, entry["hash"], root)
    return manifest


def evaluate_task(task: Task, model, vocab, config: dict, paths: EvalPaths, opts: EvalOptions,
                  progress: Callable[[str], Any]):
    """`Task.evaluate` of one task of the checkpoint, with everything it needs assembled."""
    entry = config["tokenizers"][task.name]
    device = next(model.parameters()).device
    records = read_split(paths.prepared / task.name, task.splits[1])
    ctx = SolverEval(
        model=model, vocab=vocab,
        tokenizer=frozen_tokenizer(entry, paths.tokenizers, paths.model_dir).to(device),
        manifest=trained_manifest(entry, paths.caches),
        task_cfg=from_dict(task.configs.solver, config["task_configs"][task.name],
                           f"{paths.model_dir}: task_configs.{task.name}"),
        infer_cfg=opts.decoding(task), opts=opts.shared, prepared=paths.prepared / task.name,
        records=records[: opts.shared.max_images] if opts.shared.max_images > 0 else records,
        progress=progress)
    return task.evaluate(ctx)


def evaluate_run(run: str, paths: EvalPaths, opts: EvalOptions, device: torch.device,
                 progress: Callable[[str], Any] = lambda label: contextlib.nullcontext(None)) -> dict:
    """Score the checkpoint of `run` on each of its tasks; write every output; returns the metrics.

    Under several processes (torchrun, `AIT_NPROC`) each decodes its share of the held-out batches and
    rank 0 merges, scores and writes; the metrics equal one process's. The other ranks return {}."""
    info = init_distributed(device.type)
    try:
        model, vocab, config = load_solver(paths.model_dir)
        if config.get("run") != run:
            raise DataError(f"{paths.model_dir}: holds run {config.get('run')!r}, not {run!r}")
        model.to(device)
        results = {name: evaluate_task(get_task(name), model, vocab, config, paths, opts, progress)
                   for name in config["tasks"]}
    finally:
        destroy_distributed()
    if info.rank != 0:
        return {}
    return _write(run, results, paths)


def _write(run: str, results: dict[str, SolverResult], paths: EvalPaths) -> dict:
    metrics = {name: r.metrics for name, r in results.items()}
    with atomic_dir(paths.out) as tmp:
        write_json(tmp / "metrics.json", metrics)
        live = open_live(tmp / "live", True)
        for name, result in results.items():
            for file, data in result.files.items():
                (tmp / file).write_bytes(data)
            for key, image in result.panels:
                save_png(image, tmp / "panels" / f"{name}_{key}.png")
                live.log_image(f"{name}_{key}.png", image)
        live.end()
    headline = {run: {k: v for name, m in metrics.items() for k, v in scores.headline(get_task(name), m).items()}}
    write_json_atomic(headline_path(paths.headline, "evaluate", run), headline)
    return metrics

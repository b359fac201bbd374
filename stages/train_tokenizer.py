"""`ait train-tokenizer VARIANT` — the `train_tokenizer@<variant>` DVC stages (paper §3.1, §3.4).

Reads `tokenizer.variants.<variant>`, `tokenizer.<task>` and `base.seed`; trains on
`data/prepared/<task>/train.jsonl`; writes `models/tokenizer/<variant>/{model.safetensors,
config.json}` (config.json carries the architecture and the content hash downstream stages use as the
tokenizer's identity) and DVCLive logs. Runs the same under `torchrun --nproc_per_node=N`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from torch.utils.data import DataLoader

from pipeline import checkpoint
from pipeline.config import TokenizerTaskConfig, TokenizerVariant
from pipeline.data.errors import DataError
from pipeline.io import atomic_dir, read_jsonl
from pipeline.models.vqvae import VQVAE
from pipeline.params import load_section, load_value
from pipeline.runtime import destroy_distributed, init_distributed, pick_device, seed_everything
from pipeline.tokenizers.data import DepthCrops, EpochSampler, MaskCrops
from pipeline.tokenizers.train import LossSpec, fit_tokenizer
from stages.live import log_step, open_live
from stages.ui import PARAMS_HELP, console, fail_cleanly


@fail_cleanly
def main(
    variant: Annotated[str, typer.Argument(help="a key of tokenizer.variants")],
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
    prepared: Annotated[Path, typer.Option(help="prepared-data root")] = Path("data/prepared"),
    out: Annotated[Path | None, typer.Option(help="checkpoint dir (default models/tokenizer/<variant>)")] = None,
    live_dir: Annotated[Path | None, typer.Option(help="DVCLive dir")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: auto)")] = None,
) -> None:
    """Train one VQ-VAE tokenizer variant on the prepared training split."""
    spec = load_section(params, f"tokenizer.variants.{variant}", TokenizerVariant)
    cfg = load_section(params, f"tokenizer.{spec.task}", TokenizerTaskConfig)
    seed = load_value(params, "base.seed")
    out = out or Path("models/tokenizer") / variant
    live_dir = live_dir or Path("results/train_tokenizer") / variant

    dev = pick_device(device)
    info = init_distributed(dev.type)
    seed_everything(seed)
    manifest = _manifest(prepared / spec.task / "train.jsonl")
    records = read_jsonl(manifest)
    t = cfg.train
    data = DepthCrops(records, t.crop_size, seed) if spec.task == "depth" else MaskCrops(records, t.crop_size, seed)
    if len(data) == 0:  # prepare refuses such a split; a hand-edited or foreign manifest may still have one
        raise DataError(f"{manifest}: no training sample for the {spec.task} tokenizer; "
                        f"re-run `dvc repro prepare`")
    if t.batch_size % info.world_size:
        raise DataError(f"tokenizer.{spec.task}.train.batch_size {t.batch_size} is not divisible by "
                        f"{info.world_size} processes")
    per_rank = t.batch_size // info.world_size
    sampler = EpochSampler(len(data), t.steps * per_rank, seed, info.rank, info.world_size)
    loader = DataLoader(data, batch_size=per_rank, sampler=sampler, num_workers=t.num_workers,
                        drop_last=True, pin_memory=dev.type == "cuda")
    # Same seed on every rank -> same initial weights and codebook.
    model = VQVAE(cfg.model, dead_code_threshold=t.dead_code_threshold)
    live = open_live(live_dir, info.rank == 0)
    live.log_params({"variant": variant, "task": spec.task, "mask_ratio": spec.mask_ratio,
                     "num_samples": len(data), "world_size": info.world_size})
    console.print(f"train_tokenizer {variant}: {len(data)} samples, {t.steps} steps, batch {t.batch_size}, "
                  f"device {dev}, {info.world_size} process(es)", highlight=False)
    last = fit_tokenizer(model, loader, t.steps, cfg.optim,
                         LossSpec(spec.task, spec.mask_ratio, t.patch_size), info, dev, seed,
                         lambda step, values: log_step(live, step, values), t.log_every)
    live.end()
    if info.rank == 0:
        with atomic_dir(out) as tmp:
            config = checkpoint.save(tmp, model, cfg.model, {
                "kind": "vqvae", "task": spec.task, "variant": variant, "mask_ratio": spec.mask_ratio,
                "train": asdict(t), "num_train_samples": len(data)})
        console.print(f"train_tokenizer {variant}: loss {last['loss']:.4f}, perplexity "
                      f"{last['perplexity']:.1f}, hash {config['content_hash']} -> {out}", highlight=False)
    destroy_distributed()


def _manifest(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: prepared manifest not found (run `dvc repro prepare`)")
    return path

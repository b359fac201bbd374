"""`ait cache-tokens VARIANT` — the `cache_tokens@<variant>` DVC stages (AiT ref §7.1).

Pre-tokenises the prepared splits of the variant's task with its frozen tokenizer into
`data/tokens/<variant>/` (WebDataset shards + tokens.zarr + manifest.json; see pipeline/tokens). The task,
variant and mask ratio come from the checkpoint's config.json, so the stage reads only `cache.<task>`
from params: changing one tokenizer rebuilds only its own cache. Runs the same under torchrun
(`torchrun --standalone --nproc_per_node=N $(which ait) cache-tokens VARIANT`): each rank builds whole
shards, rank 0 writes zarr and the manifest; the bytes equal a 1-process build's. Progress counts
rank 0's own samples.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from pipeline import checkpoint
from pipeline.config import DepthCacheConfig, InssegCacheConfig
from pipeline.data.errors import DataError
from pipeline.io import read_jsonl
from pipeline.params import load_section
from pipeline.runtime import destroy_distributed, init_distributed, pick_device
from pipeline.tokens.build import Tokenizer, build_cache
from pipeline.tokens.manifest import SPLITS
from stages.ui import PARAMS_HELP, console, fail_cleanly, progress

CACHE_CONFIG = {"depth": DepthCacheConfig, "insseg": InssegCacheConfig}


@fail_cleanly
def main(
    variant: Annotated[str, typer.Argument(help="a key of tokenizer.variants (its checkpoint names it)")],
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
    prepared: Annotated[Path, typer.Option(help="prepared-data root")] = Path("data/prepared"),
    model_dir: Annotated[Path | None, typer.Option(help="tokenizer checkpoint dir "
                                                        "(default models/tokenizer/<variant>)")] = None,
    out: Annotated[Path | None, typer.Option(help="cache dir (default data/tokens/<variant>)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: auto)")] = None,
) -> None:
    """Tokenise one task's prepared splits with one tokenizer variant into a token cache."""
    model_dir = model_dir or Path("models/tokenizer") / variant
    out = out or Path("data/tokens") / variant
    model, config = checkpoint.load_vqvae(model_dir)
    if config.get("variant") != variant:
        raise DataError(f"{model_dir}: checkpoint is tokenizer variant {config.get('variant')!r}, "
                        f"not {variant!r}")
    task = config["task"]
    cfg = load_section(params, f"cache.{task}", CACHE_CONFIG[task])
    splits = {split: read_jsonl(_existing(prepared / task / f"{split}.jsonl")) for split in SPLITS[task]}
    categories = None
    if task == "insseg":
        categories = json.loads(_existing(prepared / task / "categories.json").read_text())

    dev = pick_device(device)
    info = init_distributed(dev.type)
    start = time.monotonic()
    try:
        with progress(f"cache_tokens {variant}") as cb:
            manifest = build_cache(out, task, splits, Tokenizer(model, config, str(model_dir)), cfg, dev,
                                   categories=categories, rank=info.rank, world_size=info.world_size,
                                   progress=cb)
    finally:
        destroy_distributed()
    if manifest is not None:
        counts = ", ".join(f"{s} {v['samples']} samples/{len(v['shards'])} shards"
                           for s, v in manifest["splits"].items())
        console.print(f"cache_tokens {variant}: {counts}, tokenizer {manifest['tokenizer']['hash']}, "
                      f"{time.monotonic() - start:.1f}s on {dev} x{info.world_size} -> {out}",
                      highlight=False)


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: prepared file not found (run `dvc repro prepare`)")
    return path

"""`ait cache-tokens VARIANT` — the `cache_tokens@<variant>` DVC stages (PAPER_NOTES §7.1).

Pre-tokenises the prepared splits of the variant's task with its frozen tokenizer into
`data/tokens/<variant>/` (WebDataset shards + tokens.zarr + manifest.json; see pipeline/token_cache). Reads
only `cache.<task>` from params (the task comes from the checkpoint). Runs the same under torchrun
(`torchrun --standalone --nproc_per_node=N $(which ait) cache-tokens VARIANT`); progress counts rank 0's
own samples.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.io import check_outputs
from pipeline.core.runtime import pick_device
from pipeline.jobs.cache import cache_job, cache_variant
from stages.ui import PARAMS_HELP, console, fail_cleanly, progress
from stages.workers import in_workers


@fail_cleanly
@in_workers
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
    job = cache_job(variant, params, prepared, model_dir or Path("models/tokenizer") / variant)
    out, dev, start = out or Path("data/tokens") / variant, pick_device(device), time.monotonic()
    check_outputs(out)
    with progress(f"cache_tokens {variant}") as cb:
        manifest = cache_variant(job, out, dev, cb)
    if manifest is not None:
        counts = ", ".join(f"{s} {v['samples']} samples/{len(v['shards'])} shards"
                           for s, v in manifest["splits"].items())
        console.print(f"cache_tokens {variant}: {counts}, tokenizer {manifest['tokenizer']['hash']}, "
                      f"{time.monotonic() - start:.1f}s on {dev} -> {out}")

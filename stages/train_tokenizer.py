"""`ait train-tokenizer VARIANT` — the `train_tokenizer@<variant>` DVC stages (paper §3.1, §3.4).

Reads `tokenizer.variants.<variant>`, `tokenizer.<task>` and `base.seed`; trains on
`data/prepared/<task>/train.jsonl`; writes `models/tokenizer/<variant>/{model.safetensors,
config.json}` (config.json carries the architecture and the content hash downstream stages use as the
tokenizer's identity) and DVCLive logs (pipeline/jobs/tokenizer.py). Runs under `torchrun`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.io import check_outputs
from pipeline.core.runtime import pick_device
from pipeline.jobs.tokenizer import load_tokenizer_spec, train_variant
from stages.ui import PARAMS_HELP, console, fail_cleanly
from stages.workers import in_workers


@fail_cleanly
@in_workers
def main(
    variant: Annotated[str, typer.Argument(help="a key of tokenizer.variants")],
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
    prepared: Annotated[Path, typer.Option(help="prepared-data root")] = Path("data/prepared"),
    out: Annotated[Path | None, typer.Option(help="checkpoint dir (default models/tokenizer/<variant>)")] = \
        None,
    live_dir: Annotated[Path | None, typer.Option(help="DVCLive dir")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: auto)")] = None,
) -> None:
    """Train one VQ-VAE tokenizer variant on the prepared training split."""
    spec = load_tokenizer_spec(params, variant)
    out = out or Path("models/tokenizer") / variant
    live_dir = live_dir or Path("results/train_tokenizer") / variant
    check_outputs(out, live_dir)
    done = train_variant(spec, prepared, out, live_dir, pick_device(device), echo=console.print)
    if done is not None:
        console.print(f"train_tokenizer {variant}: loss {done['loss']:.4f}, perplexity "
                      f"{done['perplexity']:.1f}, hash {done['hash']} -> {out}")

"""`ait eval-tokenizer VARIANT` — the `eval_tokenizer@<variant>` DVC stages (paper Tables 1, 8, 12).

Scores the trained tokenizer's reconstructions of the held-out split next to the interpolation-tokenizer
baseline (the task's own protocol: NYU depth metrics, COCO mask AP, mIoU) and writes `metrics.json` plus
the headline numbers (`results/headline/eval_tokenizer_<variant>.json`). The task and crop side come from
the checkpoint; params give only the soft decode's temperature (`evaluate.tokenizer.<task>`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.io import check_outputs
from pipeline.core.runtime import pick_device
from pipeline.jobs.tokenizer import evaluate_variant
from pipeline.tasks.registry import get_task
from stages.ui import PARAMS_HELP, console, fail_cleanly, progress


@fail_cleanly
def main(
    variant: Annotated[str, typer.Argument(help="a key of tokenizer.variants")],
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
    prepared: Annotated[Path, typer.Option(help="prepared-data root")] = Path("data/prepared"),
    model_dir: Annotated[Path | None, typer.Option(help="checkpoint dir")] = None,
    out: Annotated[Path | None, typer.Option(help="results dir")] = None,
    headline: Annotated[Path | None, typer.Option(help="headline metrics dir (default: results/headline "
                                                          "beside the results dir)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda (default: auto)")] = None,
) -> None:
    """Reconstruction metrics of one tokenizer variant against the interpolation baseline."""
    out = out or Path("results/eval_tokenizer") / variant
    check_outputs(out)
    with progress(f"eval_tokenizer {variant}") as cb:
        m = evaluate_variant(variant, params, prepared, model_dir or Path("models/tokenizer") / variant, out,
                             headline or out.parent.parent / "headline", pick_device(device), cb)
    score = get_task(m["task"]).tokenizer_score
    key, label = score.value[0], score.label
    console.print(f"eval_tokenizer {variant}: {label} hard {m['vqvae_hard'][key]:.4f}, soft "
                  f"{m['vqvae_soft'][key]:.4f}, interpolation baseline {m['interp_baseline'][key]:.4f}")

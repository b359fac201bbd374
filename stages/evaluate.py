"""`ait evaluate RUN` — the `evaluate@<run>` DVC stages (paper Tables 2-4, 10; PAPER_NOTES §5).

Scores the trained solver of RUN on the held-out split of each of its tasks (depth: test, insseg: val,
semseg: test) and writes metrics, result files, panels and the headline numbers
(pipeline/jobs/evaluate.py). Reads only the inference params (`evaluate`), so `dvc exp run -S
evaluate.depth.flip_tta=false` re-scores without retraining.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.io import check_outputs
from pipeline.core.runtime import pick_device
from pipeline.jobs.evaluate import EvalPaths, evaluate_run, load_options
from pipeline.tasks import scores
from pipeline.tasks.registry import get_task
from stages.ui import PARAMS_HELP, console, fail_cleanly, progress
from stages.workers import in_workers


@fail_cleanly
@in_workers
def main(
    run: Annotated[str, typer.Argument(help="a trained run (a key of solver.runs)")],
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
    prepared: Annotated[Path, typer.Option(help="prepared-data root")] = Path("data/prepared"),
    model_dir: Annotated[Path | None, typer.Option(help="solver checkpoint dir")] = None,
    tokenizers: Annotated[Path, typer.Option(help="tokenizer checkpoints root")] = Path("models/tokenizer"),
    caches: Annotated[Path, typer.Option(help="token-cache root (manifests only)")] = Path("data/tokens"),
    out: Annotated[Path | None, typer.Option(help="results dir")] = None,
    headline: Annotated[Path | None, typer.Option(help="headline metrics dir (default: results/headline "
                                                          "beside the results dir)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda (default: auto)")] = None,
    num_panels: Annotated[int | None, typer.Option(help="PNG panels per task (default: params)")] = None,
    max_images: Annotated[int | None, typer.Option(help="only the first N samples, 0 = all (default: "
                                                        "params)")] = None,
) -> None:
    """Score a trained task-solver on every task it was trained for; write metrics and panels."""
    opts = load_options(params, num_panels, max_images)
    out = out or Path("results/evaluate") / run
    check_outputs(out)
    paths = EvalPaths(prepared, model_dir or Path("models/solver") / run, tokenizers, caches, out,
                      headline or out.parent.parent / "headline")
    metrics = evaluate_run(run, paths, opts, pick_device(device), progress)
    for task, m in metrics.items():
        console.print(f"evaluate {run} {task}: {scores.report(get_task(task), m)}")

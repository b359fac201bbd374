"""`ait train-solver RUN` — the `train_solver@<run>` DVC stages (paper §3.2-3.3, Table 10).

Reads the token caches of the run's tasks (never the raw labels), the frozen tokenizers they were made
with, and the params `solver.backbone`, `solver.model`, `solver.num_bins`, `solver.spare_codes`,
`solver.<task>`, `solver.runs.<run>`, `tokenizer.solver_variants.<task>`, `base.seed`. Writes
`models/solver/<run>/` (safetensors + config.json) and DVCLive logs; the resumable state lives in
`checkpoints/solver/<run>/` until the run completes (pipeline/jobs/train_solver.py). Runs under `torchrun`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.io import check_outputs
from pipeline.core.runtime import pick_device
from pipeline.jobs.train_solver import RunPaths, load_run, train_run
from stages.ui import PARAMS_HELP, console, fail_cleanly
from stages.workers import in_workers


@fail_cleanly
@in_workers
def main(
    run: Annotated[str, typer.Argument(help="a key of solver.runs (depth, insseg, semseg, joint)")],
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
    caches: Annotated[Path, typer.Option(help="token-cache root")] = Path("data/tokens"),
    tokenizers: Annotated[Path, typer.Option(help="tokenizer checkpoints root")] = Path("models/tokenizer"),
    out: Annotated[Path | None, typer.Option(help="final model dir")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="resumable state dir (persistent)")] = None,
    live_dir: Annotated[Path | None, typer.Option(help="DVCLive dir")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda (default: auto)")] = None,
) -> None:
    """Train the task-solver on the token caches of one run's tasks."""
    spec = load_run(params, run)  # before any work: bad params stop here
    paths = RunPaths(caches, tokenizers, out or Path("models/solver") / run,
                     state_dir or Path("checkpoints/solver") / run,
                     live_dir or Path("results/train_solver") / run)
    check_outputs(paths.out, paths.state_dir, paths.live_dir)
    done = train_run(spec, paths, pick_device(device), echo=console.print)
    if done is not None:
        console.print(f"train_solver {run}: loss {done['loss']:.4f}, hash {done['hash']} -> {paths.out}")

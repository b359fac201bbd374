"""DVCLive on rank 0, a no-op stand-in everywhere else (same methods, so no `if rank == 0:`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.io import check_output_dir


class NullLive:
    """Accepts every DVCLive call a stage makes and does nothing (non-zero ranks)."""

    step = 0

    def log_metric(self, *args: Any, **kwargs: Any) -> None: ...
    def log_params(self, *args: Any, **kwargs: Any) -> None: ...
    def log_image(self, *args: Any, **kwargs: Any) -> None: ...
    def next_step(self) -> None: ...
    def make_summary(self) -> None: ...
    def end(self) -> None: ...


def open_live(directory: Path, is_rank0: bool, resume: bool = False):
    """A DVCLive logger writing metrics/plots under `directory` (dvc.yaml is maintained by hand)."""
    if not is_rank0:
        return NullLive()
    check_output_dir(directory)  # DVCLive deletes a dvc.yaml / params.yaml it finds in its folder
    from dvclive import Live

    return Live(dir=str(directory), resume=resume, save_dvc_exp=False, dvcyaml=False)


def log_step(live, step: int, values: dict[str, float], prefix: str = "") -> None:
    """Log `values` as metrics at `step` (one TSV row each) and advance DVCLive's step."""
    live.step = step
    for name, value in values.items():
        live.log_metric(prefix + name, value)
    live.next_step()

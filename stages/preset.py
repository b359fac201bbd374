"""`ait preset FILE...` — turn params overlays (e.g. presets/paper.yaml) into DVC's own `-S` overrides.

    dvc exp run $(ait preset presets/paper.yaml)
    dvc exp run $(ait preset presets/paper.yaml presets/rehearsal.yaml)   # later files win

Every leaf of the overlay becomes one `-S key=value` (lists and mappings as YAML flow values, which
DVC parses), so the preset is applied and tracked by DVC like any hand-written override. The overlay
is validated against the schema first: a key that params.yaml does not know fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.presets import override_flags, validated
from stages.ui import PARAMS_HELP, fail_cleanly


@fail_cleanly
def main(
    presets: Annotated[list[Path], typer.Argument(help="params overlays applied in order (later wins)")],
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
) -> None:
    """Print `-S key=value` overrides that apply the PRESETS (in order) with `dvc exp run`."""
    overlay, known = validated(params, presets)
    typer.echo(" ".join(f"-S {flag}" for flag in override_flags(overlay, known)))

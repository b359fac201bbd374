"""`ait preset FILE` — turn a params overlay (e.g. presets/paper.yaml) into DVC's own `-S` overrides.

    dvc exp run $(ait preset presets/paper.yaml)

Every leaf of the overlay becomes one `-S key=value` (lists and mappings as YAML flow values, which
DVC parses), so the preset is applied and tracked by DVC like any hand-written override. The overlay
is validated against the schema first: a key that params.yaml does not know fails here.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from pipeline.config import ConfigError, load_all
from stages.ui import PARAMS_HELP, fail_cleanly


def leaves(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted (key, value) pairs of a nested mapping; lists stay whole values."""
    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out += leaves(value, path + ".") if isinstance(value, dict) and value else [(path, value)]
    return out


def merged(params: dict, overlay: dict) -> dict:
    out = dict(params)
    for key, value in overlay.items():
        out[key] = merged(out.get(key) or {}, value) if isinstance(value, dict) and value else value
    return out


@fail_cleanly
def main(
    preset: Annotated[Path, typer.Argument(help="a params overlay, e.g. presets/paper.yaml")],
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
) -> None:
    """Print `-S key=value` overrides that apply PRESET with `dvc exp run`."""
    overlay = yaml.safe_load(preset.read_text()) or {}
    combined = merged(yaml.safe_load(params.read_text()), overlay)
    with tempfile.TemporaryDirectory() as tmp:
        check = Path(tmp) / "params.yaml"
        check.write_text(yaml.safe_dump(combined))
        try:
            load_all(check)
        except ConfigError as e:
            raise ConfigError(str(e).replace(str(check), f"{params} + {preset}")) from None
    # JSON is valid YAML flow syntax, which is what DVC parses the right-hand side of -S with;
    # keys params.yaml lacks take Hydra's `+key=value` (append) form.
    known = {k for k, _ in leaves(yaml.safe_load(params.read_text()))}
    flags = [f"-S {shlex.quote(('' if k in known else '+') + f'{k}={json.dumps(v)}')}"
             for k, v in leaves(overlay)]
    typer.echo(" ".join(flags))

"""`ait preset FILE...` — turn params overlays (e.g. presets/paper.yaml) into DVC's own `-S` overrides.

    dvc exp run $(ait preset presets/paper.yaml)
    dvc exp run $(ait preset presets/paper.yaml presets/rehearsal.yaml)   # later files win

Every leaf of the overlay becomes one `-S key=value` (lists and mappings as YAML flow values, which
DVC parses), so the preset is applied and tracked by DVC like any hand-written override. The overlay
is validated against the schema first: a key that params.yaml does not know fails here.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from pipeline.core.config import ConfigError
from pipeline.core.params import load_all
from stages.ui import PARAMS_HELP, fail_cleanly


def leaves(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted (key, value) pairs of a nested mapping; lists stay whole values."""
    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out += leaves(value, path + ".") if isinstance(value, dict) and value else [(path, value)]
    return out


def merged(params: dict, overlay: dict, prefix: str = "") -> dict:
    """params with overlay's leaves written over it; a mapping over a value, or an empty mapping (which
    `-S key={}` would merge as nothing), is refused naming the key."""
    out = dict(params)
    for key, value in overlay.items():
        path = f"{prefix}{key}"
        if value == {}:
            raise ConfigError(f"{path}: an empty mapping changes nothing under dvc's -S merge; list its keys")
        if isinstance(value, dict):
            base = out.get(key)
            if base is not None and not isinstance(base, dict):
                raise ConfigError(f"{path}: a mapping over the value {base!r}")
            value = merged(base or {}, value, path + ".")
        out[key] = value
    return out


def read_overlay(path: Path, what: str) -> dict:
    """A YAML mapping, or one line naming the file and what is wrong with it."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a non-empty mapping of params sections, got "
                          f"{type(raw).__name__}")
    return raw


@fail_cleanly
def main(
    presets: Annotated[list[Path], typer.Argument(help="params overlays applied in order (later wins)")],
    params: Annotated[Path, typer.Option(help=PARAMS_HELP)] = Path("params.yaml"),
) -> None:
    """Print `-S key=value` overrides that apply the PRESETS (in order) with `dvc exp run`."""
    overlay: dict = {}
    for preset in presets:
        overlay = merged(overlay, read_overlay(preset, "preset"))
    names = " + ".join(str(p) for p in presets)
    base = read_overlay(params, "params")
    combined = merged(base, overlay)
    with tempfile.TemporaryDirectory() as tmp:
        check = Path(tmp) / "params.yaml"
        check.write_text(yaml.safe_dump(combined))
        try:
            load_all(check)
        except ConfigError as e:
            raise ConfigError(str(e).replace(str(check), f"{params} + {names}")) from None
    known = {k for k, _ in leaves(base)}
    typer.echo(" ".join(f"-S {flag}" for flag in override_flags(overlay, known)))


def override_flags(overlay: dict, known: set[str]) -> list[str]:
    """`key=value` per leaf, as compact JSON (valid YAML flow syntax, which DVC parses `-S` values with).

    The line is meant for unquoted `$(ait preset ...)`, where the shell splits words on whitespace and
    never removes quotes, so no flag may contain whitespace or shell quoting. Keys params.yaml lacks take
    Hydra's `+key=value` (append) form.
    """
    flags = []
    for key, value in leaves(overlay):
        # ensure_ascii=False: Hydra would read "\u00e9" back as six characters, not "é"
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        flag = ("" if key in known else "+") + f"{key}={text}"
        if "\\" in flag:
            raise ConfigError(f"{key}: value {value!r} has a backslash, which dvc's -S grammar doubles; "
                              "use '/'")
        if any(c.isspace() for c in flag):
            raise ConfigError(f"{key}: value {value!r} contains whitespace, which `$(ait preset ...)` "
                              "cannot pass to dvc; set it with a quoted -S by hand")
        flags.append(flag)
    return flags

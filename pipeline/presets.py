"""Params overlays (presets/*.yaml) as DVC's own `-S` overrides, for `ait preset`.

- `read_overlay`: a YAML mapping, or one line naming the file;
- `merged`: params with an overlay written over them (a mapping over a value, or an empty mapping,
  which DVC's `-S key={}` would merge as nothing, is refused naming the key);
- `leaves`: the dotted (key, value) pairs of a nested mapping;
- `override_flags`: one `key=value` per leaf, as text Hydra's `-S` grammar reads back unchanged;
- `validated`: the combined document checked by the loader every stage uses.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from pipeline.core.config import ConfigError
from pipeline.core.params import load_all
from pipeline.core.yamlfile import dump_yaml, read_yaml


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
    raw = read_yaml(path, what)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a non-empty mapping of params sections, got "
                          f"{type(raw).__name__}")
    return raw


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


def validated(params: Path, presets: list[Path]) -> tuple[dict, set[str]]:
    """The overlay of `presets` (in order, later wins), checked on top of `params` against the schema,
    and the dotted keys params already has."""
    overlay: dict = {}
    for preset in presets:
        overlay = merged(overlay, read_overlay(preset, "preset"))
    names = " + ".join(str(p) for p in presets)
    base = read_overlay(params, "params")
    with tempfile.TemporaryDirectory() as tmp:
        check = Path(tmp) / "params.yaml"
        check.write_text(dump_yaml(merged(base, overlay)))
        try:
            load_all(check)
        except ConfigError as e:
            raise ConfigError(str(e).replace(str(check), f"{params} + {names}")) from None
    return overlay, {k for k, _ in leaves(base)}

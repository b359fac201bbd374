"""Reading `params.yaml` into the schema of `pipeline/core/config.py`, strictly.

The loader follows nanoGPT's `configurator.py` in spirit (an unknown key or a wrong type is an
error), but raises a one-line `ConfigError` naming the dotted key instead of exec-ing overrides, and
checks each value against the type and range its field declares. It reads only the file path it is
given; stages decide which file and which section.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

from pipeline.core.config import TASK_KEYED, TokenizerVariant, check_variant, sections, task_section_type
from pipeline.core.constraints import ConfigError
from pipeline.core.yamlfile import read_yaml
from pipeline.tasks.registry import TASK_NAMES

T = TypeVar("T")

def read_params(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a params file; a missing or malformed file is a one-line error."""
    raw = read_yaml(path, "params")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return raw


def _node(path: str | Path, key: str, what: str) -> Any:
    """The raw value at dotted `key` of the params file, or one line naming the missing `what`."""
    node: Any = read_params(path)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{path}: missing {what} '{key}'")
        node = node[part]
    return node


def _checked(path: str | Path, build, node: Any) -> Any:
    try:
        return build(node)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def load_section(path: str | Path, key: str, cls: type[T]) -> T:
    """Load the dotted section `key` of the params file at `path` into dataclass `cls`, strictly."""
    section = _checked(path, lambda node: from_dict(cls, node, key), _node(path, key, "section"))
    if _READS is not None:
        _track(section, key)
    return section


def load_value(path: str | Path, key: str) -> Any:
    """Load the single dotted value `key` (e.g. "data.max_bad_fraction"), checked against the type and
    range its dataclass field declares."""
    tp = field_type(key)
    value = _checked(path, lambda node: _coerce(tp, node, key), _node(path, key, "key"))
    if _READS is not None:
        _READS.add(key)
    return value


def check_value(key: str, value: Any, where: str) -> Any:
    """`value` checked against the type and range params key `key` declares, for a command-line option
    (`where`, e.g. "--num-panels") that overrides it: the same rule as the params file."""
    return _coerce(field_type(key), value, where)


def field_type(key: str) -> Any:
    """The declared type (with its range) of the dotted params key, walking the section schemas. Below a
    task-keyed prefix (`cache.depth.crop_size`) only that task's own classes are imported."""
    parts = key.split(".")
    prefix = max((p for p in TASK_KEYED if parts[: p.count(".") + 1] == p.split(".")
                  and parts[p.count(".") + 1: p.count(".") + 2] and parts[p.count(".") + 1] in TASK_NAMES),
                 key=len, default=None)
    if prefix is not None:
        depth = prefix.count(".") + 1
        tp, rest = task_section_type(prefix, parts[depth]), parts[depth + 1:]
    else:
        tp, rest = sections()[parts[0]], parts[1:]
    for part in rest:
        if typing.get_origin(tp) is dict:  # a named entry (tokenizer.variants.<name>, solver.runs.<run>)
            tp = typing.get_args(tp)[1]
        else:
            tp = typing.get_type_hints(tp, include_extras=True)[part]
    return tp


def load_variant(path: str | Path, name: str, task: str, key: str) -> TokenizerVariant:
    """The `task` tokenizer variant `name` that params key `key` chose, or one line listing the known ones
    (a stage that trains on a variant's cache reads only that variant's entry)."""
    variants = read_params(path).get("tokenizer", {}).get("variants")
    variants = variants if isinstance(variants, dict) else {}
    tasks = {k: v.get("task") for k, v in variants.items() if isinstance(v, dict)}
    try:
        check_variant(name, tasks, task, key)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    variant = load_section(path, f"tokenizer.variants.{name}", TokenizerVariant)
    if variant.task != task:  # checked above; reading it records the one key the caller depends on
        raise ConfigError(f"{path}: {key}: {name!r} is not a {task} variant")
    return variant


def load_all(path: str | Path) -> dict[str, Any]:
    """Every registered section of the file, validated; an unknown top-level section is an error."""
    raw = read_params(path)
    unknown = sorted(set(raw) - set(sections()))
    if unknown:
        raise ConfigError(f"{path}: unknown section '{unknown[0]}'")
    return {name: load_section(path, name, cls) for name, cls in sections().items() if name in raw}


# --------------------------------------------------------------------------------------------------
# which params a stage reads: DVC re-runs a stage exactly when a key in its `params:` changes, so a key
# read but not declared leaves stale results and a key declared but never read causes needless re-runs.
# tests/test_stage_params.py runs every dvc.yaml stage under `record_reads` and compares.

_READS: set[str] | None = None
_TRACKED: dict[type, type] = {}


@contextlib.contextmanager
def record_reads() -> Iterator[set[str]]:
    """Collect the dotted params keys read inside the block: each `load_value` key, and each leaf field
    of a `load_section` result that the code accesses (a nested section counts through its leaves)."""
    global _READS
    previous, _READS = _READS, set()
    try:
        yield _READS
    finally:
        _READS = previous


def _is_section(value: Any) -> bool:
    if isinstance(value, dict):
        return any(dataclasses.is_dataclass(v) for v in value.values())
    return dataclasses.is_dataclass(value)


def _tracked_class(cls: type) -> type:
    """A subclass of the frozen dataclass `cls` whose field reads are added to the active record."""
    if cls not in _TRACKED:
        names = frozenset(f.name for f in dataclasses.fields(cls))

        def __getattribute__(self, name: str) -> Any:
            value = object.__getattribute__(self, name)
            key = self.__dict__.get("_params_key") if name in names else None
            if key is not None and _READS is not None and not _is_section(value):
                _READS.add(f"{key}.{name}")
            return value

        _TRACKED[cls] = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__,
                                                    "__qualname__": cls.__qualname__})
    return _TRACKED[cls]


def _track(section: Any, key: str) -> None:
    """Make `section` (and the sections inside it) report field reads under the dotted `key`."""
    object.__setattr__(section, "__class__", _tracked_class(type(section)))
    object.__setattr__(section, "_params_key", key)
    for f in dataclasses.fields(section):
        value = object.__getattribute__(section, f.name)
        if dataclasses.is_dataclass(value):
            _track(value, f"{key}.{f.name}")
        elif isinstance(value, dict):
            for name, item in value.items():
                if dataclasses.is_dataclass(item):
                    _track(item, f"{key}.{f.name}.{name}")


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise `ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{where}.{key}: unknown key")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}.{name}: missing key")
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a cross-field rule of __post_init__ names the field, not the section
        raise ConfigError(f"{where}.{e}") from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:  # Annotated[type, Range(...)]: coerce, then range-check
        value = _coerce(args[0], value, where)
        for rule in tp.__metadata__:
            rule.check(value, where)
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches no allowed type")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if origin is tuple and args and args[-1] is not ...:  # fixed-length tuple[A, B, ...]
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            pairs = enumerate(zip(args, value, strict=True))
            return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in pairs)
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {k: _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return _scalar(tp, value, where)


def _scalar(tp: Any, value: Any, where: str) -> Any:
    # bool is a subclass of int in Python: reject it explicitly for numeric fields.
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and type(value) is tp:
        return value
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return _jsonable(dataclasses.asdict(cfg))


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x

"""Reading the YAML documents a user writes (params, presets, ablations), refusing what two readers see
differently.

The stages read YAML with PyYAML, which follows YAML 1.1; DVC reads the same params.yaml with ruamel in
YAML 1.2 (it decides what changed, and `dvc exp run -S` rewrites the file). The two disagree on plain
scalars such as `on` (1.1: true, 1.2: the text "on"), `010` (8 / 10), `5e-05` (the text / a float),
`1_000` and `1:30`; a document using one would train what PyYAML read while DVC records another value.
Such a scalar is refused with the spelling that both read alike, as is a key written twice in one
mapping (PyYAML keeps the last one silently; ruamel refuses the file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.constraints import ConfigError

# libyaml's parser when PyYAML was built with it: every stage reads params.yaml a dozen times.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The YAML 1.2 core schema's resolution of a plain scalar (yaml.org/spec/1.2.2, 10.3.2).
_CORE_12 = (
    ("null", re.compile(r"null|Null|NULL|~|")),
    ("bool", re.compile(r"true|True|TRUE|false|False|FALSE")),
    ("int", re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")),
    ("float", re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)"
                         r"|\.nan|\.NaN|\.NAN")),
)
_PYYAML_KIND = {"tag:yaml.org,2002:null": "null", "tag:yaml.org,2002:bool": "bool",
                "tag:yaml.org,2002:int": "int", "tag:yaml.org,2002:float": "float"}


def read_yaml(path: str | Path, what: str) -> Any:
    """The document of the YAML file at `path` (a `what` file: "params", "preset", ...), or one line naming
    the file and the problem: missing, not UTF-8, not YAML, a duplicate key or an ambiguous scalar."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        return loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def loads(text: str) -> Any:
    """One YAML document, checked as `read_yaml` describes; `ConfigError` says where in the text."""
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check(node: yaml.Node) -> None:
    stack: list[tuple[yaml.Node, str]] = [(node, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key, value in node.value:
                name = f"{where}.{key.value}" if where and isinstance(key, yaml.ScalarNode) else \
                    str(getattr(key, "value", where))
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise ConfigError(f"line {key.start_mark.line + 1}: {name}: the key is written twice "
                                          f"in one mapping; keep one")
                    seen.add(key.value)
                stack += [(key, name), (value, name)]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, f"{where}[{i}]") for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.ScalarNode) and not node.style:  # plain: libyaml says '', PyYAML None
            _check_plain(node, where)


def _check_plain(node: yaml.ScalarNode, where: str) -> None:
    text, line = node.value, f"{node.start_mark.line + 1}: {where}" if where else node.start_mark.line + 1
    kind_12 = plain_kind_12(text)
    kind_11 = _PYYAML_KIND.get(node.tag, "str")
    if kind_11 == kind_12 == "int" and re.fullmatch(r"[-+]?0[0-9]+", text):
        raise ConfigError(f"line {line}: '{text}' reads as an octal number in YAML 1.1 (the stages) but as a "
                          f"decimal one in YAML 1.2 (DVC); {_ADVICE['int']}")
    if kind_11 != kind_12:
        advice = _ADVICE[kind_12 if kind_11 == "str" else kind_11]
        raise ConfigError(f"line {line}: '{text}' reads as {_AS[kind_11]} in YAML 1.1 (the stages) but as "
                          f"{_AS[kind_12]} in YAML 1.2 (DVC); {advice}")


def plain_kind_12(text: str) -> str:
    """What YAML 1.2 (DVC) makes of `text` written as a plain scalar: null, bool, int, float or str."""
    return next((kind for kind, rule in _CORE_12 if rule.fullmatch(text)), "str")


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
    """PyYAML's safe dumper, quoting every string that YAML 1.2 would read as something else ('1e3',
    '0o17'): PyYAML quotes only what YAML 1.1 would misread."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "'" if plain_kind_12(text) != "str" else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    """`data` as YAML text that `loads` reads back unchanged (keys in the given order)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


_AS = {"null": "null", "bool": "a boolean", "int": "an integer", "float": "a number", "str": "text"}
_ADVICE = {
    "bool": "write true or false, or quote it for text",
    "int": "write the plain decimal number (no leading 0, _ or :), or quote it for text",
    "float": "write the number with a dot and a signed exponent (5.0e-05), or quote it for text",
    "null": "write null, or quote it for text",
}

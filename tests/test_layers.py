"""The house's layering (README "Layout"): no module imports one that stands above it.

Layers, bottom to top; a module may import its own layer and the ones below. Imports under
`if TYPE_CHECKING:` never run and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_dvc_deps import ROOT, _imports

LAYERS = [
    ("core", ["pipeline.core", "pipeline.geometry", "pipeline.tasks.registry"]),
    ("data", ["pipeline.data"]),
    ("models", ["pipeline.models"]),
    ("protocol", ["pipeline.tasks.base", "pipeline.tasks.sequences"]),
    ("helpers", ["pipeline.tokenizer_training", "pipeline.token_cache", "pipeline.solver_training"]),
    ("tasks", ["pipeline.tasks"]),
    ("jobs", ["pipeline.jobs", "pipeline.inspect", "pipeline.summary", "pipeline.experiments",
              "pipeline.report", "pipeline.presets", "pipeline.staleness"]),
    ("stages", ["stages"]),
]


def layer_of(module: str) -> int:
    """Index of the layer whose longest prefix matches `module` (the package `pipeline` itself: 0)."""
    best = (-1, 0)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), index)
    if best[0] < 0 and module != "pipeline":
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and README 'Layout'")
    return best[1]


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(_module(p) for d in ("pipeline", "stages") for p in (ROOT / d).rglob("*.py"))


def _path(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_one_above_it(module):
    path = _path(module)
    mine = layer_of(module)
    up = sorted(m for m in _imports(path) if layer_of(m) > mine)
    assert not up, f"{module} ({LAYERS[mine][0]}) imports {up} from above it"


def test_the_layer_check_catches_an_upward_import():
    bad = ROOT / "pipeline/core/_layer_probe.py"
    bad.write_text("from pipeline.jobs.evaluate import evaluate_run\n")
    try:
        up = [m for m in _imports(bad) if layer_of(m) > layer_of("pipeline.core._layer_probe")]
    finally:
        bad.unlink()
    assert up == ["pipeline.jobs.evaluate"]


def test_every_module_is_in_a_layer():
    assert len(MODULES) > 50
    for module in MODULES:
        layer_of(module)  # raises for a module no layer names


MAX_PARAMETERS = 8


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    a = node.args
    return [p for p in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg)
            if p is not None and p.arg not in ("self", "cls")]


def long_signatures(path: Path) -> list[str]:
    """Functions of `path` with more than MAX_PARAMETERS parameters, except `ait` command callbacks,
    whose parameters are their command-line options (typer reads them from the signature)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        functions = ast.FunctionDef | ast.AsyncFunctionDef
        if isinstance(node, functions) and len(_parameters(node)) > MAX_PARAMETERS:
            options = any("typer." in ast.unparse(p.annotation) for p in _parameters(node) if p.annotation)
            if not options:
                out.append(f"{node.name} ({len(_parameters(node))})")
    return out


@pytest.mark.parametrize("module", MODULES)
def test_no_function_takes_more_than_eight_parameters(module):
    long = long_signatures(_path(module))
    assert not long, f"{module}: {long} take more than {MAX_PARAMETERS}: group them into their records"


def test_the_signature_check_counts_parameters(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f(a, b, c, d, e, f, g, h, i):\n    pass\n\n\n"
                 "def g(self, a, b, c, d, e, f, g, h):\n    pass\n")
    assert long_signatures(f) == ["f (9)"]
